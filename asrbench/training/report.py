"""What a run tells: the line it starts with, a metrics.jsonl row per epoch, train_summary.json
and the line it ends with. Functions of a :class:`~asrbench.training.trainer.Trainer`'s state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from asrbench.env import bf16_hardware, environment, peak_memory_mb, release_free_memory, resident_mb
from asrbench.models.sizing import format_count, sizing_record, width_fields
from asrbench.runs import rundir
from asrbench.training.averaging import FINAL_MODEL_RULE, final_model

if TYPE_CHECKING:  # annotations only: the trainer imports this module
    from asrbench.training.trainer import Trainer


@dataclass
class EpochLoop:
    """Throughput of one epoch's batch loop (data, step, logging; no dev pass)."""

    steps: int = 0
    seconds: float = 0.0
    # counts: whole numbers, floats after Context.sum over the ranks (Trainer.end_epoch)
    utterances: float = 0
    frames: float = 0


def _sized(config) -> str:
    """' (target_params 3M: d_model=176, ff_dim=704)' for a sized model, '' otherwise."""
    model = config.model
    if not model.target_params:
        return ""
    width = ", ".join(f"{field}={model.options[field]}" for field in width_fields(model.name))
    return f" (target_params {format_count(model.target_params)}: {width})"


def _bf16_note(device) -> str:
    """What runs a bf16 run's matmuls here; a warning where bf16 is emulated (slower than fp32)."""
    hardware = bf16_hardware(device)
    if hardware == "emulated":
        return (
            " [yellow](emulated: this CPU has neither AVX512-BF16 nor AMX, so bf16 converts around every "
            "op and is slower than fp32; use train.precision=fp32)[/yellow]"
        )
    return f" ({hardware or 'hardware unknown'})"


def announcement(trainer: Trainer) -> str:
    """The line a run starts with: the model's size, the data, the hardware, where it resumes."""
    config, tc, data, context, state = trainer.config, trainer.tc, trainer.data, trainer.context, trainer.state
    workers = trainer.workers
    return (
        f"[bold]{config.model.name}[/bold]: {trainer.parameters:,} parameters{_sized(config)}, "
        f"{len(data.train)} training utterances, {trainer.steps_per_epoch} steps/epoch, device {trainer.device}, "
        f"{workers} data-loader worker{'s' * (workers != 1)}"
        + (f", {context.world} ranks" if context.distributed else "")
        + (f", {trainer.accum} batches per rank and step" if trainer.accum > 1 else "")
        + (f", precision {trainer.precision}" if trainer.precision != "fp32" else "")
        + (_bf16_note(trainer.device) if trainer.precision == "bf16" else "")
        + (
            f", {config.data.train_fraction:g} of train ({data.train_hours:.2f} h, data.train_fraction)"
            if config.data.train_fraction < 1.0
            else ""
        )
        + (
            f", {data.skipped_long} utterances longer than {config.data.max_duration}s or "
            f"{tc.batch_frames} frames (train.batch_frames) skipped"
            if data.skipped_long
            else ""
        )
        + (
            f"; resuming at epoch {state.epoch + 1}" + (f", batch {state.position + 1}" if state.position else "")
            if trainer.resumed
            else ""
        )
        + (f"; TensorBoard events in {trainer.log.log_dir}" if trainer.log.enabled else "")
    )


def metrics_row(trainer: Trainer, epoch: int, dev_result: dict, loop: EpochLoop) -> dict:
    """metrics.jsonl's row for ``epoch`` (0-based), after its dev pass."""
    state = trainer.state
    row = {
        "epoch": epoch + 1,
        "step": state.step,
        "train_loss": state.loss_sum / state.loss_count if state.loss_count else None,
        "dev_loss": dev_result["loss"],
        "dev_cer": dev_result["cer"],
        "dev_wer": dev_result["wer"],
        "lr": trainer.scheduler.get_last_lr()[0],
        "train_seconds": state.train_seconds,
        "skipped_batches": state.skipped_batches,
        # Throughput of the batch loop alone (data, step, logging; no dev pass).
        "loop_steps": loop.steps,
        "loop_seconds": loop.seconds,
        "loop_utterances": int(loop.utterances),  # of all ranks
        "loop_audio_seconds": loop.frames * trainer.config.features.frame_shift_ms / 1000,
        "data_workers": trainer.workers,
        "world_size": trainer.context.world,
    }
    # The peak over every step so far (process max RSS on CPU, torch's max allocated on CUDA),
    # so a step whose memory spikes (a transducer's joint tensor on the longest batch) shows.
    row["peak_memory_mb"] = peak_memory_mb(trainer.device)["mb"]
    release_free_memory()
    row["rss_mb"] = resident_mb()  # after the dev pass, with free heap pages returned
    return row


