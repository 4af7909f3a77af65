"""The GPU check, ready for the day a GPU is at hand: precisions, CPU/GPU decoding, torchrun + NCCL.

    python benchmarks/gpu_check.py [--models conformer,las,conformer_transducer] [--steps 50] [--json FILE]
    python benchmarks/gpu_check.py --device cpu --json /tmp/gpu_check_cpu.json   # a smoke run, ~30 s on 2 cores

No figure in the docs has been measured on a GPU: this is the one command to run first on one,
sized for <= 8 minutes on one GPU (an estimate: it has not run on a GPU yet). On the bundled yesno
recipe, prepared from ``$ASRBENCH_DATA_ROOT/yesno`` into a scratch dir, it

1. trains one small model per head (``conformer``: CTC, ``las``: attention decoder,
   ``conformer_transducer``: transducer) for ``--steps`` optimizer steps (``train.max_steps``; a
   yesno epoch is 14 steps, so 50 steps are 4 epochs, each with its dev pass) in fp32, bf16 and
   fp16 (``train.precision``), in this process through :func:`asrbench.training.trainer.train`.
   Each run's loss of every step (TensorBoard's ``train/loss``, one point per step) must be finite,
   with no step skipped, and fall: the mean of the last few steps below that of the first few
   (:func:`judge_losses`). Its steps/s is the batch loop's (metrics.jsonl: no dev pass; ``warm``
   leaves out the first epoch), its peak GPU memory torch's max allocated over the run (training
   and dev passes), reset before each run (the per-step losses need ``asrbench[tensorboard]``,
   which ``make setup`` installs);
2. decodes the fp32 checkpoint of each model (greedy, test split) on the CPU and on the GPU, with
   TF32 off so that both compute in float32, and checks that every hypothesis is the same and the
   test loss the same within 1e-3 relative (:func:`decode_entry`);
3. trains ``conformer`` for ``--steps`` under ``torchrun --standalone --nproc-per-node 1`` and
   runs an NCCL probe under the same launcher: this script with ``--nccl-probe``, one DDP training
   step of that run's checkpoint on a random batch and an all-reduce, over NCCL. asrbench joins a
   process group only with 2 or more ranks (``asrbench.training.distributed.setup``): one rank
   trains as one process does, so on a single GPU only the probe exercises NCCL.

Its last line on stdout (after the trainer's) is one JSON line, also written to ``--json``::

    {"cuda": true, "device": "NVIDIA ...", "torch": "2.x", "models": {name: {precision: {"steps_per_s",
     "peak_gpu_mb", "loss_first", "loss_last", "finite", "falls", "ok", ...}}}, "decode_same": {name: {...}},
     "torchrun": {"train": {...}, "nccl_probe": {...}, "ok": bool}, "ok": bool, ...}

and exits 1 when a check failed. Without CUDA it prints one line, ``{"cuda": false, "measured":
"nothing", "reason": ...}``, writes it to ``--json`` and exits 0: a benchmark script, not a test.

``--device cpu`` is a smoke run, not the GPU check: the same training, decoding and torchrun code on
the CPU (fp32 unless ``--precisions`` says otherwise, Gloo for the probe; the decoding compared is
CPU against CPU), to see on a machine without a GPU that the script works. Each run's
``peak_gpu_mb`` is then None.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, environment

RECIPE = "yesno"
MODELS = ("conformer", "las", "conformer_transducer")  # CTC, attention decoder, transducer
PRECISIONS = ("fp32", "bf16", "fp16")
TORCHRUN_MODEL = "conformer"
LOSS_WINDOW = 5  # steps averaged at each end for "falls"
LOSS_TOLERANCE = 1e-3  # relative: the same checkpoint's test loss on the CPU and the GPU (float32 both)
SUBPROCESS_SECONDS = 600
TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="Comma-separated models of the yesno recipe.")
    parser.add_argument("--precisions", default=None, help="Comma-separated; default fp32,bf16,fp16 (cpu: fp32).")
    parser.add_argument("--steps", type=int, default=50, help="Optimizer steps per run (train.max_steps).")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a smoke run, not the check.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the result here.")
    parser.add_argument("--out", type=Path, default=None, help="Keep the data and run dirs here (default: a temp dir).")
    parser.add_argument("--data-root", type=Path, default=None, help="Holds yesno/ (default: $ASRBENCH_DATA_ROOT).")
    parser.add_argument("--no-torchrun", action="store_true", help="Skip the torchrun and NCCL checks.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Extra recipe overrides.")
    # Internal: the check starts this script under torchrun with --nccl-probe RUN_DIR (torchrun_check).
    parser.add_argument("--nccl-probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps: at least 2 (the loss must be seen to fall)")
    args.models = [name for name in args.models.split(",") if name]
    default = PRECISIONS if args.device == "cuda" else ("fp32",)
    args.precisions = [p for p in args.precisions.split(",") if p] if args.precisions else list(default)
    unknown = [p for p in args.precisions if p not in PRECISIONS]
    if unknown:
        parser.error(f"--precisions: {', '.join(unknown)} (valid: {', '.join(PRECISIONS)})")
    return args


# --- judgements and the report: plain functions, no GPU ------------------------------------------


def _number(value: float | None) -> float | None:
    """A float for JSON (which has no NaN or infinity), else None."""
    return float(value) if value is not None and math.isfinite(value) else None


def judge_losses(losses: list[float], window: int = LOSS_WINDOW) -> dict:
    """Whether a run's per-step losses are all finite and fall: the mean of the last ``window``
    steps below the mean of the first ``window`` (fewer when the run is short, never overlapping).
    A run with a non-finite loss, or fewer than 2 steps, does not fall."""
    values = [float(loss) for loss in losses]
    finite = bool(values) and all(math.isfinite(value) for value in values)
    width = max(1, min(window, len(values) // 2))
    first = sum(values[:width]) / width if len(values) >= 2 else math.nan
    last = sum(values[-width:]) / width if len(values) >= 2 else math.nan
    return {
        "loss_steps": len(values),
        "loss_first": _number(first),
        "loss_last": _number(last),
        "finite": finite,
        "falls": bool(finite and len(values) >= 2 and last < first),
    }


def training_entry(losses: list[float], skipped_steps: int, steps: int, requested: int, **figures) -> dict:
    """One (model, precision) run: the loss verdict, no skipped step (a non-finite loss or gradient),
    the requested steps all taken; ``figures`` (steps/s, memory) are recorded as given."""
    entry = {**judge_losses(losses), "skipped_steps": skipped_steps, "steps": steps, **figures}
    entry["finite"] = entry["finite"] and skipped_steps == 0
    entry["ok"] = bool(entry["finite"] and entry["falls"] and steps == requested)
    return entry


def decode_entry(reference: list[str], other: list[str], loss: float, other_loss: float) -> dict:
    """The CPU's hypotheses and mean loss (``reference``, ``loss``) against the GPU's: the same text
    for every utterance, and losses within LOSS_TOLERANCE (relative). A model 50 steps old may
    still emit nothing (``nonempty`` counts the hypotheses that are not empty): then the loss, a
    number of the whole forward pass, is what shows the two devices agree."""
    differ = [index for index, (a, b) in enumerate(zip(reference, other, strict=True)) if a != b]
    difference = abs(loss - other_loss) / max(abs(loss), 1e-12)
    return {
        "utterances": len(reference),
        "same": len(reference) - len(differ),
        "nonempty": sum(1 for text in reference if text.strip()),
        "first_differences": [{"cpu": reference[i], "gpu": other[i]} for i in differ[:3]],
        "loss_cpu": _number(loss),
        "loss_gpu": _number(other_loss),
        "loss_relative_difference": _number(difference),
        "ok": bool(reference) and not differ and difference <= LOSS_TOLERANCE,
    }


def build_report(
    cuda: bool, device: str, torch_version: str, models: dict, decode_same: dict, torchrun: dict | None, **extra
) -> dict:
    """The result: every check's entry and ``ok``, whether all of them passed (``cuda`` False: the
    CPU smoke run)."""
    checks = [entry["ok"] for runs in models.values() for entry in runs.values()]
    checks += [entry["ok"] for entry in decode_same.values()]
    if torchrun is not None:
        checks.append(torchrun["ok"])
    return {
        "cuda": cuda,
        "device": device,
        "torch": torch_version,
        "models": models,
        "decode_same": decode_same,
        "torchrun": torchrun,
        "ok": bool(checks) and all(checks),
        **extra,
    }


def no_cuda_report(torch_version: str) -> dict:
    return {
        "cuda": False,
        "measured": "nothing",
        "torch": torch_version,
        "reason": f"no CUDA device visible to torch {torch_version}: the GPU check needs one "
        "(--device cpu runs a smoke run of its code path instead)",
    }


def emit(report: dict, path: Path | None) -> None:
    """One JSON line on stdout, and the same in ``path``."""
    text = json.dumps(report, allow_nan=False)
    print(text, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")


def _failure(error: BaseException) -> dict:
    from asrbench.errors import excerpt

    return {"ok": False, "error": f"{type(error).__name__}: {excerpt(error)}"}


def _say(text: str) -> None:
    print(f"gpu_check: {text}", file=sys.stderr, flush=True)


# --- the measurements ----------------------------------------------------------------------------


def prepare_data(source: Path, data_dir: Path) -> None:
    """yesno's manifests in ``data_dir`` (the runs' feature cache goes there too); a missing corpus
    ends the script, naming it."""
    from asrbench.data.prepare import prepare_corpus
    from asrbench.errors import AsrbenchError

    if (data_dir / "train.jsonl").is_file():
        return
    try:
        prepare_corpus(RECIPE, source, data_dir, progress=False)
    except AsrbenchError as error:
        raise SystemExit(f"gpu_check: {error} (--data-root DIR: the folder holding {RECIPE}/)") from None


def overrides(args: argparse.Namespace, data_dir: Path, precision: str) -> list[str]:
    """The ``--set`` texts of every run: the step cap, no budget, no early stop, no average (best.pt
    is one epoch's weights), the loss of every step in TensorBoard."""
    return [
        f"data.dir={data_dir}",
        f"train.max_steps={args.steps}",
        "train.max_minutes=0",
        "train.patience=0",
        "train.average_best=1",
        "train.checkpoint_minutes=0",
        f"train.precision={precision}",
        f"train.device={args.device}",
        "train.tensorboard=true",
        "train.tensorboard_every_steps=1",
        *args.set,
    ]


def step_losses(run_dir: Path) -> list[float]:
    """The loss of every optimizer step, in step order (TensorBoard's ``train/loss``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [event.value for event in sorted(events.Scalars("train/loss"), key=lambda event: event.step)]


def loop_speed(run_dir: Path) -> dict:
    """Steps/s of the batch loop over every epoch, and over all but the first (``warm``)."""
    from asrbench.runs import rundir

    rows = rundir.read_metrics(run_dir)

    def speed(part: list[dict]) -> float | None:
        seconds = sum(row["loop_seconds"] for row in part)
        return sum(row["loop_steps"] for row in part) / seconds if seconds > 0 else None

    return {"steps_per_s": speed(rows), "steps_per_s_warm": speed(rows[1:]) if len(rows) > 1 else None}


def train_one(args: argparse.Namespace, name: str, precision: str, run_dir: Path, data_dir: Path) -> dict:
    """Train ``name`` in ``precision`` in this process; -> its entry."""
    import torch

    from asrbench.training.trainer import train

    shutil.rmtree(run_dir, ignore_errors=True)  # --out reused: train refuses a dir that holds a run
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    summary = train(RECIPE, name, run_dir, overrides=overrides(args, data_dir, precision))
    peak = summary["peak_memory"]
    return training_entry(
        step_losses(run_dir),
        summary["skipped_batches"],
        summary["steps"],
        args.steps,
        **loop_speed(run_dir),
        peak_gpu_mb=peak["mb"] if peak["kind"] == "cuda_max_allocated" else None,
        precision_used=summary["precision"],
        train_seconds=summary["train_seconds"],
    )


@contextlib.contextmanager
def float32_exact():
    """No TF32 in cuDNN (convolutions, RNNs) or matmuls: the GPU computes in float32 as the CPU does."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def decode_both(run_dir: Path, device: str, split: str = "test") -> dict:
    """Greedy hypotheses and mean loss of the run's best checkpoint on ``split``, on the CPU and on
    ``device``."""
    import torch

    from asrbench.data.features import load_features
    from asrbench.decoding.decode import recognize
    from asrbench.runs import rundir
    from asrbench.runs.checkpoint import load_model
    from asrbench.text import normalize

    loaded = load_model(rundir.checkpoint_path(run_dir))
    features = load_features(rundir.data_dir(run_dir, loaded.config), split, loaded.config.features)
    token_ids = [loaded.tokenizer.encode(normalize(utt.text)) for utt in features.utterances]  # as for dev
    seen = {}
    for where in ("cpu", device):
        target = torch.device(where)
        with float32_exact():
            seen[where] = recognize(
                loaded.model.to(target), features, loaded.cmvn, loaded.tokenizer, target, token_ids=token_ids
            )
    cpu, other = seen["cpu"], seen[device]
    return {**decode_entry(cpu.hypotheses, other.hypotheses, cpu.loss, other.loss), "split": split, "device": device}


def _environment() -> dict:
    env = {**os.environ, "ASRBENCH_NO_PROGRESS": "1"}
    for name in TORCHRUN_VARIABLES:
        env.pop(name, None)
    return env


def torchrun(command: list[str]) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
    return subprocess.run(
        launcher + command, env=_environment(), cwd=ROOT, capture_output=True, text=True, timeout=SUBPROCESS_SECONDS
    )


def _error_line(process: subprocess.CompletedProcess) -> str:
    """The child's error message (torchrun's own report around it is mostly rules and times)."""
    from asrbench.errors import excerpt

    lines = [line for line in f"{process.stdout}\n{process.stderr}".splitlines() if line.strip(" =-")]
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return excerpt((errors or lines or [f"exit status {process.returncode}"])[-1])


def torchrun_check(args: argparse.Namespace, scratch: Path, data_dir: Path) -> dict:
    """``asrbench train`` under torchrun (1 rank), then the NCCL probe on its checkpoint."""
    from asrbench.runs import rundir

    run_dir = scratch / "torchrun" / TORCHRUN_MODEL
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = [arg for text in overrides(args, data_dir, "fp32") for arg in ("--set", text)]
    process = torchrun(["-m", "asrbench", "train", RECIPE, "--model", TORCHRUN_MODEL, "--out", str(run_dir), *sets])
    if process.returncode != 0:
        trained: dict = {"ok": False, "error": _error_line(process)}
    else:
        summary = rundir.read_json(run_dir / rundir.SUMMARY)
        trained = {
            "model": TORCHRUN_MODEL,
            "world_size": summary["world_size"],
            "steps": summary["steps"],
            **loop_speed(run_dir),
            "ok": summary["steps"] == args.steps,
        }
    probe: dict = {"ok": False, "error": "no checkpoint: the torchrun training failed"}
    if trained["ok"]:
        backend = "nccl" if args.device == "cuda" else "gloo"
        process = torchrun([str(Path(__file__).resolve()), "--device", args.device, "--nccl-probe", str(run_dir)])
        lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            probe = {"ok": False, "backend": backend, "error": _error_line(process)}
        else:
            probe = json.loads(lines[-1])
    return {"train": trained, "nccl_probe": probe, "ok": bool(trained["ok"] and probe["ok"])}


def nccl_probe(run_dir: Path, device_name: str) -> dict:
    """Under torchrun: one DDP forward, backward and step of the run's model on a random batch and an
    all-reduce of the loss, over NCCL on CUDA (Gloo on the CPU). -> what it saw."""
    import torch
    import torch.distributed as dist

    from asrbench.runs import rundir
    from asrbench.runs.checkpoint import load_model
    from asrbench.training.distributed import LossModule

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name == "cuda"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend)
    try:
        loaded = load_model(rundir.checkpoint_path(run_dir))
        module = LossModule(loaded.model.to(device).train())
        ddp = torch.nn.parallel.DistributedDataParallel(module, device_ids=[local_rank] if cuda else None)
        optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(0)
        features = torch.randn(2, 200, loaded.config.features.dim(), generator=generator)  # (B, T, F)
        feature_lengths = torch.tensor([200, 160])
        targets = torch.randint(1, len(loaded.tokenizer), (2, 6), generator=generator)  # (B, U), no blank
        target_lengths = torch.tensor([6, 4])
        batch = [tensor.to(device) for tensor in (features, feature_lengths, targets, target_lengths)]
        # Train mode: dropout draws from torch's global RNG, whose startup seed differs from process
        # to process. Seeded, the loss is a function of the checkpoint (and the device and threads).
        torch.manual_seed(0)
        loss = ddp(*batch)
        loss.backward()
        optimizer.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        if cuda:
            torch.cuda.synchronize(device)
        return {
            "backend": dist.get_backend(),
            "world_size": dist.get_world_size(),
            "loss": _number(float(total)),
            "ok": dist.get_backend() == backend and math.isfinite(float(total)),
        }
    finally:
        dist.destroy_process_group()


