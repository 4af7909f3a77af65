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
        sys.exit(getattr(err, "exit_code", 2))
    except OSError as err:  # the system refused: permission, disk full, a path that vanished
        if _state["debug"]:
            raise
        where = f"{err.filename}: " if err.filename else ""
        typer.echo(f"error: {where}{err.strerror or err}", err=True)
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
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda (sets train.device)."),
) -> None:
    """Train one model from a recipe into a run dir (also under torchrun, one process per rank)."""
    from asrbench.train import train

    overrides = [*set_, f"train.device={device}"] if device is not None else set_
    train(recipe, model, out, data, overrides, resume, epochs, max_minutes, seed)


@app.command("decode")
def decode_command(
    run_dir: Path = typer.Argument(..., help="Run dir from `asrbench train`."),
    split: str = typer.Option("test", "--split", help="Split to decode."),
    data: Optional[str] = typer.Option(None, "--data", help="Prepared data dir (default: the run's)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    beam: Optional[int] = typer.Option(None, "--beam", help="Beam size; 1 (default) is greedy search."),
    mode: Optional[str] = typer.Option(None, "--mode", help="auto | ctc (an attention model's CTC branch) | attention"),
    lm: Optional[str] = typer.Option(None, "--lm", help="LM dir from `asrbench lm train` (CTC search)."),
    lm_weight: Optional[float] = typer.Option(None, "--lm-weight", help="LM weight (default: tuned, else 0.5)."),
    word_bonus: Optional[float] = typer.Option(None, "--word-bonus", help="Score added per word (CTC search)."),
    lexicon: Optional[str] = typer.Option(None, "--lexicon", help="'train' (training words) or a lexicon file."),
    ctc_weight: Optional[float] = typer.Option(None, "--ctc-weight", help="Joint CTC/attention weight."),
    length_bonus: Optional[float] = typer.Option(None, "--length-bonus", help="Attention search: per token."),
    length_norm: Optional[bool] = typer.Option(None, "--length-norm/--no-length-norm",
                                               help="Attention search: rank by score / length."),
    backend: Optional[str] = typer.Option(None, "--backend", help="CTC beam search: native | flashlight"),
    tag: str = typer.Option("", "--tag", help="Write to decode/<split>-<tag>/ instead of decode/<split>/."),
    tuned: bool = typer.Option(False, "--tuned", help="Use every value saved by `asrbench tune`."),
    threads: int = typer.Option(0, "--threads", help="Torch threads (0: torch's default); recorded with RTFx."),
    checkpoint: str = typer.Option("best", "--checkpoint",
                                   help="best (the final model: the n-best average with train.average_best), last, "
                                        "or a checkpoint file in the run dir, e.g. checkpoints/nbest/epoch0012.pt"),
) -> None:
    """Decode a split; writes decode/<split>/hypotheses.jsonl and result.json."""
    from asrbench.decode import decode
    from asrbench.decoding.searchers import DecodeOptions
    from asrbench.progress import console

    given = {"beam": beam, "mode": mode, "lm": lm, "lm_weight": lm_weight, "word_bonus": word_bonus,
             "lexicon": lexicon, "ctc_weight": ctc_weight, "length_bonus": length_bonus, "length_norm": length_norm,
             "backend": backend}
    explicit = {key for key, value in given.items() if value is not None}
    values = {key: value for key, value in given.items() if value is not None}
    if lm and lm_weight is None:
        values["lm_weight"] = 0.5  # replaced by the tuned weight when this LM was tuned
    result = decode(run_dir, split, data, device, checkpoint=checkpoint, options=DecodeOptions(**values), tag=tag,
                    explicit=explicit, use_tuned=tuned, threads=threads)
    where = f"{split}-{tag}" if tag else split
    search = f", search RTFx {result['search_rtfx']:,.0f}" if result.get("search_rtfx") else ""
    console.print(
        f"{result['model']} {split} ({result['decoder']['kind']}): WER {result['wer']:.2f}% CER {result['cer']:.2f}% "
        f"({result['utterances']} utterances, RTFx {result['rtfx']:,.0f}{search}) -> {run_dir}/decode/{where}"
    )


@app.command("bench")
def bench_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML."),
    models: str = typer.Option("all", "--models", help="'all' (every model of the recipe) or a,b,c."),
    seeds: int = typer.Option(1, "--seeds", help="Runs per model (seeds first-seed, first-seed+1, ...)."),
    budget_minutes: Optional[float] = typer.Option(None, "--budget-minutes", help="Same training budget for all."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Same number of epochs for all."),
    out: Optional[Path] = typer.Option(None, "--out", help="Sweep dir (default runs/bench/<recipe>)."),
    data: Optional[str] = typer.Option(None, "--data", help="Prepared data dir (overrides data.dir)."),
    set_: List[str] = typer.Option([], "--set", help="Override for every run, e.g. train.num_threads=1."),
    first_seed: int = typer.Option(0, "--first-seed", help="The first seed."),
    jobs: int = typer.Option(1, "--jobs", help="Runs trained at once (worker processes); pair with "
                             "--set train.num_threads=N so jobs x N fits the cores."),
) -> None:
    """Train, decode (dev and test) and compare models under one budget; resumable."""
    from rich.console import Console
    from rich.markdown import Markdown

    from asrbench.bench import bench, markdown

    report = bench(recipe, models, seeds, out, budget_minutes, epochs, data, set_, first_seed, jobs)
    Console(width=160).print(Markdown(markdown(report["summary"], report["pairs"])))


@app.command("tune")
def tune_command(
    run_dir: Path = typer.Argument(..., help="Run dir from `asrbench train`."),
    split: str = typer.Option("dev", "--split", help="Split to tune on (never test)."),
    lm: Optional[str] = typer.Option(None, "--lm", help="LM dir from `asrbench lm train`."),
    beams: str = typer.Option("10", "--beams", help="Comma-separated beam sizes."),
    lm_weights: Optional[str] = typer.Option(None, "--lm-weights", help="Comma-separated LM weights."),
    word_bonuses: Optional[str] = typer.Option(None, "--word-bonuses", help="Comma-separated word bonuses."),
    ctc_weights: Optional[str] = typer.Option(None, "--ctc-weights", help="Attention models: joint CTC weights."),
    length_bonuses: Optional[str] = typer.Option(None, "--length-bonuses", help="Attention models: per token."),
    lexicon: str = typer.Option("", "--lexicon", help="'train' or a lexicon file (CTC search)."),
    mode: str = typer.Option("auto", "--mode", help="auto | ctc | attention"),
    data: Optional[str] = typer.Option(None, "--data", help="Prepared data dir (default: the run's)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
) -> None:
    """Grid-search beam, LM weight, word bonus (or CTC weight) on dev; saves tuned.json in the run dir."""
    from asrbench.progress import console
    from asrbench.tune import tune

    def numbers(text: Optional[str], kind, name: str):
        if text is None:
            return None
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            _fail(f"{name}: '{text}' is not a comma-separated list of numbers")

    result = tune(run_dir, split, lm, numbers(beams, int, "--beams"), numbers(lm_weights, float, "--lm-weights"),
                  numbers(word_bonuses, float, "--word-bonuses"), numbers(ctc_weights, float, "--ctc-weights"),
                  numbers(length_bonuses, float, "--length-bonuses"), lexicon, mode, data, device)
    chosen = {key: value for key, value in result["options"].items() if value not in (None, "", False)}
    console.print(f"best on {split} of {len(result['grid'])}: WER {result['wer']:.2f}% CER {result['cer']:.2f}% "
                  f"with {chosen} -> {run_dir}/tuned.json")


@app.command("compare")
def compare_command(
    run_dirs: List[Path] = typer.Argument(..., help="Run dirs with decode results."),
    split: str = typer.Option("test", "--split", help="Split to compare."),
    fmt: str = typer.Option("table", "--format", help="table | markdown | csv | json"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to a file instead of stdout."),
    resamples: int = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples for CIs and paired tests."),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0, max=1.0, help="Significance level for '≈best'."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write PNG figures (WER vs size/speed, learning curves)."),
) -> None:
    """Compare decode results of several runs (CIs, pairwise tests on runs with the same test utterances)."""
    from rich.console import Console

    from asrbench import fileio
    from asrbench.compare import FORMATS, collect, render, rich_table

    if fmt not in FORMATS:
        _fail(f"unknown format '{fmt}' (valid: {', '.join(FORMATS)})")
    rows = collect(run_dirs, split, resamples=resamples, alpha=alpha, seed=seed)
    if plot is not None:
        from asrbench.plots import write_plots
        from asrbench.progress import console

        for path in write_plots(rows, plot):
            console.print(f"wrote {path}")
    if fmt == "table":
        Console(width=140).print(rich_table(rows, title=f"{split} results"))
        return
    text = render(rows, fmt)
    if output:
        fileio.write_text(output, text)
    else:
        typer.echo(text, nl=False)


@app.command("score")
def score_command(
    reference: Path = typer.Argument(..., help="References: 'id text' lines (Kaldi) or JSONL (id + ref or text)."),
    hypothesis: Path = typer.Argument(..., help="Hypotheses: 'id text' lines or JSONL (id + hyp or text)."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    missing_as_empty: bool = typer.Option(False, "--missing-as-empty",
                                          help="Score an id missing from one file as an empty text."),
    normalizer: str = typer.Option("basic-1", "--normalizer", help="Text normalizer for both sides: basic-1 | none"),
    resamples: int = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples for the 95% CIs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write alignments.txt, ref.trn, hyp.trn, report.json."),
) -> None:
    """Score any system's hypotheses against references: WER, CER, S/D/I, bootstrap CIs.

    A file is JSONL when its first non-blank line starts with '{'; decode's hypotheses.jsonl works
    as either file (its 'ref' field as references, 'hyp' as hypotheses)."""
    from asrbench.scoring import render_score, score_files

    if fmt not in ("table", "json"):
        _fail(f"unknown format '{fmt}' (valid: table, json)")
    result = score_files(reference, hypothesis, normalizer, missing_as_empty, resamples, seed, out)
    typer.echo(render_score(result, fmt), nl=False)


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
        f"dev perplexity {'n/a' if dev is None else f'{dev:.2f}'} -> {out}",
        soft_wrap=True,
    )
