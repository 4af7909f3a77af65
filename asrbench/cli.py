"""The asrbench command line: each command parses options and calls one library function."""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import List, NoReturn, Optional

import typer

from asrbench.errors import AsrbenchError
from asrbench.recipe.schema import ALL_OR_COUNT, FINITE, FRACTION, NON_NEGATIVE, POSITIVE, Limit, parse_count

try:  # typer >= 0.2x vendors click as typer._click; older typer uses click itself
    from typer._click import exceptions as click_exceptions
    from typer._click.core import ParameterSource
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - depends on the installed typer
    # the same names from click itself, which mypy sees as other definitions
    from click import exceptions as click_exceptions  # type: ignore[no-redef]
    from click import get_current_context  # type: ignore[no-redef]
    from click.core import ParameterSource  # type: ignore[assignment]


def _flags_without_placeholder(params: list) -> list:
    """typer's rich help shows a ``<bool>`` placeholder after flags (``--resume <bool>``) as if they
    took a value; an empty metavar shows nothing there."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


# The values of every numeric option, by parameter name (a name means the same in every command;
# "COMMAND NAME" is one command's own). Checked as the value is parsed, so a bad number fails in one
# line naming the option before the command starts; tests/test_cli.py checks that no option lacks one.
OPTION_LIMITS = {
    "epochs": POSITIVE,
    "max_minutes": NON_NEGATIVE,
    "max_steps": NON_NEGATIVE,
    "budget_minutes": NON_NEGATIVE,
    "seeds": POSITIVE,
    "seed": NON_NEGATIVE,
    "first_seed": NON_NEGATIVE,
    "subset_seed": NON_NEGATIVE,
    "threads": NON_NEGATIVE,
    "jobs": POSITIVE,
    "data features jobs": NON_NEGATIVE,
    "gpus_per_run": NON_NEGATIVE,
    "beam": POSITIVE,
    "max_symbols": POSITIVE,
    "lm_weight": NON_NEGATIVE,
    "word_bonus": FINITE,
    "length_bonus": FINITE,
    "ctc_weight": FRACTION,
    "chunk_ms": NON_NEGATIVE,
    "transcribe chunk_ms": POSITIVE,
    "left_chunks": ALL_OR_COUNT,
    "max_segment": NON_NEGATIVE,
    "min_silence": NON_NEGATIVE,
    "vad_pad": NON_NEGATIVE,
    "energy_margin": NON_NEGATIVE,
    "endpoint_silence": NON_NEGATIVE,
    "resamples": POSITIVE,
    "alpha": Limit(low=0, high=1, low_open=True, high_open=True),
    "worst": NON_NEGATIVE,
    "data synth train": POSITIVE,
    "data synth dev": POSITIVE,
    "data synth test": POSITIVE,
    "order": POSITIVE,
}


def option_limit(command: str, name: str) -> Limit | None:
    """The values option ``name`` of ``command`` ("decode", "data synth") takes."""
    return OPTION_LIMITS.get(f"{command} {name}") or OPTION_LIMITS.get(name)


def _checked_numbers(ctx, params: list) -> list:
    """Each numeric option checked against its limit as it is parsed (a callback run after typer's
    conversion): ``error: Invalid value for '--threads': must not be negative, got -2``."""
    command = " ".join(ctx.command_path.split()[1:])
    for param in params:
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        numeric = annotation in (int, float) or bool(set(typing.get_args(annotation)) & {int, float})
        limit = option_limit(command, param.name) if numeric else None
        if limit is None or getattr(param, "checked_limit", None) is limit:
            continue

        def check(ctx, param, value, limit=limit, then=param.callback):
            problem = limit.problem(value)
            if problem is not None:
                raise typer.BadParameter(problem, ctx=ctx, param=param)
            return then(ctx, param, value) if then is not None else value

        param.callback, param.checked_limit = check, limit
    return params


class _Command(typer.core.TyperCommand):
    def get_params(self, ctx) -> list:
        return _checked_numbers(ctx, _flags_without_placeholder(super().get_params(ctx)))


class _Group(typer.core.TyperGroup):
    def get_params(self, ctx) -> list:
        return _flags_without_placeholder(super().get_params(ctx))


def _typer(**settings) -> typer.Typer:
    return typer.Typer(cls=_Group, no_args_is_help=True, **settings)


def _command(group: typer.Typer, name: str):
    return group.command(name, cls=_Command)


app = _typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Train, decode and compare speech-recognition architectures side by side.",
)
data_app = _typer(help="Prepare, synthesize and download corpora.")
app.add_typer(data_app, name="data")

_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from asrbench.version import version_line

        typer.echo(version_line())
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        callback=_print_version,
        help="Print the version and the git commit, then exit.",
    ),
) -> None:
    _state["debug"] = debug


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _ignored(reason: str, *names: str) -> None:
    """Options (parameter names) that mean nothing here: typed on the command line, each is an error
    naming it and ``reason`` ("only applies with --stream"), never a silent no-op. Defaults pass."""
    ctx = get_current_context()
    params = {param.name: param for param in ctx.command.params}
    for name in names:
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
            _fail(f"{'/'.join([*params[name].opts, *params[name].secondary_opts])} {reason}")


def _threads(threads: int) -> None:
    """``--threads N``: torch's threads in this process (0 keeps torch's default)."""
    if threads > 0:
        import torch  # only the commands that compute pay for torch here

        torch.set_num_threads(threads)


SUMMARY_FORMATS = ("table", "markdown", "csv", "json")


def _check_format(fmt: str, formats: tuple[str, ...]) -> None:
    if fmt not in formats:
        _fail(f"unknown format '{fmt}' (valid: {', '.join(formats)})")


def _print_summary(fmt: str, markdown_text: str, rows: list[dict], document: dict) -> None:
    """A sweep's summary (bench, study data) in ``fmt``: the Markdown rendered (table) or as text, the
    rows as CSV, or the whole document as JSON."""
    import csv
    import io
    import json

    if fmt == "table":
        from rich.console import Console
        from rich.markdown import Markdown

        Console(width=160).print(Markdown(markdown_text))
    elif fmt == "markdown":
        typer.echo(markdown_text, nl=False)
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(
            {key: json.dumps(value) if isinstance(value, (list, dict)) else value for key, value in row.items()}
            for row in rows
        )
        typer.echo(buffer.getvalue(), nl=False)
    else:
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


# One text for every time budget (train, bench, study data): what it counts and how to repeat it.
BUDGET_HELP = (
    "Training budget in minutes of compute (0 = no budget): on a CPU the training process's CPU time "
    "over its threads, so other jobs on the machine do not shorten it; on a GPU wall time "
    "(--set train.budget_clock=wall|compute to choose). train_summary.json's 'repeat' gives "
    "the --max-steps that replays the run exactly."
)

INTERRUPTED = 130  # the shell's code for a process stopped by Ctrl-C (128 + SIGINT)


def run_app() -> None:
    """Console-script entry point: every error a user can cause is one line and a non-zero exit.

    Usage errors (an unknown option, a bad value) are ``error: ...`` plus the ``--help`` to read,
    exit 2; an :class:`AsrbenchError` is its message, exit 2 (or its own ``exit_code``); Ctrl-C is
    ``interrupted``, exit 130 (training says how to resume). ``--debug`` keeps the traceback.
    """
    try:
        code = app(prog_name="asrbench", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as err:
        err.show()
        sys.exit(err.exit_code)
    except click_exceptions.UsageError as err:
        command = err.ctx.command_path if err.ctx is not None else "asrbench"
        typer.echo(f"error: {err.format_message()} (see '{command} --help')".replace("\n", " "), err=True)
        sys.exit(err.exit_code)
    except click_exceptions.ClickException as err:
        typer.echo(f"error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except typer.Abort:
        typer.echo("interrupted", err=True)
        sys.exit(INTERRUPTED)
    except AsrbenchError as err:
        if _state["debug"]:
            raise
        typer.echo(f"{err.prefix}: {err}", err=True)
        sys.exit(err.exit_code)
    except OSError as err:  # the system refused: permission, disk full, a path that vanished
        if _state["debug"]:
            raise
        where = f"{err.filename}: " if err.filename else ""
        typer.echo(f"error: {where}{err.strerror or err}", err=True)
        sys.exit(2)
    if code == INTERRUPTED:  # Ctrl-C outside training: click turned it into this exit code
        typer.echo("interrupted", err=True)
    sys.exit(code if isinstance(code, int) else 0)


@_command(data_app, "prepare")
def data_prepare(
    corpus: str = typer.Argument(
        ..., help="an4 | fsdd | yesno | librispeech | kaldi | manifest | lhotse | hf | commonvoice"
    ),
    src: Optional[Path] = typer.Argument(None, help="Corpus folder (for manifest: or name files with --train ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Data dir to write train/dev/test.jsonl into."),
    train: Optional[Path] = typer.Option(None, "--train", help="manifest, lhotse: the training manifest file."),
    dev: Optional[Path] = typer.Option(None, "--dev", help="manifest, lhotse: the dev (validation) manifest file."),
    test: Optional[Path] = typer.Option(None, "--test", help="manifest, lhotse: the test manifest file."),
    skip_missing: bool = typer.Option(
        False,
        "--skip-missing",
        help="Leave out dev/test utterances whose audio "
        "is missing or unreadable (default: fail, naming them; train always "
        "skips them with a note).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (else it is refused)."),
    text_column: Optional[str] = typer.Option(
        None, "--text-column", help="hf: the text column (default: text, sentence, transcription, ...)."
    ),
    speaker_column: Optional[str] = typer.Option(
        None, "--speaker-column", help="hf: the speaker column (default: speaker_id, client_id, speaker)."
    ),
    id_column: Optional[str] = typer.Option(
        None, "--id-column", help="hf: the id column (default: id, ...; else the audio's file name)."
    ),
    split_map: Optional[str] = typer.Option(
        None, "--split-map", help="hf: our splits from the dataset's, e.g. train=train,dev=validation,test=test."
    ),
    train_from: Optional[str] = typer.Option(
        None,
        "--train-from",
        help="commonvoice: train (train.tsv, the default) or validated (validated minus dev/test clips and speakers).",
    ),
) -> None:
    """Write JSONL manifests for a corpus on disk.

    manifest: a folder of NeMo-style manifests (train[_manifest], dev[_manifest] | validation[_manifest] |
    val[_manifest], test[_manifest], each .json or .jsonl), or the files one by one with --train/--dev/--test.
    hf: a Hugging Face dataset on disk (save_to_disk, or Parquet/Arrow shards); audio bytes are written to
    OUT/audio/ as FLAC once. commonvoice: a Common Voice language folder (clips/, train/dev/test.tsv)."""
    from asrbench import fileio
    from asrbench.data.prepare import prepare_corpus
    from asrbench.progress import console

    fileio.refuse_to_replace([out / f"{split}.jsonl" for split in ("train", "dev", "test")], overwrite)
    options = {
        "text_column": text_column,
        "speaker_column": speaker_column,
        "id_column": id_column,
        "split_map": split_map,
        "train_from": train_from,
    }
    report = prepare_corpus(
        corpus,
        src,
        out,
        files={"train": train, "dev": dev, "test": test},
        skip_missing=skip_missing,
        options=options,
    )
    console.print(
        f"{corpus}: " + ", ".join(f"{split} {count}" for split, count in report.counts.items()) + f" -> {out}"
    )
    for reason, count in report.skipped.items():
        examples = ", ".join(report.examples.get(reason, []))
        console.print(f"[yellow]skipped {count}: {reason}[/yellow]" + (f" (e.g. {examples})" if examples else ""))


@_command(data_app, "features")
def data_features(
    data_dir: Path = typer.Argument(..., help="Prepared data dir."),
    recipe: Optional[Path] = typer.Option(
        None,
        "--recipe",
        help="Recipe whose features (and train speed perturbation) to extract; default: the default features.",
    ),
    model: Optional[str] = typer.Option(None, "--model", help="Take the recipe's sections as resolved for this model."),
    splits: Optional[str] = typer.Option(
        None, "--splits", help="Comma-separated splits (default: every prepared one)."
    ),
    jobs: int = typer.Option(0, "--jobs", min=0, help="Worker processes (0: one per core)."),
    set_: List[str] = typer.Option([], "--set", help="Override, e.g. features.dtype=float32 (repeatable)."),
) -> None:
    """Extract a data dir's features into its feature store (what `train` does on its own when needed)."""
    from rich.console import Console
    from rich.table import Table

    from asrbench.data.features import extract_data_dir
    from asrbench.data.manifest import require_prepared
    from asrbench.recipe.config import FeatureConfig, recipe_features

    require_prepared(data_dir, (), "data dir")
    if recipe is not None:
        features, augment = recipe_features(recipe, model, set_)
        speeds = augment.speed_perturb
    else:
        if model is not None or set_:
            _fail("--model and --set need --recipe")
        features, speeds = FeatureConfig(), []
    names = [name.strip() for name in splits.split(",") if name.strip()] if splits else None
    rows = extract_data_dir(data_dir, features, speeds, names, jobs)
    table = Table(title=f"feature stores of {data_dir} ({features.kind}, {features.dim()} dims, {features.dtype})")
    for header in ("split", "speed", "utterances", "hours", "MB/hour", "store"):
        table.add_column(header, justify="left" if header in ("split", "store") else "right")
    for row in rows:
        table.add_row(
            row["split"],
            f"{row['speed']:g}",
            f"{row['utterances']:,}",
            f"{row['hours']:.2f}",
            f"{row['bytes_per_hour'] / 1e6:.1f}",
            row["store"],
        )
    Console(width=160).print(table)


