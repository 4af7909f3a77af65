"""The asrbench command line: each command parses options and calls one library function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from asrbench.errors import AsrbenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, decode and compare speech-recognition architectures side by side.")
data_app = typer.Typer(no_args_is_help=True, help="Prepare, synthesize and download corpora.")
app.add_typer(data_app, name="data")

_state = {"debug": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def run_app() -> None:
    """Console-script entry point: user errors become one line and exit code 2.

    Click (standalone mode) handles usage errors (exit 2), ``typer.Exit`` codes and Ctrl-C.
    """
    try:
        app()
    except AsrbenchError as err:
        if _state["debug"]:
            raise
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


@data_app.command("prepare")
def data_prepare(
    corpus: str = typer.Argument(..., help="an4 | fsdd | yesno | librispeech | kaldi | manifest"),
    src: Path = typer.Argument(..., help="Corpus folder."),
    out: Path = typer.Option(..., "--out", help="Data dir to write train/dev/test.jsonl into."),
) -> None:
    """Write JSONL manifests for a corpus on disk."""
    from asrbench.data.prepare import prepare_corpus
    from asrbench.progress import console

    report = prepare_corpus(corpus, src, out)
    console.print(f"{corpus}: " + ", ".join(f"{split} {count}" for split, count in report.counts.items())
                  + f" -> {out}")
    for reason, count in report.skipped.items():
        examples = ", ".join(report.examples.get(reason, []))
        console.print(f"[yellow]skipped {count}: {reason}[/yellow]" + (f" (e.g. {examples})" if examples else ""))


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", help="Data dir for the built-in corpus."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same corpus."),
    train: int = typer.Option(600, help="Training utterances."),
    dev: int = typer.Option(100, help="Dev utterances."),
    test: int = typer.Option(100, help="Test utterances (held-out voices)."),
) -> None:
    """Synthesize the built-in corpus with espeak-ng (needs asrbench[synth])."""
    from asrbench.data.synth import SynthConfig, synthesize_corpus
    from asrbench.progress import console

    counts = synthesize_corpus(out, SynthConfig(seed=seed, train_utterances=train, dev_utterances=dev,
                                                test_utterances=test))
    console.print("synth: " + ", ".join(f"{split} {count}" for split, count in counts.items()) + f" -> {out}")


@data_app.command("download")
def data_download(
    corpus: str = typer.Argument(..., help="an4 | fsdd | yesno | a LibriSpeech subset"),
    dest: Path = typer.Option(..., "--dest", help="Folder to download and extract into."),
    mirror: Optional[str] = typer.Option(None, help="Base URL of a mirror (or $ASRBENCH_MIRROR)."),
) -> None:
    """Download a public corpus archive, verify its checksum and extract it."""
    from asrbench.data.download import download_corpus
    from asrbench.progress import console

    path = download_corpus(corpus, dest, base_url=mirror)
    console.print(f"{corpus} -> {path}")


@app.command("models")
def models_command() -> None:
    """List every model with its parameter count at the default size."""
    from rich.console import Console
    from rich.table import Table

    from asrbench.models import MODELS, build_model, count_parameters, default_options

    table = Table(title="models (80-dim features, 30 tokens, default options)")
    table.add_column("name")
    table.add_column("params", justify="right")
    table.add_column("description")
    for name, (_, model_class) in MODELS.items():
        model = build_model(name, default_options(name), 80, 30)
        doc = (sys.modules[model_class.__module__].__doc__ or "").strip().splitlines()[0]
        table.add_row(name, f"{count_parameters(model):,}", doc)
    Console().print(table)


@app.command("train")
def train_command(
    recipe: Optional[Path] = typer.Argument(None, help="Recipe YAML (not needed with --resume)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name (see `asrbench models`)."),
    out: Path = typer.Option(..., "--out", help="Run dir."),
    data: Optional[str] = typer.Option(None, "--data", help="Prepared data dir (overrides data.dir)."),
    set_: List[str] = typer.Option([], "--set", help="Override, e.g. train.lr=1e-3 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run dir's last checkpoint."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Number of epochs."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Wall-clock training budget."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
) -> None:
    """Train one model from a recipe into a run dir."""
    from asrbench.train import train

    train(recipe, model, out, data, set_, resume, epochs, max_minutes, seed)


@app.command("decode")
def decode_command(
    run_dir: Path = typer.Argument(..., help="Run dir from `asrbench train`."),
    split: str = typer.Option("test", "--split", help="Split to decode."),
    data: Optional[str] = typer.Option(None, "--data", help="Prepared data dir (default: the run's)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
) -> None:
    """Greedy CTC decoding of a split; writes decode/<split>/hypotheses.jsonl and result.json."""
    from asrbench.decode import decode
    from asrbench.progress import console

    result = decode(run_dir, split, data, device)
    console.print(
        f"{result['model']} {split}: WER {result['wer']:.2f}% CER {result['cer']:.2f}% "
        f"({result['utterances']} utterances, RTFx {result['rtfx']:,.0f}) -> {run_dir}/decode/{split}"
    )


@app.command("compare")
def compare_command(
    run_dirs: List[Path] = typer.Argument(..., help="Run dirs with decode results."),
    split: str = typer.Option("test", "--split", help="Split to compare."),
    fmt: str = typer.Option("table", "--format", help="table | markdown | csv | json"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to a file instead of stdout."),
) -> None:
    """Compare decode results of several runs."""
    from rich.console import Console

    from asrbench import fileio
    from asrbench.compare import FORMATS, collect, render, rich_table

    if fmt not in FORMATS:
        _fail(f"unknown format '{fmt}' (valid: {', '.join(FORMATS)})")
    rows = collect(run_dirs, split)
    if fmt == "table":
        Console(width=140).print(rich_table(rows, title=f"{split} results"))
        return
    text = render(rows, fmt)
    if output:
        fileio.write_text(output, text)
    else:
        typer.echo(text, nl=False)


lm_app = typer.Typer(no_args_is_help=True, help="Train n-gram language models for CTC beam search.")
app.add_typer(lm_app, name="lm")


@lm_app.command("train")
def lm_train(
    data_dir: Path = typer.Argument(..., help="Prepared data dir; only train.jsonl is learned from."),
    order: int = typer.Option(3, "--order", help="n-gram order."),
    out: Path = typer.Option(..., "--out", help="LM dir to write lm.arpa, lexicon.txt and lm.json into."),
    unit: str = typer.Option("word", "--unit", help="word | char"),
    normalizer: str = typer.Option("basic-1", "--normalizer", help="Text normalizer applied before training."),
) -> None:
    """Train a Kneser-Ney n-gram LM on a data dir's training transcripts."""
    from asrbench.lm import train_lm
    from asrbench.progress import console

    summary = train_lm(data_dir, out, order=order, unit=unit, normalizer=normalizer)
    ngrams = " ".join(f"{n}-grams {count}" for n, count in summary["ngram_counts"].items())
    dev = summary["dev_perplexity"]
    console.print(
        f"lm {summary['unit']} {summary['order']}-gram: {summary['sentences']} sentences, "
        f"vocab {summary['vocabulary_size']}, {ngrams}, "
        f"dev perplexity {'n/a' if dev is None else f'{dev:.2f}'} -> {out}"
    )
