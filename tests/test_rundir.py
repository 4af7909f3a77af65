"""The run directory: config round trip, metrics log, and a clear error for non-run dirs."""

from __future__ import annotations

import pytest

from asrbench import rundir
from asrbench.config import ModelSpec, RunConfig, TrainConfig
from asrbench.errors import AsrbenchError
from asrbench.models import default_options


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
