"""Peak resident memory of training, per architecture, and a leak check across epochs.

    python benchmarks/memory_bench.py [--recipe asrbench/recipe/an4.yaml] [--models dnn,cnn,...] [--epochs 5]
                                      [--growth-from 2] [--threads 1] [--max-utterances N] [--data DIR] [--keep]
                                      [--jobs 1]

Each model trains in a fresh ``python -m asrbench train`` process (CPU, ``--threads`` torch
threads), so its memory is its own; ``--jobs`` of them train at once (the figures are per process
and measure no time; ``make bench`` runs two). Before that, a short child process loads the
training data once per feature cache (data dir, front end, augmentation; the recipe's CTC models
share one), so the cache is warm and no model pays for feature extraction. While the model
trains, a thread here reads the child's ``/proc/<pid>/status`` every 0.2 s: VmHWM (the kernel's
high-water mark of the resident set) for the peak, and VmRSS when a new row appears in the run's
metrics.jsonl, i.e. at the end of each epoch (after the dev pass). The peak reported is the larger
of the sampled VmHWM and the ``peak_memory`` (ru_maxrss) in the run's train_summary.json.
Data-loader workers are processes of their own, forked from the training process: the largest
sampled VmRSS of the training process plus its workers' private memory is reported beside it.

Per model: ``peak_rss_mb_<model>`` (target ≤ 4000 MB, generous) and ``rss_growth_<model>``: the RSS
at the end of the last epoch minus that at the end of epoch ``--growth-from`` (2 by default: epoch 1
includes the allocator's warm-up), as a fraction of the peak; target ≤ 0.05. From epoch 1 the growth
also counts what the allocator still adds in epoch 2, a stricter check (``make bench``: 3 epochs,
growth from the end of epoch 1, two epochs as before, one epoch's training less).
``--max-utterances`` trains on the first N training (and dev) utterances, copied into a data dir
under ``--out``; run dirs, logs and that copy are removed afterwards unless ``--keep``. The
per-epoch RSS is the ``rss_mb`` the trainer writes into each metrics row when it has one (it is
taken at a fixed point of the epoch's end), else the polled VmRSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import ROOT, figure, record

CTC_MODELS = "dnn,cnn,lstm,gru,crdnn,transformer,conformer"
POLL_SECONDS = 0.2

# Loads the training data as train() does (features cached on disk), in a child process.
WARM_CACHE = """
import sys
from asrbench.recipe.config import resolve
from asrbench.data.pipeline import load_training_data
load_training_data(resolve(sys.argv[1], sys.argv[2], sys.argv[3:]))
"""


def status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a live process in MB; empty once it has exited."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {
        key: float(rest.split()[0]) / 1024
        for key, _, rest in (line.partition(":") for line in lines)
        if key in ("VmRSS", "VmHWM") and rest.strip()
    }


def count_lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except OSError:
        return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (data-loader workers), from /proc/<pid>/task/*/children."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending += [int(child) for child in children.read_text().split()]
            except (OSError, ValueError):
                pass
    return tree


def private_mb(pid: int) -> float:
    """Memory only this process holds (MB): what a forked worker adds to its parent's RSS."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0.0
    return sum(float(line.split()[1]) for line in lines if line.startswith(("Private_Clean:", "Private_Dirty:"))) / 1024


def sample(process: subprocess.Popen, metrics: Path, epoch_rss: list[float], peaks: dict[str, float]) -> None:
    """Until ``process`` exits: its VmRSS at each epoch end into ``epoch_rss``; into ``peaks`` the
    largest VmHWM, and the largest VmRSS plus the private memory of its workers."""
    while process.poll() is None:
        epochs = count_lines(metrics)  # first, so the RSS read next is from after the epoch's end
        memory = status_mb(process.pid)
        peaks["vmhwm"] = max(peaks["vmhwm"], memory.get("VmHWM", 0.0))
        tree = process_tree(process.pid)
        workers = sum(private_mb(pid) for pid in tree[1:])
        peaks["with_workers"] = max(peaks["with_workers"], memory.get("VmRSS", 0.0) + workers)
        peaks["processes"] = max(peaks["processes"], len(tree))
        if epochs > len(epoch_rss) and "VmRSS" in memory:
            epoch_rss.extend([memory["VmRSS"]] * (epochs - len(epoch_rss)))  # two epochs within one poll
        time.sleep(POLL_SECONDS)


