"""AdamW, its warm-up and cosine schedule, the gradient scaler, precision and one flat gradient buffer."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from asrbench.errors import AsrbenchError
from asrbench.recipe.config import TrainConfig
from asrbench.training.schedule import lr_factor


@dataclass
class Optimization:
    """One run's optimizer, learning-rate schedule (stepped once per optimizer step) and gradient
    scaler (enabled for fp16 on a GPU only), and the precision the step computes in."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    precision: str  # fp32 | bf16 | fp16, after resolve_precision


def build_optimization(
    model: nn.Module, tc: TrainConfig, device: torch.device, schedule_end: Callable[[], int]
) -> Optimization:
    """``schedule_end()``: the step where the decay ends, read at every step (a budget fixes it after
    the first epoch, and a resume brings its own)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, schedule_end(), tc))
    precision = resolve_precision(tc.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")
    return Optimization(optimizer, scheduler, scaler, precision)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``amp`` -> bf16 where the GPU supports it, else fp16 on a GPU, fp32 on a CPU; others as given."""
    if precision != "amp":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str):
    """The forward pass's autocast for ``precision`` (none for fp32)."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
