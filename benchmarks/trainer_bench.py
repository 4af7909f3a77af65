"""Trainer overhead, compute utilisation and padding waste, per architecture, on a real recipe.

    python benchmarks/trainer_bench.py [--recipe an4] [--models dnn,cnn,...] [--steps 30] [--repeat 2]
                                       [--pass-seconds S]

For each model, in this process, side by side:

- trainer: ``asrbench train`` itself (features from the cache, length buckets, collation with
  SpecAugment in its data-loader worker, clipping, schedule, progress bar, logging) stopped after
  ``--steps`` optimizer steps; its steps/s comes from the epoch's ``loop_steps / loop_seconds``
  in metrics.jsonl (the dev pass is not part of it);
- bare loop: the same first ``--steps`` batches of the same epoch, collated beforehand with the
  same seeds, then only forward + backward + optimizer step, timed over the same steps.

Both sides are timed warm: one untimed pass of the bare loop over the same batches (a throwaway
model of the same architecture) comes first, since the first pass over new batch shapes pays
one-off costs (allocator growth, oneDNN kernel creation) of about 10% here; the trainer's steps
run in the same process on the same batch shapes, so that pass warms both sides. Then trainer and
bare loop alternate ``--repeat`` times, the trainer first, and each side keeps its fastest run: the
machine's speed drifts by several percent between minutes, more than the overhead measured.
With ``--pass-seconds S`` a model's warm-up pass stops once it has run S seconds (and at least
``MIN_STEPS`` batches), and both sides are timed on the batches it ran: every pass then lasts
about S seconds (a little less warm), so the slow recurrent models cost no more than the fast ones
(``make bench`` uses 6 s, against 5 to 15 s for 30 steps on the 2-core AMD EPYC). The
``--flops-models`` keep ``--steps``: their utilisation is the trainer's steady rate, which a short
pass understates (the trainer's first steps cost more).
The bare loop's training data is loaded once for the models that share it (the recipe's do).
  Target: trainer / bare >= 0.95.

Compute utilisation (``--flops-models``, default transformer and conformer): the matmul and
convolution FLOPs of one training step (forward + backward, counted by
``torch.utils.flop_counter.FlopCounterMode`` on a typical batch) times the trainer's steps/s,
divided by this machine's float32 matmul rate measured here (2048 x 2048 ``torch.mm``).
Target >= 0.5. Padding: the fraction of padded frames over one epoch of the recipe's batches
(target <= 10%).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _common import best_time, figure, record, set_threads

MIN_STEPS = 12  # --pass-seconds never times fewer batches than this


def matmul_flops_per_second(size: int = 2048, repeat: int = 5, dtype=None) -> float:
    """This machine's ``torch.mm`` rate on (size, size) matrices of ``dtype`` (float32 by default)."""
    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    return 2 * size**3 / best_time(lambda: torch.mm(a, b), repeat)


def step_overrides(steps: int, threads: int, extra: list[str]) -> list[str]:
    """A run of ``steps`` optimizer steps on ``threads`` threads, no budget or early stop, then ``extra``."""
    return [
        f"train.max_steps={steps}",
        "train.patience=0",
        "train.max_minutes=0",
        f"train.num_threads={threads}",
        *extra,
    ]


def trainer_run(recipe: str, name: str, run_dir: Path, overrides: list[str]) -> float:
    """``asrbench train`` end to end; -> its batch loop's steps/s."""
    from asrbench.runs import rundir
    from asrbench.training.trainer import train

    shutil.rmtree(run_dir, ignore_errors=True)
    train(recipe, name, run_dir, overrides=overrides)
    row = rundir.read_metrics(run_dir)[-1]
    return row["loop_steps"] / row["loop_seconds"]


