"""What happens when things go wrong: interruptions, crashes, damaged files, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from helpers import run_main, write_tone_corpus

from asrbench import fileio
from asrbench.data.audio import load_audio
from asrbench.data.features import load_features
from asrbench.data.manifest import Utterance, split_path, write_manifest
from asrbench.decoding.decode import decode
from asrbench.env import resolve_device
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import data_root
from asrbench.runs import checkpoint, rundir
from asrbench.training.state import Interrupted
from asrbench.training.trainer import train

RECIPE = """
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{time_mask_width: 5, freq_mask_width: 4}}
train: {{epochs: 3, batch_frames: 400, lr: 3.0e-3, warmup_steps: 5, num_threads: 1}}
models:
  dnn: {{context: 3, stride: 2, hidden_size: 32, num_layers: 2}}
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(data_dir=write_tone_corpus(tmp_path)))
    return path


def _weights(run: Path) -> dict:
    return checkpoint.load_state(run / rundir.LAST)["model_state"]


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def _metrics(run: Path) -> list[dict]:
    # How long, how much of the epoch this process did (loop_*) and its memory: the rest must match.
    varying = ("train_seconds", "rss_mb", "peak_memory_mb")
    return [
        {k: v for k, v in row.items() if k not in varying and not k.startswith("loop_")}
        for row in rundir.read_metrics(run)
    ]


# --- Ctrl-C, kill -9 and resume -------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_saves_mid_epoch_and_resume_matches_an_uninterrupted_run(
    recipe: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    reference = tmp_path / "reference"
    train(recipe, "dnn", reference)

    from asrbench.models.dnn import DNN

    calls = {"n": 0}
    original = DNN.compute_loss

    def loss_then_ctrl_c(self, *args):
        calls["n"] += self.training  # training batches only
        if self.training and calls["n"] == 5:  # the second of three batches in epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args)

    monkeypatch.setattr(DNN, "compute_loss", loss_then_ctrl_c)
    run = tmp_path / "run"
    with pytest.raises(Interrupted, match="checkpoint saved after batch 2 of 3 in epoch 2"):
        train(recipe, "dnn", run)
    state = checkpoint.load_state(run / rundir.LAST)
    assert state["epoch"] == 1 and state["position"] == 2
    assert not (run / rundir.SUMMARY).exists()
    monkeypatch.setattr(DNN, "compute_loss", original)

    train(None, None, run, resume=True)
    assert _metrics(run) == _metrics(reference)
    assert _same_weights(_weights(run), _weights(reference))


@pytest.mark.slow
def test_ctrl_c_exits_130_with_one_line(recipe: Path, tmp_path: Path, monkeypatch, capsys):
    from asrbench.models.dnn import DNN

    original = DNN.compute_loss

    def interrupt(self, *args):
        os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args)

    monkeypatch.setattr(DNN, "compute_loss", interrupt)
    monkeypatch.setenv("ASRBENCH_NO_PROGRESS", "1")
    code, _, err = run_main(monkeypatch, capsys, "train", str(recipe), "--model", "dnn", "--out", str(tmp_path / "run"))
    last = err.strip().splitlines()[-1]
    # Regression (issue 15.10): reported as "interrupted", not as an error.
    assert code == 130 and last.startswith("interrupted: ") and "--resume" in last and "Traceback" not in err
    assert "error" not in err
    assert (tmp_path / "run" / rundir.LAST).is_file()


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_says_how_to_resume(recipe: Path, tmp_path: Path, monkeypatch, capsys):
    from asrbench.models.dnn import DNN

    original = DNN.compute_loss
    calls = []

    def interrupt_twice(self, *args):
        calls.append(1)
        if len(calls) == 5:  # the first Ctrl-C asks to stop after the batch; the second one stops now
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(DNN, "compute_loss", interrupt_twice)
    code, _, err = run_main(monkeypatch, capsys, "train", str(recipe), "--model", "dnn", "--out", str(tmp_path / "run"))
    last = err.strip().splitlines()[-1]
    assert code == 130 and "Traceback" not in err
    assert last.startswith(f"interrupted: {tmp_path / 'run'}: stopped at once by a second Ctrl-C; ")
    assert last.endswith(f"resume with: asrbench train --out {tmp_path / 'run'} --resume")


YESNO_RECIPE = Path(__file__).resolve().parents[1] / "asrbench" / "recipe" / "yesno.yaml"


