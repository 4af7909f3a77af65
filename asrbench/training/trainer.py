"""One training loop for every model: AdamW, warm-up then cosine decay, clipping, budgets.

The trainer knows nothing about architectures: it builds the model from the registry and calls
only the family contract (:mod:`asrbench.models.base`): ``compute_loss`` to train and
``dev_decode`` to choose checkpoints. After every epoch it measures dev CER, keeps the best
checkpoint and a resumable last one, appends to metrics.jsonl (and to TensorBoard with
``train.tensorboard``). What a resume restores is one dataclass, :class:`TrainState`, plus the
optimizer, scheduler, scaler and RNG streams (:meth:`Trainer.resumable_state`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from asrbench import fileio
from asrbench.data.batching import BucketBatchSampler, Collator, EpochBatches, EpochKeys, train_loader
from asrbench.data.features import GlobalCMVN
from asrbench.data.manifest import require_prepared
from asrbench.data.noise_augment import NoiseAugment
from asrbench.data.pipeline import TrainingData, load_training_data
from asrbench.data.tokenizer import tokenizer_from_dict
from asrbench.decoding.decode import recognize
from asrbench.env import available_cores, environment, peak_memory_mb, release_free_memory, resident_mb, resolve_device
from asrbench.errors import AsrbenchError
from asrbench.models import build_model, count_parameters
from asrbench.progress import console, progress_bar
from asrbench.recipe.config import RunConfig, resolve, with_overrides
from asrbench.runs import checkpoint, rundir
from asrbench.scoring.metrics import error_rates
from asrbench.text import DEFAULT_NORMALIZER
from asrbench.training import distributed
from asrbench.training.distributed import Context
from asrbench.training.tensorboard import TrainingLog


def lr_factor(step: int, total_steps: int, config) -> float:
    """Linear warm-up to 1, then cosine decay to ``final_lr_ratio`` at ``total_steps`` (or constant).

    A function of the step alone: a time budget moves ``total_steps`` once, never step by step
    (:meth:`Trainer.fit_schedule`), so the same seed gives the same learning rates on any machine.
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


FINAL_MODEL_RULE = ("the average of the train.average_best best epochs when its dev (CER, loss) is lower than "
                    "the best single epoch's, else that epoch")
BATCH_NORM_BATCHES = 50  # training batches (without augmentation) that re-estimate an average's statistics


def recompute_batch_norm(model: nn.Module, batches) -> int:
    """Re-estimate every batch-norm layer's running statistics from ``batches`` (cumulative means,
    the weights unchanged and nothing else in training mode: no dropout); -> the layers redone.

    Averaging checkpoints averages their running means and variances too, but those describe each
    checkpoint's own activations, not the averaged weights' (SWA's ``update_bn`` does the same)."""
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    model.eval()
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    with torch.no_grad():
        for batch in batches:
            model.compute_loss(batch.features, batch.feature_lengths, batch.targets, batch.target_lengths)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
    return len(norms)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class Interrupted(AsrbenchError):
    """Ctrl-C during training: the message says what was saved and how to resume."""

    exit_code = 130
    prefix = "interrupted"


def stopped_at_once(run_dir: str | Path) -> Interrupted:
    """A second Ctrl-C (KeyboardInterrupt mid-batch) as the command line reports it."""
    run_dir = Path(run_dir)
    saved = (run_dir / rundir.LAST).is_file() or (run_dir / rundir.PREVIOUS).is_file()
    return Interrupted(f"{run_dir}: stopped at once by a second Ctrl-C; "
                       + ("the last saved checkpoint is kept" if saved else "no checkpoint had been saved yet")
                       + f"; resume with: asrbench train --out {run_dir} --resume")


