"""One training loop for every model: AdamW, warm-up then cosine decay, clipping, budgets.

The trainer knows nothing about architectures: it builds the model from the registry and calls
only the family contract (:mod:`asrbench.models.base`): ``compute_loss`` to train and the head's
dev search (:mod:`asrbench.decoding.search_table`) to choose checkpoints. After every epoch it
measures dev CER, keeps the best checkpoint and a resumable last one, appends to metrics.jsonl
(and to TensorBoard with ``train.tensorboard``).

The parts it is made of: :mod:`~asrbench.training.start` (the config: recipe, ``--set``, the
command's typed values; a resume's checkpoint), :mod:`~asrbench.training.loader` (the batches),
:mod:`~asrbench.training.optimization` (optimizer, schedule, scaler, gradients),
:mod:`~asrbench.training.schedule` (learning rate, budget clock), :mod:`~asrbench.training.state`
(what a resume restores, RNG streams, Ctrl-C) and :mod:`~asrbench.training.averaging` (the final model).
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import torch
from torch.nn.parallel import DistributedDataParallel

from asrbench import fileio
from asrbench.data.batching import Collator
from asrbench.data.features import GlobalCMVN
from asrbench.data.pipeline import load_training_data
from asrbench.data.tokenizer import tokenizer_from_dict
from asrbench.decoding.decode import recognize
from asrbench.decoding.search_table import dev_searcher
from asrbench.env import environment, resolve_device
from asrbench.errors import AsrbenchError
from asrbench.models import build_model, count_parameters
from asrbench.progress import console, progress_bar
from asrbench.recipe.config import RunConfig
from asrbench.runs import checkpoint, rundir
from asrbench.scoring.metrics import error_rates
from asrbench.text import DEFAULT_NORMALIZER
from asrbench.training import distributed, report
from asrbench.training.averaging import BATCH_NORM_BATCHES, keep_nbest, load_average
from asrbench.training.distributed import Context
from asrbench.training.loader import train_batches
from asrbench.training.optimization import FlatGradients, autocast, build_optimization
from asrbench.training.report import EpochLoop
from asrbench.training.schedule import BudgetClock, fit_schedule
from asrbench.training.start import TrainValues, sized, start
from asrbench.training.state import (
    Interrupted,
    StopRequest,
    TrainState,
    restore_rng,
    resumed_train_state,
    rng_state,
    seed_everything,
    seed_rank,
)
from asrbench.training.tensorboard import TrainingLog


def train(
    recipe: str | Path | None,
    model_name: str | None,
    out: str | Path,
    data_dir: str | None = None,
    overrides: list[str] | None = None,
    resume: bool = False,
    epochs: int | None = None,
    max_minutes: float | None = None,
    seed: int | None = None,
    values: TrainValues | None = None,
) -> dict:
    """Train one model; returns the training summary (also written to train_summary.json).

    ``overrides``: ``--set`` texts; ``values``: the command's typed options, applied after them
    (``data_dir``, ``epochs``, ``max_minutes`` and ``seed``, when given, are taken into ``values``).
    The run dir is locked while training: a second process aiming at it stops with an error.
    """
    run_dir = Path(out)
    shorthand: dict[str, Any] = {"data_dir": data_dir, "epochs": epochs, "max_minutes": max_minutes, "seed": seed}
    values = dataclasses.replace(values or TrainValues(), **{k: v for k, v in shorthand.items() if v is not None})
    config, last_state = start(recipe, model_name, run_dir, overrides, resume, values)
    # Under torchrun: join the process group (every rank has read the run dir by now), then only
    # rank 0 locks and writes the run dir and prints.
    context, device_name = distributed.setup(config.train.device)
    quiet = console.quiet
    console.quiet = quiet or not context.main
    try:
        with rundir.lock(run_dir) if context.main else nullcontext():
            if last_state is None and not resume and (run_dir / rundir.CONFIG).is_file() and context.main:
                raise AsrbenchError(f"{run_dir}: already holds a run (use --resume to continue it, or another --out)")
            return Trainer(config, last_state, run_dir, context, device_name).run()
    finally:
        console.quiet = quiet
        distributed.teardown(context)


class Trainer:
    """One run: the model, its optimizer and schedule, the data and a :class:`TrainState`.

    :meth:`run` trains epoch by epoch (:meth:`train_one_epoch`, then :meth:`end_epoch`: dev pass,
    checkpoints, metrics) until the epochs, the time budget, the step limit or early stopping end
    it, then :meth:`finish` averages the n best epochs and writes the summary. Under torchrun
    every rank runs it; only rank 0 evaluates dev and writes files.
    """

    def __init__(
        self, config: RunConfig, last_state: dict | None, run_dir: Path, context: Context, device_name: str
    ) -> None:
        tc = self.tc = config.train
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        self.config, self.run_dir, self.context = config, run_dir, context
        self.device = resolve_device(device_name)
        seed_everything(tc.seed)
        self._load(last_state)  # the data, then the model: its initial weights come from the seed
        self.clock = BudgetClock(tc.budget_clock, self.device)
        self._build_optimization()
        self.resumed = last_state is not None
        if last_state is not None:
            self._resume(last_state)
        elif context.rank > 0:
            seed_rank(tc.seed, context.rank, 0)  # every rank its own dropout stream; the weights come from rank 0
        self.gradients = FlatGradients(self.model)
        self.train_module = distributed.wrap(self.model, context, self.device)
        self.dev_searcher = dev_searcher(self.model)
        self.budget_seconds = tc.max_minutes * 60 if tc.max_minutes > 0 else math.inf
        self.checkpoint_seconds = tc.checkpoint_minutes * 60 if tc.checkpoint_minutes > 0 else math.inf
        self.eval_seconds = 0.0  # the last dev pass (budget clock); the budget keeps room for the final one
        self.eval_passes = 2 if tc.average_best > 1 else 1  # and for the averaged model's
        self.epoch_clock = self.clock()  # the budget clock when the epoch under way began
        self.nonfinite_in_a_row = 0
        self.stop_reason = "epochs"
        self.stop_request = StopRequest()
        self.log = TrainingLog.open(
            run_dir,
            tc.tensorboard,
            context.main,
            tc.tensorboard_every_steps,
            resume_step=self.state.step if last_state is not None else None,
        )

    def _load(self, last_state: dict | None) -> None:
        """The data (a resume's tokenizer and CMVN), the model; rank 0 writes the run dir's config,
        tokenizer and environment."""
        config, run_dir = self.config, self.run_dir
        tokenizer = tokenizer_from_dict(last_state["tokenizer"]) if last_state is not None else None
        self.data = load_training_data(config, tokenizer)
        if last_state is not None:
            self.data.cmvn = GlobalCMVN.from_dict(last_state["cmvn"])
        else:  # model.target_params: the width is chosen now, at the real vocabulary (a resume has it)
            config = self.config = sized(config, len(self.data.tokenizer))
        self.model = build_model(
            config.model.name, config.model.options, config.features.dim(), len(self.data.tokenizer)
        )
        self.model.to(self.device)
        self.parameters = count_parameters(self.model)
        if self.context.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            rundir.write_config(run_dir, config)
            fileio.write_json(run_dir / rundir.TOKENIZER, self.data.tokenizer.to_dict())
            fileio.write_json(
                run_dir / rundir.ENVIRONMENT, {**environment(self.device), "world_size": self.context.world}
            )

    def _build_optimization(self) -> None:
        """Batch sampler and loader; optimizer, learning-rate schedule, gradient scaler."""
        tc = self.tc
        # One optimizer step consumes a group of world * grad_accum batches (asrbench.training.distributed).
        self.accum, self.group = tc.grad_accum, self.context.world * tc.grad_accum
        batches = train_batches(self.config, self.data, self.device, self.context)
        self.sampler, self.keys, self.loader = batches.sampler, batches.keys, batches.loader
        self.workers = batches.workers
        self.steps_per_epoch = batches.steps_per_epoch
        self.total_steps = self.steps_per_epoch * tc.epochs
        self.state = TrainState(group=self.group)  # replaced by the checkpoint's on resume
        optimization = build_optimization(
            self.model, tc, self.device, lambda: self.state.schedule_steps or self.total_steps
        )
        self.optimizer, self.scheduler = optimization.optimizer, optimization.scheduler
        self.scaler, self.precision = optimization.scaler, optimization.precision

    # -- resuming ----------------------------------------------------------------------------------

    def resumable_state(
        self, batches_done: int, seconds: float, epoch_group: int, epoch: int, budget_used: float
    ) -> dict:
        """Everything :data:`~asrbench.training.state.RESUME_KEYS` names: the TrainState (at
        ``batches_done`` of ``epoch``, after ``seconds`` of training), the optimizer, scheduler and
        scaler, and every rank's RNG state (every rank takes part: they are gathered to rank 0)."""
        rng_states = self.context.gather(rng_state(self.device))
        losses = self.context.sum(self.state.loss_sum, self.state.loss_count)
        state = dataclasses.replace(
            self.state,
            epoch=epoch,
            position=batches_done,
            group=epoch_group,
            train_seconds=seconds,
            budget_used=budget_used,
            loss_sum=losses[0],
            loss_count=int(losses[1]),
        )
        return {
            **state.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "world_size": self.context.world,
            "rank_rng": rng_states,
            **rng_states[0],
        }

    def _resume(self, last_state: dict) -> None:
        """The inverse of :meth:`resumable_state` (the weights come from the same checkpoint)."""
        self.model.load_state_dict(last_state["model_state"])
        self.optimizer.load_state_dict(last_state["optimizer"])
        self.scheduler.load_state_dict(last_state["scheduler"])
        if last_state.get("scaler"):
            self.scaler.load_state_dict(last_state["scaler"])
        state = resumed_train_state(last_state, self.run_dir, self.context.main)
        if self.context.main:
            rundir.truncate_metrics(self.run_dir, state.epoch)  # rows written after this checkpoint are redone
        self.state = state
        restore_rng(last_state, self.context, self.device, self.tc.seed)

    def save_last(
        self, epoch: int, batches_done: int, seconds: float, epoch_group: int, budget_used: float | None = None
    ) -> None:
        """The resumable checkpoint (every rank takes part; rank 0 writes it); the one it replaces is
        kept as the fallback. ``budget_used``: the budget clock's count now (default: the state's)."""
        budget_used = self.state.budget_used if budget_used is None else budget_used
        resumable = self.resumable_state(batches_done, seconds, epoch_group, epoch, budget_used)
        if self.context.main:
            checkpoint.save_rotating(
                self.run_dir / rundir.LAST,
                self.run_dir / rundir.PREVIOUS,
                self.config,
                self.data.tokenizer,
                self.data.cmvn,
                self.model,
                **resumable,
            )

    # -- the loop ----------------------------------------------------------------------------------
    def evaluate_dev(self) -> dict:
        """Dev CER, WER (percent) and loss of the model as it is now."""
        data = self.data
        dev = recognize(
            self.model,
            data.dev,
            data.cmvn,
            data.tokenizer,
            self.device,
            self.tc.eval_batch_frames,
            token_ids=data.dev_tokens,
            searcher=self.dev_searcher,
        )
        rates = error_rates([u.text for u in data.dev.utterances], dev.hypotheses, DEFAULT_NORMALIZER)
        if rates.cer is None:
            raise AsrbenchError(
                f"{self.config.data.dir}: the dev references have no characters after normalization "
                f"({DEFAULT_NORMALIZER}): dev CER, which picks the best epoch, is undefined"
            )
        return {"cer": rates.cer, "wer": rates.wer, "loss": dev.loss}

    def limit_reached(self, over_budget: bool) -> str | None:
        """Why training must stop now (the time budget or the step limit), or None."""
        if over_budget:
            return "time budget"
        if self.tc.max_steps and self.state.step >= self.tc.max_steps:
            return "max steps"
        return None

    def fit_schedule(self) -> None:
        """At the end of the first epoch, fix where the learning-rate decay ends, once
        (:func:`asrbench.training.schedule.fit_schedule`), keeping room for the final model's extra dev pass."""
        final_eval_seconds = (self.eval_passes - 1) * self.eval_seconds
        if (
            fit_schedule(
                self.tc, self.state, self.budget_seconds, final_eval_seconds, self.steps_per_epoch, self.total_steps
            )
            and self.context.main
        ):
            console.print(
                f"time budget: the learning-rate decay now ends at step {self.state.schedule_steps} (of "
                f"{self.total_steps} for {self.tc.epochs} epochs), fitted to the first epoch's cost"
            )

    def run(self) -> dict:
        """Train to the end (epochs, budget, steps, patience or Ctrl-C); -> the training summary."""
        try:
            return self._run()
        finally:
            self.close_loader()

    def close_loader(self) -> None:
        """Stop the loader's worker processes now. Left to the garbage collector, torch's shutdown
        waits its 5-s status interval for workers that never see the stop sentinel: 5 s at the end of
        every run (and of every test that trains)."""
        iterator = getattr(self.loader, "_iterator", None)  # torch's private iterator: None before the first epoch
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()

    def _run(self) -> dict:
        state, tc = self.state, self.tc
        console.print(report.announcement(self))
        with progress_bar("loss", "lr", "dev_cer") as progress, self.stop_request, self.log:
            # Under a time budget the bar shows the time left in it when that ends training first.
            self.progress, self.task = (
                progress,
                progress.add_task(
                    self.config.model.name,
                    total=self.total_steps,
                    completed=state.step,
                    loss="-",
                    lr="-",
                    dev_cer="-" if state.best_dev_cer == math.inf else f"{state.best_dev_cer:.2f}",
                    deadline=self._deadline(state.budget_used),
                ),
            )
            for epoch in range(state.epoch, tc.epochs):
                self.stop_reason = self.limit_reached(state.budget_used >= self.budget_seconds) or self.stop_reason
                if self.stop_reason != "epochs":
                    break
                epoch_start, self.epoch_clock = time.perf_counter(), self.clock()
                loop = self.train_one_epoch(epoch, epoch_start)
                if self.end_epoch(epoch, epoch_start, loop):
                    break
        return self.finish()

    def _deadline(self, used: float) -> float | None:
        """When the time budget runs out, on the progress bar's clock (None without a budget); on the
        compute clock an estimate, exact on an otherwise idle machine."""
        return time.monotonic() + self.budget_seconds - used if math.isfinite(self.budget_seconds) else None

    def train_one_epoch(self, epoch: int, epoch_start: float) -> EpochLoop:
        """The batch loop of one epoch (the hot loop: it stays in one function so that each step
        costs no more Python than it must). Stops early at the time budget or the step limit
        (``stop_reason``), and on Ctrl-C after saving the resumable checkpoint."""
        state, tc, context, device = self.state, self.tc, self.context, self.device
        accum, group = self.accum, self.group
        scaler, gradients = self.scaler, self.gradients
        last_save = epoch_start
        self.model.train()
        epoch_group, batches, stop = self._start_epoch(epoch)
        loop, loop_start = EpochLoop(), time.perf_counter()
        micro, bad, batches_done = 0, False, state.position
        step_losses: list[tuple[torch.Tensor, int]] = []
        for batch in self.loader:
            batch = batch.to(device)
            # DDP averages gradients over the ranks on the group's last backward only.
            sync = micro == accum - 1 or not context.distributed
            # not sync: distributed, so train_module is the DDP wrapper (distributed.wrap)
            with nullcontext() if sync else cast(DistributedDataParallel, self.train_module).no_sync():
                with autocast(device, self.precision):
                    loss = self.train_module(batch.features, batch.feature_lengths, batch.targets, batch.target_lengths)
                finite = bool(torch.isfinite(loss))
                bad = bad or not finite
                # A rank never skips its backward alone: DDP's all-reduce needs every rank.
                if finite or context.distributed:
                    scaler.scale(loss / accum).backward()
            step_losses.append((loss.detach(), batch.features.size(0)))
            loop.utterances += batch.features.size(0)
            loop.frames += int(batch.feature_lengths.sum())
            micro += 1
            if micro < accum:
                continue
            scaler.unscale_(self.optimizer)
            norm = gradients.clip_(tc.grad_clip)
            # With fp16 the gradient scaler skips overflowing steps itself; otherwise a non-finite
            # gradient would poison the weights, so the step is skipped.
            bad = bad or not (scaler.is_enabled() or bool(torch.isfinite(norm)))
            now = time.perf_counter()
            used = state.budget_used + self.clock() - self.epoch_clock
            # Decisions every rank must take together: one small all-reduce when distributed.
            bad, stop_now, save_now, over_budget = context.any(
                bad,
                self.stop_request.requested,
                now - last_save >= self.checkpoint_seconds,
                used + self.eval_passes * self.eval_seconds >= self.budget_seconds,
            )
            self._apply_step(bad, step_losses, epoch)
            micro, bad, step_losses = 0, False, []
            batches_done += group
            self.scheduler.step()
            state.step += 1
            loop.steps += 1
            lr = self.scheduler.get_last_lr()[0]
            self.progress.update(
                self.task, advance=1, loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.1e}", deadline=self._deadline(used)
            )
            self.log.step(state.step, loss.detach(), lr)
            # The budget on any rank's clock (over_budget), so every rank stops at the same step.
            self.stop_reason = self.limit_reached(over_budget) or self.stop_reason
            if self.stop_reason != "epochs":
                break
            if stop_now:  # Ctrl-C: finish the step, save, stop
                self.save_last(
                    epoch,
                    batches_done,
                    state.train_seconds + time.perf_counter() - epoch_start,
                    epoch_group,
                    state.budget_used + self.clock() - self.epoch_clock,
                )
                raise Interrupted(
                    f"{self.run_dir}: checkpoint saved after batch {batches_done} of {len(batches)} "
                    f"in epoch {epoch + 1}; resume with: asrbench train --out {self.run_dir} --resume"
                )
            if save_now and batches_done < stop:
                self.save_last(
                    epoch,
                    batches_done,
                    state.train_seconds + now - epoch_start,
                    epoch_group,
                    state.budget_used + self.clock() - self.epoch_clock,
                )
                last_save = time.perf_counter()
        loop.seconds = time.perf_counter() - loop_start
        state.position = 0
        return loop

    def _start_epoch(self, epoch: int) -> tuple[int, list, int]:
        """The epoch's batch list and the loader set to it; -> the group it was made for, the list, and
        the position the epoch stops at (a whole number of this run's steps)."""
        state, tc, context, group = self.state, self.tc, self.context, self.group
        # A resumed epoch keeps the batch list it was started with, even with another number of
        # ranks; its remaining batches are shared out in steps of this run's group.
        epoch_group = state.group if state.position else group
        state.group = epoch_group
        self.sampler.set_epoch(epoch)
        batches = self.sampler.batches(epoch_group)
        epoch_steps = (len(batches) - state.position) // group
        # The bar's total: the steps done, this epoch's and as many for each epoch left (the bucketed
        # batch count varies a little from epoch to epoch), so it ends at its total.
        bar_total = state.step + epoch_steps + (tc.epochs - epoch - 1) * (len(batches) // group)
        self.progress.update(self.task, total=min(bar_total, tc.max_steps) if tc.max_steps else bar_total)
        if state.position == 0:
            state.loss_sum, state.loss_count = 0.0, 0
        stop = state.position + epoch_steps * group
        self.keys.set(epoch, state.position + context.rank, stop, epoch_group, context.world)
        return epoch_group, batches, stop

    def _apply_step(self, bad: bool, step_losses: list[tuple[torch.Tensor, int]], epoch: int) -> None:
        """Take the optimizer step, or skip it (and count it) when a loss or gradient was not finite."""
        state = self.state
        if not bad:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            for value, size in step_losses:
                state.loss_sum += float(value) * size
                state.loss_count += size
            self.nonfinite_in_a_row = 0
        else:
            state.skipped_batches += 1
            self.nonfinite_in_a_row += 1
            if self.nonfinite_in_a_row >= self.tc.max_nonfinite_batches:
                raise AsrbenchError(
                    f"{self.run_dir}: {self.nonfinite_in_a_row} batches in a row had a non-finite loss or "
                    f"gradient (epoch {epoch + 1}, step {state.step + 1}); training stopped and the last good "
                    "checkpoint was kept. Lower train.lr, check the data or use precision fp32"
                )
        self.gradients.zero_()

    def end_epoch(self, epoch: int, epoch_start: float, loop: EpochLoop) -> bool:
        """Dev pass, best and n-best checkpoints, metrics, the resumable checkpoint; whether to stop."""
        state, context, tc, run_dir = self.state, self.context, self.tc, self.run_dir
        state.loss_sum, state.loss_count, loop.utterances, loop.frames = context.sum(
            state.loss_sum, state.loss_count, loop.utterances, loop.frames
        )
        if not context.main:
            state.loss_sum, state.loss_count = 0.0, 0  # rank 0 holds the epoch's totals
        eval_clock = self.clock()
        dev_result = self.evaluate_dev() if context.main else None
        # Only rank 0 evaluates; the others wait here for its verdict (and its clocks).
        dev_result, self.eval_seconds, state.train_seconds, state.budget_used = context.broadcast(
            (
                dev_result,
                self.clock() - eval_clock,
                state.train_seconds + time.perf_counter() - epoch_start,
                state.budget_used + self.clock() - self.epoch_clock,
            )
        )
        if epoch == 0:
            self.fit_schedule()
        self._keep_checkpoints(epoch, dev_result)
        dropped = keep_nbest(state.nbest, [dev_result["cer"], dev_result["loss"], epoch + 1], tc.average_best)
        if context.main and any(entry[2] == epoch + 1 for entry in state.nbest):
            checkpoint.save(
                run_dir / rundir.nbest_checkpoint(epoch + 1),
                self.config,
                self.data.tokenizer,
                self.data.cmvn,
                self.model,
                epoch=epoch + 1,
                step=state.step,
                dev_cer=dev_result["cer"],
                dev_wer=dev_result["wer"],
            )
        self.metrics_row = report.metrics_row(self, epoch, dev_result, loop)
        if context.main:
            rundir.append_metrics(run_dir, self.metrics_row)
        self.log.epoch(epoch + 1, state.step, self.metrics_row)
        state.epoch = epoch + 1
        self.save_last(epoch + 1, 0, state.train_seconds, self.group)
        if context.main:  # only now: the previous resumable checkpoint still listed them
            for entry in dropped:
                (run_dir / rundir.nbest_checkpoint(entry[2])).unlink(missing_ok=True)
        self.progress.update(self.task, dev_cer=f"{dev_result['cer']:.2f}")
        if context.any(self.stop_request.requested)[0]:
            raise Interrupted(
                f"{run_dir}: checkpoint saved at the end of epoch {epoch + 1}; resume with: "
                f"asrbench train --out {run_dir} --resume"
            )
        if self.stop_reason in ("time budget", "max steps"):
            return True
        if tc.patience and state.bad_epochs >= tc.patience:
            self.stop_reason = "early stopping"
            return True
        return False

    def _keep_checkpoints(self, epoch: int, dev_result: dict) -> None:
        """The best epoch so far on dev (CER, then loss: small dev sets often sit at 0% CER for many
        epochs) becomes checkpoints/best.pt."""
        state = self.state
        if (dev_result["cer"], dev_result["loss"]) < (state.best_dev_cer, state.best_dev_loss):
            state.best_dev_cer, state.best_dev_loss, state.bad_epochs = dev_result["cer"], dev_result["loss"], 0
            state.best_epoch = epoch + 1
            if self.context.main:
                checkpoint.save(
                    self.run_dir / rundir.BEST,
                    self.config,
                    self.data.tokenizer,
                    self.data.cmvn,
                    self.model,
                    epoch=epoch + 1,
                    step=state.step,
                    dev_cer=state.best_dev_cer,
                    dev_wer=dev_result["wer"],
                )
        else:
            state.bad_epochs += 1

    def average_nbest(self) -> dict:
        """Average the n best epochs' weights (train.average_best), re-estimate batch-norm statistics
        for the averaged weights, score the result on dev, and keep it as checkpoints/best.pt only
        when it beats the best single epoch there (FINAL_MODEL_RULE); best.pt otherwise stays
        that epoch. -> the average's epochs, dev figures and whether it was kept."""
        state, run_dir, config = self.state, self.run_dir, self.config
        start = time.perf_counter()
        epochs = [entry[2] for entry in state.nbest]
        collate = Collator(self.data.train, self.data.train_tokens, self.data.cmvn)  # no augmentation
        self.sampler.set_epoch(0)
        batches = (collate(indices).to(self.device) for indices in self.sampler.batches()[:BATCH_NORM_BATCHES])
        norms = load_average(self.model, run_dir, epochs, batches)
        result = self.evaluate_dev()
        kept = (result["cer"], result["loss"]) < (state.best_dev_cer, state.best_dev_loss)
        if kept:
            checkpoint.save(
                run_dir / rundir.BEST,
                config,
                self.data.tokenizer,
                self.data.cmvn,
                self.model,
                epoch=state.epoch,
                step=state.step,
                dev_cer=result["cer"],
                dev_wer=result["wer"],
                averaged_epochs=epochs,
            )
        state.train_seconds += time.perf_counter() - start
        return {
            "epochs": epochs,
            "dev_cer": result["cer"],
            "dev_wer": result["wer"],
            "dev_loss": result["loss"],
            "batch_norm_layers_recomputed": norms,
            "kept": kept,
        }

    def finish(self) -> dict:
        """Choose the final model (:meth:`average_nbest`), write the summary."""
        averaged = self.average_nbest() if len(self.state.nbest) > 1 and self.context.main else None
        summary = report.summary(self, averaged)
        if self.context.main:
            fileio.write_json(self.run_dir / rundir.SUMMARY, summary)
        console.print(report.done_line(self, summary))
        return summary
