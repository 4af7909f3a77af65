"""The command line: thin commands over library functions; user errors are one line and exit 2."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import typer
from helpers import fake_run, run_main
from typer.testing import CliRunner

from asrbench import cli
from asrbench.cli import app, run_app
from asrbench.errors import AsrbenchError
from asrbench.models import MODELS, build_model, count_parameters, default_options
from asrbench.studies.compare import collect

RECIPE = Path(__file__).parents[1] / "asrbench" / "recipe" / "yesno.yaml"

runner = CliRunner()


def test_models_lists_every_model_with_its_parameter_count():
    result = runner.invoke(app, ["models", "--no-flops"], terminal_width=250, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name in MODELS:
        parameters = count_parameters(build_model(name, default_options(name), 80, 30))
        row = [line for line in lines if line.count("│") >= 2 and line.split("│")[1].strip() == name]
        assert row, f"{name} missing from:\n{result.output}"
        assert f"{parameters:,}" in row[-1]  # the models table (the matrix comes first)
    assert len(MODELS) >= 21


def test_models_prints_the_encoder_by_head_matrix_at_a_recipe_s_options():
    from asrbench.models import MATRIX
    from asrbench.recipe.config import resolve

    result = runner.invoke(
        app, ["models", "--recipe", "yesno", "--no-flops"], terminal_width=250, env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "encoder" in line and "transducer" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == ["encoder", "ctc", "aed", "transducer"]
    matrix = result.output.split("models (")[0]  # the list below it also has four columns (with GFLOPs/s)
    rows = {
        line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
        for line in matrix.splitlines()
        if line.count("│") == 5
    }
    cnn = resolve(RECIPE, "cnn")  # yesno's options and its 40 mel bins
    count = count_parameters(build_model("cnn", cnn.model.options, cnn.features.dim(), 30))
    assert rows["cnn"][0] == f"cnn {count:,}"
    assert rows["lstm"][1].startswith("las ") and rows["gru"][1].startswith("gru_aed ")
    assert [rows[encoder][2].split()[0] for encoder in ("cnn", "conformer")] == [
        MATRIX[("cnn", "transducer")],
        "conformer_transducer",
    ]


@pytest.mark.slow  # it counts the FLOPs of all 30 models (about 10 s): in make test, not in make test-fast
def test_models_shows_each_model_s_gflops_per_second_beside_its_parameters():
    """Issue 30: the forward GFLOPs per second of audio (asrbench.models.cost) in the list and the matrix."""
    from asrbench.models.cost import forward_gflops_per_second

    result = runner.invoke(app, ["models"], terminal_width=250, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if "params" in line and "description" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]][:3] == ["name", "params", "GFLOPs/s"]
    listed = result.output.split("models (")[1].splitlines()  # the list, after the matrix
    rows = {line.split("│")[1].strip(): line.split("│")[2:-1] for line in listed if line.count("│") == 5}
    for name in ("dnn", "conformer_transducer"):
        gflops = forward_gflops_per_second(build_model(name, default_options(name), 80, 30), 80)
        assert rows[name][1].strip() == f"{gflops:.3g}"
        assert f"{gflops:.3g} GFLOPs/s" in result.output  # under the model's name in the matrix
    quick = runner.invoke(app, ["models", "--no-flops"], terminal_width=250, env={"COLUMNS": "250"})
    assert quick.exit_code == 0 and "GFLOPs/s " not in quick.output.replace("GFLOPs/s ┃", "")


def test_train_with_unknown_model_lists_valid_models(monkeypatch, capsys, tmp_path):
    code, out, err = run_main(
        monkeypatch, capsys, "train", str(RECIPE), "--model", "whisper", "--out", str(tmp_path / "run")
    )
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "whisper" in err
    for name in MODELS:
        assert name in err
    assert not (tmp_path / "run").exists()


def test_train_without_recipe_or_model_is_a_user_error(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "train", "--out", str(tmp_path / "run"))
    assert code == 2
    assert "recipe and --model" in err


@pytest.mark.parametrize("make_dir", [True, False], ids=["empty-folder", "missing-folder"])
def test_decode_on_something_that_is_not_a_run_dir(monkeypatch, capsys, tmp_path, make_dir):
    target = tmp_path / "not-a-run"
    if make_dir:
        target.mkdir()
        (target / "notes.txt").write_text("hello", encoding="utf-8")
    code, out, err = run_main(monkeypatch, capsys, "decode", str(target))
    assert code == 2
    assert err.startswith(f"error: {target}") and err.count("\n") == 1
    assert ("not a run dir" if make_dir else "run dir not found") in err
    assert "Traceback" not in err


def test_debug_flag_keeps_the_exception(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["asrbench", "--debug", "decode", str(tmp_path)])
    monkeypatch.setitem(cli._state, "debug", False)
    with pytest.raises(AsrbenchError, match="not a run dir"):
        run_app()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["no-such-command"], "no-such-command"),
        (["train", "--epochs", "many", "--out", "run"], "epochs"),
        (["decode"], "run_dir"),
    ],
    ids=["unknown-command", "bad-option-value", "missing-argument"],
)
def test_usage_errors_exit_2_without_a_traceback(monkeypatch, capsys, args, fragment):
    """Regression test (fixed): typer >= 0.2x vendors click as ``typer._click``, so run_app's
    ``isinstance(err, click.ClickException)`` is False for typer's usage errors: an unknown
    command, a bad option value or a missing argument escape as a traceback with exit code 1.
    Fix: let click handle its own errors (``app()`` in standalone mode, catching only
    AsrbenchError around it), or test for the ClickException class typer actually raises."""
    try:
        code, _, err = run_main(monkeypatch, capsys, *args)
    except Exception as exc:  # noqa: BLE001 - a usage error must not escape run_app
        pytest.fail(f"run_app raised {type(exc).__module__}.{type(exc).__name__}: {exc}")
    assert code == 2
    assert fragment.lower() in err.lower()
    assert "Traceback" not in err


def test_failing_command_exit_code_reaches_the_shell(monkeypatch, capsys, tmp_path):
    """Regression test (fixed): ``_fail`` raises ``typer.Exit(2)``; with ``app(standalone_mode=False)`` click *returns*
    2 instead of raising, run_app drops the return value, and the process exits 0 after printing
    the error (e.g. ``asrbench compare RUN --format xml``). Fix: ``sys.exit(app(...) or 0)``, or
    standalone mode as above."""
    run = fake_run(tmp_path, "lstm", 12.5)
    code, _, err = run_main(monkeypatch, capsys, "compare", str(run), "--format", "xml")
    assert "unknown format 'xml'" in err
    assert code == 2


def test_compare_json(tmp_path):
    runs = [fake_run(tmp_path, "lstm", 12.5), fake_run(tmp_path, "cnn", 9.0)]
    result = runner.invoke(app, ["compare", *map(str, runs), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows == collect(runs)
    assert [(row["model"], row["wer"], row["epochs"]) for row in rows] == [("lstm", 12.5, 2), ("cnn", 9.0, 2)]


def test_compare_csv_to_a_file(tmp_path):
    runs = [fake_run(tmp_path, "gru", 20.0)]
    out = tmp_path / "table.csv"
    result = runner.invoke(app, ["compare", str(runs[0]), "--format", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    (row,) = csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))
    assert row["model"] == "gru" and float(row["wer"]) == 20.0


def test_compare_table_and_markdown(tmp_path):
    runs = [fake_run(tmp_path, "lstm", 12.5), fake_run(tmp_path, "cnn", 9.0)]
    table = runner.invoke(app, ["compare", *map(str, runs)])
    assert table.exit_code == 0 and "12.50" in table.stdout and "9.00" in table.stdout
    markdown = runner.invoke(app, ["compare", *map(str, runs), "--format", "markdown"])
    assert markdown.exit_code == 0
    assert markdown.stdout.split("\n\n")[0].count("\n") == 3 and "| lstm |" in markdown.stdout


def test_compare_unknown_format_exits_2(tmp_path):
    run = fake_run(tmp_path, "lstm", 12.5)
    result = runner.invoke(app, ["compare", str(run), "--format", "xml"])
    assert result.exit_code == 2
    assert "unknown format 'xml'" in result.stderr
    for fmt in ("table", "markdown", "csv", "json"):
        assert fmt in result.stderr


def test_compare_without_decode_results_exits_2(monkeypatch, capsys, tmp_path):
    (tmp_path / "config.yaml").write_text("{}")
    code, _, err = run_main(monkeypatch, capsys, "compare", str(tmp_path), "--format", "json")
    assert code == 2
    assert "no decode result" in err and err.count("\n") == 1


def test_console_script_turns_user_errors_into_one_line():
    script = Path(sys.executable).parent / "asrbench"
    assert script.is_file(), f"{script}: console script not installed (pip install -e .)"
    target = Path(__file__).parent  # a folder that exists but is not a run dir
    result = subprocess.run([str(script), "decode", str(target)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {target}: not a run dir")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


# --- issue 15: what a new user hit in the first hour ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["compare", "x", "--outt", "x.md"], "No such option: --outt"),
        (["train", "--epochs", "many", "--out", "run"], "Invalid value for '--epochs'"),
        (["decode"], "Missing argument"),
        (["data", "prepare", "an4"], "Missing option '--out'"),
    ],
    ids=["unknown-option", "bad-value", "missing-argument", "subcommand"],
)
def test_usage_errors_are_one_line_naming_the_help_to_read(monkeypatch, capsys, args, fragment):
    """Regression (issue 15.9): unknown options printed Typer's boxed usage error, not one line."""
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    command = " ".join(
        [
            "asrbench",
            *[a for a in args[:2] if not a.startswith("-") and a in ("compare", "train", "decode", "data", "prepare")],
        ]
    )
    assert f"(see '{command} --help')" in err
    assert "╭" not in err and "Usage:" not in err


