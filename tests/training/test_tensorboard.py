"""asrbench/training/tensorboard.py: events written through the module and read back with TensorBoard's own reader."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # the extra `make setup` installs

from asrbench.errors import AsrbenchError
from asrbench.training.tensorboard import MISSING_PACKAGE, TrainingLog


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows them (its purging of resumed runs included)."""
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def metrics_row(epoch: int, step: int, **values) -> dict:
    row = {
        "epoch": epoch,
        "step": step,
        "train_loss": 2.0 / epoch,
        "dev_loss": 1.5 / epoch,
        "dev_cer": 40.0 / epoch,
        "dev_wer": 80.0 / epoch,
        "lr": 0.001 * epoch,
        "train_seconds": 1.0,
    }
    row.update(values)
    return row


def test_steps_and_epochs_read_back(tmp_path):
    with TrainingLog.open(tmp_path, enabled=True, main=True, every_steps=2) as log:
        assert log.enabled and log.log_dir == tmp_path / "tensorboard"
        for epoch in (1, 2):
            for step in range(5 * epoch - 4, 5 * epoch + 1):  # 5 steps an epoch: 1..5, 6..10
                log.step(step, loss=10.0 - step, lr=0.0001 * step)
            log.epoch(epoch, 5 * epoch, metrics_row(epoch, 5 * epoch, dev_wer=None if epoch == 2 else 80.0))
    scalars = read_scalars(tmp_path / "tensorboard")
    assert set(scalars) == {"train/loss", "lr", "train/epoch_loss", "dev/loss", "dev/cer", "dev/wer", "epoch"}
    assert scalars["train/loss"] == [(step, 10.0 - step) for step in (2, 4, 6, 8, 10)]
    # lr: every 2nd step, plus epoch 1's end (step 5); step 10 was written once, by step().
    assert [step for step, _ in scalars["lr"]] == [2, 4, 5, 6, 8, 10]
    assert dict(scalars["lr"]) == pytest.approx({2: 0.0002, 4: 0.0004, 5: 0.001, 6: 0.0006, 8: 0.0008, 10: 0.001})
    assert scalars["train/epoch_loss"] == [(5, 2.0), (10, 1.0)]
    assert scalars["dev/loss"] == [(5, 1.5), (10, 0.75)]
    assert scalars["dev/cer"] == [(5, 40.0), (10, 20.0)]
    assert scalars["dev/wer"] == [(5, 80.0)]  # None is skipped
    assert scalars["epoch"] == [(5, 1.0), (10, 2.0)]


def test_epoch_end_flushes_so_a_killed_run_keeps_its_curves(tmp_path):
    log = TrainingLog.open(tmp_path, enabled=True, main=True, every_steps=1)
    log.step(1, 3.0, 0.1)
    log.epoch(1, 1, metrics_row(1, 1))
    # Not closed (as when the process is killed): what was logged up to the epoch's end is on disk.
    assert read_scalars(tmp_path / "tensorboard")["dev/cer"] == [(1, 40.0)]
    log.close()
    log.close()  # twice is fine
    assert not log.enabled


def test_resumed_run_appends_and_hides_what_the_interrupted_run_logged_after_the_checkpoint(tmp_path):
    with TrainingLog.open(tmp_path, enabled=True, main=True, every_steps=1) as log:
        for step in range(1, 8):
            log.step(step, float(step), 0.1)
        log.epoch(1, 4, metrics_row(1, 4))
    # The checkpoint was at step 4; steps 5..7 are logged again by the resumed run.
    with TrainingLog.open(tmp_path, enabled=True, main=True, every_steps=1, resume_step=4) as log:
        for step in range(5, 9):
            log.step(step, 100.0 + step, 0.1)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2
    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["train/loss"] == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 4.0),
        (5, 105.0),
        (6, 106.0),
        (7, 107.0),
        (8, 108.0),
    ]
    assert scalars["dev/cer"] == [(4, 40.0)]  # the epoch at the checkpoint's step stays


def test_every_steps_zero_logs_epochs_only(tmp_path):
    with TrainingLog.open(tmp_path, enabled=True, main=True, every_steps=0) as log:
        for step in range(1, 4):
            log.step(step, 1.0, 0.1)
        log.epoch(1, 3, metrics_row(1, 3))
    scalars = read_scalars(tmp_path / "tensorboard")
    assert "train/loss" not in scalars and scalars["lr"] == [(3, pytest.approx(0.001))]
    with pytest.raises(ValueError, match="every_steps"):
        TrainingLog.open(tmp_path, enabled=True, main=True, every_steps=-1)


def test_disabled_or_other_ranks_write_nothing_and_import_nothing(tmp_path):
    # A fresh interpreter: this one may have imported tensorboard already.
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from asrbench.training.tensorboard import TrainingLog
        for enabled, main in [(False, True), (True, False), (False, False)]:
            with TrainingLog.open(Path({str(tmp_path)!r}), enabled=enabled, main=main, every_steps=1) as log:
                assert not log.enabled and log.log_dir is None
                log.step(1, 1.0, 0.1)
                log.epoch(1, 1, {{"train_loss": 1.0, "dev_cer": 2.0}})
        imported = sorted(name for name in sys.modules
                          if "tensorboard" in name and name != "asrbench.training.tensorboard")
        assert not imported, imported
        assert "torch" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert list(tmp_path.iterdir()) == []


def test_missing_package_is_a_one_line_error(tmp_path, monkeypatch):
    # None in sys.modules makes `import` raise ImportError, as when tensorboard is not installed.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(AsrbenchError) as error:
        TrainingLog.open(tmp_path, enabled=True, main=True, every_steps=1)
    assert str(error.value) == MISSING_PACKAGE
    assert str(error.value) == ("train.tensorboard needs the tensorboard package: pip install 'asrbench[tensorboard]'")
    assert error.value.__cause__ is None and error.value.__suppress_context__
    assert not (tmp_path / "tensorboard").exists()
    # Disabled, the missing package does not matter.
    assert not TrainingLog.open(tmp_path, enabled=False, main=True, every_steps=1).enabled
