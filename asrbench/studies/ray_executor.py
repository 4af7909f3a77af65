"""``asrbench bench --executor ray``: the sweep's runs as Ray tasks, on a cluster or a local one.

A sweep (models x seeds) is embarrassingly parallel: each (model, seed) is one Ray task that
trains (or resumes) its run and decodes dev and test, exactly as the local executor does
(:func:`asrbench.studies.bench._run_one`), writing into the sweep's run dir. That dir must be on a file
system every node sees (and so must the data dir), as for any multi-node training. The driver
then builds the table from those files, so the table does not depend on where the tasks ran.

``address``: ``local`` starts a Ray instance on this machine for the sweep and shuts it down
after; ``auto`` joins the cluster this machine belongs to (``ray start`` ran here); ``HOST:PORT``
joins that cluster's head. Each task asks for ``cpus`` CPUs (the run's ``train.num_threads``) and
``gpus`` GPUs (Ray sets ``CUDA_VISIBLE_DEVICES`` for it). A task's output goes to
``<run dir>/bench.log``; a failed task is reported with its error and that log, after the others
have finished, and the sweep exits non-zero. Finished runs are not submitted again.

Ray is an optional extra (``pip install 'asrbench[ray]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from asrbench.env import CORES_VARIABLE
from asrbench.errors import AsrbenchError
from asrbench.progress import console, progress_bar

LOG = "bench.log"


def _ray():
    try:
        import ray
    except ImportError:
        raise AsrbenchError("--executor ray needs the ray package: pip install 'asrbench[ray]'") from None
    return ray


@contextlib.contextmanager
def _logged(path: Path):
    """Point this process's stdout and stderr (file descriptors 1 and 2) at ``path`` meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_task(function, task: tuple, cpus: int) -> str:
    """One sweep run inside a Ray worker: ``function(*task, True)`` (the bench's own), logged to its
    run dir."""
    os.environ[CORES_VARIABLE] = str(cpus)  # automatic loader workers size to this task's share
    with _logged(Path(task[2]) / LOG):
        return function(*task, True)


def connect(address: str) -> bool:
    """Join (or, with ``local``, start) a Ray cluster; True when this call connected, in which case
    the caller disconnects when done (:func:`run_tasks` does). When this process is already
    connected (a program that embeds asrbench called ``ray.init`` itself), that connection is used
    and left open; False."""
    ray = _ray()
    if ray.is_initialized():
        return False
    settings = {"log_to_driver": False, "configure_logging": False}
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, **settings)
        else:
            ray.init(address=address, **settings)
    except ConnectionError as err:
        raise AsrbenchError(f"--address {address}: cannot join a Ray cluster ({str(err).splitlines()[0]})") from None
    return True


def run_tasks(function, tasks: list[tuple], address: str, cpus: int = 1, gpus: float = 0.0) -> None:
    """Run ``function(*task, True)`` for every task on Ray (``function`` travels by reference: its
    module must be importable on the workers); AsrbenchError naming each failed run and its log
    when any failed."""
    ray = _ray()
    connected = connect(address)
    try:
        resources = ray.cluster_resources()
        console.print(
            f"bench on Ray ({address}): {len(tasks)} runs, {cpus} CPU{'s' * (cpus != 1)}"
            + (f" and {gpus:g} GPU" if gpus else "")
            + f" each; cluster {resources.get('CPU', 0):g} CPUs"
            + (f", {resources.get('GPU', 0):g} GPUs" if resources.get("GPU") else "")
        )
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_task)
        pending = {remote.remote(function, task, cpus): task for task in tasks}
        failures = []
        with progress_bar("last") as progress:
            bar = progress.add_task(f"bench on Ray ({len(tasks)} runs)", total=len(tasks), last="-")
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for reference in done:
                    task = pending.pop(reference)
                    try:
                        ray.get(reference)
                        console.print(f"{task[2]}: done")
                    except ray.exceptions.RayError as err:
                        cause = getattr(err, "cause", None)
                        message = str(cause) if cause is not None else str(err).strip().splitlines()[-1]
                        failures.append(
                            f"{task[2]}: {message.splitlines()[0] if message else type(err).__name__} "
                            f"(log: {Path(task[2]) / LOG})"
                        )
                    progress.update(bar, advance=1, last=f"{task[1]} seed {task[7]}")
        if failures:
            raise AsrbenchError(f"{len(failures)} of {len(tasks)} runs failed on Ray: " + "; ".join(failures))
    finally:
        # Disconnect from whatever this call joined: a driver left connected to a cluster that
        # later stops is killed by Ray once it loses the cluster's control store (~60 s).
        if connected:
            ray.shutdown()
