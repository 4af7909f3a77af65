"""The run directory: config round trip, metrics log, and a clear error for non-run dirs."""

from __future__ import annotations

import pytest
from helpers import run_main

from asrbench.errors import AsrbenchError
from asrbench.models import default_options
from asrbench.recipe.config import ModelSpec, RunConfig, TrainConfig
from asrbench.runs import rundir


def test_config_round_trip(tmp_path):
    config = RunConfig(train=TrainConfig(lr=3e-4, epochs=5), model=ModelSpec("cnn", default_options("cnn")))
    rundir.write_config(tmp_path, config)
    assert rundir.read_config(tmp_path) == config


def test_unreadable_config(tmp_path):
    (tmp_path / rundir.CONFIG).write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(AsrbenchError, match="unreadable run config"):
        rundir.read_config(tmp_path)


def test_require_run_dir(tmp_path):
    with pytest.raises(AsrbenchError, match="run dir not found"):
        rundir.require_run_dir(tmp_path / "missing")
    with pytest.raises(AsrbenchError, match="not a run dir"):
        rundir.require_run_dir(tmp_path)
    (tmp_path / rundir.CONFIG).write_text("{}\n", encoding="utf-8")
    with pytest.raises(AsrbenchError, match="not a run dir"):
        rundir.require_run_dir(tmp_path)  # config but no best checkpoint
    (tmp_path / rundir.BEST).parent.mkdir()
    (tmp_path / rundir.BEST).write_bytes(b"")
    assert rundir.require_run_dir(str(tmp_path)) == tmp_path


def test_metrics_append_and_read(tmp_path):
    assert rundir.read_metrics(tmp_path) == []
    rundir.append_metrics(tmp_path, {"epoch": 1, "loss": 2.5})
    rundir.append_metrics(tmp_path, {"epoch": 2, "loss": 1.5})
    assert rundir.read_metrics(tmp_path) == [{"epoch": 1, "loss": 2.5}, {"epoch": 2, "loss": 1.5}]


def test_read_json_errors(tmp_path):
    with pytest.raises(AsrbenchError, match="not found"):
        rundir.read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(AsrbenchError, match="unreadable JSON"):
        rundir.read_json(tmp_path / "bad.json")


@pytest.mark.slow
def test_decode_from_another_directory_finds_the_data_dir(tmp_path, monkeypatch, capsys):
    """Regression (issue 28.9): a run trained with ``data.dir: data`` (relative) could only be decoded from
    the directory it was trained in; elsewhere the error blamed an unprepared split. The data dir is stored
    absolute; an old run dir (a relative data.dir) still decodes from its old directory, and from anywhere
    else the error names the data dir and the config key."""
    import shutil

    import torch
    import yaml
    from helpers import run_main, write_tone_corpus

    from asrbench.training.trainer import train

    project = tmp_path / "project"
    write_tone_corpus(project)
    (project / "recipe.yaml").write_text(
        "data: {dir: data}\nfeatures: {sample_rate: 8000, num_mel_bins: 23}\naugment: {spec_augment: false}\n"
        "train: {epochs: 1, batch_frames: 400, warmup_steps: 1}\n"
        "models: {cnn: {subsample_channels: 4, channels: 8, kernel_size: 5, num_blocks: 1}}\n"
    )
    monkeypatch.chdir(project)
    train("recipe.yaml", "cnn", "run", seed=0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_main(monkeypatch, capsys, "decode", str(project / "run"), "--split", "test")
    assert code == 0, err
    assert (project / "run" / "decode" / "test" / "result.json").is_file()
    saved = yaml.safe_load((project / "run" / rundir.CONFIG).read_text())["data"]
    assert saved["dir"] == str(project / "data")

    # An old run dir: data.dir as written, relative to where it trained.
    old = tmp_path / "project" / "old_run"
    shutil.copytree(project / "run", old)
    best = old / rundir.BEST
    state = torch.load(best, weights_only=True)
    for values in (state["config"],):
        values["data"].pop("dir_as_written", None)
        values["data"]["dir"] = "data"
    torch.save(state, best)
    code, _, err = run_main(monkeypatch, capsys, "decode", str(old), "--split", "test")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: ") and "data dir data not found" in err and "data.dir" in err
    assert str(old / rundir.CONFIG) in err and "never prepared" not in err
    monkeypatch.chdir(project)
    code, _, err = run_main(monkeypatch, capsys, "decode", str(old), "--split", "test")
    assert code == 0, err


@pytest.mark.parametrize(
    "text", ["just text\n", "[1, 2]\n", "model: cnn\n", "train: [unclosed\n", "data: 3\nmodel: {name: cnn}\n"]
)
def test_a_damaged_config_yaml_is_one_line_naming_it(tmp_path, monkeypatch, capsys, text):
    """Regression (issue 28.11): a config.yaml that is YAML but not a mapping (a line of text, a
    list) ended in an AttributeError traceback (``train --resume``)."""
    (tmp_path / rundir.CONFIG).write_text(text, encoding="utf-8")
    with pytest.raises(AsrbenchError, match=rf"^{tmp_path / rundir.CONFIG}(:\d+)?: "):
        rundir.read_config(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "train", "--out", str(tmp_path), "--resume")
    assert code == 2 and err.startswith(f"error: {tmp_path / rundir.CONFIG}")
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage", b"PK\x03\x04truncated zip"])
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, monkeypatch, capsys, content):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / rundir.CONFIG).write_text("{}\n", encoding="utf-8")
    (run_dir / rundir.BEST).write_bytes(content)
    for command in (
        ["decode", str(run_dir)],
        ["export", str(run_dir), "--out", str(tmp_path / "x")],
        ["transcribe", str(run_dir), str(tmp_path / "a.wav")],
    ):
        code, _, err = run_main(monkeypatch, capsys, *command)
        assert code == 2 and err.startswith(f"error: {run_dir / rundir.BEST}: unreadable checkpoint"), (command, err)
        assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("text", ['{"model": "cnn", "wer": ', "[1, 2]", "null"])
