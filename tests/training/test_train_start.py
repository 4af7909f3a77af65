"""What a run starts from (asrbench.training.start): the train command's typed options applied to the
resolved config as values, the same config as the equivalent --set overrides; resume keeps its rules."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from helpers import run_main
from rich.console import Console

import asrbench.training.trainer as trainer_module
from asrbench.errors import AsrbenchError
from asrbench.runs import rundir
from asrbench.training.start import TrainValues, start


class _WritesConfigOnly:
    """Stands in for the Trainer: writes config.yaml as the Trainer does, trains nothing."""

    def __init__(self, config, last_state, run_dir, context, device_name) -> None:
        self.config, self.run_dir = config, run_dir

    def run(self) -> dict:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(self.run_dir, self.config)
        return {}


@pytest.fixture
def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A prepared data dir, named relative to the working directory (as a user types it)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prep").mkdir()
    for split in ("train", "dev"):
        (tmp_path / "prep" / f"{split}.jsonl").write_text("")
    return "prep"


def test_cli_options_write_the_same_config_as_the_equivalent_set_overrides(monkeypatch, capsys, prepared):
    monkeypatch.setattr(trainer_module, "Trainer", _WritesConfigOnly)
    common = ["train", "yesno", "--model", "cnn", "--set", "train.lr=0.002"]
    code, _, err = run_main(
        monkeypatch,
        capsys,
        *common,
        "-o",
        "flags",
        "--data",
        prepared,
        "--epochs",
        "7",
        "--max-minutes",
        "2",
        "--max-steps",
        "40",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--tensorboard",
        "--threads",
        "2",
    )
    assert code == 0, err
    sets = [
        "data.dir=prep",
        "train.epochs=7",
        "train.max_minutes=2",
        "train.max_steps=40",
        "train.seed=3",
        "train.device=cpu",
        "train.tensorboard=true",
        "train.num_threads=2",
    ]
    code, _, err = run_main(
        monkeypatch, capsys, *common, "-o", "sets", *(arg for text in sets for arg in ("--set", text))
    )
    assert code == 0, err
    flags, overrides = (Path(name, rundir.CONFIG).read_text() for name in ("flags", "sets"))
    assert flags == overrides
    config = rundir.read_config(Path("flags"))
    train = config.train
    assert (train.epochs, train.max_minutes, train.seed, train.tensorboard) == (7, 2.0, 3, True)
    assert config.data.dir_as_written == "prep" and config.data.dir == str(Path("prep").resolve())


def test_an_option_wins_over_a_set_of_the_same_key_which_is_never_read(prepared):
    """As when both were --set texts: the later (the option) replaced the earlier before any check."""
    config, _ = start(
        "yesno",
        "cnn",
        Path("run"),
        ["train.epochs=abc", "train.lr=0.003"],
        False,
        TrainValues(data_dir=prepared, epochs=5),
    )
    assert config.train.epochs == 5 and config.train.lr == 0.003


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (TrainValues(epochs=0), "--epochs 0: train.epochs must be positive, got 0"),
        (TrainValues(device="gpu"), "--device gpu: train.device must be one of auto, cpu, cuda, got 'gpu'"),
        (TrainValues(max_minutes=float("inf")), "--max-minutes inf: train.max_minutes must be a finite number"),
        (TrainValues(seed="3"), "--seed 3: expected int, got str '3'"),
    ],
)
def test_a_typed_value_out_of_its_limit_is_an_error_naming_the_option(prepared, values, message):
    with pytest.raises(AsrbenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        start(
            "yesno",
            "cnn",
            Path("run"),
            [],
            False,
            TrainValues(
                data_dir=prepared,
                **{
                    name: getattr(values, name)
                    for name in ("epochs", "device", "max_minutes", "seed")
                    if getattr(values, name) is not None
                },
            ),
        )


def test_a_library_caller_s_int_minutes_are_a_float_as_from_set(prepared):
    config, _ = start("yesno", "cnn", Path("run"), [], False, TrainValues(data_dir=prepared, max_minutes=2))
    assert isinstance(config.train.max_minutes, float)


def test_resume_takes_budget_and_hardware_options_and_names_the_others(monkeypatch, capsys, prepared):
    monkeypatch.setattr(trainer_module, "Trainer", _WritesConfigOnly)
    code, _, err = run_main(
        monkeypatch, capsys, "train", "yesno", "--model", "cnn", "-o", "run", "--data", prepared, "--epochs", "2"
    )
    assert code == 0, err
    Path("run", rundir.LAST).parent.mkdir(parents=True, exist_ok=True)
    Path("run", rundir.LAST).write_bytes(b"")  # a resumable checkpoint's place: start() reads its config
    monkeypatch.setattr("asrbench.training.start.resume_state", lambda run_dir: {"epoch": 1})
    notes = Console(file=io.StringIO(), width=400)
    monkeypatch.setattr("asrbench.training.start.console", notes)
    config, state = start(
        None,
        None,
        Path("run"),
        ["train.lr=0.5", "train.max_steps=9"],
        True,
        TrainValues(epochs=4, seed=8, device="cpu", tensorboard=True),
    )
    assert state == {"epoch": 1}
    assert (config.train.epochs, config.train.max_steps, config.train.device, config.train.tensorboard) == (
        4,
        9,
        "cpu",
        True,
    )
    assert config.train.lr == rundir.read_config(Path("run")).train.lr and config.train.seed == 0
    assert "ignored: train.lr=0.5, --seed 8 (a resumed run may change only" in notes.file.getvalue()