def test_compare_writes_with_out_and_keeps_output_as_an_alias(monkeypatch, capsys, tmp_path):
    """Regression (issue 15.9): compare wrote with -o/--output while every other command uses --out,
    and said nothing about the file it wrote."""
    runs = [str(fake_run(tmp_path, "lstm", 12.5)), str(fake_run(tmp_path, "cnn", 9.0))]
    for flag in ("--out", "-o", "--output"):
        target = tmp_path / f"table{flag.strip('-')}.md"
        code, out, err = run_main(monkeypatch, capsys, "compare", *runs, "--format", "markdown", flag, str(target))
        assert code == 0, err
        assert target.read_text().startswith("| run | model |") and out == ""
        assert f"wrote {target}" in err
    # The rich table goes to the file too when --out is given (it used to go to the terminal).
    code, out, err = run_main(monkeypatch, capsys, "compare", *runs, "--out", str(tmp_path / "table.txt"))
    assert code == 0 and "lstm" in (tmp_path / "table.txt").read_text() and out == ""


def test_compare_over_a_glob_skips_what_is_not_a_run_dir(monkeypatch, capsys, tmp_path):
    """Regression (issue 15.5): ``compare runs/an4/*`` failed on the LM dir with "run asrbench decode first"."""
    runs = [str(fake_run(tmp_path, "lstm", 12.5)), str(fake_run(tmp_path, "cnn", 9.0))]
    lm_dir = tmp_path / "lm3"
    lm_dir.mkdir()
    (lm_dir / "lm.json").write_text("{}")
    code, out, err = run_main(monkeypatch, capsys, "compare", *runs, str(lm_dir), "--format", "json")
    assert code == 0, err
    assert [row["model"] for row in json.loads(out)] == ["lstm", "cnn"]
    assert f"note: skipped {lm_dir}: not a run dir" in " ".join(err.split())
    code, _, err = run_main(monkeypatch, capsys, "compare", str(lm_dir))
    assert code == 2 and err == f"error: {lm_dir}: not a run dir (no config.yaml or decode/ in it)\n"


