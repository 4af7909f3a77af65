"""bf16 against fp32 training on the CPU: steps/s, compute utilisation against each peak, dev CER.

    python benchmarks/precision_bench.py [--recipe asrbench/recipe/an4.yaml] [--models conformer,transformer]
                                         [--steps 30] [--repeat 2] [--threads 1]
    python benchmarks/precision_bench.py --quality --models conformer --epochs 3 --seeds 1,2

Speed (default): for each model, ``asrbench train`` (the trainer, as ``trainer_bench.py`` runs it)
stopped after ``--steps`` optimizer steps at the recipe's batch size, with ``train.precision`` fp32
and bf16 (autocast to bfloat16 on the CPU), after one untimed warm-up run of each; then the two
alternate ``--repeat`` times and each keeps its fastest batch loop (metrics.jsonl's ``loop_steps /
loop_seconds``: no dev pass). The figure is bf16 steps/s / fp32 steps/s. The issue expects >= 1.5
for the conformer on CPUs with AMX; the target recorded is 1.5 where the CPU has AMX, 1.0 where it
has AVX512-BF16 only (bf16 must at least not lose), and none where bf16 is emulated (the trainer
warns there). Compute utilisation: one training step's matmul/convolution FLOPs (counted in
float32 by ``torch.utils.flop_counter``; bf16 does the same FLOPs) times the steps/s, divided by
this machine's 2048 x 2048 ``torch.mm`` rate in float32 and in bfloat16: each precision against
its own peak, and bf16 against the fp32 peak too.

Quality (``--quality``): the recipe trained ``--epochs`` epochs (no time budget) for every seed of
``--seeds`` in fp32 and in bf16; each run's best dev CER. bf16 is "within noise" when the
difference of the two means is no larger than the larger spread between one precision's seeds
(a two-seed comparison, as the issue asks: a coarse test, stated as such).

The CPU model and its flags (``cpu_flags``: avx512_bf16, amx_bf16, ...) are in every record's
environment, and the bf16 hardware (amx, avx512_bf16, emulated) with the figures.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _common import figure, record, set_threads
from step_profile import collated_batches
from trainer_bench import matmul_flops_per_second, step_overrides, trainer_run

PRECISIONS = ("fp32", "bf16")


def speed_target(hardware: str | None) -> float | None:
    """bf16 / fp32 steps/s expected of this CPU: 1.5 with AMX, 1.0 with AVX512-BF16, none emulated."""
    return {"amx": 1.5, "avx512_bf16": 1.0}.get(hardware or "")


def within_noise(cers: dict[str, list[float]]) -> tuple[bool, float, float]:
    """(bf16 within noise of fp32, mean difference bf16 - fp32, noise): noise is the larger spread
    between one precision's seeds."""
    means = {p: sum(values) / len(values) for p, values in cers.items()}
    noise = max(max(values) - min(values) for values in cers.values())
    difference = means["bf16"] - means["fp32"]
    return abs(difference) <= noise, difference, noise


