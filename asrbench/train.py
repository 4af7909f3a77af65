"""One training loop for every model: AdamW, warm-up then cosine decay, clipping, budgets.

The trainer knows nothing about architectures: it builds the model from the registry and asks
the model's family for its loss (``compute_loss``: CTC, attention cross-entropy, or both).
After every epoch it measures dev CER with the model's greedy decoding, keeps the best
checkpoint and a resumable last one (optimizer, scheduler and RNG state included), and appends
to metrics.jsonl.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from asrbench import checkpoint, distributed, fileio, rundir
from asrbench.config import RunConfig, data_root, resolve, with_overrides
from asrbench.data.batching import BucketBatchSampler, Collator, EpochBatches, EpochKeys, train_loader
from asrbench.data.features import FeatureSet, GlobalCMVN, load_features
from asrbench.data.manifest import require_prepared
from asrbench.data.tokenizer import CharTokenizer
from asrbench.decode import recognize
from asrbench.decoding.searchers import Searcher
from asrbench.distributed import Context
from asrbench.env import available_cores, environment, peak_memory_mb, release_free_memory, resident_mb, resolve_device
from asrbench.errors import AsrbenchError
from asrbench.models import build_model, count_parameters
from asrbench.progress import console, progress_bar
from asrbench.scoring import error_rates
from asrbench.text import DEFAULT_NORMALIZER, normalize


@dataclass
class TrainingData:
    train: FeatureSet
    dev: FeatureSet
    tokenizer: CharTokenizer
    cmvn: GlobalCMVN
    train_tokens: list[list[int]]
    dev_tokens: list[list[int]]
    skipped_long: int


def ensure_data_dir(config: RunConfig) -> Path:
    """The prepared data dir; prepared on the fly when the recipe names a corpus and source."""
    data_dir = Path(config.data.dir)
    if not config.data.dir:
        raise AsrbenchError("no data dir: set data.dir in the recipe or pass --data DIR")
    if (data_dir / "train.jsonl").is_file():
        return data_dir
    if not config.data.corpus:
        raise AsrbenchError(f"{data_dir}: no train.jsonl (run `asrbench data prepare` or set data.corpus)")
    # Several processes (torchrun ranks) may start at once: one prepares, the others wait.
    with fileio.build_lock(data_dir.parent / f".{data_dir.name}.prepare.lock"):
        if not (data_dir / "train.jsonl").is_file():
            _prepare_data_dir(config, data_dir)
    return data_dir


def _prepare_data_dir(config: RunConfig, data_dir: Path) -> None:
    if config.data.corpus == "synth":
        from asrbench.data.synth import synthesize_corpus

        console.print(f"preparing the built-in corpus in {data_dir}")
        synthesize_corpus(data_dir)
    else:
        from asrbench.data.prepare import prepare_corpus

        source = Path(config.data.source or config.data.corpus)
        if not source.is_absolute():
            source = data_root() / source
        console.print(f"preparing {config.data.corpus} from {source} into {data_dir}")
        prepare_corpus(config.data.corpus, source, data_dir)


def load_training_data(config: RunConfig, tokenizer: CharTokenizer | None = None) -> TrainingData:
    data_dir = ensure_data_dir(config)
    train = load_features(data_dir, "train", config.features)
    dev = load_features(data_dir, "dev", config.features)
    def fits(features: FeatureSet) -> list[int]:
        # Longer than data.max_duration, or more frames than a whole batch may hold: skipped, counted.
        lengths = features.lengths.tolist()
        return [i for i, utt in enumerate(features.utterances)
                if utt.duration <= config.data.max_duration and lengths[i] <= config.train.batch_frames]

    keep = fits(train)
    skipped_long = len(train) - len(keep)
    if skipped_long:
        train = train.subset(keep)
    cmvn = GlobalCMVN.from_frames(train.frames)  # statistics of the unperturbed training audio
    for factor in config.augment.speed_perturb:
        if factor != 1.0:
            perturbed = load_features(data_dir, "train", config.features, speed=float(factor))
            perturbed = perturbed.subset(fits(perturbed))
            train = FeatureSet(
                train.utterances + perturbed.utterances,
                torch.cat([train.frames, perturbed.frames]),
                torch.cat([train.offsets, perturbed.offsets[1:] + train.offsets[-1]]),
            )
    train_texts = [normalize(utt.text) for utt in train.utterances]
    tokenizer = tokenizer or CharTokenizer.build(train_texts)
    dev = apply_unknown_policy(dev, tokenizer, config.tokenizer.unknown, data_dir / "dev.jsonl")
    return TrainingData(
        train=train,
        dev=dev,
        tokenizer=tokenizer,
        cmvn=cmvn,
        train_tokens=[tokenizer.encode(text) for text in train_texts],
        dev_tokens=[tokenizer.encode(normalize(utt.text)) for utt in dev.utterances],
        skipped_long=skipped_long,
    )


def apply_unknown_policy(features: FeatureSet, tokenizer: CharTokenizer, policy: str, where: Path) -> FeatureSet:
    """Utterances with characters the tokenizer lacks: ``map`` to <unk>, ``drop`` them, or ``fail``.

    Either way the count and the characters are reported, so nothing changes silently.
    """
    unknown = {i: tokenizer.unknown_characters(normalize(utt.text)) for i, utt in enumerate(features.utterances)}
    unknown = {i: chars for i, chars in unknown.items() if chars}
    if not unknown:
        return features
    characters = "".join(sorted(set().union(*unknown.values())))
    first = features.utterances[min(unknown)].id
    if policy == "fail":
        raise AsrbenchError(f"{where}: utterance '{first}' has characters outside the tokenizer ({characters!r}); "
                            "set tokenizer.unknown=map or drop, or add them to the training text")
    action = "mapped to <unk>" if policy == "map" else "dropped"
    console.print(f"[yellow]note[/yellow]: {where}: {len(unknown)} utterances with characters outside the "
                  f"tokenizer ({characters!r}), {action} (tokenizer.unknown={policy})")
    if policy == "drop":
        keep = [i for i in range(len(features)) if i not in unknown]
        if not keep:
            raise AsrbenchError(f"{where}: every utterance has characters outside the tokenizer; nothing left")
        return features.subset(keep)
    return features


def lr_factor(step: int, total_steps: int, config, time_fraction: float = 0.0) -> float:
    """Linear warm-up to 1, then cosine decay to ``final_lr_ratio`` (or constant).

    ``time_fraction`` (elapsed / budgeted wall time) moves the decay forward when a time budget
    will end training before ``total_steps``: progress is the larger of the two fractions.
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    progress = max(progress, min(1.0, time_fraction))
    return config.final_lr_ratio + (1 - config.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


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
            return _fit(config, last_state, run_dir, context, device_name)
    finally:
        console.quiet = quiet
        distributed.teardown(context)


def _resume_state(run_dir: Path) -> dict:
    """The resumable checkpoint; when it is damaged, the one before it (with a note)."""
    try:
        return checkpoint.load_resumable(run_dir / rundir.LAST)
    except AsrbenchError as err:
        previous = run_dir / rundir.PREVIOUS
        if not previous.is_file():
            raise
        state = checkpoint.load_resumable(previous)
        console.print(f"[yellow]note[/yellow]: {err}; resuming from {previous} (epoch {state['epoch']})")
        return state


# What a resumed run may change: its budget and the hardware it runs on.
RESUMABLE_OVERRIDES = ("train.epochs", "train.max_minutes", "train.device", "train.num_threads", "train.data_workers")


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


def _fit(config: RunConfig, last_state: dict | None, run_dir: Path, context: Context, device_name: str) -> dict:
    if config.train.num_threads > 0:
        torch.set_num_threads(config.train.num_threads)
    device = resolve_device(device_name)
    seed_everything(config.train.seed)
    tokenizer = None
    if last_state is not None:
        tokenizer = CharTokenizer.from_dict(last_state["tokenizer"])
    data = load_training_data(config, tokenizer)
    if last_state is not None:
        data.cmvn = GlobalCMVN.from_dict(last_state["cmvn"])

    model = build_model(config.model.name, config.model.options, config.features.dim(), len(data.tokenizer))
    model.to(device)
    parameters = count_parameters(model)
    if context.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        rundir.write_config(run_dir, config)
        fileio.write_json(run_dir / rundir.TOKENIZER, data.tokenizer.to_dict())
        fileio.write_json(run_dir / rundir.ENVIRONMENT, {**environment(device), "world_size": context.world})

    tc = config.train
    # One optimizer step consumes a group of world * grad_accum batches (asrbench.distributed).
    accum, group = tc.grad_accum, context.world * tc.grad_accum
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sampler = BucketBatchSampler(data.train.lengths.tolist(), tc.batch_frames, tc.max_batch_size, True, tc.seed)
    steps_per_epoch = len(sampler.batches(group)) // group
    if steps_per_epoch == 0:
        raise AsrbenchError(f"{config.data.dir}: {len(sampler.batches())} training batches cannot feed one step of "
                            f"{group} batches ({context.world} ranks x train.grad_accum {accum})")
    total_steps = steps_per_epoch * tc.epochs
    budget_seconds = tc.max_minutes * 60 if tc.max_minutes > 0 else math.inf
    clock = {"fraction": 0.0}  # elapsed / budgeted seconds, read by the schedule (budget_schedule)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, tc, clock["fraction"]))
    precision = resolve_precision(tc.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
    collate = Collator(data.train, data.train_tokens, data.cmvn, config.augment)
    keys = EpochKeys()
    workers = loader_workers(tc.data_workers, device)
    loader = train_loader(EpochBatches(collate, sampler, tc.seed), keys, workers, pin_memory=device.type == "cuda")
    dev_searcher = Searcher("dev", lambda features, lengths: (features, lengths),
                            lambda out: model.dev_decode(*out), {"kind": "dev"})

    def evaluate_dev() -> dict:
        """Dev CER, WER (percent) and loss of the model as it is now."""
        dev = recognize(model, data.dev, data.cmvn, data.tokenizer, device, tc.eval_batch_frames,
                        token_ids=data.dev_tokens, searcher=dev_searcher)
        rates = error_rates([u.text for u in data.dev.utterances], dev.hypotheses, DEFAULT_NORMALIZER)
        if rates.cer is None:
            raise AsrbenchError(f"{config.data.dir}: the dev references have no characters after normalization "
                                f"({DEFAULT_NORMALIZER}): dev CER, which picks the best epoch, is undefined")
        return {"cer": rates.cer, "wer": rates.wer, "loss": dev.loss}

    start_epoch, step, best_cer, best_loss, bad_epochs, train_seconds = 0, 0, math.inf, math.inf, 0, 0.0
    skipped_batches, position, loss_sum, loss_count = 0, 0, 0.0, 0
    nbest: list[list] = []  # [dev CER, dev loss, epoch] of the epochs kept for averaging, best first
    resumed_group = group  # the group size the resumed epoch's batch list was made with
    if last_state is not None:
        model.load_state_dict(last_state["model_state"])
        optimizer.load_state_dict(last_state["optimizer"])
        scheduler.load_state_dict(last_state["scheduler"])
        if last_state.get("scaler"):
            scaler.load_state_dict(last_state["scaler"])
        start_epoch, step = last_state["epoch"], last_state["step"]
        best_cer, best_loss = last_state["best_dev_cer"], last_state["best_dev_loss"]
        bad_epochs = last_state["bad_epochs"]
        # A fallback to last.prev.pt may list an epoch whose file was deleted after it was written.
        nbest = [list(entry) for entry in last_state.get("nbest", [])
                 if (run_dir / rundir.nbest_checkpoint(entry[2])).is_file()]
        train_seconds = last_state["train_seconds"]
        skipped_batches = last_state.get("skipped_batches", 0)
        # Inside an epoch: the batches already done (of all ranks), and the epoch's running loss
        # (summed over the ranks; kept by rank 0, the other ranks add theirs from here on).
        position = last_state.get("position", 0)
        resumed_group = last_state.get("group", 1)
        if context.main:
            loss_sum, loss_count = last_state.get("loss_sum", 0.0), last_state.get("loss_count", 0)
            rundir.truncate_metrics(run_dir, start_epoch)  # rows written after this checkpoint are redone
        _restore_rng(last_state, context, device, tc.seed)
    elif context.rank > 0:
        _seed_rank(tc.seed, context.rank, 0)  # every rank its own dropout stream; the weights come from rank 0
    gradients = FlatGradients(model)
    train_module = distributed.wrap(model, context, device)

    def save_last(epoch_index: int, batches_done: int, seconds: float, epoch_group: int) -> None:
        """The resumable checkpoint (every rank takes part; rank 0 writes it); the one it replaces
        is kept as the fallback."""
        rng_states = context.gather(_rng_state(device))
        losses = context.sum(loss_sum, loss_count)
        if not context.main:
            return
        checkpoint.save_rotating(
            run_dir / rundir.LAST, run_dir / rundir.PREVIOUS, config, data.tokenizer, data.cmvn, model,
            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), scaler=scaler.state_dict(),
            epoch=epoch_index, position=batches_done, group=epoch_group, step=step, loss_sum=losses[0],
            loss_count=int(losses[1]), best_dev_cer=best_cer, best_dev_loss=best_loss, bad_epochs=bad_epochs,
            train_seconds=seconds, skipped_batches=skipped_batches, world_size=context.world, nbest=nbest,
            rank_rng=rng_states, **rng_states[0],
        )

    stop_reason = "epochs"
    eval_seconds = 0.0  # the last dev pass; the budget keeps room for the final one
    eval_passes = 2 if tc.average_best > 1 else 1  # and for the averaged model's
    nonfinite_in_a_row = 0
    epoch = start_epoch
    metrics_row: dict = {}
    console.print(
        f"[bold]{config.model.name}[/bold]: {parameters:,} parameters, {len(data.train)} training utterances, "
        f"{steps_per_epoch} steps/epoch, device {device}, {workers} data-loader worker{'s' * (workers != 1)}"
        + (f", {context.world} ranks" if context.distributed else "")
        + (f", {accum} batches per rank and step" if accum > 1 else "")
        + (f", precision {precision}" if precision != "fp32" else "")
        + (f", {data.skipped_long} utterances longer than {config.data.max_duration}s or "
           f"{tc.batch_frames} frames (train.batch_frames) skipped" if data.skipped_long else "")
        + (f"; resuming at epoch {start_epoch + 1}" + (f", batch {position + 1}" if position else "")
           if last_state is not None else "")
    )
    checkpoint_seconds = tc.checkpoint_minutes * 60 if tc.checkpoint_minutes > 0 else math.inf
    stop_request = StopRequest()

    def limit_reached(over_budget: bool) -> str | None:
        """Why training must stop now (the time budget or the step limit), or None."""
        if over_budget:
            return "time budget"
        if tc.max_steps and step >= tc.max_steps:
            return "max steps"
        return None

    with progress_bar("loss", "lr", "dev_cer") as progress:
        # Under a time budget the bar shows the time left in it when that ends training first.
        budgeted = math.isfinite(budget_seconds)
        task = progress.add_task(
            config.model.name, total=total_steps, completed=step, loss="-", lr="-",
            dev_cer="-" if best_cer == math.inf else f"{best_cer:.2f}",
            deadline=time.monotonic() + budget_seconds - train_seconds if budgeted else None,
        )
        with stop_request:
            for epoch in range(start_epoch, tc.epochs):
                stop_reason = limit_reached(train_seconds >= budget_seconds) or stop_reason
                if stop_reason != "epochs":
                    break
                epoch_start = time.perf_counter()
                last_save = epoch_start
                model.train()
                # A resumed epoch keeps the batch list it was started with, even with another
                # number of ranks; its remaining batches are shared out in steps of this run's group.
                epoch_group = resumed_group if position else group
                sampler.set_epoch(epoch)
                batches = sampler.batches(epoch_group)
                epoch_steps = (len(batches) - position) // group
                if position == 0:
                    loss_sum, loss_count = 0.0, 0
                stop = position + epoch_steps * group
                keys.set(epoch, position + context.rank, stop, epoch_group, context.world)
                loop_start, loop_steps, loop_utterances, loop_frames = time.perf_counter(), 0, 0, 0
                micro, bad, batches_done = 0, False, position
                step_losses: list[tuple[torch.Tensor, int]] = []
                for batch in loader:
                    batch = batch.to(device)
                    # DDP averages gradients over the ranks on the group's last backward only.
                    sync = micro == accum - 1 or not context.distributed
                    with nullcontext() if sync else train_module.no_sync():
                        with _autocast(device, precision):
                            loss = train_module(batch.features, batch.feature_lengths, batch.targets,
                                                batch.target_lengths)
                        finite = bool(torch.isfinite(loss))
                        bad = bad or not finite
                        # A rank never skips its backward alone: DDP's all-reduce needs every rank.
                        if finite or context.distributed:
                            scaler.scale(loss / accum).backward()
                    step_losses.append((loss.detach(), batch.features.size(0)))
                    loop_utterances += batch.features.size(0)
                    loop_frames += int(batch.feature_lengths.sum())
                    micro += 1
                    if micro < accum:
                        continue
                    scaler.unscale_(optimizer)
                    norm = gradients.clip_(tc.grad_clip)
                    # With fp16 the gradient scaler skips overflowing steps itself; otherwise a
                    # non-finite gradient would poison the weights, so the step is skipped.
                    bad = bad or not (scaler.is_enabled() or bool(torch.isfinite(norm)))
                    now = time.perf_counter()
                    elapsed = train_seconds + now - epoch_start + eval_passes * eval_seconds
                    # Decisions every rank must take together: one small all-reduce when distributed.
                    bad, stop_now, save_now, over_budget = context.any(
                        bad, stop_request.requested, now - last_save >= checkpoint_seconds, elapsed >= budget_seconds)
                    if not bad:
                        scaler.step(optimizer)
                        scaler.update()
                        for value, size in step_losses:
                            loss_sum += float(value) * size
                            loss_count += size
                        nonfinite_in_a_row = 0
                    else:
                        skipped_batches += 1
                        nonfinite_in_a_row += 1
                        if nonfinite_in_a_row >= tc.max_nonfinite_batches:
                            raise AsrbenchError(
                                f"{run_dir}: {nonfinite_in_a_row} batches in a row had a non-finite loss or "
                                f"gradient (epoch {epoch + 1}, step {step + 1}); training stopped and the last "
                                "good checkpoint was kept. Lower train.lr, check the data or use precision fp32"
                            )
                    gradients.zero_()
                    micro, bad, step_losses = 0, False, []
                    batches_done += group
                    if tc.budget_schedule:
                        clock["fraction"] = elapsed / budget_seconds
                    scheduler.step()
                    step += 1
                    loop_steps += 1
                    progress.update(task, advance=1, loss=f"{float(loss.detach()):.3f}",
                                    lr=f"{scheduler.get_last_lr()[0]:.1e}",
                                    deadline=time.monotonic() + budget_seconds - elapsed if budgeted else None)
                    # The budget on any rank's clock (over_budget), so every rank stops at the same step.
                    stop_reason = limit_reached(over_budget) or stop_reason
                    if stop_reason != "epochs":
                        break
                    if stop_now:  # Ctrl-C: finish the step, save, stop
                        save_last(epoch, batches_done, train_seconds + time.perf_counter() - epoch_start,
                                  epoch_group)
                        raise Interrupted(
                            f"{run_dir}: checkpoint saved after batch {batches_done} of {len(batches)} in epoch "
                            f"{epoch + 1}; resume with: asrbench train --out {run_dir} --resume"
                        )
                    if save_now and batches_done < stop:
                        save_last(epoch, batches_done, train_seconds + now - epoch_start, epoch_group)
                        last_save = time.perf_counter()
                loop_seconds = time.perf_counter() - loop_start
                position = 0
                loss_sum, loss_count, loop_utterances, loop_frames = context.sum(
                    loss_sum, loss_count, loop_utterances, loop_frames)
                if not context.main:
                    loss_sum, loss_count = 0.0, 0  # rank 0 holds the epoch's totals
                eval_start = time.perf_counter()
                if context.main:
                    dev_result = evaluate_dev()
                # Only rank 0 evaluates; the others wait here for its verdict (and its clock).
                dev_result, eval_seconds, train_seconds = context.broadcast(
                    (dev_result if context.main else None, time.perf_counter() - eval_start,
                     train_seconds + time.perf_counter() - epoch_start))
                # Dev CER decides; dev loss breaks ties (small dev sets often sit at 0% CER for many epochs).
                if (dev_result["cer"], dev_result["loss"]) < (best_cer, best_loss):
                    best_cer, best_loss, bad_epochs = dev_result["cer"], dev_result["loss"], 0
                    if context.main:
                        checkpoint.save(run_dir / rundir.BEST, config, data.tokenizer, data.cmvn, model,
                                        epoch=epoch + 1, step=step, dev_cer=best_cer, dev_wer=dev_result["wer"])
                else:
                    bad_epochs += 1
                dropped = _keep_nbest(nbest, [dev_result["cer"], dev_result["loss"], epoch + 1], tc.average_best)
                if context.main and any(entry[2] == epoch + 1 for entry in nbest):
                    checkpoint.save(run_dir / rundir.nbest_checkpoint(epoch + 1), config, data.tokenizer, data.cmvn,
                                    model, epoch=epoch + 1, step=step, dev_cer=dev_result["cer"],
                                    dev_wer=dev_result["wer"])
                metrics_row = {
                    "epoch": epoch + 1,
                    "step": step,
                    "train_loss": loss_sum / loss_count if loss_count else None,
                    "dev_loss": dev_result["loss"],
                    "dev_cer": dev_result["cer"],
                    "dev_wer": dev_result["wer"],
                    "lr": scheduler.get_last_lr()[0],
                    "train_seconds": train_seconds,
                    "skipped_batches": skipped_batches,
                    # Throughput of the batch loop alone (data, step, logging; no dev pass).
                    "loop_steps": loop_steps,
                    "loop_seconds": loop_seconds,
                    "loop_utterances": int(loop_utterances),  # of all ranks
                    "loop_audio_seconds": loop_frames * config.features.frame_shift_ms / 1000,
                    "data_workers": workers,
                    "world_size": context.world,
                }
                release_free_memory()
                metrics_row["rss_mb"] = resident_mb()  # after the dev pass, with free heap pages returned
                if context.main:
                    rundir.append_metrics(run_dir, metrics_row)
                save_last(epoch + 1, 0, train_seconds, group)
                if context.main:  # only now: the previous resumable checkpoint still listed them
                    for entry in dropped:
                        (run_dir / rundir.nbest_checkpoint(entry[2])).unlink(missing_ok=True)
                progress.update(task, dev_cer=f"{dev_result['cer']:.2f}")
                if context.any(stop_request.requested)[0]:
                    raise Interrupted(f"{run_dir}: checkpoint saved at the end of epoch {epoch + 1}; resume with: "
                                      f"asrbench train --out {run_dir} --resume")
                if stop_reason in ("time budget", "max steps"):
                    break
                if tc.patience and bad_epochs >= tc.patience:
                    stop_reason = "early stopping"
                    break
    epochs_done = metrics_row.get("epoch", start_epoch)
    averaged = None
    if len(nbest) > 1 and context.main:
        average_start = time.perf_counter()
        epochs = [entry[2] for entry in nbest]
        model.load_state_dict(checkpoint.average_weights([run_dir / rundir.nbest_checkpoint(e) for e in epochs]))
        result = evaluate_dev()
        averaged = {"epochs": epochs, "dev_cer": result["cer"], "dev_wer": result["wer"], "dev_loss": result["loss"]}
        checkpoint.save(run_dir / rundir.BEST, config, data.tokenizer, data.cmvn, model, epoch=epochs_done,
                        step=step, dev_cer=result["cer"], dev_wer=result["wer"], averaged_epochs=epochs)
        train_seconds += time.perf_counter() - average_start
    summary = {
        "model": config.model.name,
        "params": parameters,
        "epochs": epochs_done,
        "steps": step,
        "train_seconds": train_seconds,
        "best_dev_cer": best_cer,
        "averaged": averaged,  # the final model, when train.average_best > 1: its epochs and dev figures
        "stop_reason": stop_reason,
        "skipped_long_utterances": data.skipped_long,
        "skipped_batches": skipped_batches,
        "world_size": context.world,
        "grad_accum": accum,
        "precision": precision,
        "peak_memory": peak_memory_mb(device),
        "config_hash": config.hash(),
        "environment": environment(device),
    }
    if context.main:
        fileio.write_json(run_dir / rundir.SUMMARY, summary)
    console.print(
        f"[green]done[/green] {config.model.name}: best dev CER {best_cer:.2f}% after {epochs_done} epochs, "
        + (f"average of {len(averaged['epochs'])} best epochs: dev CER {averaged['dev_cer']:.2f}%, "
           if averaged else "")
        + f"{train_seconds:.0f}s ({stop_reason}) -> {run_dir}"
    )
    return summary