class StopRequest:
    """While active, the first Ctrl-C (SIGINT) only sets ``requested``; the second one interrupts.

    The training loop checks the flag between batches, so the checkpoint it saves describes a
    finished batch exactly. Outside the main thread signals cannot be caught: it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

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


def _rng_state(device: torch.device) -> dict:
    state = {"torch_rng": torch.get_rng_state(), "python_rng": random.getstate()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def _seed_rank(seed: int, rank: int, epoch: int) -> None:
    """A fresh dropout stream for ``rank`` > 0 (rank 0 keeps the single-process one)."""
    seed_everything(seed * 1000003 + 7919 * rank + epoch)


def _restore_rng(state: dict, context: Context, device: torch.device, seed: int) -> None:
    """Each rank takes back its own RNG state; ranks the checkpoint did not have start fresh ones."""
    states = state.get("rank_rng") or [state]
    if context.rank < len(states):
        _set_rng_state(states[context.rank], device)
    else:
        _seed_rank(seed, context.rank, state["epoch"])
    saved_world = state.get("world_size", 1)
    if saved_world != context.world and context.main:
        console.print(f"[yellow]note[/yellow]: the checkpoint was written by {saved_world} rank(s), this run has "
                      f"{context.world}: steps now take {context.world} x train.grad_accum batches, and ranks "
                      "without a saved RNG state start fresh dropout streams")


def _keep_nbest(nbest: list[list], entry: list, size: int) -> list[list]:
    """Put ``entry`` ([dev CER, dev loss, epoch]) into the ``size`` best, best first (lower CER, then
    lower loss, then the earlier epoch); returns the entries that fell out. ``size`` 1 keeps none:
    the single best is checkpoints/best.pt already."""
    if size <= 1:
        return []
    nbest.append(entry)
    nbest.sort()
    dropped = nbest[size:]
    del nbest[size:]
    return dropped


def resolve_precision(precision: str, device: torch.device) -> str:
    """``amp`` -> bf16 where the GPU supports it, else fp16 on a GPU, fp32 on a CPU; others as given."""
    if precision != "amp":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
) -> dict:
    """Train one model; returns the training summary (also written to train_summary.json).

    The run dir is locked while training: a second process aiming at it stops with an error.
    """
    run_dir = Path(out)
    config, last_state = _start(recipe, model_name, run_dir, data_dir, overrides, resume, epochs, max_minutes, seed)
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


def _resume_state(run_dir: Path) -> dict:
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


# What a resumed run may change: its budget and the hardware it runs on.
RESUMABLE_OVERRIDES = ("train.epochs", "train.max_minutes", "train.max_steps", "train.device", "train.num_threads",
                       "train.data_workers", "train.tensorboard", "train.tensorboard_every_steps")


def _start(recipe, model_name, run_dir: Path, data_dir, overrides, resume, epochs, max_minutes,
           seed) -> tuple[RunConfig, dict | None]:
    """The run's config and, when resuming, its checkpoint; nothing is written yet."""
    extra = list(overrides or [])
    if data_dir is not None:
        extra.append(f"data.dir={data_dir}")
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if max_minutes is not None:
        extra.append(f"train.max_minutes={max_minutes}")
    if seed is not None:
        extra.append(f"train.seed={seed}")

    last_state = None
    if resume and ((run_dir / rundir.LAST).is_file() or (run_dir / rundir.PREVIOUS).is_file()):
        config = rundir.read_config(run_dir)
        # A resumed run may be given more epochs or time, and other hardware; nothing else.
        allowed = [o for o in extra if _override_key(o) in RESUMABLE_OVERRIDES]
        ignored = [o for o in extra if _override_key(o) not in RESUMABLE_OVERRIDES]
        if ignored:
            console.print(f"[yellow]note[/yellow]: --resume keeps the run's own config; ignored: {', '.join(ignored)} "
                          f"(a resumed run may change only {', '.join(RESUMABLE_OVERRIDES)})")
        config = with_overrides(config, allowed, "--resume")
        last_state = _resume_state(run_dir)
    elif resume and (run_dir / rundir.CONFIG).is_file():
        config = rundir.read_config(run_dir)  # interrupted before its first checkpoint: start it over
    elif resume:
        raise AsrbenchError(f"{run_dir}: no run to resume (no {rundir.CONFIG}); start one without --resume")
    else:
        if recipe is None or model_name is None:
            raise AsrbenchError("a recipe and --model are needed to start a new run")
        if (run_dir / rundir.CONFIG).is_file():
            raise AsrbenchError(f"{run_dir}: already holds a run (use --resume to continue it, or another --out)")
        config = resolve(recipe, model_name, extra)
        # A data dir the user names (--data, --set data.dir=) is used as it is: only the recipe's own
        # data.dir is prepared on the fly, so a mistyped one fails instead of training on the recipe's corpus.
        if any(_override_key(o) == "data.dir" for o in extra):
            require_prepared(config.data.dir, ("train", "dev"), "--data" if data_dir is not None else "--set data.dir")
    return config, last_state