def subset_data(data_dir: Path, out: Path, utterances: int) -> Path:
    """The first ``utterances`` lines of train.jsonl and dev.jsonl (test is not needed) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        lines = (data_dir / f"{split}.jsonl").read_text().splitlines()[:utterances]
        (out / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return out


def _overrides(args: argparse.Namespace, data_dir: str | None) -> list[str]:
    overrides = [f"train.num_threads={args.threads}", f"train.device={args.device}", "train.patience=0"]
    return overrides + ([f"data.dir={data_dir}"] if data_dir else [])


def feature_cache_key(recipe: Path, model: str, overrides: list[str]) -> str:
    """What decides a model's feature cache: its data dir, front end and augmentation (speed copies)."""
    from asrbench.recipe.config import resolve

    config = resolve(recipe, model, overrides)
    return json.dumps([config.data.dir, repr(config.features), repr(config.augment)])


def warm_cache(args: argparse.Namespace, model: str, data_dir: str | None, environment: dict) -> None:
    """Load ``model``'s training data once in a child process, so its features are cached on disk."""
    overrides = _overrides(args, data_dir)
    warm = subprocess.run(
        [sys.executable, "-c", WARM_CACHE, str(args.recipe), model, *overrides],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
    )
    if warm.returncode != 0:
        raise SystemExit(f"loading the training data of {model} failed (exit {warm.returncode}; see above)")


