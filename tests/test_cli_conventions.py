"""One convention for the options every command shares (docs/using.md, "Options every command shares").

The walk over the typer app checks the names; the behaviour tests check that an existing output is
refused unless --overwrite, and that the old spellings still work.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main
from helpers import fake_run, run_main

from asrbench.cli import app

ROOT = Path(__file__).resolve().parents[1]

# Commands that run a network (train or inference): --threads sets torch's threads (train.num_threads
# for those that train).
COMPUTING = {"train", "decode", "tune", "export", "transcribe", "report", "bench", "study data", "study noise"}
# Commands that print tables: --format.
TABLES = {"compare", "score", "bench", "study data", "study noise", "study length"}
# Commands whose output replaces what is there: refused unless --overwrite.
REFUSING = {
    "compare",
    "score",
    "report",
    "transcribe",
    "export",
    "data prepare",
    "data synth",
    "lm train",
    "study noise",
    "study length",
}
# Commands whose --out is resumed or refused by their own rule (a run dir holding a run; a sweep
# or study dir continued; a download dir whose archives are reused).
RESUMING = {"train", "bench", "study data", "data download"}


def commands() -> dict[str, list]:
    """Every leaf command of the app: 'study data' -> its click options."""
    found: dict[str, list] = {}

    def walk(command, path: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = [p for p in command.params if p.param_type_name == "option"]

    walk(typer.main.get_command(app), [])
    return found


def flags(options: list) -> set[str]:
    return {flag for option in options for flag in option.opts + option.secondary_opts}


def option(options: list, flag: str):
    (found,) = [o for o in options if flag in o.opts]
    return found


def test_the_walk_finds_every_command():
    assert {"train", "decode", "compare", "report", "study data", "lm train", "data prepare"} <= set(commands())


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_output_option_is_out_and_o(name):
    """Regression (issue 28.13): -o was missing on train, lm train, data prepare, study data; data
    download wrote to --dest."""
    options = commands()[name]
    outputs = [o for o in options if o.name in ("out", "output", "dest")]
    for found in outputs:
        assert found.opts[:2] == ["--out", "-o"], (name, found.opts)
    if outputs:
        assert name in REFUSING | RESUMING, f"{name}: an output that is neither refused nor resumed"


@pytest.mark.parametrize("name", sorted(COMPUTING))
def test_every_computing_command_takes_threads(name):
    """Regression (issue 28.13): train, tune, export had no --threads."""
    options = commands()[name]
    assert "--threads" in flags(options), name
    assert option(options, "--threads").default == 0


def test_budgets_are_max_minutes_everywhere_with_the_old_spelling_kept():
    """Regression (issue 28.13): bench and study data took --budget-minutes, train --max-minutes."""
    budgeted = {name for name, options in commands().items() if flags(options) & {"--max-minutes", "--budget-minutes"}}
    assert budgeted == {"train", "bench", "study data"}
    for name in budgeted:
        found = [o for o in commands()[name] if {"--max-minutes", "--budget-minutes"} & set(o.opts)]
        assert len(found) == 1 and found[0].opts[0] == "--max-minutes", (name, found[0].opts)
    for name in ("bench", "study data"):
        assert "--budget-minutes" in option(commands()[name], "--max-minutes").opts


@pytest.mark.parametrize("name", sorted(TABLES))
def test_every_table_command_takes_format(name):
    """Regression (issue 28.13): study data had no --format."""
    assert "--format" in flags(commands()[name]), name


@pytest.mark.parametrize("name", sorted(REFUSING))
def test_every_replacing_command_takes_overwrite(name):
    """Regression (issue 28.13): export refused an existing --out, compare, report, transcribe overwrote it."""
    assert "--overwrite" in flags(commands()[name]), name


def test_the_convention_is_written_down():
    text = (ROOT / "docs" / "using.md").read_text(encoding="utf-8")
    section = text.split("## Options every command shares", 1)[1].split("\n## ", 1)[0]
    for flag in ("--out", "-o", "--overwrite", "--threads", "--max-minutes", "--format", "--budget-minutes"):
        assert f"`{flag}" in section, flag


# --- behaviour: an existing output is refused unless --overwrite -----------------------------------


def refused(code: int, err: str, path: Path) -> bool:
    return code == 2 and err == f"error: {path}: already exists (pass --overwrite to replace it)\n"


def test_compare_out_refuses_an_existing_file_unless_overwrite(monkeypatch, capsys, tmp_path):
    run = str(fake_run(tmp_path, "lstm", 12.5))
    target = tmp_path / "table.md"
    target.write_text("mine")
    code, _, err = run_main(monkeypatch, capsys, "compare", run, "--format", "markdown", "-o", str(target))
    assert refused(code, err, target) and target.read_text() == "mine"
    code, _, err = run_main(
        monkeypatch, capsys, "compare", run, "--format", "markdown", "-o", str(target), "--overwrite"
    )
    assert code == 0, err
    assert target.read_text().startswith("| run | model |")


def test_compare_plot_refuses_existing_figures(monkeypatch, capsys, tmp_path):
    run = str(fake_run(tmp_path, "lstm", 12.5))
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "wer_vs_params.png").write_bytes(b"mine")
    code, _, err = run_main(monkeypatch, capsys, "compare", run, "--plot", str(plots))
    assert refused(code, err, plots / "wer_vs_params.png")


def test_report_refuses_an_existing_page(monkeypatch, capsys, tmp_path):
    run = str(fake_run(tmp_path, "lstm", 12.5))
    page = tmp_path / "report.html"
    page.write_text("mine")
    code, _, err = run_main(monkeypatch, capsys, "report", run, "-o", str(page))
    assert refused(code, err, page) and page.read_text() == "mine"


def test_export_refuses_a_folder_with_files_and_takes_an_empty_one(monkeypatch, capsys, tmp_path):
    import asrbench.deploy.export as export_module

    calls = []
    monkeypatch.setattr(
        export_module,
        "export_run",
        lambda *args, **kw: (
            calls.append(args)
            or {"model": "cnn", "units": "char", "max_abs_difference_vs_pytorch": {"model.onnx": 1e-6}}
        ),
    )
    out = tmp_path / "exported"
    out.mkdir()
    code, _, err = run_main(monkeypatch, capsys, "export", str(tmp_path / "run"), "-o", str(out))
    assert code == 0, err  # an empty folder is not an output to lose
    (out / "model.onnx").write_bytes(b"mine")
    code, _, err = run_main(monkeypatch, capsys, "export", str(tmp_path / "run"), "-o", str(out))
    assert refused(code, err, out) and len(calls) == 1
    code, _, err = run_main(monkeypatch, capsys, "export", str(tmp_path / "run"), "-o", str(out), "--overwrite")
    assert code == 0 and len(calls) == 2


def test_score_out_refuses_existing_report_files(monkeypatch, capsys, tmp_path):
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("u1 hello there\n")
    hyp.write_text("u1 hello their\n")
    out = tmp_path / "scored"
    code, _, err = run_main(monkeypatch, capsys, "score", str(ref), str(hyp), "-o", str(out))
    assert code == 0, err
    code, _, err = run_main(monkeypatch, capsys, "score", str(ref), str(hyp), "-o", str(out))
    assert code == 2 and "already exists (pass --overwrite to replace it)" in err and err.count("\n") == 1
    code, _, err = run_main(monkeypatch, capsys, "score", str(ref), str(hyp), "-o", str(out), "--overwrite")
    assert code == 0, err


def test_data_prepare_refuses_existing_manifests(monkeypatch, capsys, tmp_path, write_audio):
    files = []
    for split in ("train", "dev", "test"):
        audio = write_audio(tmp_path / "wav" / f"{split}.wav")
        path = tmp_path / f"{split}_list.json"
        path.write_text(json.dumps({"audio_filepath": str(audio), "duration": 0.5, "text": "hi"}) + "\n")
        files += [f"--{split}", str(path)]
    out = tmp_path / "data"
    code, _, err = run_main(monkeypatch, capsys, "data", "prepare", "manifest", *files, "-o", str(out))
    assert code == 0, err
    code, _, err = run_main(monkeypatch, capsys, "data", "prepare", "manifest", *files, "-o", str(out))
    assert refused(code, err, out / "train.jsonl")
    code, _, err = run_main(monkeypatch, capsys, "data", "prepare", "manifest", *files, "-o", str(out), "--overwrite")
    assert code == 0, err


def test_lm_train_refuses_an_existing_lm(monkeypatch, capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev", "test"):
        (data / f"{split}.jsonl").write_text(
            json.dumps({"id": f"{split}1", "audio": "x.wav", "duration": 1.0, "text": "yes no yes"}) + "\n"
        )
    out = tmp_path / "lm"
    code, _, err = run_main(monkeypatch, capsys, "lm", "train", str(data), "--order", "2", "-o", str(out))
    assert code == 0, err
    code, _, err = run_main(monkeypatch, capsys, "lm", "train", str(data), "--order", "2", "-o", str(out))
    assert code == 2 and "already exists (pass --overwrite to replace it)" in err
    code, _, err = run_main(
        monkeypatch, capsys, "lm", "train", str(data), "--order", "2", "-o", str(out), "--overwrite"
    )
    assert code == 0, err


def test_study_length_refuses_an_existing_study(monkeypatch, capsys, tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text("{}")
    code, _, err = run_main(monkeypatch, capsys, "study", "length", str(tmp_path / "run"), "-o", str(out))
    assert refused(code, err, out / "study.json")


def test_transcribe_refuses_a_finished_output_file_before_loading_the_model(monkeypatch, capsys, tmp_path):
    target = tmp_path / "all.txt"
    target.write_text("mine\n")
    code, _, err = run_main(monkeypatch, capsys, "transcribe", str(tmp_path / "no-model"), "a.wav", "-o", str(target))
    assert refused(code, err, target) and target.read_text() == "mine\n"
    # An interrupted run (its .partial file is there) is resumed, not refused: the model is the next complaint.
    (tmp_path / "all.txt.partial").write_text("")
    code, _, err = run_main(monkeypatch, capsys, "transcribe", str(tmp_path / "no-model"), "a.wav", "-o", str(target))
    assert code == 2 and "already exists" not in err


# --- behaviour: aliases and --threads reach the library ------------------------------------------


def test_train_threads_sets_train_num_threads_and_o_names_the_run_dir(monkeypatch, capsys, tmp_path):
    """The train command's typed options reach the library as values (TrainValues), the --set texts as given."""
    import asrbench.training.trainer as train_module
    from asrbench.training.start import TrainValues

    seen = {}

    def fake_train(recipe, model, out, overrides=None, resume=False, values=None):
        seen.update(out=out, overrides=overrides, values=values)

    monkeypatch.setattr(train_module, "train", fake_train)
    code, _, err = run_main(
        monkeypatch,
        capsys,
        "train",
        "recipes/yesno.yaml",
        "--model",
        "cnn",
        "-o",
        str(tmp_path / "run"),
        "--threads",
        "3",
        "--set",
        "train.num_threads=1",
        "--max-minutes",
        "2",
    )
    assert code == 0, err
    assert seen["out"] == tmp_path / "run"
    assert seen["overrides"] == ["train.num_threads=1"]
    assert seen["values"] == TrainValues(max_minutes=2.0, num_threads=3)  # applied after --set: --threads wins