def _override_key(text: str) -> str:
    return text.split("=", 1)[0].strip()


class FlatGradients:
    """Every parameter's ``.grad`` as a view into one flat buffer, so that clipping and zeroing
    are one op each instead of a few per parameter (PyTorch's multi-tensor kernels skip CPU
    tensors; per-parameter clipping cost ~2% of an AN4 step on 2 cores). Backward accumulates
    into the existing views in place; the buffer is zeroed, never freed, between steps.
    """

    def __init__(self, model: nn.Module):
        parameters = [p for p in model.parameters() if p.requires_grad]
        first = parameters[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in parameters):
            raise AsrbenchError("the model's parameters differ in dtype or device; asrbench trains one of each")
        self.buffer = torch.zeros(sum(p.numel() for p in parameters), dtype=first.dtype, device=first.device)
        offset = 0
        for parameter in parameters:
            parameter.grad = self.buffer[offset : offset + parameter.numel()].view_as(parameter)
            offset += parameter.numel()

    def zero_(self) -> None:
        self.buffer.zero_()

    def clip_(self, max_norm: float) -> torch.Tensor:
        """Scale the gradients to an L2 norm of at most ``max_norm``; -> the norm before (as
        ``nn.utils.clip_grad_norm_``)."""
        norm = torch.linalg.vector_norm(self.buffer)
        self.buffer.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        return norm


def noise_augment(config: RunConfig, data: TrainingData) -> NoiseAugment | None:
    """``augment.noise``'s augmenter for the training set (babble from its unperturbed utterances)."""
    if not config.augment.noise:
        return None
    plain = [utt for index, utt in enumerate(data.train.utterances) if data.train.speed(index) == 1.0]
    return NoiseAugment(config.augment, config.features, plain)


def loader_workers(configured: int, device: torch.device, cores: int | None = None) -> int:
    """Data-loader processes for ``train.data_workers`` (-1 = auto).

    On a GPU, collation overlaps the device's work: up to 4 workers, leaving one core to the
    trainer. On a CPU the step's own ops run on ``torch.get_num_threads()`` cores, and a worker
    that shares a core with them delays every parallel op of the step (measured on 2 cores: the
    trainer at 0.68x a bare loop with one worker, 0.98x with none; see benchmarks/trainer_bench.py),
    so workers get only the cores the compute threads leave free. ``ASRBENCH_CORES`` caps the cores
    counted (``asrbench bench --jobs J`` gives each job its share).
    """
    if configured >= 0:
        return configured
    cores = cores or available_cores()
    if device.type == "cuda":
        return min(4, max(cores - 1, 0))
    return min(4, max(cores - torch.get_num_threads(), 0))


@dataclass
class TrainState:
    """What a resume restores besides the weights, optimizer, scheduler, gradient scaler and RNG
    streams (:meth:`Trainer.resumable_state` adds those). Saved under these names in last.pt."""

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
    schedule_steps: int = 0  # where the learning-rate decay ends, once fixed (Trainer.fit_schedule); 0: not yet
    skipped_batches: int = 0  # non-finite losses or gradients
    loss_sum: float = 0.0  # the epoch's running training loss (summed over utterances and ranks)
    loss_count: int = 0
    nbest: list = field(default_factory=list)  # [dev CER, dev loss, epoch] kept for averaging, best first

    # Older checkpoints lack the others; they start from the defaults.
    REQUIRED: ClassVar[tuple[str, ...]] = ("epoch", "step", "best_dev_cer", "best_dev_loss", "bad_epochs",
                                           "train_seconds")

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> TrainState:
        defaults = cls()
        return cls(**{f.name: state.get(f.name, getattr(defaults, f.name)) for f in dataclasses.fields(cls)})


# Everything a resumable checkpoint must hold (checkpoint.load_resumable checks it).
RESUME_KEYS = ("optimizer", "scheduler", *TrainState.REQUIRED, "torch_rng", "python_rng", "model_state", "tokenizer",
               "cmvn")


@dataclass
class EpochLoop:
    """Throughput of one epoch's batch loop (data, step, logging; no dev pass)."""

    steps: int = 0
    seconds: float = 0.0
    utterances: int = 0
    frames: int = 0


