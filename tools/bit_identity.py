"""Does a commit train every model to the same bits as another? (issue 29's "must not change" check)

    python tools/bit_identity.py record --out before.json [--rev REV] [--corpus yesno|fsdd ...]
    python tools/bit_identity.py compare before.json after.json

``record`` trains every model of each corpus's bundled recipe for a few epochs on one torch thread,
with no time budget (so nothing depends on the clock), decodes the test split with the model's
default search, and writes one fingerprint per (corpus, model): SHA-256s over the weights
(names, dtypes, shapes and raw bytes, in name order) of the last checkpoint (where training
ended) and of the final model (checkpoints/best.pt, after the final-model choice), one over the
test hypotheses, and the logged losses. ``--rev`` runs the code of another commit (checked out in a
temporary git worktree, its own ``asrbench`` first on the path) on the same prepared audio, so
``record --rev OLD`` then ``record`` measure "before" and "after" of a refactor on one machine.
``compare`` prints a row per model and exits 1 unless every fingerprint is equal.

Each tree prepares its own data dir from ``$ASRBENCH_DATA_ROOT`` (default ../shared/data): the
feature store is part of what must not change. FSDD trains on a tenth of its training set
(``data.train_fraction``) to keep the check within minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPORA = {
    # corpus: (epochs, extra overrides)
    "yesno": (3, []),
    "fsdd": (1, ["data.train_fraction=0.1"]),
}


def _run(command: list[str], tree: Path, cwd: Path) -> str:
    """Run ``python -m asrbench ...`` (or any command) with ``tree``'s package first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree), "ASRBENCH_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result.stdout


def _recipe(tree: Path, corpus: str) -> Path:
    """The corpus's bundled recipe in ``tree`` (recipes/ before the recipes moved into the package)."""
    for candidate in (
        tree / "asrbench" / "recipe" / f"{corpus}.yaml",
        tree / "asrbench" / "recipes" / f"{corpus}.yaml",
        tree / "recipes" / f"{corpus}.yaml",
    ):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"{tree}: no recipe for {corpus}")


def _models(tree: Path, recipe: Path) -> list[str]:
    code = (
        "import sys, yaml\ntry: from asrbench.recipe.config import recipe_models\n"
        "except ImportError: from asrbench.config import recipe_models\n"  # before the stage packages
        f"print(' '.join(recipe_models(yaml.safe_load(open({str(recipe)!r})), 'recipe')))"
    )
    return _run([sys.executable, "-c", code], tree, tree).split()


def weights_digest(checkpoint: Path) -> str:
    """SHA-256 over a checkpoint's model weights: names, dtypes, shapes and raw bytes, in name order.
    Read here (the same torch for every tree): the bytes do not depend on the code that wrote them."""
    import torch  # here: `compare` runs without torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model_state"]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # the raw bytes, any dtype
    return digest.hexdigest()


def fingerprint(tree: Path, corpus: str, model: str, data: Path, work: Path) -> dict:
    """Train one model, decode its test split; -> the digests that must not change."""
    epochs, extra = CORPORA[corpus]
    run = work / corpus / model
    command = [
        sys.executable,
        "-m",
        "asrbench",
        "train",
        str(_recipe(tree, corpus)),
        "--model",
        model,
        "--out",
        str(run),
        "--data",
        str(data),
        "--epochs",
        str(epochs),
        "--seed",
        "0",
        "--set",
        "train.num_threads=1",
        "--set",
        "train.max_minutes=0",
        "--set",
        "train.data_workers=0",
    ]
    for override in extra:
        command += ["--set", override]
    _run(command, tree, work)
    _run([sys.executable, "-m", "asrbench", "decode", str(run), "--split", "test", "--threads", "1"], tree, work)
    hypotheses = (run / "decode" / "test" / "hypotheses.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [(row["id"], row["hyp"]) for row in map(json.loads, hypotheses)]  # speakers etc. may come and go
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "weights": weights_digest(run / "checkpoints" / "best.pt"),  # the final model
        "last_weights": weights_digest(run / "checkpoints" / "last.pt"),  # training's end, before any choice
        "hypotheses": hashlib.sha256(json.dumps(sorted(texts)).encode()).hexdigest(),
        "losses": [[row["train_loss"], row["dev_loss"]] for row in metrics],
        "test_wer": json.loads((run / "decode" / "test" / "result.json").read_text())["wer"],
    }


def record(args: argparse.Namespace) -> None:
    data_root = Path(os.environ.get("ASRBENCH_DATA_ROOT", REPO.parent / "shared" / "data")).resolve()
    with tempfile.TemporaryDirectory(prefix="bit_identity_") as temp:
        work, tree = Path(temp), REPO
        if args.rev:
            tree = work / "tree"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.rev],
                check=True,
                capture_output=True,
            )
        try:
            commit = subprocess.run(
                ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True
            ).stdout.strip()
            rows = {}
            for corpus in args.corpus:
                data = work / "data" / corpus
                _run(
                    [
                        sys.executable,
                        "-m",
                        "asrbench",
                        "data",
                        "prepare",
                        corpus,
                        str(data_root / corpus),
                        "--out",
                        str(data),
                    ],
                    tree,
                    work,
                )
                models = args.models.split(",") if args.models else _models(tree, _recipe(tree, corpus))
                for model in models:
                    print(f"{corpus} {model} ...", flush=True)
                    rows[f"{corpus}/{model}"] = fingerprint(tree, corpus, model, data, work)
        finally:
            if args.rev:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    Path(args.out).write_text(
        json.dumps({"commit": commit, "rev": args.rev or "working tree", "models": rows}, indent=1) + "\n"
    )
    print(f"{len(rows)} fingerprints at {commit[:12]} -> {args.out}")


def compare(args: argparse.Namespace) -> None:
    before, after = (json.loads(Path(path).read_text()) for path in (args.before, args.after))
    print(f"before {before['commit'][:12]}  after {after['commit'][:12]}")
    print(f"{'model':32} {'last weights':12} {'losses':7} {'final':8} {'hypotheses':10} test WER")
    failures = 0
    for name in sorted(set(before["models"]) | set(after["models"])):
        old, new = before["models"].get(name), after["models"].get(name)
        if old is None or new is None:
            print(f"{name:32} only {'after' if old is None else 'before'}")
            failures += 1
            continue
        same = {key: old.get(key) == new.get(key) for key in ("last_weights", "losses", "weights", "hypotheses")}
        failures += not all(same.values())
        marks = {key: "same" if value else "DIFFERS" for key, value in same.items()}
        print(
            f"{name:32} {marks['last_weights']:12} {marks['losses']:7} {marks['weights']:8} "
            f"{marks['hypotheses']:10} {old['test_wer']:.2f} -> {new['test_wer']:.2f}"
        )
    print("bit-identical" if not failures else f"{failures} model(s) differ")
    raise SystemExit(1 if failures else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="Train, decode and fingerprint every model of each corpus.")
    rec.add_argument("--out", required=True)
    rec.add_argument("--rev", default="", help="A git revision to measure instead of the working tree.")
    rec.add_argument("--corpus", nargs="+", default=list(CORPORA), choices=list(CORPORA))
    rec.add_argument("--models", default="", help="Comma-separated models (default: the recipe's).")
    cmp = commands.add_parser("compare", help="Compare two records; exit 1 unless bit-identical.")
    cmp.add_argument("before")
    cmp.add_argument("after")
    args = parser.parse_args()
    record(args) if args.command == "record" else compare(args)


if __name__ == "__main__":
    main()