def test_a_damaged_result_json_is_one_line_naming_it(tmp_path, monkeypatch, capsys, text):
    run_dir = tmp_path / "run"
    (run_dir / "decode" / "test").mkdir(parents=True)
    (run_dir / "decode" / "test" / "result.json").write_text(text, encoding="utf-8")
    for command in (["compare", str(run_dir)], ["report", str(run_dir), "-o", str(tmp_path / "r.html")]):
        code, _, err = run_main(monkeypatch, capsys, *command)
        assert code == 2, (command, err)
        assert err.splitlines()[-1].startswith(f"error: {run_dir / 'decode' / 'test' / 'result.json'}: unreadable")
        assert "Traceback" not in err


def test_a_failed_start_leaves_no_stray_lock(tmp_path):
    """Regression (issue 28.16): an error right after the run dir was locked left a run dir holding only
    ``.lock``. The lock file goes with the lock; a run dir the lock created and nothing filled goes too."""
    run = tmp_path / "run"
    with pytest.raises(AsrbenchError, match="boom"), rundir.lock(run):
        assert (run / rundir.LOCK).is_file()
        raise AsrbenchError("boom")
    assert not run.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    with rundir.lock(existing):
        (existing / "config.yaml").write_text("{}\n")
    assert sorted(path.name for path in existing.iterdir()) == ["config.yaml"]
    # ... and the lock still excludes a second holder while it is held
    with rundir.lock(existing), pytest.raises(AsrbenchError, match="another asrbench process"), rundir.lock(existing):
        pass
    assert sorted(path.name for path in existing.iterdir()) == ["config.yaml"]


@pytest.mark.slow
def test_a_training_that_fails_at_start_leaves_no_run_dir(tmp_path):
    from asrbench.training.trainer import train

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"data: {{dir: {tmp_path / 'never_prepared'}}}\nmodels: {{cnn: {{}}}}\n")
    with pytest.raises(AsrbenchError, match="no train.jsonl"):
        train(recipe, "cnn", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_checkpoint_path_resolves_every_spelling_and_names_a_missing_one(tmp_path):
    """``--checkpoint`` of decode, transcribe, export and the report's posteriorgrams: one resolver."""
    for relative in (rundir.BEST, rundir.LAST, rundir.nbest_checkpoint(3)):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.pt"
    outside.write_bytes(b"")
    assert rundir.checkpoint_path(tmp_path, "best") == tmp_path / "checkpoints" / "best.pt"
    assert rundir.checkpoint_path(tmp_path, "last") == tmp_path / "checkpoints" / "last.pt"
    assert rundir.checkpoint_path(tmp_path, "checkpoints/nbest/epoch0003.pt") == tmp_path / rundir.nbest_checkpoint(3)
    assert rundir.checkpoint_path(tmp_path, str(outside)) == outside  # an absolute path is taken as it is
    with pytest.raises(AsrbenchError, match=r"^.*checkpoints/nbest/epoch0009\.pt: checkpoint not found$"):
        rundir.checkpoint_path(tmp_path, "checkpoints/nbest/epoch0009.pt")
    assert rundir.checkpoint_path(tmp_path, "missing.pt", must_exist=False) == tmp_path / "missing.pt"


def test_audio_hours_trained_sums_every_epoch_s_batch_loop(tmp_path):
    assert rundir.audio_hours_trained(tmp_path) is None  # no metrics.jsonl
    rundir.append_metrics(tmp_path, {"epoch": 1})  # a row written before the loop's audio was recorded
    assert rundir.audio_hours_trained(tmp_path) is None
    for epoch in (2, 3):
        rundir.append_metrics(tmp_path, {"epoch": epoch, "loop_audio_seconds": 5400.0})
    assert rundir.audio_hours_trained(tmp_path) == 3.0
