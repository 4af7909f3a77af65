"""Encoders at equal parameters, side by side in one process: training steps/s, RTFx and GFLOPs/s.

    python benchmarks/encoder_speed.py [--recipe asrbench/recipe/an4.yaml]
        [--models conformer,fast_conformer,e_branchformer,zipformer] [--steps 12] [--repeat 2] [--threads 1]

Every model is the recipe's entry (the AN4 recipe sizes issue 30's encoders to the conformer's
3.0M under CTC), and the first model is the baseline the others are divided by. For each:

- training steps/s: forward + backward + AdamW step over the same first ``--steps`` batches of
  epoch 0 of the recipe's training data (SpecAugment and speed perturbation as the recipe has
  them, collated beforehand: the trainer's own overhead is trainer_bench's figure);
- RTFx as the Open ASR Leaderboard defines it (``asrbench.decoding.speed.end_to_end_speed``, the
  figure ``decode`` writes as ``rtfx_end_to_end``): the dev split's audio -> filterbanks, CMVN,
  padding, the network, the greedy search of the model's head and the detokenization, over
  decode's batches (``train.eval_batch_frames``) after one warm-up batch. The models are untrained
  (seeded): greedy CTC search costs the same per frame whatever the weights, so the speed is the
  trained model's;
- forward GFLOPs per audio second (``asrbench.models.cost``, the figure ``asrbench models`` shows).

The models take turns ``--repeat`` times and each keeps its best time, so that the machine's
drift between minutes hits every model alike. Targets (issue 30): FastConformer's training
steps/s and RTFx each >= 2x the conformer's, the Zipformer's GFLOPs/s <= 0.5x the conformer's,
each at parameters within 10% of the conformer's.
"""

from __future__ import annotations

import argparse

from _common import figure, record, set_threads
from trainer_bench import bare_run  # forward + backward + AdamW over collated batches, freshly seeded

TARGETS = {  # (model, measure) -> (target ratio against the baseline, better)
    ("fast_conformer", "train"): (2.0, "higher"),
    ("fast_conformer", "rtfx"): (2.0, "higher"),
    ("zipformer", "gflops"): (0.5, "lower"),
}


def prepare(recipe: str, name: str, steps: int, threads: int, loaded: dict | None = None):
    """The model's config, training batches (collated) and decode batches of dev. ``loaded`` keeps
    the training data by what decides it, so that models sharing it (the recipe's do) load it once."""
    from asrbench.data.batching import BucketBatchSampler, Collator, EpochBatches
    from asrbench.data.pipeline import load_training_data
    from asrbench.decoding.decode import batches_of
    from asrbench.recipe.config import resolve

    config = resolve(recipe, name, [f"train.num_threads={threads}", "train.max_minutes=0"])
    key = repr((config.data, config.features, config.augment, config.tokenizer))
    loaded = {} if loaded is None else loaded
    if key not in loaded:
        loaded[key] = load_training_data(config)
    data = loaded[key]
    tc = config.train
    sampler = BucketBatchSampler(data.train.lengths.tolist(), tc.batch_frames, tc.max_batch_size, True, tc.seed)
    sampler.set_epoch(0)
    dataset = EpochBatches(Collator(data.train, data.train_tokens, data.cmvn, config.augment), sampler, tc.seed)
    collated = [dataset[(0, 1, i)] for i in range(min(steps, len(sampler.batches())))]
    dev_batches = batches_of(data.dev, data.cmvn, tc.eval_batch_frames)[1]
    return config, data, collated, dev_batches


def decode_speed(model, config, data, batches: list) -> dict:
    """``end_to_end_speed`` of dev with the head's greedy search."""
    import torch

    from asrbench.decoding.search_table import greedy_searcher
    from asrbench.decoding.speed import end_to_end_speed

    return end_to_end_speed(
        model,
        greedy_searcher(model),
        data.dev.utterances,
        batches,
        config.features,
        data.cmvn,
        data.tokenizer,
        torch.device("cpu"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="asrbench/recipe/an4.yaml")
    parser.add_argument("--models", default="conformer,fast_conformer,e_branchformer,zipformer")
    parser.add_argument("--steps", type=int, default=12, help="Training batches timed per model.")
    parser.add_argument("--repeat", type=int, default=2, help="Timed turns per model; each keeps its best.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default).")
    args = parser.parse_args()
    threads = set_threads(args.threads)

    from asrbench.models.cost import forward_gflops_per_second

    names = [name.strip() for name in args.models.split(",") if name.strip()]
    loaded: dict = {}
    prepared = {name: prepare(args.recipe, name, args.steps, threads, loaded) for name in names}
    train_best = dict.fromkeys(names, 0.0)
    rtfx_best = dict.fromkeys(names, 0.0)
    details: dict[str, dict] = {}
    for turn in range(args.repeat + 1):  # turn 0 warms every model up, untimed
        for name in names:
            config, data, collated, dev_batches = prepared[name]
            speed, _, model = bare_run(config, len(data.tokenizer), collated)
            rtfx = decode_speed(model, config, data, dev_batches)["rtfx_end_to_end"]
            if turn:
                train_best[name] = max(train_best[name], speed)
                rtfx_best[name] = max(rtfx_best[name], rtfx)
            if name not in details:
                details[name] = {
                    "params": sum(p.numel() for p in model.parameters()),
                    "gflops_per_second": forward_gflops_per_second(
                        model, config.features.dim(), config.features.frame_shift_ms, config.features.frame_length_ms
                    ),
                    "train_batches": len(collated),
                    "dev_batches": len(dev_batches),
                }
    base = names[0]
    figures = {}
    for name in names:
        details[name].update(train_steps_per_second=train_best[name], rtfx_end_to_end=rtfx_best[name])
        if name == base:
            continue
        ratios = {
            "train": train_best[name] / train_best[base],
            "rtfx": rtfx_best[name] / rtfx_best[base],
            "gflops": details[name]["gflops_per_second"] / details[base]["gflops_per_second"],
        }
        params_ratio = details[name]["params"] / details[base]["params"]
        units = {"train": "x training steps/s", "rtfx": "x RTFx (end to end)", "gflops": "x GFLOPs/s"}
        for measure, ratio in ratios.items():
            target, better = TARGETS.get((name, measure), (None, "higher"))
            if target is None:
                continue
            figures[f"{name}_{measure}_vs_{base}"] = figure(
                ratio,
                target,
                f"{units[measure]} of the {base}'s",
                better,
                params_ratio=params_ratio,
                equal_params=abs(params_ratio - 1) <= 0.10,
            )
        details[name]["vs_" + base] = {**ratios, "params": params_ratio}
    record(
        "encoder_speed",
        figures,
        {"recipe": args.recipe, "threads": threads, "steps": args.steps, "repeat": args.repeat, "models": details},
    )


if __name__ == "__main__":
    main()
