"""What noise-augmented training (augment.noise) costs: collating a batch from noised audio
(on the fly: read, speed, mix, fbank) against collating it from the feature store, and against
the training step it feeds.

    python benchmarks/noise_augment_cost.py [--recipe asrbench/recipe/an4.yaml] [--model conformer]
        [--noise white,babble,noise] [--prob 0.5] [--batches 20] [--threads 1]

Over the first ``--batches`` batches of epoch 0 of the recipe (SpecAugment and speed copies as
the recipe says), in this process, side by side: collation from the store, collation with
``augment.noise`` at ``--prob`` (and at 1.0), and one forward + backward + AdamW step of
``--model`` on the same batches. A loader worker on its own core hides collation that takes less
than a step; the figure is noised collation / training step (target <= 1: one worker keeps up).
"""

from __future__ import annotations

import argparse
import time

from _common import figure, record, set_threads
from trainer_bench import bare_run


def collate_seconds(dataset, count: int) -> tuple[float, list]:
    start = time.perf_counter()
    batches = [dataset[(0, 1, index)] for index in range(count)]
    return (time.perf_counter() - start) / count, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="asrbench/recipe/an4.yaml")
    parser.add_argument("--model", default="conformer")
    parser.add_argument("--noise", default="white,babble,noise", help="augment.noise sources (comma-separated).")
    parser.add_argument("--prob", type=float, default=0.5)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    threads = set_threads(args.threads)

    from asrbench.data.batching import BucketBatchSampler, Collator, EpochBatches
    from asrbench.data.noise_augment import NoiseAugment
    from asrbench.data.pipeline import load_training_data
    from asrbench.recipe.config import resolve
    from asrbench.training.loader import noise_augment

    sources = args.noise.split(",")
    config = resolve(args.recipe, args.model, [f"augment.noise={sources}"])
    data = load_training_data(config)
    tc = config.train
    sampler = BucketBatchSampler(data.train.lengths.tolist(), tc.batch_frames, tc.max_batch_size, True, tc.seed)
    sampler.set_epoch(0)
    count = min(args.batches, len(sampler.batches()))
    timings = {}
    collated = None
    for label, prob in (("store", None), (f"noise p={args.prob:g}", args.prob), ("noise p=1", 1.0)):
        augmenter = None
        if prob is not None:
            config.augment.noise_prob = prob
            augmenter = noise_augment(config, data)
            assert isinstance(augmenter, NoiseAugment)
        dataset = EpochBatches(
            Collator(data.train, data.train_tokens, data.cmvn, config.augment, augmenter), sampler, tc.seed
        )
        collate_seconds(dataset, 2)  # warm: the babble pool, the extractor
        timings[label], batches = collate_seconds(dataset, count)
        collated = collated or batches
    bare_run(config, len(data.tokenizer), collated[:3])  # warm the kernels for these shapes
    steps_per_second, _, _ = bare_run(config, len(data.tokenizer), collated)
    step = 1.0 / steps_per_second
    noised = timings[f"noise p={args.prob:g}"]
    figures = {
        f"noise_collation_per_step_{args.model}": figure(
            noised / step,
            1.0,
            "noised collation / training step",
            better="lower",
            collate_store_s=timings["store"],
            collate_noise_s=noised,
            collate_noise_all_s=timings["noise p=1"],
            step_s=step,
            batches=count,
            sources=sources,
            prob=args.prob,
            threads=threads,
        ),
    }
    for label, seconds in timings.items():
        print(f"{label:>12}: {seconds * 1000:8.1f} ms per batch")
    print(f"{'step':>12}: {step * 1000:8.1f} ms ({args.model}, {threads} thread(s))")
    record("noise_augment_cost", figures)


if __name__ == "__main__":
    main()