@_command(data_app, "synth")
def data_synth(
    out: Path = typer.Option(..., "--out", "-o", help="Data dir for the built-in corpus."),
    seed: int = typer.Option(0, help="Seed: the same seed gives the same corpus."),
    train: int = typer.Option(600, help="Training utterances."),
    dev: int = typer.Option(100, help="Dev utterances."),
    test: int = typer.Option(100, help="Test utterances (held-out voices)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (else it is refused)."),
) -> None:
    """Synthesize the built-in corpus with espeak-ng (needs the extra asrbench\\[synth])."""
    from asrbench import fileio
    from asrbench.data.synth import SynthConfig, synthesize_corpus
    from asrbench.progress import console

    fileio.refuse_to_replace([out / f"{split}.jsonl" for split in ("train", "dev", "test")], overwrite)
    counts = synthesize_corpus(
        out, SynthConfig(seed=seed, train_utterances=train, dev_utterances=dev, test_utterances=test)
    )
    console.print("synth: " + ", ".join(f"{split} {count}" for split, count in counts.items()) + f" -> {out}")


@_command(data_app, "download")
def data_download(
    corpus: str = typer.Argument(..., help="an4 | fsdd | yesno | a LibriSpeech subset"),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        "--dest",
        help="Folder to download and extract into (archives already there are reused; --dest: the old spelling).",
    ),
    mirror: Optional[str] = typer.Option(None, help="Base URL of a mirror (or $ASRBENCH_MIRROR)."),
) -> None:
    """Download a public corpus archive, verify its checksum and extract it."""
    from asrbench.data.download import download_corpus
    from asrbench.progress import console

    path = download_corpus(corpus, out, base_url=mirror)
    console.print(f"{corpus} -> {path}")


