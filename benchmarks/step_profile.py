"""Where a training step's time goes: torch's profiler over a few AN4 training steps, ops by self time.

    python benchmarks/step_profile.py [--recipe asrbench/recipe/an4.yaml] [--model conformer]
                                      [--steps 8] [--precision fp32|bf16] [--threads 1] [--top 15]

The recipe's first ``--steps`` batches of epoch 0 (collated as the trainer collates them, with the
same augmentation seeds) run forward + backward + AdamW step once untimed, then again under
``torch.profiler.profile`` (CPU activities). Printed: the ``--top`` ops by self CPU time, and the
share of self time in matrix products and convolutions (``aten::mm``, ``addmm``, ``bmm``,
``baddbmm``, the oneDNN / native convolutions and their backward kernels) against everything else
(layout copies, elementwise chains, attention softmax, normalization, the optimizer). Compute
utilisation itself is ``trainer_bench.py``'s and ``precision_bench.py``'s figure; this says which
ops bound it. One JSON line with the table (``record``: ``benchmarks/results/step_profile.jsonl``).
"""

from __future__ import annotations

import argparse

from _common import figure, record, set_threads

MATMUL_OPS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
    "aten::mkldnn_convolution",
    "aten::convolution_backward",
    "aten::_convolution",
    "aten::thnn_conv2d",
    "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward",
    "aten::mkldnn_matmul",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
)


def collated_batches(recipe: str, name: str, steps: int, overrides: list[str], middle: bool = False):
    """(config, vocabulary size, epoch 0's first ``steps`` batches collated as the trainer collates
    them); with ``middle``, only the batch in the middle of the epoch (a typical one)."""
    from asrbench.data.batching import BucketBatchSampler, Collator, EpochBatches
    from asrbench.data.pipeline import load_training_data
    from asrbench.recipe.config import resolve

    config = resolve(recipe, name, overrides)
    data, tc = load_training_data(config), config.train
    sampler = BucketBatchSampler(data.train.lengths.tolist(), tc.batch_frames, tc.max_batch_size, True, tc.seed)
    sampler.set_epoch(0)
    batches = sampler.batches()
    dataset = EpochBatches(Collator(data.train, data.train_tokens, data.cmvn, config.augment), sampler, tc.seed)
    picks = [len(batches) // 2] if middle else range(min(steps, len(batches)))
    return config, len(data.tokenizer), [dataset[(0, 1, i)] for i in picks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="asrbench/recipe/an4.yaml")
    parser.add_argument("--model", default="conformer")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    threads = set_threads(args.threads)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from asrbench.models import build_model
    from asrbench.training.optimization import autocast
    from asrbench.training.state import seed_everything

    config, vocab, collated = collated_batches(args.recipe, args.model, args.steps, [])
    seed_everything(config.train.seed)
    model = build_model(config.model.name, config.model.options, config.features.dim(), vocab).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    device = torch.device("cpu")

    def steps() -> None:
        for batch in collated:
            with autocast(device, args.precision):
                loss = model.compute_loss(batch.features, batch.feature_lengths, batch.targets, batch.target_lengths)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    steps()  # warm: allocator, oneDNN's kernels for these shapes
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        steps()
    events = [event for event in profiler.key_averages() if event.self_cpu_time_total > 0]
    total = sum(event.self_cpu_time_total for event in events)
    events.sort(key=lambda event: event.self_cpu_time_total, reverse=True)
    matmul = sum(event.self_cpu_time_total for event in events if event.key in MATMUL_OPS)
    table = [
        {
            "op": event.key,
            "self_ms": event.self_cpu_time_total / 1000,
            "share": event.self_cpu_time_total / total,
            "calls": event.count,
            "matmul": event.key in MATMUL_OPS,
        }
        for event in events[: args.top]
    ]
    print(f"{args.model} {args.precision}, {len(collated)} steps, {threads} thread(s): self time by op")
    for row in table:
        mark = "*" if row["matmul"] else " "
        print(f"  {mark} {row['op'][:60]:60} {row['self_ms']:9.1f} ms {100 * row['share']:5.1f}%  {row['calls']:6d}")
    print(f"  matrix products and convolutions (*): {100 * matmul / total:.1f}% of self time")
    record(
        "step_profile",
        {
            "matmul_share": figure(
                matmul / total, 0.5, "share of a training step's self CPU time in matmul/conv ops", top=table
            )
        },
        {"recipe": args.recipe, "model": args.model, "precision": args.precision, "steps": len(collated)},
    )


if __name__ == "__main__":
    main()
