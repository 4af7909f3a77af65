"""Training throughput of 1 process against 2 torchrun ranks (Gloo) on this machine's CPU.

    python benchmarks/ddp_bench.py [--recipe asrbench/recipe/an4.yaml] [--model cnn] [--batches 40]

Each side runs ``asrbench train`` in a subprocess on the same recipe and stops after the same
number of batches (``--batches``: 1 rank takes one batch per step, 2 ranks take one each, so half
as many steps): 1 process with torch's default threads, then ``torchrun --nproc_per_node 2``
(torchrun gives each rank one thread). Throughput comes from the run's metrics.jsonl: utterances
and audio seconds of all ranks per second of the batch loop (no dev pass, no start-up). On a
2-core machine expect no speed-up: this checks that the distributed path works end to end and
what it costs, not that it scales (that needs more cores or GPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import figure, record

ROOT = Path(__file__).resolve().parent.parent


def run(recipe: str, model: str, ranks: int, steps: int, out: Path, extra: list[str]) -> dict:
    env = {**os.environ, "ASRBENCH_NO_PROGRESS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command = launcher + [
        "-m",
        "asrbench",
        "train",
        recipe,
        "--model",
        model,
        "--out",
        str(out),
        "--set",
        f"train.max_steps={steps}",
        "--set",
        "train.patience=0",
        "--set",
        "train.max_minutes=0",
        "--set",
        "train.epochs=1",
        *[arg for value in extra for arg in ("--set", value)],
    ]
    subprocess.run(command, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    row = rows[-1]
    return {
        "ranks": ranks,
        "steps": row["loop_steps"],
        "utterances": row["loop_utterances"],
        "audio_seconds": row["loop_audio_seconds"],
        "seconds": row["loop_seconds"],
        "samples_per_second": row["loop_utterances"] / row["loop_seconds"],
        "audio_seconds_per_second": row["loop_audio_seconds"] / row["loop_seconds"],
        "world_size": row["world_size"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="asrbench/recipe/an4.yaml")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--batches", type=int, default=40, help="Batches each side trains on (even).")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Extra recipe overrides.")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ddp_bench_"))
    try:
        # An untimed run first builds the feature caches (and warms the page cache) for both.
        run(args.recipe, args.model, 1, 2, scratch / "warm-up", args.set)
        one = run(args.recipe, args.model, 1, args.batches, scratch / "one", args.set)
        two = run(args.recipe, args.model, 2, args.batches // 2, scratch / "two", args.set)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ratio = two["samples_per_second"] / one["samples_per_second"]
    figures = {
        "ddp_two_ranks_vs_one": figure(
            ratio,
            0.0,
            "x samples/s of 1 process",
            one_rank=one,
            two_ranks=two,
            note="2 CPU cores: no speed-up expected; the target only asks it be measured",
        ),
    }
    record("ddp_bench", figures, {"recipe": args.recipe, "model": args.model, "batches": args.batches})


if __name__ == "__main__":
    main()