def _kept_flops() -> tuple[dict[str, float], Path]:
    """The GFLOPs/s counts ``asrbench models`` measured before and the file that keeps them:
    ``$ASRBENCH_CACHE_DIR/flops.json`` (default ``$XDG_CACHE_HOME/asrbench``, else ``~/.cache/asrbench``).
    Each count's key holds the models' source and torch's version (asrbench.models.cost.measure_key);
    an unreadable file is measured afresh and replaced."""
    import json
    import os

    root = os.environ.get("ASRBENCH_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "asrbench"
    )
    cache = Path(root) / "flops.json"
    try:
        kept = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, cache
    if not isinstance(kept, dict):
        return {}, cache
    return {k: float(v) for k, v in kept.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}, cache


@_command(app, "models")
def models_command(
    recipe: Optional[str] = typer.Option(
        None,
        "--recipe",
        help="Count parameters at this recipe's options (its "
        "features; a model it lists at its entry's options) instead of the "
        "defaults.",
    ),
    flops: bool = typer.Option(
        True,
        "--flops/--no-flops",
        help="Measure each model's forward GFLOPs per second of audio on a 10 s input (docs/models.md, Cost); "
        "--no-flops lists parameters alone, at once.",
    ),
) -> None:
    """The encoder x head matrix (a model under each cell) and every model with its parameter count and GFLOPs/s."""
    from rich.console import Console
    from rich.table import Table

    from asrbench.models import HEADS, MATRIX, MODELS, describe_model, parameter_counts
    from asrbench.models.cost import gflops_per_second_table
    from asrbench.recipe.config import RunConfig, recipe_sizes, resolve

    input_dim, options, where = recipe_sizes(recipe) if recipe else (80, {}, "default options")
    counts = parameter_counts(options, input_dim, 30)
    # The recipe's framing sets how many frames 10 s of audio is (its first model's, as recipe_sizes' dim).
    features = resolve(recipe, next(iter(options))).features if recipe and options else RunConfig().features
    cost = {}
    if flops:
        kept, cache = _kept_flops()
        before = len(kept)
        cost = gflops_per_second_table(
            options, input_dim, 30, features.frame_shift_ms, features.frame_length_ms, kept=kept
        )
        if len(kept) > before:
            from asrbench import fileio

            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                fileio.write_json(cache, kept)
            except OSError:  # a read-only cache folder: measured again next time, nothing else lost
                pass

    def gflops(name: str) -> str:
        return f"{cost[name]:.3g}" if name in cost else "-"

    def matrix_cell(name: str | None) -> str:  # a model of the matrix: its name, parameters and GFLOPs/s
        return "-" if name is None else f"{name} {counts[name]:,}" + (f"\n{gflops(name)} GFLOPs/s" if flops else "")

    matrix = Table(
        title=f"encoder x head ({input_dim}-dim features, 30 tokens, {where}): model, parameters"
        + (", GFLOPs per second of audio" if flops else ""),
        caption="Any encoder trains under any head: `asrbench train RECIPE --model NAME`.",
    )
    matrix.add_column("encoder")
    for head in HEADS:
        matrix.add_column(head, justify="right")
    for encoder in dict.fromkeys(cell[0] for cell in MATRIX):
        cells = [MATRIX.get((encoder, head)) for head in HEADS]
        matrix.add_row(encoder, *[matrix_cell(name) for name in cells])
    table = Table(
        title=f"models ({input_dim}-dim features, 30 tokens, {where})",
        caption="CTC models emit one token distribution per frame; attention models add a decoder; "
        "transducers a prediction network and a joiner. `make demo` trains the seven CTC models.",
    )
    table.add_column("name")
    table.add_column("params", justify="right")
    table.add_column("GFLOPs/s", justify="right")
    table.add_column("description")
    for name in MODELS:
        table.add_row(name, f"{counts[name]:,}", gflops(name), describe_model(name))
    console = Console()
    console.print(matrix)
    console.print(table)


@_command(app, "recipes")
def recipes_command() -> None:
    """List the bundled recipes (`asrbench train NAME --model M` trains one): corpus, models, description."""
    from rich.console import Console
    from rich.table import Table

    from asrbench.recipe.bundled import FOLDER, summaries

    table = Table(
        title=f"bundled recipes ({FOLDER})",
        caption="A path to your own YAML works wherever a name does; copy one of these to start it.",
    )
    for header in ("name", "corpus", "models", "description"):
        table.add_column(header)
    for row in summaries():
        table.add_row(row.name, row.corpus or "-", ", ".join(row.models), row.description)
    Console().print(table)


TARGET_PARAMS_HELP = (
    "Parameter count (5M, 3.2M, 800k) the encoder's width is scaled to, within 5% (sets model.target_params)."
)


def _target_params(text: str | None) -> int | None:
    """``--target-params 5M`` -> 5000000 (None: not given); a bad count fails naming the option."""
    return None if text is None else parse_count(text, "--target-params")