def test_ctrl_c_outside_training_says_interrupted(monkeypatch, capsys):
    """Regression (issue 15.10): a deliberate Ctrl-C is "interrupted" with exit code 130, never "error:"."""
    import asrbench.models as models_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(models_module, "build_model", interrupted)
    code, _, err = run_main(monkeypatch, capsys, "models")
    assert code == 130 and err == "interrupted\n"


def test_help_shows_extras_and_no_placeholder_after_flags():
    """Regression (issue 15.12): Rich ate ``[synth]`` as markup, and flags showed ``<bool>``."""
    synth = runner.invoke(app, ["data", "synth", "--help"], terminal_width=100)
    assert synth.exit_code == 0 and "asrbench[synth]" in synth.output
    for command in (["train"], ["decode"], ["data", "synth"], []):
        output = runner.invoke(app, [*command, "--help"], terminal_width=100).output
        assert "<bool>" not in output, command
    train = runner.invoke(app, ["train", "--help"], terminal_width=100).output
    assert "--resume" in train and "<int>" in train  # options that take a value keep their type


def test_models_describes_each_model_differently():
    """Regression (issue 15.13): lstm/gru and transformer_aed/conformer_aed had identical descriptions."""
    from asrbench.models import describe_model

    descriptions = {name: describe_model(name) for name in MODELS}
    assert len(set(descriptions.values())) == len(MODELS), descriptions
    prefixes = {"CTC": "CTC: ", "attention encoder-decoder": "Attention: ", "transducer": "Transducer: "}
    for name, text in descriptions.items():
        assert text.startswith(prefixes[MODELS[name].family.name]), (name, text)
    output = runner.invoke(app, ["models", "--no-flops"], terminal_width=200).output
    assert "make demo` trains the seven CTC models" in " ".join(output.split())


