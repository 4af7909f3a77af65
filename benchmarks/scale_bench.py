"""Memory and speed of the feature store as the corpus grows: AN4 replicated to 1, 10, 100 hours.

    python benchmarks/scale_bench.py [--data data/an4] [--hours 1,10,100] [--jobs 2] [--steps 50]
                                     [--out DIR] [--keep]

For each size, a data dir whose train split is AN4's training utterances repeated under new ids
(``r<k>-<id>``, the same audio files) until it holds that many hours, and AN4's dev split:

- extraction: ``asrbench data features DIR --recipe asrbench/recipe/an4.yaml --jobs J`` (train and its 0.9
  and 1.1 speed copies) in a child process: audio seconds per wall second (× real time), and the
  peak resident memory of the largest process of the extraction (the parent or a worker);
- the store on disk: bytes per hour of audio and per stored feature value (float16 + indexes);
- training: 50 steps of the AN4 cnn with speed perturbation (``asrbench train ... --set
  train.max_steps=50``) in a child process, its peak resident memory (VmHWM; the median of three
  fresh runs) and, at that peak's sampling, its anonymous and file-backed parts (file-backed:
  mapped libraries; the store is read with positioned reads, so its pages stay in the page cache
  and out of the process).

Then, on the smallest size (AN4-sized), side by side in this process and both warm:

- batch reading: an epoch of padded batches from the store against the same frames held in one
  in-memory tensor (what asrbench did before the store);
- training steps: the cnn's forward, backward and optimizer step on batches collated from the
  store against batches from the in-memory tensor (alternating, each side's best of 3);
- extraction with 2 worker processes against 1 (the second size's train split, or
  ``--workers-hours H``; no speed copies; alternating, each side's best of 3; ``--only-workers``
  measures just this);
- a 1,000,000-line manifest: reading it and building its length-bucketed batches (seconds, and
  the peak resident memory of a child process doing it).

Targets (2 CPU cores): training and extraction peak RSS at the largest size ≤ 1.2 × at 1 h;
2 workers ≥ 1 worker; store reads ≥ 0.95 × in-memory steps/s; ≤ 2.2 bytes per value; the
manifest in ≤ 20 s and ≤ 1 GB. The data dirs are removed afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import ROOT, best_time, figure, record, set_threads

RECIPE = ROOT / "asrbench" / "recipe" / "an4.yaml"
POLL_SECONDS = 0.1


def _status(pid: int) -> dict[str, float]:
    """VmHWM, VmRSS, RssAnon, RssFile of a live process in MB; {} once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    keys = ("VmHWM", "VmRSS", "RssAnon", "RssFile")
    return {
        key: float(rest.split()[0]) / 1024
        for key, _, rest in (line.partition(":") for line in lines)
        if key in keys and rest.strip()
    }


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            frontier.append(child)
    return found


def run_measured(command: list[str]) -> dict:
    """Run ``command``; its wall time and the peak VmHWM of its largest process (with that
    process's RssAnon/RssFile at the sample where its RSS was highest)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ASRBENCH_NO_PROGRESS": "1"},
    )
    peak = {"VmHWM": 0.0, "RssAnon": 0.0, "RssFile": 0.0, "VmRSS": 0.0}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            for pid in [process.pid, *_descendants(process.pid)]:
                status = _status(pid)
                if status.get("VmHWM", 0.0) > peak["VmHWM"]:
                    peak["VmHWM"] = status["VmHWM"]
                if status.get("VmRSS", 0.0) > peak["VmRSS"]:
                    peak.update({key: status.get(key, 0.0) for key in ("VmRSS", "RssAnon", "RssFile")})
            time.sleep(POLL_SECONDS)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    out, err = process.communicate()
    done.set()
    thread.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{err[-2000:]}")
    return {
        "seconds": time.perf_counter() - start,
        "peak_mb": peak["VmHWM"],
        "anon_mb": peak["RssAnon"],
        "file_mb": peak["RssFile"],
        "stdout": out,
    }


def replicated(source: Path, out: Path, hours: float) -> tuple[Path, float]:
    """A data dir whose train split repeats ``source``'s until it holds ``hours`` of audio."""
    rows = [json.loads(line) for line in (source / "train.jsonl").read_text().splitlines() if line.strip()]
    target, lines, total, copy = hours * 3600, [], 0.0, 0
    while total < target:
        for row in rows:
            lines.append(json.dumps({**row, "id": f"r{copy}-{row['id']}"}))
            total += row["duration"]
            if total >= target:
                break
        copy += 1
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copy(source / "dev.jsonl", out / "dev.jsonl")
    return out, total


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", "asrbench", *args]