def test_train_max_steps_sets_train_max_steps(monkeypatch, capsys, tmp_path):
    """The repeat train_summary.json records for a budgeted run (--max-steps S) is a train option."""
    import asrbench.training.trainer as train_module
    from asrbench.training.start import TrainValues

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda *args, **kwargs: seen.update(kwargs))
    code, _, err = run_main(
        monkeypatch,
        capsys,
        "train",
        "yesno",
        "--model",
        "cnn",
        "-o",
        str(tmp_path / "run"),
        "--max-steps",
        "376",
        "--set",
        "train.schedule_steps=372",
    )
    assert code == 0, err
    assert seen["overrides"] == ["train.schedule_steps=372"] and seen["values"] == TrainValues(max_steps=376)
    code, _, err = run_main(monkeypatch, capsys, "train", "yesno", "--model", "cnn", "--max-steps", "-1")
    assert code == 2 and "--max-steps" in err


@pytest.mark.parametrize("flag", ["--max-minutes", "--budget-minutes"])
def test_bench_budget_alias_threads_and_formats(monkeypatch, capsys, tmp_path, flag):
    import asrbench.studies.bench as bench_module

    seen = {}
    row = {
        "model": "cnn",
        "seeds": 1,
        "wer": 10.0,
        "wer_sd": None,
        "wer_ci": None,
        "cer": 5.0,
        "cer_sd": None,
        "dev_wer": 11.0,
        "dev_wer_sd": None,
        "dev_test_gap": -1.0,
        "dev_test_gap_sd": None,
        "params": 1000,
        "train_seconds": 3.0,
        "train_seconds_sd": None,
        "epochs": 2,
        "epochs_sd": None,
        "rtfx": 50.0,
        "rtfx_sd": None,
        "peak_memory_mb": 100.0,
        "peak_memory_mb_sd": None,
    }

    def fake_bench(recipe, models, seeds, out, budget_minutes, epochs, data, overrides, *rest, target_params=None):
        seen.update(out=out, budget=budget_minutes, overrides=overrides, threads=rest[-1], target_params=target_params)
        return {"summary": [row], "pairs": [], "runs": []}

    monkeypatch.setattr(bench_module, "bench", fake_bench)
    code, out, err = run_main(
        monkeypatch,
        capsys,
        "bench",
        "recipes/yesno.yaml",
        flag,
        "1.5",
        "--threads",
        "2",
        "-o",
        str(tmp_path / "sweep"),
        "--format",
        "json",
    )
    assert code == 0, err
    # --threads reaches the runs as a typed value, not as a --set string parsed again
    assert seen == {"out": tmp_path / "sweep", "budget": 1.5, "overrides": [], "threads": 2, "target_params": None}
    assert json.loads(out)["summary"][0]["model"] == "cnn"
    code, out, err = run_main(monkeypatch, capsys, "bench", "recipes/yesno.yaml", "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("model,seeds,wer") and "cnn" in out.splitlines()[1]


@pytest.mark.parametrize("flag", ["--max-minutes", "--budget-minutes"])
def test_study_data_budget_alias_threads_and_format(monkeypatch, capsys, tmp_path, flag):
    import asrbench.studies.data_size as study_module

    seen = {}
    study = {
        "kind": "data",
        "runs": [],
        "summary": [
            {
                "model": "cnn",
                "fraction": 0.5,
                "train_hours": 0.01,
                "seeds": 1,
                "wer": 12.0,
                "wer_sd": None,
                "wer_min": 12.0,
                "wer_max": 12.0,
            }
        ],
    }

    def fake_study(recipe, models, fractions, seeds, out, budget_minutes, epochs, data, overrides, *rest, threads=0):
        seen.update(out=out, budget=budget_minutes, overrides=overrides, threads=threads)
        return study

    monkeypatch.setattr(study_module, "data_study", fake_study)
    code, out, err = run_main(
        monkeypatch,
        capsys,
        "study",
        "data",
        "recipes/yesno.yaml",
        flag,
        "3",
        "--threads",
        "1",
        "-o",
        str(tmp_path / "study"),
        "--format",
        "json",
    )
    assert code == 0, err
    assert seen == {"out": tmp_path / "study", "budget": 3.0, "overrides": [], "threads": 1}
    assert json.loads(out) == study
    code, out, err = run_main(monkeypatch, capsys, "study", "data", "recipes/yesno.yaml", "--format", "markdown")
    assert code == 0 and out.startswith("| model | fraction |")
    code, out, err = run_main(monkeypatch, capsys, "study", "data", "recipes/yesno.yaml", "--format", "xml")
    assert code == 2 and "unknown format 'xml'" in err


def test_data_download_keeps_dest_as_an_alias_of_out(monkeypatch, capsys, tmp_path):
    import asrbench.data.download as download_module

    seen = []
    monkeypatch.setattr(
        download_module, "download_corpus", lambda corpus, dest, base_url=None: seen.append(dest) or dest / corpus
    )
    for flag in ("--out", "-o", "--dest"):
        code, _, err = run_main(monkeypatch, capsys, "data", "download", "yesno", flag, str(tmp_path))
        assert code == 0, err
    assert seen == [tmp_path] * 3


@pytest.mark.parametrize("command", [["tune", "RUN"], ["export", "RUN", "-o", "OUT"], ["report", "RUN", "-o", "OUT"]])
def test_threads_sets_torch_threads(monkeypatch, capsys, tmp_path, command):
    import torch

    import asrbench.decoding.tune as tune_module
    import asrbench.deploy.export as export_module
    import asrbench.studies.report as report_module

    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    for module, name in ((tune_module, "tune"), (export_module, "export_run"), (report_module, "write_report")):
        monkeypatch.setattr(module, name, stop)
    args = [str(tmp_path / part) if part in ("RUN", "OUT") else part for part in command]
    monkeypatch.setattr(report_module, "select_inputs", lambda inputs: inputs)
    with pytest.raises(Stop):
        run_main(monkeypatch, capsys, *args, "--threads", "2")
    assert set_to == [2]


def test_transcribe_refuses_subtitles_already_in_the_folder(tmp_path, write_audio):
    from asrbench.deploy.transcribe import transcribe_files
    from asrbench.errors import AsrbenchError

    audio = write_audio(tmp_path / "talk.wav")
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "talk.srt").write_text("mine")
    with pytest.raises(AsrbenchError, match=r"talk.srt: already exists \(pass --overwrite"):
        transcribe_files(object(), [str(audio)], "srt", subs, overwrite=False)
    assert (subs / "talk.srt").read_text() == "mine"