def summary(trainer: Trainer, averaged: dict | None) -> dict:
    """train_summary.json; ``averaged``: the n-best average's figures (Trainer.average_nbest), or None."""
    state, config, tc = trainer.state, trainer.config, trainer.tc
    return {
        "model": config.model.name,
        "params": trainer.parameters,
        # model.target_params: the target, the width chosen for it and how close the count came
        "sizing": (
            sizing_record(config.model.name, config.model.options, config.model.target_params, trainer.parameters)
            if config.model.target_params
            else None
        ),
        "epochs": state.epoch,
        "steps": state.step,
        "train_seconds": state.train_seconds,
        "best_dev_cer": state.best_dev_cer,
        # train.average_best > 1: the average's epochs and dev figures, and whether it was kept
        "averaged": averaged,
        # what checkpoints/best.pt holds (FINAL_MODEL_RULE); best_epoch 0: resumed from a checkpoint
        # that did not record it
        "final_model": final_model(averaged, state.best_epoch or None, state.best_dev_cer),
        "final_model_rule": FINAL_MODEL_RULE,
        "stop_reason": trainer.stop_reason,
        # Budgets count on budget.clock; steps and schedule_steps repeat the run without one
        # (--max-steps S --set train.schedule_steps=T: the same learning rates, step for step).
        "budget": {"max_minutes": tc.max_minutes, "clock": trainer.clock.kind, "used_minutes": state.budget_used / 60},
        "schedule_steps": state.schedule_steps or trainer.total_steps,
        "repeat": (
            f"--max-steps {state.step}"
            + (f" --set train.schedule_steps={state.schedule_steps}" if state.schedule_steps else "")
        ),
        "skipped_long_utterances": trainer.data.skipped_long,
        "train_hours": trainer.data.train_hours,
        # the audio every epoch's batch loop went through: with train_seconds, the training throughput
        "audio_hours_trained": rundir.audio_hours_trained(trainer.run_dir),
        "skipped_batches": state.skipped_batches,
        "world_size": trainer.context.world,
        "grad_accum": trainer.accum,
        "precision": trainer.precision,
        # what computed bf16 (amx, avx512_bf16, cuda, emulated); None for fp32 / fp16 runs
        "bf16_hardware": bf16_hardware(trainer.device) if trainer.precision == "bf16" else None,
        "peak_memory": peak_memory_mb(trainer.device),
        "config_hash": config.hash(),
        "environment": environment(trainer.device),
    }


def done_line(trainer: Trainer, summary: dict) -> str:
    """The line a run ends with: the best epoch, the average, the time, why it stopped, where it is."""
    state, averaged, stop_reason = trainer.state, summary["averaged"], trainer.stop_reason
    return (
        f"[green]done[/green] {trainer.config.model.name}: best dev CER {state.best_dev_cer:.2f}% "
        f"(epoch {state.best_epoch or None}) after {summary['epochs']} epochs, "
        + (
            f"average of {len(averaged['epochs'])} best epochs: dev CER {averaged['dev_cer']:.2f}% "
            f"({'kept' if averaged['kept'] else 'not kept: the best epoch is the final model'}), "
            if averaged
            else ""
        )
        + f"{state.train_seconds:.0f}s ({stop_reason}"
        + (f"; repeat exactly with {summary['repeat']}" if stop_reason == "time budget" else "")
        + f") -> {trainer.run_dir}"
    )