def run_check(args: argparse.Namespace, scratch: Path) -> dict:
    import torch

    source = (args.data_root or (ROOT / data_root_default())).resolve() / RECIPE
    data_dir = scratch / "data" / RECIPE
    prepare_data(source, data_dir)
    models: dict[str, dict] = {}
    decode_same: dict[str, dict] = {}
    start = time.perf_counter()
    for name in args.models:
        models[name] = {}
        for precision in args.precisions:
            _say(f"training {name} in {precision} for {args.steps} steps on {args.device}")
            try:
                models[name][precision] = train_one(
                    args, name, precision, scratch / "runs" / f"{name}-{precision}", data_dir
                )
            except Exception as error:  # noqa: BLE001 - one failed run is a failed check, not the end of the others
                models[name][precision] = _failure(error)
        reference = "fp32" if "fp32" in args.precisions else args.precisions[0]
        if "error" not in models[name][reference]:  # a checkpoint, whatever its loss did
            _say(f"decoding {name} ({reference}) on cpu and {args.device}")
            try:
                decode_same[name] = decode_both(scratch / "runs" / f"{name}-{reference}", args.device)
            except Exception as error:  # noqa: BLE001
                decode_same[name] = _failure(error)
        else:
            decode_same[name] = {"ok": False, "error": f"no {reference} checkpoint: its training failed"}
    torchrun_result = None
    if not args.no_torchrun:
        backend = "NCCL" if args.device == "cuda" else "Gloo"
        _say(f"torchrun --nproc-per-node 1: {TORCHRUN_MODEL}, then the {backend} probe")
        try:
            torchrun_result = torchrun_check(args, scratch, data_dir)
        except Exception as error:  # noqa: BLE001
            torchrun_result = _failure(error)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu (smoke run, not the GPU check)"
    return build_report(
        args.device == "cuda",
        device,
        torch.__version__,
        models,
        decode_same,
        torchrun_result,
        steps=args.steps,
        recipe=RECIPE,
        seconds=time.perf_counter() - start,
        environment=environment(),
    )


def data_root_default() -> Path:
    from asrbench.recipe.config import data_root

    return data_root()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.nccl_probe is not None:
        print(json.dumps(nccl_probe(args.nccl_probe, args.device), allow_nan=False), flush=True)
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        emit(no_cuda_report(torch.__version__), args.json)
        return 0
    os.environ.setdefault("ASRBENCH_NO_PROGRESS", "1")
    scratch = args.out or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        report = run_check(args, scratch)
    finally:
        if args.out is None:
            shutil.rmtree(scratch, ignore_errors=True)
    emit(report, args.json)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
