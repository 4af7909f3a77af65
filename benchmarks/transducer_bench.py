"""Transducer (RNN-T) cost on AN4: the loss against the encoder, a training step's memory, decoding speed.

    python benchmarks/transducer_bench.py [--recipe asrbench/recipe/an4.yaml] [--model conformer_transducer]
                                          [--run RUN_DIR] [--batches 10] [--threads 2] [--repeat 3]
                                          [--split test] [--max-utterances N]
    python benchmarks/transducer_bench.py --batches 2 --repeat 1 --threads 1     # a quick check

The loss and memory figures use ``--model`` built from the recipe's entry for it (its config
defaults when the recipe has none), freshly initialised with the recipe's seed: their cost does
not depend on the weights. All in this process, with ``--threads`` torch threads, except the
memory step:

- Loss cost, on ``--batches`` real training batches of the recipe (``train.batch_frames``): epoch
  0's batches as the trainer makes them (length buckets, speed-perturbed copies, SpecAugment
  seeded by ``batch_seed``, so the batches are the same every run), picked evenly over the
  epoch's batches ordered by joint-tensor size B x T x (U+1), so their median is a median batch.
  Per batch, forward + backward of (a) the encoder alone: ``encode``, then the model's auxiliary
  CTC head and ``ctc_loss`` (``encoded.square().mean()`` without a CTC branch), which costs next
  to nothing beside the encoder and is also part of (b); (b) the whole ``compute_loss``. One
  untimed pass first (oneDNN's kernels for new shapes), then ``--repeat`` timed passes with (a)
  and (b) alternating; each keeps its fastest. Figures: ``loss_ratio = (b - a) / a`` over the
  per-batch medians, what the predictor, the joiner and the RNN-T loss add relative to the
  encoder (target <= 2.0), and ``total_ratio = b / a`` (target <= 3.0). Beside them, ``rnnt_loss``
  alone (forward + backward) on each batch's real (B, T', U+1, V) joint tensor, as a leaf.
- Memory: one training step (``compute_loss``, backward, AdamW step) on the epoch's batch with the
  largest joint tensor, in a fresh ``python`` process that loads only the model and that batch;
  its peak resident set (VmHWM, Linux) against 4 GB, with its resident set before the step and
  the joint tensor's bytes (``joint_memory_bytes``; the step holds about three of them). Beside
  it, this process's own peak so far: the training data loaded and the loss passes run, closer
  to what the trainer holds (``benchmarks/memory_bench.py`` measures the trainer itself).
- Decoding: the test split with ``asrbench.decoding.decode.recognize`` (features from the cache, the run's
  ``eval_batch_frames`` batches, one warm-up batch) and the model's own searchers,
  ``build_searcher(model, tokenizer, DecodeOptions(beam=1 | 4))``: greedy search and modified beam search,
  best of ``--repeat``. RTFx = audio seconds / (network + search) seconds; target greedy >= 100x
  and beam 4 >= 20x real time. With ``--run`` the run's best checkpoint decodes (WERs reported);
  without, the randomly initialised model does, and every decoding figure says "untrained": its
  speed is not representative (it emits as many symbols as chance has it, not as a trained one).

Prints a table, then one JSON line, appended to ``benchmarks/results/transducer_bench.jsonl``
(with the CPU model, torch version and git commit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, figure, record, set_threads

LOSS_RATIO_TARGET = 2.0  # (transducer - encoder) / encoder
MEMORY_TARGET_MB = 4000.0
RTFX_TARGETS = {1: 100.0, 4: 20.0}  # beam -> x real time

# One training step in a fresh process: the model and one batch, nothing else (argv: the file
# torch.save wrote, torch threads); prints its resident set before the step and its peak, in MB.
# The peak is the kernel's VmHWM of this process's memory: not ru_maxrss, which after exec keeps
# the high-water mark of the process that spawned it (here, this benchmark with the training data).
MEMORY_STEP = """
import json, sys
import torch
from asrbench.models import build_model
from asrbench.training.state import seed_everything

def status_mb(key):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) / 1024 for line in handle if line.startswith(key + ":"))

