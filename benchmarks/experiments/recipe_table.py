"""Accuracy benchmark: train every model of a recipe, decode the test split, print and save the table.

    python benchmarks/experiments/recipe_table.py yesno --out runs/yesno [--models dnn,cnn] [--threads N]
        [--ctc-beam 10 --ctc-lexicon train --name yesno_lexicon]

CTC models are decoded greedily, or with prefix beam search (--ctc-beam, optionally over a
lexicon: --ctc-lexicon train for the training words); attention models with beam search
(--attention-beam, default 10) and joint CTC/attention scoring at their training CTC weight.

Finished runs (a train_summary.json in the run dir) are not trained again. Appends one JSON line
per model to ``benchmarks/results/<name>.jsonl`` (with machine, torch version and git commit)
and writes the Markdown table to ``benchmarks/results/<name>.md``; the name defaults to the
recipe's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console

from asrbench import fileio
from asrbench.decoding.decode import decode
from asrbench.decoding.searchers import DecodeOptions
from asrbench.env import environment
from asrbench.models import default_mode
from asrbench.recipe.config import load_yaml, recipe_models
from asrbench.studies.compare import collect, render, rich_table
from asrbench.training.trainer import train

RESULTS = Path(__file__).resolve().parents[1] / "results"  # benchmarks/results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="Root folder for the run dirs.")
    parser.add_argument("--models", default="all", help="Comma-separated model names, or 'all' (the recipe's).")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0 = default).")
    parser.add_argument(
        "--attention-beam",
        type=int,
        default=10,
        help="Beam for attention models (joint CTC/attention at the training CTC weight); "
        "CTC models are decoded greedily unless --ctc-beam is given.",
    )
    parser.add_argument("--ctc-beam", type=int, default=1, help="CTC prefix beam width (1 = greedy).")
    parser.add_argument("--ctc-lexicon", default="", help="CTC search lexicon: 'train' or a lexicon file.")
    parser.add_argument("--name", default="", help="Results file name (default: the recipe's name).")
    args = parser.parse_args()
    name = args.name or args.recipe.stem

    names = list(recipe_models(load_yaml(args.recipe), str(args.recipe)))
    if args.models != "all":
        names = [model.strip() for model in args.models.split(",")]
    overrides = [f"train.num_threads={args.threads}"] if args.threads else []
    run_dirs = []
    for model in names:
        run_dir = args.out / model
        if not (run_dir / "train_summary.json").is_file():
            if run_dir.exists():
                raise SystemExit(f"{run_dir}: unfinished run; resume it with `asrbench train --resume` or remove it")
            train(args.recipe, model, run_dir, overrides=overrides)
        attention = default_mode(model) == "attention"
        options = (
            DecodeOptions(beam=args.attention_beam)
            if attention
            else DecodeOptions(beam=args.ctc_beam, lexicon=args.ctc_lexicon)
        )
        decode(run_dir, "test", options=options, threads=args.threads)
        run_dirs.append(run_dir)
    rows = collect(run_dirs, "test")
    Console(width=160).print(rich_table(rows, title=f"{name} test"))
    env = environment(torch.device("cpu"))
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{name}.jsonl", "a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({"benchmark": f"accuracy/{name}", **row, "environment": env}) + "\n")
    fileio.write_text(RESULTS / f"{name}.md", render(rows, "markdown"))


if __name__ == "__main__":
    main()