class Trainer:
    """One run: the model, its optimizer and schedule, the data and a :class:`TrainState`.

    :meth:`run` trains epoch by epoch (:meth:`train_one_epoch`, then :meth:`end_epoch`: dev pass,
    checkpoints, metrics) until the epochs, the time budget, the step limit or early stopping end
    it, then :meth:`finish` averages the n best epochs and writes the summary. Under torchrun
    every rank runs it; only rank 0 evaluates dev and writes files.
    """

    def __init__(self, config: RunConfig, last_state: dict | None, run_dir: Path, context: Context,
                 device_name: str) -> None:
        tc = self.tc = config.train
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        self.config, self.run_dir, self.context = config, run_dir, context
        self.device = resolve_device(device_name)
        seed_everything(tc.seed)
        tokenizer = tokenizer_from_dict(last_state["tokenizer"]) if last_state is not None else None
        self.data = load_training_data(config, tokenizer)
        if last_state is not None:
            self.data.cmvn = GlobalCMVN.from_dict(last_state["cmvn"])
        self.model = build_model(config.model.name, config.model.options, config.features.dim(),
                                 len(self.data.tokenizer))
        self.model.to(self.device)
        self.parameters = count_parameters(self.model)
        if context.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            rundir.write_config(run_dir, config)
            fileio.write_json(run_dir / rundir.TOKENIZER, self.data.tokenizer.to_dict())
            fileio.write_json(run_dir / rundir.ENVIRONMENT, {**environment(self.device), "world_size": context.world})
        self.clock = BudgetClock(tc.budget_clock, self.device)
        self._build_optimization()
        self.resumed = last_state is not None
        if last_state is not None:
            self._resume(last_state)
        elif context.rank > 0:
            _seed_rank(tc.seed, context.rank, 0)  # every rank its own dropout stream; the weights come from rank 0
        self.gradients = FlatGradients(self.model)
        self.train_module = distributed.wrap(self.model, context, self.device)
        self.dev_searcher = self.model.dev_searcher()
        self.budget_seconds = tc.max_minutes * 60 if tc.max_minutes > 0 else math.inf
        self.checkpoint_seconds = tc.checkpoint_minutes * 60 if tc.checkpoint_minutes > 0 else math.inf
        self.eval_seconds = 0.0  # the last dev pass (budget clock); the budget keeps room for the final one
        self.eval_passes = 2 if tc.average_best > 1 else 1  # and for the averaged model's
        self.epoch_clock = self.clock()  # the budget clock when the epoch under way began
        self.nonfinite_in_a_row = 0
        self.stop_reason = "epochs"
        self.stop_request = StopRequest()
        self.log = TrainingLog.open(run_dir, tc.tensorboard, context.main, tc.tensorboard_every_steps,
                                    resume_step=self.state.step if last_state is not None else None)

    def _build_optimization(self) -> None:
        """Optimizer, learning-rate schedule, gradient scaler, batch sampler and loader."""
        tc, data, context = self.tc, self.data, self.context
        # One optimizer step consumes a group of world * grad_accum batches (asrbench.training.distributed).
        self.accum, self.group = tc.grad_accum, context.world * tc.grad_accum
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.sampler = BucketBatchSampler(data.train.lengths.tolist(), tc.batch_frames, tc.max_batch_size, True,
                                          tc.seed)
        self.steps_per_epoch = len(self.sampler.batches(self.group)) // self.group
        if self.steps_per_epoch == 0:
            raise AsrbenchError(f"{self.config.data.dir}: {len(self.sampler.batches())} training batches cannot feed "
                                f"one step of {self.group} batches ({context.world} ranks x train.grad_accum "
                                f"{self.accum})")
        self.total_steps = self.steps_per_epoch * tc.epochs
        self.state = TrainState(group=self.group)  # replaced by the checkpoint's on resume
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.state.schedule_steps or self.total_steps, tc))
        self.precision = resolve_precision(tc.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.precision == "fp16" and self.device.type == "cuda")
        collate = Collator(data.train, data.train_tokens, data.cmvn, self.config.augment,
                           noise_augment(self.config, data))
        self.keys = EpochKeys()
        self.workers = loader_workers(tc.data_workers, self.device)
        self.loader = train_loader(EpochBatches(collate, self.sampler, tc.seed), self.keys, self.workers,
                                   pin_memory=self.device.type == "cuda")

    # -- resuming ----------------------------------------------------------------------------------

    def resumable_state(self, batches_done: int, seconds: float, epoch_group: int, epoch: int,
                        budget_used: float) -> dict:
        """Everything :data:`RESUME_KEYS` names: the TrainState (at ``batches_done`` of ``epoch``,
        after ``seconds`` of training), the optimizer, scheduler and scaler, and every rank's RNG
        state (every rank takes part: they are gathered to rank 0)."""
        rng_states = self.context.gather(_rng_state(self.device))
        losses = self.context.sum(self.state.loss_sum, self.state.loss_count)
        state = dataclasses.replace(self.state, epoch=epoch, position=batches_done, group=epoch_group,
                                    train_seconds=seconds, budget_used=budget_used, loss_sum=losses[0],
                                    loss_count=int(losses[1]))
        return {**state.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "world_size": self.context.world, "rank_rng": rng_states, **rng_states[0]}

    def _resume(self, last_state: dict) -> None:
        """The inverse of :meth:`resumable_state` (the weights come from the same checkpoint)."""
        self.model.load_state_dict(last_state["model_state"])
        self.optimizer.load_state_dict(last_state["optimizer"])
        self.scheduler.load_state_dict(last_state["scheduler"])
        if last_state.get("scaler"):
            self.scaler.load_state_dict(last_state["scaler"])
        state = TrainState.from_state_dict(last_state)
        if "budget_used" not in last_state:  # written before the budget clock: it counted wall time
            state.budget_used = state.train_seconds
        # A fallback to last.prev.pt may list an epoch whose file was deleted after it was written.
        state.nbest = [list(entry) for entry in state.nbest
                       if (self.run_dir / rundir.nbest_checkpoint(entry[2])).is_file()]
        if self.context.main:
            rundir.truncate_metrics(self.run_dir, state.epoch)  # rows written after this checkpoint are redone
        else:  # the epoch's running loss so far is rank 0's; the other ranks add theirs from here on
            state.loss_sum, state.loss_count = 0.0, 0
        self.state = state
        _restore_rng(last_state, self.context, self.device, self.tc.seed)

    def save_last(self, epoch: int, batches_done: int, seconds: float, epoch_group: int,
                  budget_used: float | None = None) -> None:
        """The resumable checkpoint (every rank takes part; rank 0 writes it); the one it replaces is
        kept as the fallback. ``budget_used``: the budget clock's count now (default: the state's)."""
        budget_used = self.state.budget_used if budget_used is None else budget_used
        resumable = self.resumable_state(batches_done, seconds, epoch_group, epoch, budget_used)
        if self.context.main:
            checkpoint.save_rotating(self.run_dir / rundir.LAST, self.run_dir / rundir.PREVIOUS, self.config,
                                     self.data.tokenizer, self.data.cmvn, self.model, **resumable)

    # -- the loop ----------------------------------------------------------------------------------

    def evaluate_dev(self) -> dict:
        """Dev CER, WER (percent) and loss of the model as it is now."""
        data = self.data
        dev = recognize(self.model, data.dev, data.cmvn, data.tokenizer, self.device, self.tc.eval_batch_frames,
                        token_ids=data.dev_tokens, searcher=self.dev_searcher)
        rates = error_rates([u.text for u in data.dev.utterances], dev.hypotheses, DEFAULT_NORMALIZER)
        if rates.cer is None:
            raise AsrbenchError(f"{self.config.data.dir}: the dev references have no characters after normalization "
                                f"({DEFAULT_NORMALIZER}): dev CER, which picks the best epoch, is undefined")
        return {"cer": rates.cer, "wer": rates.wer, "loss": dev.loss}

    def limit_reached(self, over_budget: bool) -> str | None:
        """Why training must stop now (the time budget or the step limit), or None."""
        if over_budget:
            return "time budget"
        if self.tc.max_steps and self.state.step >= self.tc.max_steps:
            return "max steps"
        return None

    def fit_schedule(self) -> None:
        """At the end of the first epoch, fix where the learning-rate decay ends, once.

        ``train.schedule_steps`` when given; else, under a time budget (``train.budget_schedule``),
        the step the budget is expected to reach at the first epoch's cost (its steps and dev pass on
        the budget clock), keeping room for the final model's extra dev pass. From here on the
        learning rate is a function of the step alone: the run can be repeated exactly with
        ``--max-steps`` and ``train.schedule_steps`` (train_summary.json's ``repeat``).
        """
        tc, state = self.tc, self.state
        if tc.schedule_steps:
            state.schedule_steps = tc.schedule_steps
            return
        if not (tc.budget_schedule and math.isfinite(self.budget_seconds)) or state.budget_used <= 0:
            return
        left = self.budget_seconds - state.budget_used - (self.eval_passes - 1) * self.eval_seconds
        fitted = state.step + int(max(0.0, left) / state.budget_used * self.steps_per_epoch)
        if fitted < self.total_steps:
            state.schedule_steps = max(fitted, state.step + 1)
            if self.context.main:
                console.print(
                    f"time budget: the learning-rate decay now ends at step {state.schedule_steps} (of "
                    f"{self.total_steps} for {tc.epochs} epochs), fitted to the first epoch's cost")

    def run(self) -> dict:
        state, tc = self.state, self.tc
        self._announce()
        with progress_bar("loss", "lr", "dev_cer") as progress, self.stop_request, self.log:
            # Under a time budget the bar shows the time left in it when that ends training first.
            self.progress, self.task = progress, progress.add_task(
                self.config.model.name, total=self.total_steps, completed=state.step, loss="-", lr="-",
                dev_cer="-" if state.best_dev_cer == math.inf else f"{state.best_dev_cer:.2f}",
                deadline=self._deadline(state.budget_used))
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

    def _announce(self) -> None:
        config, tc, data, context, state = self.config, self.tc, self.data, self.context, self.state
        workers = self.workers
        console.print(
            f"[bold]{config.model.name}[/bold]: {self.parameters:,} parameters, {len(data.train)} training "
            f"utterances, {self.steps_per_epoch} steps/epoch, device {self.device}, {workers} data-loader "
            f"worker{'s' * (workers != 1)}"
            + (f", {context.world} ranks" if context.distributed else "")
            + (f", {self.accum} batches per rank and step" if self.accum > 1 else "")
            + (f", precision {self.precision}" if self.precision != "fp32" else "")
            + (f", {config.data.train_fraction:g} of train ({data.train_hours:.2f} h, data.train_fraction)"
               if config.data.train_fraction < 1.0 else "")
            + (f", {data.skipped_long} utterances longer than {config.data.max_duration}s or "
               f"{tc.batch_frames} frames (train.batch_frames) skipped" if data.skipped_long else "")
            + (f"; resuming at epoch {state.epoch + 1}" + (f", batch {state.position + 1}" if state.position else "")
               if self.resumed else "")
            + (f"; TensorBoard events in {self.log.log_dir}" if self.log.enabled else "")
        )

    def train_one_epoch(self, epoch: int, epoch_start: float) -> EpochLoop:
        """The batch loop of one epoch (the hot loop: it stays in one function so that each step
        costs no more Python than it must). Stops early at the time budget or the step limit
        (``stop_reason``), and on Ctrl-C after saving the resumable checkpoint."""
        state, tc, context, device = self.state, self.tc, self.context, self.device
        accum, group = self.accum, self.group
        scaler, gradients = self.scaler, self.gradients
        last_save = epoch_start
        self.model.train()
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
        loop, loop_start = EpochLoop(), time.perf_counter()
        micro, bad, batches_done = 0, False, state.position
        step_losses: list[tuple[torch.Tensor, int]] = []
        for batch in self.loader:
            batch = batch.to(device)
            # DDP averages gradients over the ranks on the group's last backward only.
            sync = micro == accum - 1 or not context.distributed
            with nullcontext() if sync else self.train_module.no_sync():
                with _autocast(device, self.precision):
                    loss = self.train_module(batch.features, batch.feature_lengths, batch.targets,
                                             batch.target_lengths)
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
                bad, self.stop_request.requested, now - last_save >= self.checkpoint_seconds,
                used + self.eval_passes * self.eval_seconds >= self.budget_seconds)
            self._apply_step(bad, step_losses, epoch)
            micro, bad, step_losses = 0, False, []
            batches_done += group
            self.scheduler.step()
            state.step += 1
            loop.steps += 1
            lr = self.scheduler.get_last_lr()[0]
            self.progress.update(self.task, advance=1, loss=f"{float(loss.detach()):.3f}", lr=f"{lr:.1e}",
                                 deadline=self._deadline(used))
            self.log.step(state.step, loss.detach(), lr)
            # The budget on any rank's clock (over_budget), so every rank stops at the same step.
            self.stop_reason = self.limit_reached(over_budget) or self.stop_reason
            if self.stop_reason != "epochs":
                break
            if stop_now:  # Ctrl-C: finish the step, save, stop
                self.save_last(epoch, batches_done, state.train_seconds + time.perf_counter() - epoch_start,
                               epoch_group, state.budget_used + self.clock() - self.epoch_clock)
                raise Interrupted(f"{self.run_dir}: checkpoint saved after batch {batches_done} of {len(batches)} "
                                  f"in epoch {epoch + 1}; resume with: asrbench train --out {self.run_dir} --resume")
            if save_now and batches_done < stop:
                self.save_last(epoch, batches_done, state.train_seconds + now - epoch_start, epoch_group,
                               state.budget_used + self.clock() - self.epoch_clock)
                last_save = time.perf_counter()
        loop.seconds = time.perf_counter() - loop_start
        state.position = 0
        return loop

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
            state.loss_sum, state.loss_count, loop.utterances, loop.frames)
        if not context.main:
            state.loss_sum, state.loss_count = 0.0, 0  # rank 0 holds the epoch's totals
        eval_clock = self.clock()
        dev_result = self.evaluate_dev() if context.main else None
        # Only rank 0 evaluates; the others wait here for its verdict (and its clocks).
        dev_result, self.eval_seconds, state.train_seconds, state.budget_used = context.broadcast(
            (dev_result, self.clock() - eval_clock, state.train_seconds + time.perf_counter() - epoch_start,
             state.budget_used + self.clock() - self.epoch_clock))
        if epoch == 0:
            self.fit_schedule()
        self._keep_checkpoints(epoch, dev_result)
        dropped = _keep_nbest(state.nbest, [dev_result["cer"], dev_result["loss"], epoch + 1], tc.average_best)
        if context.main and any(entry[2] == epoch + 1 for entry in state.nbest):
            checkpoint.save(run_dir / rundir.nbest_checkpoint(epoch + 1), self.config, self.data.tokenizer,
                            self.data.cmvn, self.model, epoch=epoch + 1, step=state.step, dev_cer=dev_result["cer"],
                            dev_wer=dev_result["wer"])
        self.metrics_row = self._metrics_row(epoch, dev_result, loop)
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
            raise Interrupted(f"{run_dir}: checkpoint saved at the end of epoch {epoch + 1}; resume with: "
                              f"asrbench train --out {run_dir} --resume")
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
                checkpoint.save(self.run_dir / rundir.BEST, self.config, self.data.tokenizer, self.data.cmvn,
                                self.model, epoch=epoch + 1, step=state.step, dev_cer=state.best_dev_cer,
                                dev_wer=dev_result["wer"])
        else:
            state.bad_epochs += 1

    def _metrics_row(self, epoch: int, dev_result: dict, loop: EpochLoop) -> dict:
        state = self.state
        row = {
            "epoch": epoch + 1,
            "step": state.step,
            "train_loss": state.loss_sum / state.loss_count if state.loss_count else None,
            "dev_loss": dev_result["loss"],
            "dev_cer": dev_result["cer"],
            "dev_wer": dev_result["wer"],
            "lr": self.scheduler.get_last_lr()[0],
            "train_seconds": state.train_seconds,
            "skipped_batches": state.skipped_batches,
            # Throughput of the batch loop alone (data, step, logging; no dev pass).
            "loop_steps": loop.steps,
            "loop_seconds": loop.seconds,
            "loop_utterances": int(loop.utterances),  # of all ranks
            "loop_audio_seconds": loop.frames * self.config.features.frame_shift_ms / 1000,
            "data_workers": self.workers,
            "world_size": self.context.world,
        }
        # The peak over every step so far (process max RSS on CPU, torch's max allocated on CUDA),
        # so a step whose memory spikes (a transducer's joint tensor on the longest batch) shows.
        row["peak_memory_mb"] = peak_memory_mb(self.device)["mb"]
        release_free_memory()
        row["rss_mb"] = resident_mb()  # after the dev pass, with free heap pages returned
        return row

    def average_nbest(self) -> dict:
        """Average the n best epochs' weights (train.average_best), re-estimate batch-norm statistics
        for the averaged weights, score the result on dev, and keep it as checkpoints/best.pt only
        when it beats the best single epoch there (FINAL_MODEL_RULE); best.pt otherwise stays
        that epoch. -> the average's epochs, dev figures and whether it was kept."""
        state, run_dir, config = self.state, self.run_dir, self.config
        start = time.perf_counter()
        epochs = [entry[2] for entry in state.nbest]
        self.model.load_state_dict(checkpoint.average_weights([run_dir / rundir.nbest_checkpoint(e) for e in epochs]))
        # An average of running statistics is not the statistics of the averaged weights' activations.
        collate = Collator(self.data.train, self.data.train_tokens, self.data.cmvn)  # no augmentation
        self.sampler.set_epoch(0)
        batches = (collate(indices).to(self.device) for indices in self.sampler.batches()[:BATCH_NORM_BATCHES])
        norms = recompute_batch_norm(self.model, batches)
        result = self.evaluate_dev()
        kept = (result["cer"], result["loss"]) < (state.best_dev_cer, state.best_dev_loss)
        if kept:
            checkpoint.save(run_dir / rundir.BEST, config, self.data.tokenizer, self.data.cmvn, self.model,
                            epoch=state.epoch, step=state.step, dev_cer=result["cer"], dev_wer=result["wer"],
                            averaged_epochs=epochs)
        state.train_seconds += time.perf_counter() - start
        return {"epochs": epochs, "dev_cer": result["cer"], "dev_wer": result["wer"], "dev_loss": result["loss"],
                "batch_norm_layers_recomputed": norms, "kept": kept}

    def finish(self) -> dict:
        """Choose the final model (:meth:`average_nbest`), write the summary."""
        state, config, context, run_dir, tc = self.state, self.config, self.context, self.run_dir, self.tc
        epochs_done = state.epoch
        averaged = self.average_nbest() if len(state.nbest) > 1 and context.main else None
        best_epoch = state.best_epoch or None  # None: resumed from a checkpoint that did not record it
        final = ({"kept": "average", "epochs": averaged["epochs"], "dev_cer": averaged["dev_cer"]}
                 if averaged and averaged["kept"] else
                 {"kept": "best epoch", "epochs": [best_epoch], "dev_cer": state.best_dev_cer})
        summary = {
            "model": config.model.name,
            "params": self.parameters,
            "epochs": epochs_done,
            "steps": state.step,
            "train_seconds": state.train_seconds,
            "best_dev_cer": state.best_dev_cer,
            # train.average_best > 1: the average's epochs and dev figures, and whether it was kept
            "averaged": averaged,
            "final_model": final,  # what checkpoints/best.pt holds (FINAL_MODEL_RULE)
            "final_model_rule": FINAL_MODEL_RULE,
            "stop_reason": self.stop_reason,
            # Budgets count on budget.clock; steps and schedule_steps repeat the run without one
            # (--max-steps S --set train.schedule_steps=T: the same learning rates, step for step).
            "budget": {"max_minutes": tc.max_minutes, "clock": self.clock.kind, "used_minutes": state.budget_used / 60},
            "schedule_steps": state.schedule_steps or self.total_steps,
            "repeat": (f"--max-steps {state.step}"
                       + (f" --set train.schedule_steps={state.schedule_steps}" if state.schedule_steps else "")),
            "skipped_long_utterances": self.data.skipped_long,
            "train_hours": self.data.train_hours,
            "skipped_batches": state.skipped_batches,
            "world_size": context.world,
            "grad_accum": self.accum,
            "precision": self.precision,
            "peak_memory": peak_memory_mb(self.device),
            "config_hash": config.hash(),
            "environment": environment(self.device),
        }
        if context.main:
            fileio.write_json(run_dir / rundir.SUMMARY, summary)
        console.print(
            f"[green]done[/green] {config.model.name}: best dev CER {state.best_dev_cer:.2f}% (epoch {best_epoch}) "
            f"after {epochs_done} epochs, "
            + (f"average of {len(averaged['epochs'])} best epochs: dev CER {averaged['dev_cer']:.2f}% "
               f"({'kept' if averaged['kept'] else 'not kept: the best epoch is the final model'}), "
               if averaged else "")
            + f"{state.train_seconds:.0f}s ({self.stop_reason}"
            + (f"; repeat exactly with {summary['repeat']}" if self.stop_reason == "time budget" else "")
            + f") -> {run_dir}"
        )
        return summary