def step_flops(recipe: str, name: str, overrides: list[str]) -> tuple[float, list[int]]:
    """Forward + backward FLOPs of one typical training batch of the recipe (float32 count)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from asrbench.models import build_model

    config, vocab, (batch,) = collated_batches(recipe, name, 1, overrides, middle=True)
    model = build_model(config.model.name, config.model.options, config.features.dim(), vocab)
    model.train()
    with FlopCounterMode(display=False) as counter:
        model.compute_loss(batch.features, batch.feature_lengths, batch.targets, batch.target_lengths).backward()
    del model
    torch.set_grad_enabled(True)
    return counter.get_total_flops(), list(batch.features.shape)


def measure_speed(args, threads: int, scratch: Path, hardware: str | None) -> dict[str, dict]:
    import torch

    peaks = {"fp32": matmul_flops_per_second(), "bf16": matmul_flops_per_second(dtype=torch.bfloat16)}
    figures = {}
    for name in args.models.split(","):
        base = step_overrides(args.steps, threads, args.set)
        overrides = {p: [*base, f"train.precision={p}"] for p in PRECISIONS}
        for precision in PRECISIONS:  # untimed: allocator growth, oneDNN's kernels for these shapes
            trainer_run(args.recipe, name, scratch / f"{name}-{precision}-warm-up", overrides[precision])
        speeds: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        for attempt in range(args.repeat):
            for precision in PRECISIONS:
                run_dir = scratch / f"{name}-{precision}-{attempt}"
                speeds[precision].append(trainer_run(args.recipe, name, run_dir, overrides[precision]))
        best = {p: max(values) for p, values in speeds.items()}
        flops, shape = step_flops(args.recipe, name, base)
        utilisation = {
            "fp32_of_fp32_peak": flops * best["fp32"] / peaks["fp32"],
            "bf16_of_bf16_peak": flops * best["bf16"] / peaks["bf16"],
            "bf16_of_fp32_peak": flops * best["bf16"] / peaks["fp32"],
        }
        target = speed_target(hardware)
        details = {
            "fp32_steps_per_second": best["fp32"],
            "bf16_steps_per_second": best["bf16"],
            "bf16_hardware": hardware,
            "step_gflops": flops / 1e9,
            "batch_shape": shape,
            "matmul_gflops_per_second": {p: peak / 1e9 for p, peak in peaks.items()},
            "utilisation": utilisation,
        }
        figures[f"bf16_speedup_{name}"] = figure(
            best["bf16"] / best["fp32"],
            target if target is not None else 0.0,
            "bf16 / fp32 steps/s",
            **details,
            note=None if target is not None else f"bf16 is {hardware or 'of unknown support'} here: no speed expected",
        )
    return figures


def measure_quality(args, threads: int, scratch: Path) -> dict[str, dict]:
    from asrbench.runs import rundir

    figures = {}
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for name in args.models.split(","):
        cers: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        for seed in seeds:
            for precision in PRECISIONS:
                run_dir = scratch / f"{name}-quality-{precision}-seed{seed}"
                overrides = [
                    f"train.epochs={args.epochs}",
                    "train.max_minutes=0",
                    "train.patience=0",
                    f"train.seed={seed}",
                    f"train.precision={precision}",
                    f"train.num_threads={threads}",
                    *args.set,
                ]
                trainer_run(args.recipe, name, run_dir, overrides)
                cers[precision].append(min(row["dev_cer"] for row in rundir.read_metrics(run_dir)))
        ok, difference, noise = within_noise(cers)
        figures[f"bf16_dev_cer_{name}"] = figure(
            abs(difference),
            noise,
            "|bf16 - fp32| mean best dev CER, points",
            better="lower",
            difference=difference,
            within_noise=ok,
            dev_cer=cers,
            seeds=seeds,
            epochs=args.epochs,
            noise="the larger spread between one precision's seeds",
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="asrbench/recipe/an4.yaml")
    parser.add_argument("--models", default="conformer,transformer")
    parser.add_argument("--steps", type=int, default=30, help="Optimizer steps per timed run.")
    parser.add_argument("--repeat", type=int, default=2, help="Timed runs per precision, alternating; best of each.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads.")
    parser.add_argument("--quality", action="store_true", help="Dev CER after short runs instead of speed.")
    parser.add_argument("--epochs", type=int, default=3, help="--quality: epochs per run.")
    parser.add_argument("--seeds", default="1,2", help="--quality: training seeds.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Extra recipe overrides.")
    parser.add_argument("--out", default=None, help="Scratch dir for the run dirs (default: a temp dir, removed).")
    args = parser.parse_args()
    threads = set_threads(args.threads)

    import torch

    from asrbench.env import bf16_hardware

    hardware = bf16_hardware(torch.device("cpu"))
    scratch = Path(args.out or tempfile.mkdtemp(prefix="precision_bench_"))
    try:
        if args.quality:
            figures = measure_quality(args, threads, scratch)
        else:
            figures = measure_speed(args, threads, scratch, hardware)
    finally:
        if not args.out:
            shutil.rmtree(scratch, ignore_errors=True)
    record(
        "precision_bench",
        figures,
        {
            "recipe": args.recipe,
            "mode": "quality" if args.quality else "speed",
            "steps": args.steps,
            "threads": threads,
            "bf16_hardware": hardware,
        },
    )


if __name__ == "__main__":
    main()
