"""K-fold cross-validation on a corpus's non-test utterances: compare recipe settings without the test set.

    python benchmarks/experiments/cross_validate.py yesno --out runs/cv [--folds 5] [--models dnn,cnn]
        [--set train.average_best=5 ...] [--tag NAME] [--threads 1] [--jobs 2] [--attention-beam 10]
        [--also-average 5] [--lexicon-beam 10]

A corpus as small as yesno has a dev split of 6 utterances, on which every model reaches 0% CER:
it cannot tell two recipes apart. This script pools the recipe's train and dev splits (sorted by
id) and cuts them into K folds. Run k trains on the other folds except fold k+1, picks its
checkpoints on fold k+1 (its dev split) and is scored on fold k, which it never saw while training
or selecting. The held-out word and character errors of the K runs are pooled, so every non-test
utterance is scored exactly once. The test split is never read.

With ``train.average_best`` > 1 each run is scored twice: the final model (the n-best average) and
the single best epoch on dev; ``--lexicon-beam N`` also scores CTC models' final model with prefix
beam search over the fold's training words. Finished runs are not trained again, so a sweep can be
resumed (or re-scored with other decodings).
Appends one JSON line per model and setting to ``benchmarks/results/cross_validate.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common (adds the repo), experiment_data
from _common import RESULTS  # noqa: E402
from experiment_data import fold_dirs  # noqa: E402

from asrbench.errors import AsrbenchError  # noqa: E402


def run_one(
    recipe: str,
    model: str,
    fold: str,
    run_dir: str,
    overrides: list[str],
    threads: int,
    attention_beam: int,
    also_average: list[int],
    cores: int,
    lexicon_beam: int,
) -> dict:
    """Train (unless finished) and score one fold's run; its held-out error counts, final and single best."""
    import torch

    from asrbench.decoding.decode import decode
    from asrbench.decoding.searchers import DecodeOptions
    from asrbench.env import CORES_VARIABLE
    from asrbench.models import default_mode
    from asrbench.training.trainer import train

    if threads:
        torch.set_num_threads(threads)
    if cores:  # this job's share of the machine: decides the automatic loader workers
        os.environ[CORES_VARIABLE] = str(cores)
    run = Path(run_dir)
    summary_path = run / "train_summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
    else:
        if run.exists():
            raise SystemExit(f"{run}: unfinished run; remove it to train it again")
        summary = train(
            recipe,
            model,
            run,
            data_dir=fold,
            overrides=overrides + ([f"train.num_threads={threads}"] if threads else []),
        )
    attention = default_mode(model) == "attention"
    options = DecodeOptions(beam=attention_beam) if attention else None
    checkpoints = {"final": "best"}
    if summary.get("averaged"):
        from asrbench.runs import checkpoint as checkpoints_module
        from asrbench.runs import rundir

        ranked = summary["averaged"]["epochs"]  # best first
        checkpoints["single_best"] = str(rundir.nbest_checkpoint(ranked[0]))
        for size in also_average:
            if 1 < size < len(ranked):
                name = f"checkpoints/average{size}.pt"
                if not (run / name).is_file():
                    state = checkpoints_module.load_state(run / rundir.nbest_checkpoint(ranked[0]))
                    state["model_state"] = checkpoints_module.average_weights(
                        [run / rundir.nbest_checkpoint(epoch) for epoch in ranked[:size]]
                    )
                    torch.save(state, run / name)
                checkpoints[f"average{size}"] = name
    decodings = [(name, checkpoint, options) for name, checkpoint in checkpoints.items()]
    if lexicon_beam and not attention:  # CTC prefix beam search over the fold's training words
        decodings.append(("lexicon_beam", "best", DecodeOptions(beam=lexicon_beam, lexicon="train")))
    scores = {}
    for name, checkpoint, options in decodings:
        result = decode(run, "test", options=options, checkpoint=checkpoint, tag=name, threads=threads).to_dict()
        errors = result["substitutions"] + result["deletions"] + result["insertions"]
        scores[name] = {"word_errors": errors, "words": result["words"], "wer": result["wer"], "cer": result["cer"]}
    return {"model": model, "fold": fold, "train_seconds": summary["train_seconds"], "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="Root folder for the folds and the run dirs.")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--models", default="all", help="Comma-separated model names, or 'all' (the recipe's).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Recipe override key=value.")
    parser.add_argument("--tag", default="", help="Name of this setting (default: the overrides, or 'recipe').")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run.")
    parser.add_argument("--jobs", type=int, default=1, help="Runs side by side.")
    parser.add_argument("--attention-beam", type=int, default=10)
    parser.add_argument(
        "--lexicon-beam",
        type=int,
        default=0,
        help="Also score CTC models' final model with prefix beam search of this width over "
        "the fold's training words (--lexicon train); 0 = no.",
    )
    parser.add_argument(
        "--also-average",
        default="",
        help="With train.average_best=N: also score the average of the k best epochs, "
        "for each k given (comma-separated, 1 < k < N).",
    )
    args = parser.parse_args()

    from asrbench.env import available_cores, environment
    from asrbench.recipe.config import load_yaml, recipe_models, resolve

    names = list(recipe_models(load_yaml(args.recipe), str(args.recipe)))
    if args.models != "all":
        names = [name.strip() for name in args.models.split(",")]
    data_dir = Path(resolve(args.recipe, names[0], args.overrides).data.dir)
    try:
        folds = fold_dirs(data_dir, args.out, args.folds)
    except AsrbenchError as err:
        raise SystemExit(f"error: {err}") from None
    tag = args.tag or ",".join(args.overrides) or "recipe"
    also = [int(size) for size in args.also_average.split(",") if size.strip()]
    cores = max(1, available_cores() // args.jobs) if args.jobs > 1 else 0
    jobs = [
        (
            str(args.recipe),
            model,
            str(fold),
            str(args.out / tag / model / fold.name),
            args.overrides,
            args.threads,
            args.attention_beam,
            also,
            cores,
            args.lexicon_beam,
        )
        for model in names
        for fold in folds
    ]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_one, *zip(*jobs, strict=True)))

    table = Table(title=f"{args.recipe.stem}: {args.folds}-fold held-out errors ({tag})")
    kinds = ["final", "single_best"] + [f"average{size}" for size in also] + ["lexicon_beam"] * bool(args.lexicon_beam)
    table.add_column("model")
    for kind in kinds:
        table.add_column(f"{kind} WER % (errors)", justify="right")
    table.add_column("max train s", justify="right")
    rows, env = [], environment(None)
    for model in names:
        runs = [result for result in results if result["model"] == model]
        row = {
            "benchmark": "cross_validate",
            "recipe": str(args.recipe),
            "tag": tag,
            "overrides": args.overrides,
            "model": model,
            "folds": args.folds,
            "max_train_seconds": max(r["train_seconds"] for r in runs),
        }
        cells = [model]
        for name in kinds:
            if not all(name in r["scores"] for r in runs):
                cells.append("-")
                continue
            errors = sum(r["scores"][name]["word_errors"] for r in runs)
            words = sum(r["scores"][name]["words"] for r in runs)
            row[name] = {
                "wer": 100 * errors / words,
                "word_errors": errors,
                "words": words,
                "per_fold_errors": [r["scores"][name]["word_errors"] for r in runs],
            }
            cells.append(f"{100 * errors / words:.2f} ({errors})")
        cells.append(f"{row['max_train_seconds']:.0f}")
        table.add_row(*cells)
        rows.append(row)
    Console(width=160).print(table)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "cross_validate.jsonl", "a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({**row, "environment": env}) + "\n")


if __name__ == "__main__":
    main()