def _train_command(out: Path, data: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "asrbench",
        "train",
        str(YESNO_RECIPE),
        "--model",
        "cnn",
        "--out",
        str(out),
        "--data",
        str(data),
        "--epochs",
        "8",
        "--set",
        "train.num_threads=1",
        "--set",
        "train.data_workers=1",
        *extra,
    ]  # under the recipe's 1-minute budget, which 8 epochs never reach: it must change nothing


ENV = {**os.environ, "ASRBENCH_NO_PROGRESS": "1"}


@pytest.fixture(scope="module")
def yesno_reference(tmp_path_factory) -> tuple[Path, Path]:
    """Prepared yesno data and an uninterrupted 8-epoch cnn run on it."""
    source = data_root() / "yesno"
    assert source.is_dir(), f"yesno corpus expected at {source} (set ASRBENCH_DATA_ROOT)"
    root = tmp_path_factory.mktemp("yesno")
    subprocess.run(
        [sys.executable, "-m", "asrbench", "data", "prepare", "yesno", str(source), "--out", str(root / "data")],
        check=True,
        env=ENV,
        capture_output=True,
    )
    subprocess.run(_train_command(root / "reference", root / "data"), check=True, env=ENV, capture_output=True)
    return root / "data", root / "reference"


def _interrupt_after(run: Path, data: Path, epochs: int, kill) -> subprocess.Popen:
    process = subprocess.Popen(
        _train_command(run, data),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while len(rundir.read_metrics(run)) < epochs and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    kill(process)
    process.wait()
    return process


def _assert_resumes_like(run: Path, data: Path, reference: Path) -> None:
    resumed = subprocess.run(_train_command(run, data, "--resume"), env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics(run) == _metrics(reference)
    assert _same_weights(_weights(run), _weights(reference))
    assert (
        json.loads((run / rundir.SUMMARY).read_text())["best_dev_cer"]
        == json.loads((reference / rundir.SUMMARY).read_text())["best_dev_cer"]
    )


@pytest.mark.slow
def test_kill_9_then_resume_ends_like_an_uninterrupted_yesno_run(yesno_reference, tmp_path: Path):
    data, reference = yesno_reference
    run = tmp_path / "run"
    _interrupt_after(run, data, 3, lambda process: process.send_signal(signal.SIGKILL))
    assert 3 <= len(rundir.read_metrics(run)) < 8, "the kill came too late to test anything"
    assert not (run / rundir.SUMMARY).exists()
    _assert_resumes_like(run, data, reference)


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_with_loader_workers(yesno_reference, tmp_path: Path):
    # A terminal's Ctrl-C reaches the trainer and its data-loader workers alike.
    data, reference = yesno_reference
    run = tmp_path / "run"
    process = _interrupt_after(run, data, 2, lambda process: os.killpg(process.pid, signal.SIGINT))
    errors = process.stderr.read().strip().splitlines()
    assert process.returncode == 130, errors[-5:]
    # Regression (issue 15.10): a deliberate Ctrl-C is no error; the line says how to resume.
    assert errors[-1].startswith(f"interrupted: {run}: checkpoint saved"), errors[-1]
    assert errors[-1].endswith(f"resume with: asrbench train --out {run} --resume")
    assert "Traceback" not in "\n".join(errors)
    assert len(rundir.read_metrics(run)) < 8 and not (run / rundir.SUMMARY).exists()
    _assert_resumes_like(run, data, reference)


@pytest.mark.slow
def test_metrics_written_after_the_last_checkpoint_are_redone(recipe: Path, tmp_path: Path):
    run = tmp_path / "run"
    train(recipe, "dnn", run, epochs=2)
    (run / rundir.SUMMARY).unlink()
    rows = rundir.read_metrics(run)
    # A run killed between the metrics row of epoch 3 and its checkpoint.
    fileio.write_jsonl(run / rundir.METRICS, rows + [dict(rows[-1], epoch=3)])
    train(None, None, run, resume=True, epochs=3)
    assert [row["epoch"] for row in rundir.read_metrics(run)] == [1, 2, 3]


# --- damaged checkpoints ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one(recipe: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    train(recipe, "dnn", run, epochs=2)
    assert checkpoint.load_state(run / rundir.PREVIOUS)["epoch"] == 1
    data = (run / rundir.LAST).read_bytes()
    (run / rundir.LAST).write_bytes(data[: len(data) // 2])
    (run / rundir.SUMMARY).unlink()
    capsys.readouterr()
    summary = train(None, None, run, resume=True, epochs=3)
    assert "unreadable checkpoint" in capsys.readouterr().err and "last.prev.pt" in str(run / rundir.PREVIOUS)
    assert summary["epochs"] == 3
    assert [row["epoch"] for row in rundir.read_metrics(run)] == [1, 2, 3]  # epoch 2 redone from epoch 1


@pytest.mark.slow
def test_damaged_checkpoints_without_a_fallback_are_a_clear_error(recipe: Path, tmp_path: Path):
    run = tmp_path / "run"
    train(recipe, "dnn", run, epochs=1)
    (run / rundir.LAST).write_bytes(b"\x80\x02garbage")
    with pytest.raises(AsrbenchError, match="last.pt: unreadable checkpoint"):
        train(None, None, run, resume=True, epochs=2)
    state = checkpoint.load_state(run / rundir.BEST)
    fileio.torch_save(state, run / rundir.LAST)  # a best checkpoint has no optimizer state
    with pytest.raises(AsrbenchError, match="not a resumable checkpoint .missing optimizer"):
        train(None, None, run, resume=True, epochs=2)


def test_resume_without_a_run_says_so(tmp_path: Path):
    with pytest.raises(AsrbenchError, match="no run to resume"):
        train(None, None, tmp_path / "nothing", resume=True)


# --- locks, NaN -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_trainer_in_the_same_run_dir_is_refused(recipe: Path, tmp_path: Path):
    run = tmp_path / "run"
    with rundir.lock(run):  # another process holding the run dir (flock is per open file)
        with pytest.raises(AsrbenchError, match="another asrbench process is training here"):
            train(recipe, "dnn", run, epochs=1)
    assert not (run / rundir.CONFIG).exists()
    train(recipe, "dnn", run, epochs=1)  # the lock is gone with its holder
    assert (run / rundir.SUMMARY).is_file()


@pytest.mark.slow
def test_non_finite_losses_are_skipped_then_stop_training(recipe: Path, tmp_path: Path, monkeypatch):
    from asrbench.models.dnn import DNN

    run = tmp_path / "run"
    train(recipe, "dnn", run, epochs=1, overrides=["train.max_nonfinite_batches=5"])
    trained = _weights(run)
    (run / rundir.SUMMARY).unlink()
    monkeypatch.setattr(DNN, "compute_loss", lambda self, *args: self.head.proj.weight.sum() * float("nan"))
    with pytest.raises(AsrbenchError, match="5 batches in a row had a non-finite loss or gradient .epoch 3"):
        train(None, None, run, resume=True, epochs=3)
    assert _same_weights(_weights(run), trained)  # nothing learnt from NaN, nothing broken saved
    assert not (run / rundir.SUMMARY).exists()


@pytest.mark.slow
def test_non_finite_gradients_skip_the_batch_and_are_counted(recipe: Path, tmp_path: Path, monkeypatch):
    from asrbench.models.dnn import DNN

    original = DNN.compute_loss
    calls = {"n": 0}

    def sometimes_infinite_gradient(self, *args):
        calls["n"] += 1
        loss = original(self, *args)
        if calls["n"] % 3 == 0:  # finite loss (sqrt(0) = 0) whose gradient is infinite
            return loss + torch.sqrt(self.head.proj.weight.sum() * 0)
        return loss

    monkeypatch.setattr(DNN, "compute_loss", sometimes_infinite_gradient)
    summary = train(recipe, "dnn", tmp_path / "run", epochs=2)
    assert summary["skipped_batches"] == 2  # calls 3 and 6 of 8 (6 training batches, 2 dev passes)
    weights = checkpoint.load_state(tmp_path / "run" / rundir.LAST)["model_state"]
    assert all(torch.isfinite(value).all() for value in weights.values())


# --- decoding, names, devices ---------------------------------------------------------------------


def test_split_names_cannot_be_paths(tmp_path: Path):
    (tmp_path / "x.jsonl").write_text("")
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(AsrbenchError, match="not a path"):
            split_path(tmp_path / "data", bad)


@pytest.mark.slow
def test_an_interrupted_decode_leaves_no_result(recipe: Path, tmp_path: Path, monkeypatch):
    import asrbench.decoding.decode as decode_module

    run = tmp_path / "run"
    train(recipe, "dnn", run, epochs=1)
    decode(run, "test")
    assert (run / "decode" / "test" / "result.json").is_file()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(decode_module, "recognize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        decode(run, "test")
    assert not (run / "decode" / "test" / "result.json").exists()


def test_bad_device_names_are_clear_errors():
    for bad in ("gpu", "tpu", "cuda:zero"):
        with pytest.raises(AsrbenchError, match=f"device '{bad}'"):
            resolve_device(bad)
    assert resolve_device("cpu").type == "cpu"


def test_system_errors_become_one_line(monkeypatch, capsys, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_main(
        monkeypatch, capsys, "data", "prepare", "yesno", str(data_root() / "yesno"), "--out", str(blocker / "data")
    )
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and str(blocker) in last and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


# --- data: conversions, unknown characters, all-or-nothing writes --------------------------------


def test_resampling_and_downmixing_are_noted_once_per_split(tmp_path: Path, capsys):
    from asrbench.recipe.config import FeatureConfig

    stereo = np.stack([np.sin(np.arange(16000) / 10), np.zeros(16000)], axis=1) * 0.1
    utterances = []
    for index in range(3):
        path = tmp_path / f"s{index}.wav"
        soundfile.write(path, stereo, 16000)
        utterances.append(Utterance(f"s{index}", str(path), 1.0, "A"))
    waveform = load_audio(str(tmp_path / "s0.wav"), 8000)
    assert waveform.shape == (8000,)
    write_manifest(tmp_path / "data" / "dev.jsonl", utterances)
    load_features(tmp_path / "data", "dev", FeatureConfig(sample_rate=8000, num_mel_bins=23), jobs=1)
    err = capsys.readouterr().err
    assert "dev features: 3 of 3 files downmixed from 2 channels to mono" in err
    assert "dev features: 3 of 3 files resampled from 16000 Hz to 8000 Hz" in err


def _add_unknown_dev_text(recipe: Path) -> None:
    data_dir = recipe.parent / "data"
    rows = [json.loads(line) for line in (data_dir / "dev.jsonl").read_text().splitlines()]
    rows[1]["text"] = "LOW ZED"
    (data_dir / "dev.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.slow
def test_unknown_characters_policy(recipe: Path, tmp_path: Path, capsys):
    _add_unknown_dev_text(recipe)
    train(recipe, "dnn", tmp_path / "map", epochs=1)
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "1 utterances with characters outside the tokenizer ('DEZ'), mapped to <unk>" in err
    train(recipe, "dnn", tmp_path / "drop", epochs=1, overrides=["tokenizer.unknown=drop"])
    assert "), dropped (tokenizer.unknown=drop)" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(AsrbenchError, match="dev.jsonl: utterance 'dev1' has characters outside the tokenizer"):
        train(recipe, "dnn", tmp_path / "fail", epochs=1, overrides=["tokenizer.unknown=fail"])


def test_several_files_are_written_all_or_nothing(tmp_path: Path):
    first = tmp_path / "train.jsonl"
    first.write_text("old\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        fileio.write_texts_together({first: "new\n", blocker / "dev.jsonl": "x\n"})
    assert first.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "train.jsonl"]  # no temporary files left
    fileio.write_texts_together({first: "new\n", tmp_path / "dev.jsonl": "x\n"})
    assert first.read_text() == "new\n" and (tmp_path / "dev.jsonl").read_text() == "x\n"


@pytest.mark.slow
def test_utterances_too_long_for_training_are_skipped_and_counted(recipe: Path, tmp_path: Path):
    summary = train(recipe, "dnn", tmp_path / "run", epochs=1, overrides=["data.max_duration=0.5"])
    assert summary["skipped_long_utterances"] == 6  # the 12 training utterances alternate 0.4 s / 0.8 s
    # 0.8 s is 78 frames: with batch_frames 60 only the 0.4 s (38-frame) utterances fit in a batch.
    summary = train(recipe, "dnn", tmp_path / "run2", epochs=1, overrides=["train.batch_frames=60"])
    assert summary["skipped_long_utterances"] == 6


@pytest.mark.parametrize("fmt", ["NIST", "WAV"])
def test_truncated_audio_reads_what_is_there_or_fails_with_the_file_name(tmp_path: Path, fmt: str):
    path = tmp_path / f"x.{fmt.lower()}"
    soundfile.write(path, np.sin(np.arange(8000) / 5) * 0.2, 8000, format=fmt, subtype="PCM_16")
    data = path.read_bytes()
    for keep in (len(data) - 3001, 1030, 40, 5):
        path.write_bytes(data[:keep])
        try:
            waveform = load_audio(str(path), 8000)
        except AsrbenchError as err:
            assert str(path) in str(err)
        else:
            assert 0 < waveform.numel() < 8000 and torch.isfinite(waveform).all()
