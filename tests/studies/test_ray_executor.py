"""asrbench bench --executor ray against a real Ray cluster this test starts on 127.0.0.1: a head
node and one worker node (``ray start --block``, one CPU each), then a sweep whose runs are Ray
tasks; its table equals the local executor's for the same seeds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import write_tone_corpus

from asrbench.errors import AsrbenchError
from asrbench.studies import ray_executor
from asrbench.studies.bench import bench

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).parent / "ray"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """HOST:PORT of a two-node Ray cluster (head + one worker, 1 CPU each), stopped afterwards."""
    assert RAY.is_file(), f"{RAY}: the ray CLI is missing (make setup installs asrbench[ray])"
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    temp = tmp_path_factory.mktemp("ray")
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--block", "--disable-usage-stats"]
    head = subprocess.Popen(
        [str(RAY), "start", "--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}", *common],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    nodes = [head]
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        nodes.append(
            subprocess.Popen(
                [str(RAY), "start", f"--address={address}", *common],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        time.sleep(3)  # the worker node registers with the head
        yield address
    finally:
        import ray

        ray.shutdown()  # never leave this process joined to the cluster being stopped
        for node in reversed(nodes):
            try:
                os.killpg(node.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for node in nodes:
            try:
                node.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    data_dir = write_tone_corpus(tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
train: {{epochs: 3, batch_frames: 400, lr: 3.0e-3, warmup_steps: 5, data_workers: 0}}
models:
  dnn: {{context: 3, stride: 2, hidden_size: 32, num_layers: 2}}
  gru: {{subsample_channels: 4, hidden_size: 16, num_layers: 1}}
""")
    # Extract the features once, so that both executors read the same store.
    from asrbench.data.pipeline import load_training_data
    from asrbench.recipe.config import resolve

    load_training_data(resolve(path, "dnn"))
    return path


COLUMNS = ("model", "seeds", "wer", "cer", "dev_wer", "params", "epochs")


def test_ray_tasks_give_the_local_executors_table(cluster, recipe: Path, tmp_path: Path):
    overrides = ["train.num_threads=1"]
    local = bench(recipe, "dnn,gru", seeds=1, out=tmp_path / "local", overrides=overrides)
    on_ray = bench(
        recipe, "dnn,gru", seeds=1, out=tmp_path / "ray", overrides=overrides, executor="ray", address=cluster
    )
    assert [{key: row[key] for key in COLUMNS} for row in on_ray["summary"]] == [
        {key: row[key] for key in COLUMNS} for row in local["summary"]
    ]
    # Disconnected after the sweep: a driver left joined to a cluster that then stops is killed by
    # Ray (this once took the whole test session down), and a later --address must not reuse it.
    import ray

    assert not ray.is_initialized()
    for run in on_ray["runs"]:
        run_dir = Path(run["run"])
        assert (run_dir / "decode" / "test" / "result.json").is_file()
        assert (run_dir / ray_executor.LOG).is_file()  # each task's output went to its run dir
    # Resumable: a second sweep submits nothing (finished runs are skipped).
    stamps = {run["run"]: (Path(run["run"]) / "train_summary.json").stat().st_mtime for run in on_ray["runs"]}
    again = bench(
        recipe, "dnn,gru", seeds=1, out=tmp_path / "ray", overrides=overrides, executor="ray", address=cluster
    )
    assert {run["run"]: (Path(run["run"]) / "train_summary.json").stat().st_mtime for run in again["runs"]} == stamps


def test_a_failed_ray_task_is_reported_with_its_log(cluster, recipe: Path, tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(recipe.read_text().replace("hidden_size: 16", "hidden_size: 16, forget_bias: 1.0"))
    with pytest.raises(
        AsrbenchError,
        match=r"1 of 2 runs failed on Ray: .*gru/seed0: .*forget_bias applies to "
        r"LSTMs only \(log: .*gru/seed0/bench.log\)",
    ):
        bench(
            broken,
            "dnn,gru",
            seeds=1,
            out=tmp_path / "sweep",
            overrides=["train.num_threads=1"],
            executor="ray",
            address=cluster,
        )
    assert (tmp_path / "sweep" / "dnn" / "seed0" / "train_summary.json").is_file()  # the other run finished


def test_without_ray_installed_the_executor_says_how_to_get_it(monkeypatch, recipe: Path, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(AsrbenchError, match=r"--executor ray needs the ray package: pip install 'asrbench\[ray\]'"):
        bench(recipe, "dnn", seeds=1, out=tmp_path / "sweep", executor="ray")


def test_address_local_starts_a_ray_instance_for_the_sweep_and_stops_it(recipe: Path, tmp_path: Path):
    import ray

    report = bench(
        recipe,
        "dnn",
        seeds=1,
        out=tmp_path / "sweep",
        overrides=["train.num_threads=1"],
        executor="ray",
        address="local",
    )
    assert report["executor"] == "ray" and report["runs"][0]["wer"] is not None
    assert not ray.is_initialized()  # shut down after the sweep