def measure(args: argparse.Namespace, model: str, data_dir: str | None, environment: dict) -> dict:
    """Train ``model`` in a child process; its memory per epoch, the peak and the training summary."""
    run_dir = args.out / model
    log_path = args.out / f"{model}.log"
    shutil.rmtree(run_dir, ignore_errors=True)  # a kept run from before would refuse a new one
    overrides = _overrides(args, data_dir)
    command = [
        sys.executable,
        "-m",
        "asrbench",
        "train",
        str(args.recipe),
        "--model",
        model,
        "--out",
        str(run_dir),
        "--epochs",
        str(args.epochs),
    ]
    for override in overrides:
        command += ["--set", override]
    epoch_rss: list[float] = []
    peaks = {"vmhwm": 0.0, "with_workers": 0.0, "processes": 0}
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
        sampler = threading.Thread(target=sample, args=(process, run_dir / "metrics.jsonl", epoch_rss, peaks))
        sampler.start()
        process.wait()
        sampler.join()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-20:])
        raise SystemExit(f"training {model} failed (exit {process.returncode}); {log_path} ends:\n{tail}")
    summary = json.loads((run_dir / "train_summary.json").read_text())
    summary_peak = (summary.get("peak_memory") or {}).get("mb") or 0.0
    # The trainer records its own RSS at each epoch end (after the dev pass and returning free heap
    # pages); that is exact where the poll above lands anywhere in the checkpoint write after it.
    recorded = [json.loads(line).get("rss_mb") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if recorded and all(value is not None for value in recorded):
        epoch_rss = recorded
    return {
        "epoch_rss_mb": epoch_rss,
        "sampled_peak_mb": peaks["vmhwm"],
        "summary_peak_mb": summary_peak,
        "peak_mb": max(peaks["vmhwm"], summary_peak),
        "with_workers_mb": peaks["with_workers"],
        "processes": peaks["processes"],
        "epochs": summary["epochs"],
        "seconds": seconds,
        "params": summary["params"],
        "stop_reason": summary["stop_reason"],
    }


def rss_growth(epoch_rss: list[float], peak_mb: float | None, growth_from: int) -> float | None:
    """The RSS at the last epoch end minus that at the end of epoch ``growth_from`` (1-based), as a
    fraction of the peak; None without a later epoch end or a peak."""
    start = growth_from - 1
    if len(epoch_rss) <= start + 1 or not peak_mb:
        return None
    return (epoch_rss[-1] - epoch_rss[start]) / peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=Path("asrbench/recipe/an4.yaml"))
    parser.add_argument("--models", default=CTC_MODELS, help="Comma-separated model names.")
    parser.add_argument("--epochs", type=int, default=5, help="At least --growth-from + 1.")
    parser.add_argument(
        "--growth-from",
        type=int,
        default=2,
        help="Growth is measured from the end of this epoch (1: includes the allocator's warm-up in epoch 2).",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training process.")
    parser.add_argument("--device", default="cpu", help="Training device (RSS is host memory).")
    parser.add_argument("--data", type=Path, help="Prepared data dir (default: the recipe's data.dir).")
    parser.add_argument("--max-utterances", type=int, default=0, help="Train on the first N utterances (0: all).")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_memory"), help="Run dirs and logs go here.")
    parser.add_argument("--keep", action="store_true", help="Keep the run dirs, logs and data subset.")
    parser.add_argument(
        "--jobs", type=int, default=1, help="Models trained at once (each its own process: its memory is its own)."
    )
    args = parser.parse_args()
    if args.growth_from < 1:
        parser.error("--growth-from must be at least 1")
    if args.epochs < args.growth_from + 1:
        parser.error(
            f"--epochs must be at least {args.growth_from + 1} (growth is measured from the end of epoch "
            f"{args.growth_from})"
        )
    args.recipe, args.out = args.recipe.resolve(), args.out.resolve()
    models = [name.strip() for name in args.models.split(",") if name.strip()]

    from asrbench.recipe.config import resolve

    data_dir = args.data.resolve() if args.data else None
    if args.max_utterances > 0:
        source = data_dir or ROOT / resolve(args.recipe, models[0]).data.dir
        data_dir = subset_data(source, args.out / f"data-{args.max_utterances}", args.max_utterances)
    args.out.mkdir(parents=True, exist_ok=True)
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "ASRBENCH_NO_PROGRESS": "1", "PYTHONPATH": python_path}

    figures, results = {}, {}
    data = str(data_dir) if data_dir else None
    warmed: set[str] = set()
    for model in models:  # one at a time, once per feature cache: the models share the recipe's front end
        key = feature_cache_key(args.recipe, model, _overrides(args, data))
        if key not in warmed:
            warm_cache(args, model, data, environment)
            warmed.add(key)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        measured = pool.map(lambda model: measure(args, model, data, environment), models)
    for model, result in zip(models, measured, strict=True):
        rss = result["epoch_rss_mb"]
        growth = rss_growth(rss, result["peak_mb"], args.growth_from)
        results[model] = result
        figures[f"peak_rss_mb_{model}"] = figure(
            result["peak_mb"],
            4000.0,
            "MB",
            better="lower",
            sampled_vmhwm_mb=result["sampled_peak_mb"],
            summary_max_rss_mb=result["summary_peak_mb"],
            with_workers_peak_mb=result["with_workers_mb"],
            processes=result["processes"],
        )
        figures[f"rss_growth_{model}"] = figure(
            growth,
            0.05,
            "fraction of peak",
            better="lower",
            epoch_rss_mb=[round(value, 1) for value in rss],
            epochs=result["epochs"],
            growth_from_epoch=args.growth_from,
            skipped_reason=f"fewer than {args.growth_from + 1} epoch ends sampled (the run stopped early)",
        )
        print(
            f"{model}: peak {result['peak_mb']:.0f} MB, RSS at epoch ends "
            f"{', '.join(f'{value:.0f}' for value in rss)} MB, growth "
            f"{'n/a' if growth is None else f'{growth:+.1%}'} ({result['seconds']:.0f} s)",
            flush=True,
        )
        if not args.keep:
            shutil.rmtree(args.out / model, ignore_errors=True)
            (args.out / f"{model}.log").unlink(missing_ok=True)
    if not args.keep:
        if args.max_utterances > 0:
            shutil.rmtree(data_dir, ignore_errors=True)
        if args.out.is_dir() and not any(args.out.iterdir()):
            args.out.rmdir()
    record(
        "memory_bench",
        figures,
        {
            "recipe": str(args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe),
            "epochs": args.epochs,
            "growth_from_epoch": args.growth_from,
            "threads": args.threads,
            "jobs": args.jobs,
            "device": args.device,
            "data": str(data_dir) if data_dir else None,
            "max_utterances": args.max_utterances or None,
            "runs": {
                model: {key: result[key] for key in ("epochs", "seconds", "params", "stop_reason")}
                for model, result in results.items()
            },
        },
    )


if __name__ == "__main__":
    main()