def test_score_prints_per_speaker_rows_only_when_speakers_are_known(tmp_path):
    """Regression (issue 15.15): Kaldi files without speakers printed per-utterance "per speaker" rows."""
    ref = tmp_path / "ref.txt"
    hyp = tmp_path / "hyp.txt"
    ref.write_text("utt1 hello there\nutt2 good morning\n")
    hyp.write_text("utt1 hello their\nutt2 good morning\n")
    plain = runner.invoke(app, ["score", str(ref), str(hyp), "--format", "json"])
    assert plain.exit_code == 0 and json.loads(plain.stdout)["per_speaker"] is None
    assert "per speaker" not in runner.invoke(app, ["score", str(ref), str(hyp)]).stdout
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("utt1 alice\nutt2 bob\n")
    known = runner.invoke(app, ["score", str(ref), str(hyp), "--utt2spk", str(utt2spk), "--format", "json"])
    scored = json.loads(known.stdout)
    assert [row["speaker"] for row in scored["per_speaker"]] == ["alice", "bob"] and scored["speakers"] == "given"
    table = runner.invoke(app, ["score", str(ref), str(hyp), "--utt2spk", str(utt2spk)], terminal_width=140).stdout
    assert "per speaker (2 speakers" in table and "alice" in table


def test_score_warns_when_the_wer_is_undefined(tmp_path):
    """Regression (issue 15.2): an empty reference against 'hello there' printed WER 0.00%."""
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("u1\n")
    hyp.write_text("u1 hello there\n")
    result = runner.invoke(app, ["score", str(ref), str(hyp)], terminal_width=140)
    assert result.exit_code == 0
    assert "n/a" in result.stdout and "0.00" not in result.stdout.split("\n")[3]
    assert "WER is undefined (n/a); 2 inserted words over 1 utterances" in " ".join(result.stderr.split())
    assert json.loads(runner.invoke(app, ["score", str(ref), str(hyp), "--format", "json"]).stdout)["wer"] is None