def bare_run(config, vocab: int, collated: list, stop_after: float = 0.0) -> tuple[float, int, object]:
    """Forward + backward + AdamW step over pre-collated batches, fresh model; -> (steps/s, batches
    run, model). With ``stop_after`` > 0 the pass ends after the first batch that brings its time
    to that many seconds, if at least ``MIN_STEPS`` batches have run."""
    import torch

    from asrbench.models import build_model
    from asrbench.training.state import seed_everything

    tc = config.train
    seed_everything(tc.seed)
    model = build_model(config.model.name, config.model.options, config.features.dim(), vocab)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start = time.perf_counter()
    done = 0
    for batch in collated:
        loss = model.compute_loss(batch.features, batch.feature_lengths, batch.targets, batch.target_lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += 1
        if stop_after > 0 and done >= MIN_STEPS and time.perf_counter() - start >= stop_after:
            break
    return done / (time.perf_counter() - start), done, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="asrbench/recipe/an4.yaml")
    parser.add_argument("--models", default="dnn,cnn,lstm,gru,crdnn,transformer,conformer")
    parser.add_argument("--flops-models", default="transformer,conformer")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=2, help="Timed trainer and bare runs, alternating; best of each.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default).")
    parser.add_argument(
        "--pass-seconds",
        type=float,
        default=0.0,
        help="Time a slow model on fewer batches, so that each timed pass lasts about this long (0: --steps).",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra recipe overrides for both sides (repeatable), e.g. train.data_workers=0.",
    )
    parser.add_argument("--out", default=None, help="Scratch dir for the trainer's run dirs (default: a temp dir).")
    args = parser.parse_args()
    threads = set_threads(args.threads)

    from asrbench.data.batching import BucketBatchSampler, Collator, EpochBatches
    from asrbench.data.pipeline import load_training_data
    from asrbench.recipe.config import resolve

    scratch = Path(args.out or tempfile.mkdtemp(prefix="trainer_bench_"))
    peak_flops = matmul_flops_per_second()
    figures, details = {}, {}
    loaded: dict = {}  # the last model's training data, by what decides it
    padding = None
    for name in args.models.split(","):
        began = time.perf_counter()
        overrides = step_overrides(args.steps, threads, args.set)
        config = resolve(args.recipe, name, overrides)
        key = repr((config.data, config.features, config.augment, config.tokenizer))
        if key not in loaded:  # the recipe's models share their training data: loaded once
            loaded.clear()
            loaded[key] = load_training_data(config)
        data = loaded[key]
        tc = config.train

        # The bare loop's batches: epoch 0's first, with the same augmentation seeds.
        sampler = BucketBatchSampler(data.train.lengths.tolist(), tc.batch_frames, tc.max_batch_size, True, tc.seed)
        sampler.set_epoch(0)
        batches = sampler.batches()
        dataset = EpochBatches(Collator(data.train, data.train_tokens, data.cmvn, config.augment), sampler, tc.seed)
        collated = [dataset[(0, 1, i)] for i in range(min(args.steps, len(batches)))]
        vocab = len(data.tokenizer)

        # An untimed pass warms the process (allocator, oneDNN's kernels for these batch shapes)
        # for both sides; then the two alternate --repeat times and each keeps its best, so that
        # drift in the machine's speed hits both sides alike.
        # Not the utilisation models: their figure is the trainer's steady rate, which a short pass
        # understates (the conformer measured 0.89 of the bare loop on 17 steps, 1.02 on 30). The
        # others, with --pass-seconds, warm up on the batches that fit in that time and are timed
        # on exactly those.
        flops_model = name in args.flops_models.split(",")
        _, steps, _ = bare_run(config, vocab, collated, 0.0 if flops_model else args.pass_seconds)
        if steps < len(collated):
            collated = collated[:steps]
            overrides = step_overrides(steps, threads, args.set)
        warmed = time.perf_counter()
        trainer_speeds, bare_speeds = [], []
        for attempt in range(args.repeat):
            trainer_speeds.append(trainer_run(args.recipe, name, scratch / f"{name}-timed{attempt}", overrides))
            speed, _, model = bare_run(config, vocab, collated)
            bare_speeds.append(speed)
        trainer_steps_per_second, bare_steps_per_second = max(trainer_speeds), max(bare_speeds)
        ratio = trainer_steps_per_second / bare_steps_per_second
        figures[f"trainer_overhead_{name}"] = figure(
            ratio,
            0.95,
            "trainer / bare loop steps/s",
            trainer_steps_per_second=trainer_steps_per_second,
            bare_steps_per_second=bare_steps_per_second,
        )

        if name in args.flops_models.split(","):
            from torch.utils.flop_counter import FlopCounterMode

            batch = collated[len(collated) // 2]
            with FlopCounterMode(display=False) as counter:
                loss = model.compute_loss(batch.features, batch.feature_lengths, batch.targets, batch.target_lengths)
                loss.backward()
            model.zero_grad(set_to_none=True)
            step_flops = counter.get_total_flops()
            achieved = step_flops * trainer_steps_per_second
            figures[f"compute_utilisation_{name}"] = figure(
                achieved / peak_flops,
                0.5,
                "of torch matmul FLOP/s",
                step_gflops=step_flops / 1e9,
                achieved_gflops_per_second=achieved / 1e9,
                matmul_gflops_per_second=peak_flops / 1e9,
                batch_shape=list(batch.features.shape),
            )
        if padding is None:
            lengths = data.train.lengths.tolist()
            padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
            padding = 1 - sum(lengths) / padded
            figures["padding_fraction"] = figure(
                padding, 0.10, "padded / all frames", better="lower", batches=len(batches), batch_frames=tc.batch_frames
            )
        details[name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "steps": len(collated),
            # wall seconds: loading and the warm-up, then the timed passes (and the trainer's start-up and dev pass)
            "seconds": {"warm_up": warmed - began, "timed": time.perf_counter() - warmed},
        }
        del model
    if not args.out:
        shutil.rmtree(scratch, ignore_errors=True)
    record(
        "trainer_bench",
        figures,
        {
            "recipe": args.recipe,
            "steps": args.steps,
            "pass_seconds": args.pass_seconds,
            "threads": threads,
            "models": details,
        },
    )


if __name__ == "__main__":
    main()