def measure_size(source: Path, root: Path, hours: float, jobs: int, steps: int, repeat: int) -> dict:
    data, seconds = replicated(source, root / f"{hours:g}h", hours)
    extraction = run_measured(
        _python("data", "features", str(data), "--recipe", str(RECIPE), "--splits", "train", "--jobs", str(jobs))
    )
    from asrbench.data.store import bytes_per_hour

    stores = [path for path in (data / "features").iterdir() if path.is_dir()]
    per_hour = sum(bytes_per_hour(path) for path in stores) / len(stores)
    dim = json.loads((stores[0] / "store.json").read_text())["config"]["num_mel_bins"]
    # A process's peak varies by ~10% from run to run (the allocator's arenas, the dev pass's
    # tensors): the median of ``repeat`` fresh trainings.
    trainings = []
    for attempt in range(repeat):
        run = root / f"run-{hours:g}h-{attempt}"
        trainings.append(
            run_measured(
                _python(
                    "train",
                    str(RECIPE),
                    "--model",
                    "cnn",
                    "--data",
                    str(data),
                    "--out",
                    str(run),
                    "--set",
                    f"train.max_steps={steps}",
                    "--set",
                    "train.max_minutes=0",
                    "--set",
                    "train.checkpoint_minutes=0",
                )
            )
        )
        shutil.rmtree(run, ignore_errors=True)
    training = sorted(trainings, key=lambda measured: measured["peak_mb"])[len(trainings) // 2]
    return {
        "hours": seconds / 3600,
        "train_utterances": sum(1 for _ in (data / "train.jsonl").open()),
        "extraction_seconds": extraction["seconds"],
        "extraction_rtfx": 3 * seconds / extraction["seconds"],
        "extraction_peak_mb": extraction["peak_mb"],
        "store_bytes_per_hour": per_hour,
        "bytes_per_value": per_hour / (360000 * dim),
        "training_peak_mb": training["peak_mb"],
        "training_anon_mb": training["anon_mb"],
        "training_file_mb": training["file_mb"],
        "training_seconds": training["seconds"],
        "training_peaks_mb": [measured["peak_mb"] for measured in trainings],
    }


def compare_workers(source: Path, root: Path, hours: float, repeat: int) -> dict:
    """Extraction of a ``hours`` train split (no speed copies) with 1 and with 2 worker processes,
    alternating, each side's best of ``repeat``; each run is a fresh child process, so both sides
    pay the same start-up (importing torch, reading the manifest)."""
    data = root / f"{hours:g}h"
    seconds = (
        replicated(source, data, hours)[1]
        if not (data / "train.jsonl").exists()
        else sum(json.loads(line)["duration"] for line in (data / "train.jsonl").open() if line.strip())
    )
    times = {1: [], 2: []}
    for _ in range(repeat):
        for jobs in (1, 2):
            shutil.rmtree(data / "features", ignore_errors=True)
            times[jobs].append(
                run_measured(
                    _python(
                        "data",
                        "features",
                        str(data),
                        "--recipe",
                        str(RECIPE),
                        "--splits",
                        "train",
                        "--set",
                        "augment.speed_perturb=[]",
                        "--jobs",
                        str(jobs),
                    )
                )["seconds"]
            )
    shutil.rmtree(data / "features", ignore_errors=True)
    return {
        "hours": seconds / 3600,
        "audio_seconds": seconds,
        "seconds": {jobs: min(t) for jobs, t in times.items()},
        "all_seconds": times,
    }


def workers_figure(workers: dict) -> dict:
    one, two = workers["seconds"][1], workers["seconds"][2]
    return figure(
        one / two,
        1.0,
        f"2 workers / 1 worker (× real time, {workers['hours']:.3g} h, no speed copies)",
        hours=workers["hours"],
        one_worker_rtfx=workers["audio_seconds"] / one,
        two_workers_rtfx=workers["audio_seconds"] / two,
        seconds=workers["all_seconds"],
    )


def side_by_side(data: Path, repeat: int) -> dict:
    """Batch reads and training steps, store against one in-memory tensor, on ``data`` (warm)."""
    import torch

    from asrbench.data.batching import BucketBatchSampler, Collator
    from asrbench.data.features import FeatureSet
    from asrbench.data.pipeline import load_training_data
    from asrbench.models import build_model
    from asrbench.recipe.config import resolve

    config = resolve(RECIPE, "cnn", [f"data.dir={data}"])
    training = load_training_data(config)
    stored = training.train
    in_memory = FeatureSet.from_frames(
        stored.utterances,
        stored.frames(),
        torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.int64), stored.lengths]), 0),
    )
    sampler = BucketBatchSampler(
        stored.lengths.tolist(), config.train.batch_frames, config.train.max_batch_size, True, 0
    )
    batches = sampler.batches()
    frames = int(stored.lengths.sum())
    readers = {
        name: Collator(features, training.train_tokens, training.cmvn, config.augment)
        for name, features in (("store", stored), ("memory", in_memory))
    }

    def epoch(name: str):
        return lambda: [readers[name](indices, seed=i) for i, indices in enumerate(batches)]

    read = {name: frames / best_time(epoch(name), repeat) for name in readers}
    torch.manual_seed(0)
    model = build_model("cnn", config.model.options, config.features.dim(), len(training.tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    steps = batches[:30]

    def train_steps(name: str):
        def run() -> None:
            for i, indices in enumerate(steps):
                batch = readers[name](indices, seed=i)
                loss = model.compute_loss(batch.features, batch.feature_lengths, batch.targets, batch.target_lengths)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

        return run

    times = {name: [] for name in readers}
    train_steps("store")()  # warm-up
    train_steps("memory")()
    for _ in range(repeat):
        for name in readers:
            start = time.perf_counter()
            train_steps(name)()
            times[name].append(time.perf_counter() - start)
    speed = {name: len(steps) / min(seconds) for name, seconds in times.items()}
    return {"read_frames_per_second": read, "steps_per_second": speed}


MANIFEST_CHILD = """
import json, resource, sys, time
from pathlib import Path
start = time.perf_counter()
from asrbench.data.batching import BucketBatchSampler
from asrbench.data.manifest import read_manifest
utterances = read_manifest(Path(sys.argv[1]))
read = time.perf_counter() - start
lengths = [int(u.duration * 100) for u in utterances]
batches = BucketBatchSampler(lengths, 20000, 128, True, 0).batches()
total = time.perf_counter() - start
print(json.dumps({"utterances": len(utterances), "batches": len(batches), "read_seconds": read, "seconds": total,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def manifest_million(source: Path, root: Path) -> dict:
    rows = [json.loads(line) for line in (source / "train.jsonl").read_text().splitlines() if line.strip()]
    path = root / "million.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(1_000_000):
            row = rows[index % len(rows)]
            handle.write(json.dumps({**row, "id": f"m{index:07d}-{row['id']}"}) + "\n")
    result = subprocess.run(
        [sys.executable, "-c", MANIFEST_CHILD, str(path)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "an4")
    parser.add_argument("--hours", default="1,10,100")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--workers-hours",
        type=float,
        default=None,
        help="corpus size of the 2-workers / 1-worker comparison (default: the second --hours size)",
    )
    parser.add_argument("--only-workers", action="store_true", help="measure only the worker comparison")
    args = parser.parse_args()
    set_threads(0)
    hours = [float(value) for value in args.hours.split(",")]
    workers_hours = args.workers_hours if args.workers_hours is not None else hours[min(1, len(hours) - 1)]
    root = Path(
        args.out or tempfile.mkdtemp(prefix="scale_bench_", dir=ROOT / "runs" if (ROOT / "runs").is_dir() else None)
    )
    root.mkdir(parents=True, exist_ok=True)
    if args.only_workers:
        try:
            workers = compare_workers(args.data, root, workers_hours, args.repeat)
        finally:
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        record("scale_bench", {"extraction_workers_speedup": workers_figure(workers)})
        return
    try:
        # First, on a quiet machine: measured after the other parts, the same child process peaked
        # at ~1.35 GB instead of ~0.84 GB (a state of the machine the page cache alone does not explain).
        manifest = manifest_million(args.data, root)
        sizes = [measure_size(args.data, root, size, args.jobs, args.steps, args.repeat) for size in hours]
        smallest, largest = sizes[0], sizes[-1]
        compared = side_by_side(root / f"{hours[0]:g}h", args.repeat)
        workers = compare_workers(args.data, root, workers_hours, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    step_ratio = compared["steps_per_second"]["store"] / compared["steps_per_second"]["memory"]
    read_ratio = compared["read_frames_per_second"]["store"] / compared["read_frames_per_second"]["memory"]
    figures = {
        "training_peak_rss_ratio": figure(
            largest["training_peak_mb"] / smallest["training_peak_mb"],
            1.2,
            f"peak RSS at {largest['hours']:.0f} h / at {smallest['hours']:.0f} h",
            better="lower",
            sizes=sizes,
        ),
        "extraction_peak_rss_ratio": figure(
            largest["extraction_peak_mb"] / smallest["extraction_peak_mb"],
            1.2,
            "largest extraction process, largest / smallest size",
            better="lower",
        ),
        "extraction_workers_speedup": workers_figure(workers),
        "store_bytes_per_value": figure(largest["bytes_per_value"], 2.2, "bytes per stored value", better="lower"),
        "store_steps_ratio": figure(
            step_ratio, 0.95, "training steps/s, store / in-memory tensor", **compared["steps_per_second"]
        ),
        "store_read_ratio": figure(
            read_ratio, 0.0, "batch frames/s, store / in-memory tensor (recorded)", **compared["read_frames_per_second"]
        ),
        "manifest_1m_seconds": figure(
            manifest["seconds"], 20.0, "s to read 1M lines and build batches", better="lower", **manifest
        ),
        "manifest_1m_peak_mb": figure(manifest["peak_mb"], 1024.0, "MB", better="lower"),
    }
    record("scale_bench", figures)


if __name__ == "__main__":
    main()
