"""TensorBoard curves for a training run, in ``<run_dir>/tensorboard/``.

The trainer's ``metrics.jsonl`` stays the record; this only mirrors it (and a per-step loss) as
event files, for ``tensorboard --logdir runs/`` to show every run side by side. The tags:

- ``train/loss``, ``lr``: every ``every_steps`` optimizer steps (:meth:`TrainingLog.step`);
- ``train/epoch_loss`` (the epoch's mean training loss: a tag of its own, so the per-step curve
  never mixes one batch's loss with an epoch's mean), ``dev/loss``, ``dev/cer``, ``dev/wer``,
  ``lr`` and ``epoch`` (which step ended which epoch): at each epoch's end (:meth:`TrainingLog.epoch`).

The x axis is always the optimizer step, so runs of different epoch lengths line up.

Only rank 0 writes (``main=True``); with ``enabled=False`` or on the other ranks every method does
nothing and the tensorboard package is never imported, so it stays an optional extra
(``pip install 'asrbench[tensorboard]'``). Events go through ``torch.utils.tensorboard``.

Resuming: a resumed run adds new event files to the same folder and TensorBoard merges them into
one run. Pass ``resume_step`` (the checkpoint's step) and what the interrupted run logged after that
step is hidden, since the resumed run logs those steps again. Each epoch's end flushes the file, so a
run that is killed keeps everything up to its last finished epoch (and whatever the writer's
two-minute flush had written since).
"""

from __future__ import annotations

from pathlib import Path
from typing import SupportsFloat

from asrbench.errors import AsrbenchError

FOLDER = "tensorboard"  # inside the run dir
MISSING_PACKAGE = "train.tensorboard needs the tensorboard package: pip install 'asrbench[tensorboard]'"
# metrics.jsonl key -> tag; TrainingLog.epoch takes the trainer's metrics row as it is.
EPOCH_TAGS = {
    "train_loss": "train/epoch_loss",
    "dev_loss": "dev/loss",
    "dev_cer": "dev/cer",
    "dev_wer": "dev/wer",
    "lr": "lr",
}


class TrainingLog:
    """Writes a run's curves, or nothing; build it with :meth:`open`, use it as a context manager."""

    def __init__(self, writer=None, every_steps: int = 1) -> None:
        self._writer = writer  # a SummaryWriter, or None: every method is a no-op
        self.every_steps = every_steps
        self._lr_step: int | None = None  # the last step whose lr step() wrote

    @classmethod
    def open(
        cls, run_dir: Path, enabled: bool, main: bool, every_steps: int, resume_step: int | None = None
    ) -> TrainingLog:
        """A log writing to ``<run_dir>/tensorboard/`` when ``enabled`` and on rank 0 (``main``).

        ``every_steps``: write the step loss and lr every that many optimizer steps (0: epochs only).
        ``resume_step``: the step the run resumes from; events logged after it are hidden.
        """
        if every_steps < 0:
            raise ValueError(f"every_steps must be >= 0, not {every_steps}")
        if not (enabled and main):
            return cls(None, every_steps)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise AsrbenchError(MISSING_PACKAGE) from None
        # purge_step: TensorBoard drops the earlier files' events at steps >= it (the resumed run redoes them).
        purge_step = resume_step + 1 if resume_step is not None else None
        return cls(SummaryWriter(log_dir=str(Path(run_dir) / FOLDER), purge_step=purge_step), every_steps)

    @property
    def enabled(self) -> bool:
        """Whether this log writes anything (enabled, rank 0 and not closed)."""
        return self._writer is not None

    @property
    def log_dir(self) -> Path | None:
        return Path(self._writer.log_dir) if self._writer is not None else None

    def step(self, step: int, loss, lr: SupportsFloat) -> None:
        """After optimizer step ``step`` (1, 2, ...): ``train/loss`` and ``lr`` on every ``every_steps``-th.

        ``loss`` may be a 0-d tensor: it is read (a device sync) only on the steps that are written.
        """
        if self._writer is None or not self.every_steps or step % self.every_steps:
            return
        self._writer.add_scalar("train/loss", float(loss), step)
        self._writer.add_scalar("lr", float(lr), step)
        self._lr_step = step

    def epoch(self, epoch: int, step: int, values: dict) -> None:
        """At the end of epoch ``epoch`` (1-based), after ``step`` optimizer steps, then flush.

        ``values``: the metrics row (``train_loss``, ``dev_loss``, ``dev_cer``, ``dev_wer``, ``lr``;
        other keys are ignored, and so are None values: an epoch with no dev pass has no dev point).
        """
        if self._writer is None:
            return
        for key, tag in EPOCH_TAGS.items():
            value = values.get(key)
            if value is None or (tag == "lr" and self._lr_step == step):  # step() already wrote it
                continue
            self._writer.add_scalar(tag, float(value), step)
        self._writer.add_scalar("epoch", epoch, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()  # flushes
            self._writer = None

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
