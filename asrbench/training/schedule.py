"""The learning-rate schedule and the clock a time budget counts on.

The learning rate is a function of the step alone (:func:`lr_factor`): a time budget moves where
its decay ends once, at the end of the first epoch (:func:`fit_schedule`), never step by step, so
the same seed gives the same learning rates on any machine, and a budgeted run can be repeated
exactly with ``--max-steps`` and ``train.schedule_steps``.
"""

from __future__ import annotations

import math
import time

import torch

from asrbench.recipe.config import TrainConfig
from asrbench.training.state import TrainState


def lr_factor(step: int, total_steps: int, config) -> float:
    """Linear warm-up to 1, then cosine decay to ``final_lr_ratio`` at ``total_steps`` (or constant).

    A function of the step alone: a time budget moves ``total_steps`` once, never step by step
    (:func:`fit_schedule`), so the same seed gives the same learning rates on any machine.
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    return config.final_lr_ratio + (1 - config.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class BudgetClock:
    """The clock a time budget (``train.max_minutes``) counts on, in seconds.

    ``compute`` is the training process's CPU time divided by its torch threads: the seconds of
    work the run has had, which stay about the same when another job shares the machine (wall
    time then stretches by the other job's share). ``wall`` is elapsed time; ``auto`` is compute
    on a CPU and wall on a GPU, where the host's CPU time says nothing about the device's work.
    Data-loader worker processes are not counted: they run beside the step, on cores it leaves.
    """

    def __init__(self, kind: str, device: torch.device) -> None:
        self.kind = ("wall" if device.type == "cuda" else "compute") if kind == "auto" else kind

    def __call__(self) -> float:
        if self.kind == "wall":
            return time.perf_counter()
        return time.process_time() / max(1, torch.get_num_threads())


def fit_schedule(
    tc: TrainConfig,
    state: TrainState,
    budget_seconds: float,
    final_eval_seconds: float,
    steps_per_epoch: int,
    total_steps: int,
) -> bool:
    """At the end of the first epoch, fix where the learning-rate decay ends (``state.schedule_steps``), once;
    -> whether a time budget moved it (worth a line to the user).

    ``train.schedule_steps`` when given; else, under a time budget (``train.budget_schedule``), the
    step the budget is expected to reach at the first epoch's cost (its steps and dev pass on the
    budget clock, ``state.budget_used``), keeping ``final_eval_seconds`` for the final model's extra
    dev pass. From here on the learning rate is a function of the step alone: the run can be
    repeated exactly with ``--max-steps`` and ``train.schedule_steps`` (train_summary.json's ``repeat``).
    """
    if tc.schedule_steps:
        state.schedule_steps = tc.schedule_steps
        return False
    if not (tc.budget_schedule and math.isfinite(budget_seconds)) or state.budget_used <= 0:
        return False
    left = budget_seconds - state.budget_used - final_eval_seconds
    fitted = state.step + int(max(0.0, left) / state.budget_used * steps_per_epoch)
    if fitted >= total_steps:
        return False
    state.schedule_steps = max(fitted, state.step + 1)
    return True
