"""Data-parallel training on PyTorch's own engine: torchrun, DistributedDataParallel, Gloo or NCCL.

``asrbench train`` runs unchanged under ``torchrun --nproc_per_node N [--nnodes M ...]``: torchrun
sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``, and :func:`setup` joins the process group (NCCL
when the rank drives a GPU, Gloo on CPU). Every rank builds the same batch list for an epoch (it
depends only on the seed, the epoch and the group size) and takes its share of it, so no batch is
sent between processes; only gradients (inside DDP) and a few flags per step are.

One optimizer step consumes a *group* of ``world * grad_accum`` consecutive batches of the epoch's
list: batch ``(step * grad_accum + micro) * world + rank`` goes to ``rank`` as its micro-batch
``micro``. Each micro-batch loss is divided by ``grad_accum`` and DDP averages over the ranks, so
a step applies the mean of the group's batch gradients whatever the split: 2 ranks with
``grad_accum`` 1 and 1 rank with ``grad_accum`` 2 take the same steps (tests/training/test_distributed.py).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import cast

import torch
import torch.distributed as dist
from torch import nn

from asrbench.errors import AsrbenchError
from asrbench.models.base import ASRModel


@dataclass(frozen=True)
class Context:
    """Where this process sits in the job; a single process is world 1, rank 0."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0 logs, shows progress, evaluates on dev and writes the run dir."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def any(self, *flags: bool) -> list[bool]:
        """Per flag, whether it is set on any rank (one small all-reduce; every rank must call it)."""
        if not self.distributed:
            return list(flags)
        values = torch.tensor([float(flag) for flag in flags], device=_collective_device())
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return [bool(value) for value in values.tolist()]

    def sum(self, *values: float) -> list[float]:
        """Per value, its sum over the ranks (float64)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def broadcast(self, value):
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values = [None] * self.world
        dist.all_gather_object(values, value)
        return values


def _collective_device() -> torch.device:
    # NCCL only moves CUDA tensors; Gloo moves CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _int_variable(name: str) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw)
    except ValueError:
        raise AsrbenchError(f"${name}: expected an integer (torchrun sets it), got {raw!r}") from None


def context_from_environment() -> Context:
    """The job layout torchrun put in the environment; world 1 when not started by it."""
    if "WORLD_SIZE" not in os.environ or _int_variable("WORLD_SIZE") <= 1:
        return Context()
    world, rank = _int_variable("WORLD_SIZE"), _int_variable("RANK")
    local_rank = _int_variable("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    if not 0 <= rank < world:
        raise AsrbenchError(f"$RANK {rank} is outside the world of {world} processes")
    return Context(world, rank, local_rank)


def setup(device_name: str) -> tuple[Context, str]:
    """Join torchrun's process group when there is one; -> (context, device name for this rank).

    With a CUDA device each rank drives GPU ``LOCAL_RANK`` and the backend is NCCL; on CPU it is
    Gloo. Outside torchrun nothing happens.
    """
    context = context_from_environment()
    if not context.distributed:
        return context, device_name
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise AsrbenchError("train.device: cuda was asked for but no CUDA device is available to this rank")
        if context.local_rank >= torch.cuda.device_count():
            raise AsrbenchError(
                f"rank {context.rank}: LOCAL_RANK {context.local_rank} but only {torch.cuda.device_count()} GPUs "
                "are visible (use --nproc_per_node at most the GPU count)"
            )
        torch.cuda.set_device(context.local_rank)
        device_name = f"cuda:{context.local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return context, device_name


def teardown(context: Context) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


class LossModule(nn.Module):
    """``forward`` = the model's training loss, so DDP's forward hooks see every step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features, feature_lengths, targets, target_lengths) -> torch.Tensor:
        model = cast(ASRModel, self.model)  # every family's contract (asrbench.models.base)
        return model.compute_loss(features, feature_lengths, targets, target_lengths)


def wrap(model: nn.Module, context: Context, device: torch.device) -> nn.Module:
    """The module the training step calls: DDP around :class:`LossModule` when distributed.

    Every parameter of every registered model takes part in its loss (tests/training/test_distributed.py
    checks it), so DDP need not search the graph for unused ones each step.
    """
    module = LossModule(model)
    if not context.distributed:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)