def test_data_prepare_manifest_takes_files_by_split(tmp_path, write_audio):
    """Regression (issue 15.7): explicit manifest files (``--train F --dev F --test F``)."""
    files = {}
    for split in ("train", "dev", "test"):
        audio = write_audio(tmp_path / "wav" / f"{split}.wav")
        files[split] = tmp_path / f"{split}_list.json"
        files[split].write_text(json.dumps({"audio_filepath": str(audio), "duration": 0.5, "text": "hi"}) + "\n")
    result = runner.invoke(
        app,
        [
            "data",
            "prepare",
            "manifest",
            "--train",
            str(files["train"]),
            "--dev",
            str(files["dev"]),
            "--test",
            str(files["test"]),
            "--out",
            str(tmp_path / "data"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == ["dev.jsonl", "test.jsonl", "train.jsonl"]


# --- numbers checked where they are parsed, before anything is written (issue 28.4) -------------


def fake_run_dir(root: Path) -> Path:
    """A folder that passes for a run dir (config.yaml, checkpoints/best.pt) until it is read."""
    run_dir = root / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("{}\n", encoding="utf-8")
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"")
    return run_dir


TRAIN = ["train", str(RECIPE), "--out", "new-run"]
BAD_NUMBERS = [
    (
        TRAIN + ["--model", "conformer", "--set", "model.d_model=63"],
        "model.d_model must be divisible by model.num_heads (4), got 63",
    ),
    (TRAIN + ["--model", "conformer", "--set", "model.num_heads=5"], "--set model.num_heads=5: model.d_model"),
    (TRAIN + ["--model", "conformer", "--set", "model.num_layers=-1"], "model.num_layers must be positive"),
    (TRAIN + ["--model", "cnn", "--set", "model.kernel_size=8"], "model.kernel_size must be odd"),
    (TRAIN + ["--model", "gru", "--set", "model.forget_bias=1"], "forget_bias applies to LSTMs only"),
    (TRAIN + ["--model", "cnn", "--set", "train.lr=nan"], "train.lr must be a finite number"),
    (TRAIN + ["--model", "cnn", "--set", "features.frame_shift_ms=0"], "features.frame_shift_ms must be positive"),
    (TRAIN + ["--model", "cnn", "--set", "augment.time_mask_ratio=2"], "augment.time_mask_ratio must be in [0, 1]"),
    (TRAIN + ["--model", "cnn", "--set", "data.subset_seed=-1"], "data.subset_seed must not be negative"),
    (TRAIN + ["--model", "cnn", "--epochs", "0"], "'--epochs'"),
    (TRAIN + ["--model", "cnn", "--max-minutes", "nan"], "'--max-minutes'"),
    (TRAIN + ["--model", "cnn", "--seed", "-1"], "'--seed'"),
    (TRAIN + ["--model", "cnn", "--threads", "-2"], "'--threads'"),
    (["decode", "run", "--lm-weight", "nan"], "'--lm-weight': must be a finite number, got nan"),
    (["decode", "run", "--lm-weight", "-1", "--lm", "lm"], "'--lm-weight': must not be negative"),
    (["decode", "run", "--threads", "-2"], "'--threads': must not be negative, got -2"),
    (["decode", "run", "--beam", "0"], "'--beam'"),
    (["decode", "run", "--ctc-weight", "1.5"], "'--ctc-weight': must be in [0, 1]"),
    (["decode", "run", "--word-bonus", "inf", "--lm", "lm"], "'--word-bonus'"),
    (["decode", "run", "--chunk-ms", "-40"], "'--chunk-ms'"),
    (["decode", "run", "--chunk-ms", "320", "--left-chunks", "-3"], "'--left-chunks': must be -1 (all) or at least"),
    (["transcribe", "run", "a.wav", "--max-segment", "nan"], "'--max-segment'"),
    (["transcribe", "run", "a.wav", "--vad-pad", "-1"], "'--vad-pad'"),
    (["transcribe", "run", "a.wav", "--stream", "--chunk-ms", "0"], "'--chunk-ms': must be positive"),
    (["transcribe", "run", "a.wav", "--threads", "-1"], "'--threads'"),
    (["bench", str(RECIPE), "--max-minutes", "-1"], "'--max-minutes'"),
    (["bench", str(RECIPE), "--jobs", "0"], "'--jobs'"),
    (["bench", str(RECIPE), "--seeds", "0"], "'--seeds'"),
    (["study", "data", str(RECIPE), "--epochs", "0"], "'--epochs'"),
    (["study", "noise", "run", "--beam", "0"], "'--beam'"),
    (["study", "noise", "run", "--threads", "-3"], "'--threads'"),
    (["study", "noise", "run", "--reverb", "nan"], "--reverb"),
    (["study", "noise", "run", "--snr", "nan"], "--snr"),
    (["compare", "run", "--alpha", "nan"], "'--alpha'"),
    (["score", "ref.txt", "hyp.txt", "--seed", "-1"], "'--seed'"),
    (["lm", "train", "data", "--order", "0", "--out", "lm"], "'--order'"),
    (["data", "synth", "--out", "synth", "--train", "-5"], "'--train'"),
    (["tune", "run", "--beams", "10,0"], "--beams"),
    (["tune", "run", "--lm", "lm", "--lm-weights", "0.5,nan"], "--lm-weights"),
    (["tune", "run", "--ctc-weights", "1.5"], "--ctc-weights"),
]


@pytest.mark.parametrize(
    ("args", "message"), BAD_NUMBERS, ids=[" ".join(args[:1] + args[-2:]) for args, _ in BAD_NUMBERS]
)
def test_bad_numbers_fail_in_one_line_before_anything_is_written(monkeypatch, capsys, tmp_path, args, message):
    """Regression (issue 28.4): ``decode --lm-weight nan`` wrote a 100% WER result with exit 0,
    ``--threads -2`` was accepted, ``--set model.d_model=63`` ended in a traceback leaving a run dir
    with only ``.lock``. Every numeric option and config value is checked where it is parsed."""
    monkeypatch.chdir(tmp_path)
    fake_run_dir(tmp_path)
    before = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*"))
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2, (out, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err
    assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*")) == before


def _numeric_options() -> list:
    found = []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])
        for param in [] if hasattr(command, "commands") else command.params:
            annotation = param.type_descriptor.annotation
            if annotation in (int, float) or set(typing.get_args(annotation)) & {int, float}:
                found.append(pytest.param(" ".join(path), param.name, id=f"{' '.join(path)} {param.opts[0]}"))

    walk(typer.main.get_command(app), [])
    return found


@pytest.mark.parametrize(("command", "name"), _numeric_options())
def test_every_numeric_option_has_a_range(command, name):
    assert cli.option_limit(command, name) is not None, f"asrbench {command}: no range for {name}"


# --- options that mean something only with another (issue 28.12) ------------------------------

TRANSCRIBE = ["transcribe", "run", "a.wav"]
IGNORED = [
    (TRANSCRIBE + ["--chunk-ms", "640"], "--chunk-ms only applies with --stream"),
    (TRANSCRIBE + ["--left-chunks", "2"], "--left-chunks only applies with --stream"),
    (TRANSCRIBE + ["--endpoint-silence", "0.5"], "--endpoint-silence only applies with --stream"),
    (TRANSCRIBE + ["--no-partials"], "--partials/--no-partials only applies with --stream"),
    (TRANSCRIBE + ["--stream", "--vad-pad", "0.2"], "--vad-pad does not apply with --stream"),
    (TRANSCRIBE + ["--stream", "--vad", "silero"], "--vad does not apply with --stream"),
    (TRANSCRIBE + ["--vad", "silero", "--energy-margin", "10"], "--energy-margin only applies with --vad energy"),
    (TRANSCRIBE + ["--vad", "none", "--min-silence", "0.5"], "--min-silence does not apply with --vad none"),
    (TRANSCRIBE + ["--lm-weight", "0.3"], "--lm-weight only applies with --lm"),
    (["decode", "run", "--lm-weight", "0.3"], "--lm-weight only applies with --lm"),
    (["decode", "run", "--left-chunks", "2"], "--left-chunks only applies with --chunk-ms"),
    (["decode", "run", "--backend", "flashlight"], "--backend only applies to beam search"),
    (["decode", "run", "--word-bonus", "1"], "--word-bonus only applies to beam search"),
    (["tune", "run", "--lm-weights", "0.5,1"], "--lm-weights only applies with --lm"),
]


@pytest.mark.parametrize(("args", "message"), IGNORED, ids=[" ".join(args[:1] + args[3:]) for args, _ in IGNORED])
def test_an_option_without_the_one_it_needs_is_an_error_naming_both(monkeypatch, capsys, tmp_path, args, message):
    """Regression (issue 28.12): ``transcribe --chunk-ms`` without ``--stream`` and ``decode --lm-weight``
    without ``--lm`` were silently ignored."""
    monkeypatch.chdir(tmp_path)
    fake_run_dir(tmp_path)
    code, out, err = run_main(monkeypatch, capsys, *args)
    assert code == 2, (out, err)
    assert err == f"error: {message}" + err[len(f"error: {message}") :] and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "args",
    [
        ["decode", "run", "--lm-weight", "0.3", "--lm", "lm"],
        ["decode", "run", "--chunk-ms", "320", "--left-chunks", "2"],
        ["decode", "run", "--beam", "4", "--backend", "flashlight", "--word-bonus", "1"],
        ["decode", "run", "--lexicon", "train", "--word-bonus", "1"],
        TRANSCRIBE + ["--stream", "--chunk-ms", "640", "--left-chunks", "2", "--no-partials"],
        TRANSCRIBE + ["--vad", "silero", "--min-silence", "0.5"],
        TRANSCRIBE + ["--energy-margin", "12", "--vad-pad", "0.3"],
    ],
)
def test_an_option_with_the_one_it_needs_gets_past_the_check(monkeypatch, capsys, tmp_path, args):
    monkeypatch.chdir(tmp_path)
    fake_run_dir(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert "only applies" not in err and "does not apply" not in err
    assert "unreadable checkpoint" in err  # it got as far as loading the (fake) model


def test_lm_weight_with_tuned_values_that_have_no_lm_is_an_error(tmp_path):
    """``decode --tuned --lm-weight W``: the weight applies to the tuned LM; without one it means nothing."""
    from asrbench.decoding.decode import resolve_options
    from asrbench.decoding.searchers import DecodeOptions

    (tmp_path / "tuned.json").write_text(json.dumps({"split": "dev", "options": {"beam": 4}}), encoding="utf-8")
    with pytest.raises(AsrbenchError, match=r"^--lm-weight only applies with --lm \(.*tuned.json has no LM\)"):
        resolve_options(tmp_path, DecodeOptions(lm_weight=0.3), {"lm_weight"}, use_tuned=True)
    (tmp_path / "tuned.json").write_text(
        json.dumps({"split": "dev", "options": {"beam": 4, "lm": "lm", "lm_weight": 0.5}})
    )
    options, _ = resolve_options(tmp_path, DecodeOptions(lm_weight=0.3), {"lm_weight"}, use_tuned=True)
    assert options.lm == "lm" and options.lm_weight == 0.3


@pytest.mark.parametrize("command", [["train"], ["bench"], ["study", "data"]])
def test_max_minutes_says_that_zero_is_no_budget(command):
    group = typer.main.get_command(app)
    for name in command:
        group = group.commands[name]
    option = next(param for param in group.params if "--max-minutes" in param.opts)
    assert "0 = no budget" in option.help, option.help


@pytest.mark.slow  # three listings of 30 models: in make test, not in test-fast (its 60 s)
def test_models_keeps_its_gflops_counts_and_replaces_an_unreadable_file(monkeypatch, tmp_path):
    """The second `asrbench models` reads the counts the first measured (a minute of CPU -> a file
    read); a corrupt file is measured afresh and rewritten. The measure is a stub here (each model's
    figure its parameter count / 1e7): what is tested is what is kept and read back."""
    import asrbench.models.cost as cost

    def stub(model, *args):
        return sum(p.numel() for p in model.parameters()) / 1e7

    monkeypatch.setenv("ASRBENCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cost, "_MEASURED", {})
    monkeypatch.setattr(cost, "forward_gflops_per_second", stub)
    first = runner.invoke(app, ["models"], terminal_width=250, env={"COLUMNS": "250"})
    assert first.exit_code == 0, first.output
    kept = json.loads((tmp_path / "flops.json").read_text())
    assert len(kept) == len(MODELS) and all(value > 0 for value in kept.values())
    monkeypatch.setattr(cost, "_MEASURED", {})
    monkeypatch.setattr(cost, "forward_gflops_per_second", lambda *args: pytest.fail("measured again"))
    again = runner.invoke(app, ["models"], terminal_width=250, env={"COLUMNS": "250"})
    assert again.exit_code == 0 and again.output == first.output
    monkeypatch.setattr(cost, "forward_gflops_per_second", stub)
    (tmp_path / "flops.json").write_text("{not json")
    repaired = runner.invoke(app, ["models"], terminal_width=250, env={"COLUMNS": "250"})
    assert repaired.exit_code == 0 and repaired.output == first.output
    assert json.loads((tmp_path / "flops.json").read_text()) == kept