spec = torch.load(sys.argv[1], weights_only=True)
torch.set_num_threads(int(sys.argv[2]))
seed_everything(spec["seed"])
model = build_model(spec["name"], json.loads(spec["options"]), spec["input_dim"], spec["vocab"])
model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
before = status_mb("VmRSS")
loss = model.compute_loss(spec["features"], spec["feature_lengths"], spec["targets"], spec["target_lengths"])
optimizer.zero_grad(set_to_none=True)
loss.backward()
optimizer.step()
print(json.dumps({"rss_before_step_mb": before, "peak_rss_mb": status_mb("VmHWM")}))
"""


def resolve_config(recipe: str, model: str):
    """The recipe resolved for ``model``; a recipe without an entry for it gets an empty one (the
    model's config defaults), through a copy of the recipe in a temp file."""
    import yaml

    from asrbench.recipe.config import load_yaml, recipe_models, resolve

    if model in recipe_models(load_yaml(recipe), recipe):
        return resolve(recipe, model), "recipe"
    values = load_yaml(recipe)
    values["models"] = {model: {}}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(values, handle)
    try:
        return resolve(handle.name, model), "model defaults"
    finally:
        os.unlink(handle.name)


def joint_sizes(batches: list[list[int]], lengths: list[int], token_lengths: list[int]) -> list[int]:
    """B x T_max x (U_max + 1) of each batch: proportional to its joint tensor (T' = T / subsampling)."""
    return [len(b) * max(lengths[i] for i in b) * (max(token_lengths[i] for i in b) + 1) for b in batches]


def evenly_spread(order: list[int], count: int) -> list[int]:
    """``count`` entries of ``order`` at evenly spaced quantiles (the middle of each of ``count`` slices)."""
    count = min(count, len(order))
    return [order[int((k + 0.5) * len(order) / count)] for k in range(count)]


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def loss_cost(model, collated: list, repeat: int) -> dict:
    """Per batch, fastest of ``repeat`` forward + backward passes: encoder (+ CTC) alone, the whole
    transducer loss, and ``rnnt_loss`` alone on the batch's joint tensor."""
    import torch
    from torch import nn

    from asrbench.models.ctc import ctc_loss
    from asrbench.models.rnnt_loss import joint_memory_bytes, rnnt_loss

    def encoder_only(batch):
        encoded, lengths = model.encode(batch.features, batch.feature_lengths)
        if model.ctc_head is not None:
            loss = ctc_loss(model.ctc_head(encoded), lengths, batch.targets, batch.target_lengths)
        else:
            loss = encoded.square().mean()
        loss.backward()

    def transducer(batch):
        model.compute_loss(batch.features, batch.feature_lengths, batch.targets, batch.target_lengths).backward()

    rows = []
    for batch in collated:

        def step(function, batch=batch):
            model.zero_grad(set_to_none=True)
            return timed(lambda: function(batch))

        step(encoder_only)  # warm-up: this batch's shapes
        step(transducer)
        encoder_times, transducer_times = [], []
        for _ in range(repeat):
            encoder_times.append(step(encoder_only))
            transducer_times.append(step(transducer))
        model.zero_grad(set_to_none=True)

        with torch.no_grad():  # the batch's real joint tensor, as a leaf of its own
            encoded, lengths = model.encode(batch.features, batch.feature_lengths)
            padded = nn.utils.rnn.pad_sequence(
                list(batch.targets.split(batch.target_lengths.tolist())), batch_first=True
            )
            joint = model.joint_log_probs(encoded, padded)
        joint.requires_grad_(True)

        def loss_alone(joint=joint, padded=padded, lengths=lengths, batch=batch):
            joint.grad = None
            rnnt_loss(joint, padded, lengths, batch.target_lengths, reduction="sum").backward()

        loss_alone()
        loss_seconds = min(timed(loss_alone) for _ in range(repeat))
        size, frames, positions, vocab = joint.shape
        rows.append(
            {
                "shape": [size, batch.features.size(1), frames, positions - 1],
                "encoder_seconds": min(encoder_times),
                "transducer_seconds": min(transducer_times),
                "rnnt_loss_seconds": loss_seconds,
                "joint_mb": joint_memory_bytes(size, frames, positions - 1, vocab) / 2**20,
            }
        )
        del joint
    return {"rows": rows}


def step_memory(config, vocab: int, batch, threads: int) -> dict:
    """Peak resident set of one training step in a fresh process (see ``MEMORY_STEP``)."""
    import torch

    tc = config.train
    with tempfile.TemporaryDirectory(prefix="transducer_bench_") as scratch:
        path = Path(scratch) / "step.pt"
        torch.save(
            {
                "name": config.model.name,
                "options": json.dumps(config.model.options),
                "input_dim": config.features.dim(),
                "vocab": vocab,
                "seed": tc.seed,
                "lr": tc.lr,
                "weight_decay": tc.weight_decay,
                "features": batch.features,
                "feature_lengths": batch.feature_lengths,
                "targets": batch.targets,
                "target_lengths": batch.target_lengths,
            },
            path,
        )
        process = subprocess.run(
            [sys.executable, "-c", MEMORY_STEP, str(path), str(threads)], cwd=ROOT, capture_output=True, text=True
        )
    if process.returncode != 0:
        raise SystemExit(f"memory step failed: {(process.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def own_peak_mb() -> float | None:
    """This process's peak resident set so far (VmHWM), in MB; None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) / 1024 for line in handle if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def decoding_speed(model, tokenizer, cmvn, features, batch_frames: int, repeat: int) -> dict[int, dict]:
    """beam -> RTFx (network + search), search RTFx, WER, tokens emitted; best of ``repeat`` passes."""
    import torch

    from asrbench.decoding.decode import recognize
    from asrbench.decoding.search_table import build_searcher
    from asrbench.decoding.searchers import DecodeOptions
    from asrbench.scoring.metrics import error_rates

    references = [utt.text for utt in features.utterances]
    results = {}
    for beam in RTFX_TARGETS:
        searcher = build_searcher(model, tokenizer, DecodeOptions(beam=beam))
        passes = [
            recognize(
                model, features, cmvn, tokenizer, torch.device("cpu"), batch_frames, warmup=True, searcher=searcher
            )
            for _ in range(repeat)
        ]
        best = min(passes, key=lambda recognition: recognition.model_seconds)
        results[beam] = {
            "rtfx": best.audio_seconds / best.model_seconds,
            "search_rtfx": best.audio_seconds / best.search_seconds,
            "seconds": best.model_seconds,
            "search_seconds": best.search_seconds,
            "wer": error_rates(references, best.hypotheses).wer,
            "search": searcher.description,
            "tokens_emitted": sum(len(ids) for ids in best.token_ids),
        }
    return results


def print_table(figures: dict[str, dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("figure", "value", "target", "unit", "met"):
        table.add_column(column, justify="right" if column in ("value", "target") else "left")
    for name, item in figures.items():
        sign = "≥" if item["better"] == "higher" else "≤"
        table.add_row(
            name,
            f"{item['value']:,.3g}",
            f"{sign} {item['target']:,.3g}",
            item["unit"],
            "[green]yes[/green]" if item["ok"] else "[red]no[/red]",
        )
    Console(width=140).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="asrbench/recipe/an4.yaml")
    parser.add_argument("--model", default="conformer_transducer")
    parser.add_argument(
        "--run",
        type=Path,
        help="Trained run dir of a transducer: its best checkpoint decodes (else the untrained model does).",
    )
    parser.add_argument("--batches", type=int, default=10, help="Training batches for the loss cost.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0 = torch's default).")
    parser.add_argument("--repeat", type=int, default=3, help="Timed passes of each measurement; the fastest counts.")
    parser.add_argument("--split", default="test", help="The split decoded.")
    parser.add_argument("--max-utterances", type=int, default=0, help="Decode only the first N (0 = all).")
    args = parser.parse_args()
    threads = set_threads(args.threads)

    import torch

    from asrbench.data.batching import BucketBatchSampler, Collator, EpochBatches
    from asrbench.data.features import load_features
    from asrbench.data.pipeline import load_training_data
    from asrbench.models import build_model, count_parameters
    from asrbench.models.rnnt_loss import joint_memory_bytes
    from asrbench.models.transducer import TransducerModel
    from asrbench.runs import rundir
    from asrbench.runs.checkpoint import load_model
    from asrbench.training.state import seed_everything

    loaded = None  # the trained model that decodes, loaded first so that a wrong --run fails at once
    if args.run is not None:
        loaded = load_model(rundir.require_run_dir(args.run) / rundir.BEST)
        if not isinstance(loaded.model, TransducerModel):
            raise SystemExit(f"{args.run}: {loaded.config.model.name} is not a transducer")
    config, options_from = resolve_config(args.recipe, args.model)
    data = load_training_data(config)
    tc = config.train
    vocab = len(data.tokenizer)
    seed_everything(tc.seed)
    model = build_model(config.model.name, config.model.options, config.features.dim(), vocab)
    if not isinstance(model, TransducerModel):
        raise SystemExit(f"--model {args.model} is not a transducer")
    model.train()

    # The trainer's epoch 0: its batches, collated with its augmentation seeds.
    sampler = BucketBatchSampler(data.train.lengths.tolist(), tc.batch_frames, tc.max_batch_size, True, tc.seed)
    sampler.set_epoch(0)
    batches = sampler.batches()
    dataset = EpochBatches(Collator(data.train, data.train_tokens, data.cmvn, config.augment), sampler, tc.seed)
    table = data.train_tokens
    token_lengths = (table.offsets[1:] - table.offsets[:-1])[table.rows].tolist()
    sizes = joint_sizes(batches, data.train.lengths.tolist(), token_lengths)
    by_size = sorted(range(len(batches)), key=lambda i: sizes[i])
    chosen = evenly_spread(by_size, args.batches)
    collated = [dataset[(0, 1, i)] for i in chosen]

    cost = loss_cost(model, collated, args.repeat)
    rows = cost["rows"]
    encoder = statistics.median(row["encoder_seconds"] for row in rows)
    transducer = statistics.median(row["transducer_seconds"] for row in rows)
    loss_alone = statistics.median(row["rnnt_loss_seconds"] for row in rows)
    encoder_loss = "auxiliary CTC head + ctc_loss" if model.ctc_head is not None else "encoded.square().mean()"
    name = args.model
    figures = {
        f"{name}_loss_ratio": figure(
            (transducer - encoder) / encoder,
            LOSS_RATIO_TARGET,
            "(transducer - encoder) / encoder fwd+bwd",
            better="lower",
            encoder_seconds=encoder,
            transducer_seconds=transducer,
            encoder_loss=encoder_loss,
            per_batch=[(row["transducer_seconds"] - row["encoder_seconds"]) / row["encoder_seconds"] for row in rows],
        ),
        f"{name}_total_ratio": figure(
            transducer / encoder, LOSS_RATIO_TARGET + 1, "transducer / encoder fwd+bwd", better="lower"
        ),
    }

    largest = dataset[(0, 1, by_size[-1])]
    with torch.no_grad():
        largest_frames = model.encode(largest.features, largest.feature_lengths)[0].size(1)
    longest_target = int(largest.target_lengths.max())
    memory = step_memory(config, vocab, largest, threads)
    figures[f"{name}_step_peak_rss_mb"] = figure(
        memory["peak_rss_mb"],
        MEMORY_TARGET_MB,
        "MB, one training step, fresh process",
        better="lower",
        rss_before_step_mb=memory["rss_before_step_mb"],
        step_mb=memory["peak_rss_mb"] - memory["rss_before_step_mb"],
        batch_shape=list(largest.features.shape),
        encoder_frames=largest_frames,
        longest_target=longest_target,
        joint_mb=joint_memory_bytes(len(largest.ids), largest_frames, longest_target, vocab) / 2**20,
        bench_process_peak_mb=own_peak_mb(),
    )

    # Decoding: the run's best checkpoint, or the untrained model.
    if loaded is not None:
        decoder, tokenizer, cmvn, decode_config = loaded.model, loaded.tokenizer, loaded.cmvn, loaded.config
        weights = "trained"
    else:
        decoder, tokenizer, cmvn, decode_config, weights = model, data.tokenizer, data.cmvn, config, "untrained"
    del data
    features = load_features(decode_config.data.dir, args.split, decode_config.features)
    if args.max_utterances:
        features = features.subset(list(range(min(args.max_utterances, len(features)))))
    audio_seconds = sum(utt.duration for utt in features.utterances)
    reference_tokens = sum(len(tokenizer.encode(utt.text)) for utt in features.utterances)
    decoding = decoding_speed(decoder, tokenizer, cmvn, features, decode_config.train.eval_batch_frames, args.repeat)
    unit = "x real time" + ("" if weights == "trained" else ", untrained model")
    for beam, result in decoding.items():
        label = "greedy" if beam == 1 else f"beam{beam}"
        figures[f"{name}_{label}_rtfx"] = figure(
            result.pop("rtfx"),
            RTFX_TARGETS[beam],
            unit,
            weights=weights,
            tokens_per_reference_token=result["tokens_emitted"] / max(reference_tokens, 1),
            **result,
        )

    print_table(figures, f"{name} ({weights} for decoding), {threads} threads")
    record(
        "transducer_bench",
        figures,
        {
            "recipe": args.recipe,
            "model": name,
            "options_from": options_from,
            "params": count_parameters(model),
            "threads": threads,
            "repeat": args.repeat,
            "batch_frames": tc.batch_frames,
            "loss_batches": [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows],
            "loss_batches_shape": "[B, T, T', U_max]",
            "rnnt_loss_seconds": loss_alone,
            "rnnt_loss_share": loss_alone / (transducer - encoder) if transducer > encoder else None,
            "joint_mb_max": max(row["joint_mb"] for row in rows),
            "run": str(args.run) if args.run else None,
            "weights": weights,
            "split": args.split,
            "utterances": len(features),
            "audio_seconds": audio_seconds,
            "decode_batch_frames": decode_config.train.eval_batch_frames,
        },
    )


if __name__ == "__main__":
    main()
