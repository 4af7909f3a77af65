"""What a resume restores and how a run stops: :class:`TrainState`, the RNG streams, Ctrl-C.

A resumable checkpoint (checkpoints/last.pt) holds the weights, the optimizer, scheduler and
gradient scaler, a :class:`TrainState` and every rank's RNG state (:data:`RESUME_KEYS`). The first
Ctrl-C only asks the loop to stop after the batch under way (:class:`StopRequest`), so the
checkpoint it saves describes a finished batch exactly; :class:`Interrupted` says how to resume.
"""

from __future__ import annotations

import dataclasses
import math
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar

import torch

from asrbench.errors import AsrbenchError
from asrbench.progress import console
from asrbench.runs import checkpoint, rundir
from asrbench.training.distributed import Context


@dataclass
class TrainState:
    """What a resume restores besides the weights, optimizer, scheduler, gradient scaler and RNG
    streams (:meth:`asrbench.training.trainer.Trainer.resumable_state` adds those). Saved under
    these names in last.pt."""

    epoch: int = 0  # epochs finished; inside an epoch, the epoch under way
    position: int = 0  # batches of that epoch already done (of all ranks)
    group: int = 1  # batches per optimizer step the epoch's batch list was made for
    step: int = 0  # optimizer steps taken
    best_dev_cer: float = math.inf
    best_dev_loss: float = math.inf
    best_epoch: int = 0  # the epoch checkpoints/best.pt was written at (before any average)
    bad_epochs: int = 0  # epochs since dev last improved (train.patience)
    train_seconds: float = 0.0  # training wall time before the epoch under way
    budget_used: float = 0.0  # the same on the budget clock (BudgetClock), what train.max_minutes counts
    schedule_steps: int = 0  # where the learning-rate decay ends, once fixed (schedule.fit_schedule); 0: not yet
    skipped_batches: int = 0  # non-finite losses or gradients
    loss_sum: float = 0.0  # the epoch's running training loss (summed over utterances and ranks)
    loss_count: float = 0  # utterances: a whole number, a float after Context.sum over the ranks
    nbest: list = field(default_factory=list)  # [dev CER, dev loss, epoch] kept for averaging, best first

    # Older checkpoints lack the others; they start from the defaults.
    REQUIRED: ClassVar[tuple[str, ...]] = (
        "epoch",
        "step",
        "best_dev_cer",
        "best_dev_loss",
        "bad_epochs",
        "train_seconds",
    )

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> TrainState:
        defaults = cls()
        return cls(**{f.name: state.get(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(cls)})


# Everything a resumable checkpoint must hold (checkpoint.load_resumable checks it).
RESUME_KEYS = (
    "optimizer",
    "scheduler",
    *TrainState.REQUIRED,
    "torch_rng",
    "python_rng",
    "model_state",
    "tokenizer",
    "cmvn",
)


def resume_state(run_dir: Path) -> dict:
    """The resumable checkpoint; when it is damaged, the one before it (with a note)."""
    try:
        return checkpoint.load_resumable(run_dir / rundir.LAST, RESUME_KEYS)
    except AsrbenchError as err:
        previous = run_dir / rundir.PREVIOUS
        if not previous.is_file():
            raise
        state = checkpoint.load_resumable(previous, RESUME_KEYS)
        console.print(f"[yellow]note[/yellow]: {err}; resuming from {previous} (epoch {state['epoch']})")
        return state


def resumed_train_state(last_state: dict, run_dir: Path, main: bool) -> TrainState:
    """The TrainState of a resumable checkpoint, as this rank continues it."""
    state = TrainState.from_state_dict(last_state)
    if "budget_used" not in last_state:  # written before the budget clock: it counted wall time
        state.budget_used = state.train_seconds
    # A fallback to last.prev.pt may list an epoch whose file was deleted after it was written.
    state.nbest = [list(entry) for entry in state.nbest if (run_dir / rundir.nbest_checkpoint(entry[2])).is_file()]
    if not main:  # the epoch's running loss so far is rank 0's; the other ranks add theirs from here on
        state.loss_sum, state.loss_count = 0.0, 0
    return state


# -- RNG streams -----------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    state = {"torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def seed_rank(seed: int, rank: int, epoch: int) -> None:
    """A fresh dropout stream for ``rank`` > 0 (rank 0 keeps the single-process one)."""
    seed_everything(seed * 1000003 + 7919 * rank + epoch)


def restore_rng(state: dict, context: Context, device: torch.device, seed: int) -> None:
    """Each rank takes back its own RNG state; ranks the checkpoint did not have start fresh ones."""
    states = state.get("rank_rng") or [state]
    if context.rank < len(states):
        _set_rng_state(states[context.rank], device)
    else:
        seed_rank(seed, context.rank, state["epoch"])
    saved_world = state.get("world_size", 1)
    if saved_world != context.world and context.main:
        console.print(
            f"[yellow]note[/yellow]: the checkpoint was written by {saved_world} rank(s), this run has "
            f"{context.world}: steps now take {context.world} x train.grad_accum batches, and ranks "
            "without a saved RNG state start fresh dropout streams"
        )


# -- stopping --------------------------------------------------------------------------------------


class Interrupted(AsrbenchError):
    """Ctrl-C during training: the message says what was saved and how to resume."""

    exit_code = 130
    prefix = "interrupted"


def stopped_at_once(run_dir: str | Path) -> Interrupted:
    """A second Ctrl-C (KeyboardInterrupt mid-batch) as the command line reports it."""
    run_dir = Path(run_dir)
    saved = (run_dir / rundir.LAST).is_file() or (run_dir / rundir.PREVIOUS).is_file()
    return Interrupted(
        f"{run_dir}: stopped at once by a second Ctrl-C; "
        + ("the last saved checkpoint is kept" if saved else "no checkpoint had been saved yet")
        + f"; resume with: asrbench train --out {run_dir} --resume"
    )


class StopRequest:
    """While active, the first Ctrl-C (SIGINT) only sets ``requested``; the second one interrupts.

    The training loop checks the flag between batches, so the checkpoint it saves describes a
    finished batch exactly. Outside the main thread signals cannot be caught: it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        # the SIGINT handler to restore (signal.signal's: a function, SIG_DFL / SIG_IGN, or None)
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        console.print("[yellow]stopping after this batch (Ctrl-C again to abort at once)[/yellow]")

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