@_command(app, "train")
def train_command(
    recipe: Optional[Path] = typer.Argument(
        None, help="Recipe: a bundled one's name (`asrbench recipes`) or a YAML path (not needed with --resume)."
    ),
    model: Optional[str] = typer.Option(None, "--model", help="Model name (see `asrbench models`)."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Run dir (one that holds a run is refused: --resume it); default runs/<recipe>/<model> for a new run.",
    ),
    data: Optional[str] = typer.Option(None, "--data", help="Prepared data dir (overrides data.dir)."),
    set_: List[str] = typer.Option([], "--set", help="Override, e.g. train.lr=1e-3 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run dir's last checkpoint."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Number of epochs."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help=BUDGET_HELP),
    max_steps: Optional[int] = typer.Option(
        None,
        "--max-steps",
        help="Stop after this many optimizer steps (sets "
        "train.max_steps; 0 = no limit): a budget that does not depend on the "
        "machine.",
    ),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda (sets train.device)."),
    tensorboard: bool = typer.Option(
        False,
        "--tensorboard",
        help="Write TensorBoard events to <out>/tensorboard/ (sets train.tensorboard; needs asrbench\\[tensorboard]).",
    ),
    threads: int = typer.Option(0, "--threads", min=0, help="Torch threads (sets train.num_threads; 0: the recipe's)."),
    target_params: Optional[str] = typer.Option(None, "--target-params", help=TARGET_PARAMS_HELP),
) -> None:
    """Train one model from a recipe into a run dir (also under torchrun, one process per rank)."""
    from asrbench.training.start import TrainValues
    from asrbench.training.state import stopped_at_once
    from asrbench.training.trainer import train

    values = TrainValues(
        data_dir=data,
        epochs=epochs,
        max_minutes=max_minutes,
        max_steps=max_steps,
        seed=seed,
        device=device,
        tensorboard=tensorboard or None,
        num_threads=threads or None,
        target_params=_target_params(target_params),
    )
    if out is None:
        if resume:
            _fail("--resume needs the run dir: --out DIR")
        if recipe is None or model is None:
            _fail("a recipe and --model are needed to start a new run")
        out = Path("runs") / Path(recipe).name.removesuffix(".yaml").removesuffix(".yml") / model
    try:
        train(recipe, model, out, overrides=set_, resume=resume, values=values)
    except KeyboardInterrupt:
        raise stopped_at_once(out) from None


@_command(app, "decode")
def decode_command(
    run_dir: Path = typer.Argument(..., help="Run dir from `asrbench train`."),
    split: str = typer.Option("test", "--split", help="Split to decode."),
    data: Optional[str] = typer.Option(None, "--data", help="Prepared data dir (default: the run's)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    beam: Optional[int] = typer.Option(None, "--beam", help="Beam size; 1 (default) is greedy search."),
    mode: Optional[str] = typer.Option(
        None, "--mode", help="auto | ctc (a hybrid's or transducer's CTC branch) | attention | transducer"
    ),
    lm: Optional[str] = typer.Option(None, "--lm", help="LM dir from `asrbench lm train` (CTC search)."),
    lm_weight: Optional[float] = typer.Option(
        None, "--lm-weight", help="LM weight (default 0.5; the tuned one with --tuned)."
    ),
    word_bonus: Optional[float] = typer.Option(None, "--word-bonus", help="Score added per word (CTC search)."),
    lexicon: Optional[str] = typer.Option(None, "--lexicon", help="'train' (training words) or a lexicon file."),
    ctc_weight: Optional[float] = typer.Option(None, "--ctc-weight", help="Joint CTC/attention weight."),
    length_bonus: Optional[float] = typer.Option(None, "--length-bonus", help="Attention search: per token."),
    length_norm: Optional[bool] = typer.Option(
        None, "--length-norm/--no-length-norm", help="Attention search: rank by score / length."
    ),
    backend: Optional[str] = typer.Option(None, "--backend", help="CTC beam search: native | flashlight"),
    max_symbols: Optional[int] = typer.Option(
        None,
        "--max-symbols",
        help="Transducer beam search: tokens a hypothesis may emit per encoder frame (1).",
    ),
    tag: str = typer.Option("", "--tag", help="Write to decode/<split>-<tag>/ instead of decode/<split>/."),
    tuned: bool = typer.Option(False, "--tuned", help="Use every value saved by `asrbench tune`."),
    threads: int = typer.Option(0, "--threads", help="Torch threads (0: torch's default); recorded with RTFx."),
    checkpoint: str = typer.Option(
        "best",
        "--checkpoint",
        help="best (the final model: the n-best average with train.average_best), last, "
        "or a checkpoint file in the run dir, e.g. checkpoints/nbest/epoch0012.pt",
    ),
    chunk_ms: float = typer.Option(
        0.0,
        "--chunk-ms",
        help="Streaming model: decode with chunks of this many ms "
        "(a multiple of 40) and measure its latency; 0: full context.",
    ),
    left_chunks: int = typer.Option(-1, "--left-chunks", help="With --chunk-ms: chunks of left context (-1: all)."),
    no_cost: bool = typer.Option(
        False, "--no-cost", help="Skip the cost figures (GFLOPs/s and the end-to-end RTFx pass): a faster decode."
    ),
    normalizer: str = typer.Option(
        "basic-1", "--normalizer", help="Text normalizer the WER is scored under: basic-1 | none | whisper-en"
    ),
) -> None:
    """Decode a split; writes decode/<split>/hypotheses.jsonl and result.json."""
    from asrbench.decoding.decode import decode
    from asrbench.decoding.searchers import given_options
    from asrbench.progress import console
    from asrbench.scoring.metrics import format_rate, undefined_rate_warning

    if not lm and not tuned:  # with --tuned, decode checks that the tuned values hold an LM
        _ignored("only applies with --lm", "lm_weight")
    if not tuned and (beam or 1) == 1 and not lm and not lexicon:
        _ignored("only applies to beam search (--beam N above 1, --lm or --lexicon)", "backend", "word_bonus")
    if not chunk_ms:
        _ignored("only applies with --chunk-ms", "left_chunks")
    options, explicit = given_options(
        beam=beam,
        mode=mode,
        lm=lm,
        lm_weight=lm_weight,
        word_bonus=word_bonus,
        lexicon=lexicon,
        ctc_weight=ctc_weight,
        length_bonus=length_bonus,
        length_norm=length_norm,
        backend=backend,
        max_symbols=max_symbols,
    )
    result = decode(
        run_dir,
        split,
        data,
        device,
        checkpoint=checkpoint,
        options=options,
        tag=tag,
        explicit=explicit,
        use_tuned=tuned,
        threads=threads,
        chunk_ms=chunk_ms,
        left_chunks=left_chunks,
        measure_cost=not no_cost,
        normalizer=normalizer,
    )
    where = f"{split}-{result.tag}" if result.tag else split
    search = f", search RTFx {result.search_rtfx:,.0f}" if result.search_rtfx else ""
    warning = undefined_rate_warning(result.to_dict(), f"{run_dir} {split}")
    if warning:
        console.print(f"[yellow]warning[/yellow]: {warning}", soft_wrap=True, highlight=False)
    console.print(
        f"{result.model} {split} ({result.decoder.kind if result.decoder else '-'}): WER {format_rate(result.wer)}% "
        f"CER {format_rate(result.cer)}% "
        f"({result.utterances} utterances, RTFx {result.rtfx:,.0f}{search}) -> {run_dir}/decode/{where}"
    )
    latency = result.streaming
    if latency is not None and latency.final_latency_ms_p90 is not None:
        console.print(
            f"streaming {latency.chunk_ms:g} ms: algorithmic latency "
            f"{latency.algorithmic_latency_ms:g} ms, final-result latency p50 "
            f"{latency.final_latency_ms_p50:g} / p90 "
            f"{latency.final_latency_ms_p90:g} ms, first token p90 "
            f"{latency.first_token_latency_ms_p90:g} ms, RTF {latency.rtf:g}; streamed = chunked "
            f"pass for {latency.streamed_equals_chunked_pass}/{latency.utterances}",
            soft_wrap=True,
        )


def _transcribe_combinations(stream: bool, vad: str, lm: bool) -> None:
    """transcribe's options that apply only with another: chunks and endpoints to --stream, the VAD's
    to whole-file decoding (its energy margin to --vad energy), the LM weight to an LM."""
    if not stream:
        _ignored("only applies with --stream", "chunk_ms", "left_chunks", "endpoint_silence", "partials")
    else:
        _ignored(
            "does not apply with --stream (a stream ends its segments at endpoints: --endpoint-silence, --max-segment)",
            "vad",
            "min_silence",
            "vad_pad",
            "energy_margin",
        )
    if vad == "none":
        _ignored("does not apply with --vad none (fixed pieces of --max-segment seconds)", "min_silence", "vad_pad")
    if vad != "energy":
        _ignored(f"only applies with --vad energy (not --vad {vad})", "energy_margin")
    if not lm:
        _ignored("only applies with --lm", "lm_weight")


@_command(app, "transcribe")
def transcribe_command(
    model: Path = typer.Argument(..., help="Run dir from `asrbench train`, or a dir from `asrbench export`."),
    audio: List[str] = typer.Argument(
        ..., help="Audio files, directories (searched for audio), or - (paths on stdin)."
    ),
    fmt: str = typer.Option(
        "text",
        "--format",
        "-f",
        help="text (path, tab, transcript) | jsonl (segments, words, times, confidences) | srt | vtt",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        "--output",
        help="Output file (text, jsonl); srt, vtt: "
        "the file itself when one audio file is given and -o ends in .srt / .vtt, "
        "else a directory of one file per input. Default: stdout.",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace an output that is already there (without "
        "it: refused; an interrupted run's -o FILE.partial is resumed).",
    ),
    vad: str = typer.Option(
        "energy",
        "--vad",
        help="Splitting of long files at pauses: energy | silero (the vad extra) | none (fixed pieces).",
    ),
    max_segment: float = typer.Option(
        20.0,
        "--max-segment",
        help="Seconds: shorter files are decoded whole; longer speech is cut at its longest pauses.",
    ),
    min_silence: float = typer.Option(0.3, "--min-silence", help="VAD: seconds; shorter pauses do not split."),
    vad_pad: float = typer.Option(
        0.6, "--vad-pad", help="VAD: seconds of context kept on each side of speech (never past the middle of a pause)."
    ),
    energy_margin: float = typer.Option(
        16.0, "--energy-margin", help="--vad energy: dB above the noise floor that is speech."
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    beam: Optional[int] = typer.Option(None, "--beam", help="Beam size; 1 (default) is greedy search."),
    mode: Optional[str] = typer.Option(None, "--mode", help="auto | ctc | attention | transducer"),
    lm: Optional[str] = typer.Option(None, "--lm", help="LM dir from `asrbench lm train`."),
    lm_weight: Optional[float] = typer.Option(
        None, "--lm-weight", help="LM weight (default 0.5; the tuned one with --tuned)."
    ),
    word_bonus: Optional[float] = typer.Option(None, "--word-bonus", help="Score added per word."),
    lexicon: Optional[str] = typer.Option(None, "--lexicon", help="'train' (training words) or a lexicon file."),
    tuned: bool = typer.Option(False, "--tuned", help="Use every value saved by `asrbench tune`."),
    threads: int = typer.Option(0, "--threads", help="Torch threads (0: torch's default)."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, or a checkpoint file in the run dir."),
    stream: bool = typer.Option(
        False,
        "--stream",
        help="Feed the audio chunk by chunk through a streaming model "
        "(trained with streaming: true), showing partial results.",
    ),
    chunk_ms: float = typer.Option(320.0, "--chunk-ms", help="--stream: chunk in ms (a multiple of 40)."),
    left_chunks: int = typer.Option(-1, "--left-chunks", help="--stream: chunks of left context (-1: all)."),
    endpoint_silence: float = typer.Option(
        1.2, "--endpoint-silence", help="--stream: seconds of blank output after a token that end a segment (0: never)."
    ),
    partials: bool = typer.Option(True, "--partials/--no-partials", help="--stream: show partial results."),
) -> None:
    """Transcribe audio files: text, JSONL with word times and confidences, or subtitles."""
    from asrbench import fileio
    from asrbench.decoding.searchers import given_options
    from asrbench.decoding.streaming import StreamOptions
    from asrbench.deploy.transcribe import Transcriber, transcribe_files
    from asrbench.deploy.vad import VadOptions
    from asrbench.progress import console

    _transcribe_combinations(stream, vad, bool(lm) or tuned)
    if out is not None and out.is_file() and not out.with_name(out.name + ".partial").exists():
        fileio.refuse_to_replace(out, overwrite)  # before loading the model; a .partial file is resumed
    options, explicit = given_options(
        beam=beam, mode=mode, lm=lm, lm_weight=lm_weight, word_bonus=word_bonus, lexicon=lexicon
    )
    streamed = StreamOptions(chunk_ms, left_chunks, endpoint_silence, max_segment) if stream else None
    transcriber = Transcriber(
        model,
        options,
        device,
        checkpoint,
        explicit,
        tuned,
        VadOptions(
            kind=vad, max_segment=max_segment, min_silence=min_silence, pad=vad_pad, energy_margin_db=energy_margin
        ),
        threads,
        streamed,
        partials,
        word_times=fmt != "text",  # text prints no word times: their alignment pass is skipped
    )
    console.print(f"transcribing with {model}: {transcriber.description}", soft_wrap=True, highlight=False)
    counts = transcribe_files(transcriber, audio, fmt, out, overwrite=overwrite)
    rtfx = counts["audio_seconds"] / counts["seconds"] if counts["seconds"] else 0.0
    resumed = f", {counts['resumed']} already done" if counts["resumed"] else ""
    failed = f", [red]{counts['failed']} failed[/red]" if counts["failed"] else ""
    console.print(
        f"{counts['files'] - counts['failed']} of {counts['files']} files transcribed "
        f"({counts['audio_seconds'] / 3600:.2f} h, RTFx {rtfx:,.0f}{resumed}){failed}" + (f" -> {out}" if out else ""),
        highlight=False,
    )
    if counts["failed"]:
        raise typer.Exit(1)


@_command(app, "export")
def export_command(
    run_dir: Path = typer.Argument(..., help="Run dir from `asrbench train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the exported model into."),
    fmt: str = typer.Option(
        "onnx",
        "--format",
        help="onnx (asrbench's own runtime) or sherpa-onnx (the graphs and tokens.txt the sherpa-onnx runtime loads).",
    ),
    quantize: str = typer.Option("", "--quantize", help="int8: also write a dynamically quantized graph and use it."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, or a checkpoint file in the run dir."),
    threads: int = typer.Option(0, "--threads", min=0, help="Torch threads (0: torch's default)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (else it is refused)."),
    chunk_ms: float = typer.Option(
        0.0,
        "--chunk-ms",
        min=0.0,
        help="--format sherpa-onnx, a streaming conformer transducer: sherpa-onnx's online layout at this chunk.",
    ),
    left_chunks: int = typer.Option(
        -1, "--left-chunks", help="With --chunk-ms: chunks of left context the online encoder keeps (1 or more)."
    ),
) -> None:
    """Export a model to a self-contained ONNX dir for `asrbench transcribe` (--format sherpa-onnx: and sherpa-onnx)."""
    from asrbench import fileio
    from asrbench.deploy.export import export_run
    from asrbench.progress import console

    fileio.refuse_to_replace(out, overwrite)
    _threads(threads)
    manifest = export_run(run_dir, out, fmt, quantize, checkpoint, chunk_ms, left_chunks)
    differences = ", ".join(f"{name} {value:.1e}" for name, value in manifest["max_abs_difference_vs_pytorch"].items())
    console.print(
        f"exported {manifest['model']} ({manifest['units']}) -> {out}; largest log-prob difference from "
        f"PyTorch on a check batch: {differences}",
        highlight=False,
    )


@_command(app, "bench")
def bench_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML."),
    models: str = typer.Option("all", "--models", help="'all' (every model of the recipe) or a,b,c."),
    seeds: int = typer.Option(1, "--seeds", help="Runs per model (seeds first-seed, first-seed+1, ...)."),
    budget_minutes: Optional[float] = typer.Option(
        None, "--max-minutes", "--budget-minutes", help="The same training budget for all: " + BUDGET_HELP
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Same number of epochs for all."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Sweep dir (default runs/bench/<recipe>); an existing one is resumed."
    ),
    data: Optional[str] = typer.Option(None, "--data", help="Prepared data dir (overrides data.dir)."),
    set_: List[str] = typer.Option([], "--set", help="Override for every run, e.g. train.num_threads=1."),
    first_seed: int = typer.Option(0, "--first-seed", help="The first seed."),
    jobs: int = typer.Option(
        1, "--jobs", help="Runs trained at once (worker processes); pair with --threads N so jobs x N fits the cores."
    ),
    executor: str = typer.Option("local", "--executor", help="local (this machine) | ray (one Ray task per run)."),
    address: str = typer.Option(
        "local",
        "--address",
        help="--executor ray: local (a Ray instance for this "
        "sweep) | auto (this machine's cluster) | HOST:PORT (a cluster's head).",
    ),
    gpus_per_run: float = typer.Option(0.0, "--gpus-per-run", min=0.0, help="--executor ray: GPUs each run asks for."),
    threads: int = typer.Option(
        0, "--threads", min=0, help="Torch threads of each run (sets train.num_threads; 0: the recipe's)."
    ),
    target_params: Optional[str] = typer.Option(
        None, "--target-params", help="Every model of the sweep at this size: " + TARGET_PARAMS_HELP
    ),
    fmt: str = typer.Option("table", "--format", help="table | markdown | csv | json"),
) -> None:
    """Train, decode (dev and test) and compare models under one budget; resumable."""
    from asrbench.studies.bench import bench, markdown

    _check_format(fmt, SUMMARY_FORMATS)
    report = bench(
        recipe,
        models,
        seeds,
        out,
        budget_minutes,
        epochs,
        data,
        list(set_),
        first_seed,
        jobs,
        executor,
        address,
        gpus_per_run,
        threads,
        target_params=_target_params(target_params),
    )
    _print_summary(fmt, markdown(report["summary"], report["pairs"]), report["summary"], report)


@_command(app, "tune")
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
    threads: int = typer.Option(0, "--threads", min=0, help="Torch threads (0: torch's default)."),
) -> None:
    """Grid-search beam, LM weight, word bonus (or CTC weight) on dev; saves tuned.json in the run dir."""
    from asrbench.decoding.tune import summarize_tuning, tune
    from asrbench.progress import console

    def numbers(text: Optional[str], kind, name: str, limit: Limit):
        if text is None:
            return None
        try:
            values = [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            _fail(f"{name}: '{text}' is not a comma-separated list of numbers")
        for value in values:
            if limit.problem(value) is not None:
                _fail(f"{name} {text}: each value {limit.problem(value)}")
        return values

    if not lm:
        _ignored("only applies with --lm", "lm_weights")
    _threads(threads)
    result = tune(
        run_dir,
        split,
        lm,
        numbers(beams, int, "--beams", POSITIVE),
        numbers(lm_weights, float, "--lm-weights", NON_NEGATIVE),
        numbers(word_bonuses, float, "--word-bonuses", FINITE),
        numbers(ctc_weights, float, "--ctc-weights", FRACTION),
        numbers(length_bonuses, float, "--length-bonuses", FINITE),
        lexicon,
        mode,
        data,
        device,
    )
    console.print(summarize_tuning(result, split) + f" -> {run_dir}/tuned.json", soft_wrap=True)


@_command(app, "compare")
def compare_command(
    run_dirs: List[Path] = typer.Argument(..., help="Run dirs with decode results."),
    split: str = typer.Option("test", "--split", help="Split to compare."),
    fmt: str = typer.Option("table", "--format", help="table | markdown | csv | json"),
    output: Optional[Path] = typer.Option(
        None, "--out", "-o", "--output", help="Write to a file instead of stdout (--output: the old spelling)."
    ),
    resamples: int = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples for CIs and paired tests."),
    alpha: float = typer.Option(0.05, "--alpha", min=0.0, max=1.0, help="Significance level for '≈best'."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples."),
    resample: str = typer.Option(
        "auto",
        "--resample",
        help="What the CIs and tests resample: speaker (utterances of a speaker stay together) | utterance | "
        "auto (speaker where every test utterance has one and there are two or more; docs/statistics.md).",
    ),
    correction: str = typer.Option(
        "holm", "--correction", help="Multiple-comparison correction of '≈best' over the comparisons: holm | bh | none."
    ),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write PNG figures (WER vs size/speed, learning curves)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (else it is refused)."),
    group_seeds: bool = typer.Option(
        True,
        "--group-seeds/--no-group-seeds",
        help="Runs that differ only by train.seed are one system (seeds resampled in its CI and tests).",
    ),
    allow_mixed: bool = typer.Option(
        False,
        "--allow-mixed",
        help="Allow runs decoded on different test sets: a "
        "'test set' column (hash, utterances) and a ranking within each set only.",
    ),
) -> None:
    """Compare decode results of several runs (CIs, pairwise tests on runs with the same test utterances).

    Runs decoded on different utterance sets are refused (each set named by a hash of its utterance
    ids and references, and its count), unless --allow-mixed; then each set is ranked on its own."""
    from rich.console import Console

    from asrbench import fileio
    from asrbench.progress import console
    from asrbench.studies.compare import FORMATS, collect, fitted_width, render, rich_table, select_runs

    if fmt not in FORMATS:
        _fail(f"unknown format '{fmt}' (valid: {', '.join(FORMATS)})")
    if resample not in ("auto", "utterance", "speaker"):
        _fail(f"--resample '{resample}': use auto, utterance or speaker")
    if correction not in ("holm", "bh", "none"):
        _fail(f"--correction '{correction}': use holm, bh or none")
    from asrbench.studies.plots import FILES as PLOT_FILES

    fileio.refuse_to_replace(
        ([output] if output else []) + ([plot / name for name in PLOT_FILES] if plot else []), overwrite
    )
    runs, skipped = select_runs(run_dirs)
    for path in skipped:
        console.print(f"[yellow]note[/yellow]: skipped {path}: not a run dir", soft_wrap=True)
    rows = collect(
        runs,
        split,
        resamples=resamples,
        alpha=alpha,
        seed=seed,
        allow_mixed=allow_mixed,
        resample=resample,
        correction=correction,
        group_seeds=group_seeds,
    )
    if plot is not None:
        from asrbench.studies.plots import write_plots

        for path in write_plots(rows, plot):
            console.print(f"wrote {path}", soft_wrap=True)
    if fmt == "table" and output is None:
        table = rich_table(rows, title=f"{split} results")
        Console(width=fitted_width(table)).print(table)
        return
    text = render(rows, fmt)
    if output:
        fileio.write_text(output, text)
        console.print(f"wrote {output}", soft_wrap=True)
    else:
        typer.echo(text, nl=False)


def _score_external(
    reference, hypothesis, name, out, split, normalizer, missing_as_empty, resamples, seed, utt2spk, overwrite
):
    """``score --name``: the system dir (asrbench.studies.external), then its line of figures."""
    from asrbench import fileio
    from asrbench.progress import console
    from asrbench.scoring.metrics import format_rate
    from asrbench.studies.external import check_name, write_external

    check_name(name)
    if out is None:
        _fail(f"--name {name}: give --out, the system dir to write (e.g. --out runs/external/{name})")
    fileio.refuse_to_replace([out / "decode" / split], overwrite)
    result = write_external(
        reference, hypothesis, name, out, split, normalizer, missing_as_empty, resamples, seed, utt2spk
    )
    interval = f"{result.wer_ci[0]:.2f}–{result.wer_ci[1]:.2f}" if result.wer_ci else "n/a"
    method = result.ci.method if result.ci else ""
    console.print(
        f"{name} (external): WER {format_rate(result.wer)}% (95% CI {interval}, {method}) over {result.words} "
        f"words, normalizer {normalizer} -> {out}; compare it: asrbench compare {out} RUN ...",
        soft_wrap=True,
        highlight=False,
    )


@_command(app, "score")
def score_command(
    reference: Path = typer.Argument(
        ...,
        help="References: 'id text' lines (Kaldi), JSONL (id + ref or text) or "
        "sclite trn ('text (id)', e.g. decode's ref.trn).",
    ),
    hypothesis: Path = typer.Argument(..., help="Hypotheses: 'id text' lines, JSONL (id + hyp or text) or trn."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
    missing_as_empty: bool = typer.Option(
        False, "--missing-as-empty", help="Score an id missing from one file as an empty text."
    ),
    normalizer: str = typer.Option(
        "basic-1", "--normalizer", help="Text normalizer for both sides: basic-1 | none | whisper-en"
    ),
    resamples: int = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples for the 95% CIs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Also write alignments.txt, ref.trn, hyp.trn, report.json in this folder."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (else it is refused)."),
    utt2spk: Optional[Path] = typer.Option(None, "--utt2spk", help="Kaldi utt2spk file: the speaker of each id."),
    name: Optional[str] = typer.Option(
        None,
        "--name",
        help="Write --out as a system dir named NAME (decode/<split>/result.json, hypotheses.jsonl; "
        "system: external) that compare, report and the length study take beside trained runs.",
    ),
    split: str = typer.Option("test", "--split", help="With --name: the split the result is filed under."),
) -> None:
    """Score any system's hypotheses against references: WER, CER, S/D/I, bootstrap CIs.

    A file is JSONL when its first non-blank line starts with '{', trn when it is named *.trn or every
    line ends in '(id)' (the whole id; decode's ref.trn and hyp.trn score as a pair), else Kaldi; a
    UTF-8 byte-order mark is ignored. decode's hypotheses.jsonl works as either file (its 'ref' field
    as references, 'hyp' as hypotheses). Per-speaker rates come
    only when every utterance's speaker is given: --utt2spk or a JSONL 'speaker' field (never the ids).
    A CSV (*.csv) has a header naming its id and text columns (id, utt_id, utterance_id, key; ref/hyp,
    text, transcript, transcription, prediction, sentence; optionally speaker)."""
    from asrbench.progress import console
    from asrbench.scoring.metrics import REPORT_FILES, render_score, score_files, undefined_rate_warning

    if fmt not in ("table", "json"):
        _fail(f"unknown format '{fmt}' (valid: table, json)")
    if name is not None:
        _score_external(
            reference, hypothesis, name, out, split, normalizer, missing_as_empty, resamples, seed, utt2spk, overwrite
        )
        return
    if out is not None:
        from asrbench import fileio

        fileio.refuse_to_replace([out / name for name in REPORT_FILES], overwrite)
    result = score_files(reference, hypothesis, normalizer, missing_as_empty, resamples, seed, out, utt2spk=utt2spk)
    warning = undefined_rate_warning(result, str(reference))
    if warning:
        console.print(f"[yellow]warning[/yellow]: {warning}", soft_wrap=True, highlight=False)
    typer.echo(render_score(result, fmt), nl=False)
    if out is not None:
        console.print(f"wrote {', '.join(REPORT_FILES)} in {out}", soft_wrap=True)


study_app = _typer(help="Studies of architectures on your data, with CIs: noise, data size, utterance length.")
app.add_typer(study_app, name="study")


@_command(study_app, "data")
def study_data(
    recipe: Path = typer.Argument(..., help="Recipe YAML."),
    models: str = typer.Option("all", "--models", help="'all' (every model of the recipe) or a,b,c."),
    fractions: str = typer.Option("0.1,0.25,0.5,1.0", "--fractions", help="Shares of train (nested subsets)."),
    seeds: int = typer.Option(1, "--seeds", help="Runs per model and fraction."),
    budget_minutes: Optional[float] = typer.Option(
        None, "--max-minutes", "--budget-minutes", help="The same training budget for all: " + BUDGET_HELP
    ),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Same number of epochs for all."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Study dir (default runs/study_data/<recipe>); an existing one is resumed."
    ),
    data: Optional[str] = typer.Option(None, "--data", help="Prepared data dir (overrides data.dir)."),
    set_: List[str] = typer.Option([], "--set", help="Override for every run, e.g. train.num_threads=1."),
    subset_seed: int = typer.Option(0, "--subset-seed", help="Seed of the subsets (the same for every model)."),
    jobs: int = typer.Option(1, "--jobs", help="Runs trained at once; pair with --threads N."),
    threads: int = typer.Option(
        0, "--threads", min=0, help="Torch threads of each run (sets train.num_threads; 0: the recipe's)."
    ),
    fmt: str = typer.Option("table", "--format", help="table | markdown | csv | json"),
) -> None:
    """Data-scaling curve: every model trained on nested subsets of train, test WER against hours; resumable."""
    from asrbench.studies.data_size import data_study, markdown, parse_fractions

    _check_format(fmt, SUMMARY_FORMATS)
    study = data_study(
        recipe,
        models,
        parse_fractions(fractions),
        seeds,
        out,
        budget_minutes,
        epochs,
        data,
        list(set_),
        subset_seed,
        jobs,
        threads=threads,
    )
    _print_summary(fmt, markdown(study), study["summary"], study)


@_command(study_app, "noise")
def study_noise(
    run_dirs: List[Path] = typer.Argument(..., help="Run dirs to decode under noise (the same audio for each)."),
    snr: str = typer.Option("inf,20,10,5,0", "--snr", help="SNRs in dB; inf: the clean split."),
    noise: str = typer.Option(
        "white", "--noise", help="white, pink, babble, or a directory of noise recordings; several, comma-separated."
    ),
    reverb: str = typer.Option("", "--reverb", help="RT60s in seconds of synthetic rooms, e.g. 0.3,0.6,0.9."),
    split: str = typer.Option("test", "--split", help="Split to corrupt and decode."),
    data: Optional[str] = typer.Option(None, "--data", help="Prepared data dir (default: the first run's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corruption (and of the bootstrap)."),
    beam: Optional[int] = typer.Option(None, "--beam", help="Beam size; 1 (default) is greedy search."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    fmt: str = typer.Option("table", "--format", help="table | markdown | csv | json"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write study.json, study.md and a plot here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (else it is refused)."),
    resamples: int = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples."),
    threads: int = typer.Option(0, "--threads", help="Torch threads (0: torch's default)."),
) -> None:
    """WER of each run under noise at several SNRs and in reverberant rooms, with CIs and pairwise tests."""
    import torch

    from asrbench.decoding.searchers import given_options
    from asrbench.progress import console
    from asrbench.studies.noise import FORMATS, noise_study, parse_conditions, render, write_study

    if fmt not in FORMATS:
        _fail(f"unknown format '{fmt}' (valid: {', '.join(FORMATS)})")
    if out is not None:
        from asrbench import fileio

        fileio.refuse_to_replace([out / "study.json", out / "study.md"], overwrite)
    if threads > 0:
        torch.set_num_threads(threads)
    conditions = parse_conditions(noise, snr, reverb)
    options, _ = given_options(beam=beam)  # --beam is positive (OPTION_LIMITS)
    study = noise_study(run_dirs, conditions, split, data, seed, options, device, resamples=resamples)
    typer.echo(render(study, fmt), nl=False)
    if out is not None:
        for path in write_study(study, out):
            console.print(f"wrote {path}", soft_wrap=True)


@_command(study_app, "length")
def study_length(
    run_dirs: List[Path] = typer.Argument(..., help="Run dirs with decode results for the split."),
    split: str = typer.Option("test", "--split", help="Split (its decode dir) to study."),
    bins: str = typer.Option("auto", "--bins", help="Duration bin edges in seconds (0,2,4,8), or auto: quartiles."),
    fmt: str = typer.Option("table", "--format", help="table | markdown | csv | json"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write study.json, study.md and a plot here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (else it is refused)."),
    resamples: int = typer.Option(1000, "--resamples", min=1, help="Bootstrap resamples per bin."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resamples."),
) -> None:
    """WER by utterance duration, by reference length in words and by speaker, with CIs per bin."""
    from asrbench.progress import console
    from asrbench.studies.length import FORMATS, length_study, render, write_study

    if fmt not in FORMATS:
        _fail(f"unknown format '{fmt}' (valid: {', '.join(FORMATS)})")
    if out is not None:
        from asrbench import fileio

        fileio.refuse_to_replace([out / "study.json", out / "study.md"], overwrite)
    study = length_study(run_dirs, split, bins, resamples, seed)
    typer.echo(render(study, fmt), nl=False)
    if out is not None:
        for path in write_study(study, out):
            console.print(f"wrote {path}", soft_wrap=True)


@_command(app, "report")
def report(
    inputs: List[Path] = typer.Argument(..., help="Run dirs (decoded on the split) and study dirs (study.json)."),
    out: Path = typer.Option(..., "--out", "-o", help="The HTML file to write."),
    split: str = typer.Option("test", "--split", help="Split (its decode dir) the runs are compared on."),
    worst: int = typer.Option(10, "--worst", min=0, help="Utterances per run in the error browser."),
    link_audio: bool = typer.Option(False, "--link-audio", help="Link the audio files instead of embedding clips."),
    title: str = typer.Option("asrbench report", "--title", help="The page's title."),
    screenshot: Optional[Path] = typer.Option(
        None, "--screenshot", help="Also save a PNG of the page (headless Chromium, report extra)."
    ),
    threads: int = typer.Option(
        0, "--threads", min=0, help="Torch threads for the posteriorgrams (0: torch's default)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (else it is refused)."),
) -> None:
    """One self-contained HTML page: comparison, plots, breakdowns, studies and an error browser."""
    from asrbench import fileio
    from asrbench.progress import console
    from asrbench.studies.report import select_inputs, take_screenshot, write_report

    fileio.refuse_to_replace([out] + ([screenshot] if screenshot else []), overwrite)
    _threads(threads)
    inputs = select_inputs(inputs)
    path = write_report(inputs, out, split=split, worst=worst, link_audio=link_audio, title=title)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", soft_wrap=True)
    if screenshot is not None:
        console.print(f"wrote {take_screenshot(path, screenshot)}", soft_wrap=True)


lm_app = _typer(help="Train n-gram language models for CTC beam search.")
app.add_typer(lm_app, name="lm")


@_command(lm_app, "train")
def lm_train(
    data_dir: Path = typer.Argument(..., help="Prepared data dir; only train.jsonl is learned from."),
    order: int = typer.Option(3, "--order", help="n-gram order."),
    out: Path = typer.Option(..., "--out", "-o", help="LM dir to write lm.arpa, lexicon.txt and lm.json into."),
    unit: str = typer.Option("word", "--unit", help="word | char"),
    normalizer: str = typer.Option(
        "basic-1", "--normalizer", help="Text normalizer applied before training: basic-1 | none | whisper-en"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output (else it is refused)."),
) -> None:
    """Train a Kneser-Ney n-gram LM on a data dir's training transcripts."""
    from asrbench import fileio
    from asrbench.decoding.lm import train_lm
    from asrbench.progress import console

    fileio.refuse_to_replace([out / name for name in ("lm.arpa", "lexicon.txt", "lm.json")], overwrite)
    summary = train_lm(data_dir, out, order=order, unit=unit, normalizer=normalizer)
    ngrams = " ".join(f"{n}-grams {count}" for n, count in summary["ngram_counts"].items())
    dev = summary["dev_perplexity"]
    console.print(
        f"lm {summary['unit']} {summary['order']}-gram: {summary['sentences']} sentences, "
        f"vocab {summary['vocabulary_size']}, {ngrams}, "
        f"dev perplexity {'n/a' if dev is None else f'{dev:.2f}'} -> {out}",
        soft_wrap=True,
    )
