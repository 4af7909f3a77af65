"""The optimizer (``train.optimizer``: AdamW, or icefall's ScaledAdam), the learning-rate schedule
(``train.schedule``: warm-up then cosine or constant, or icefall's Eden), the gradient scaler,
precision and one flat gradient buffer."""

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
    optimizer: torch.optim.Optimizer
    if tc.optimizer == "scaled_adam":
        optimizer = ScaledAdam(model.parameters(), lr=tc.lr)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    if tc.schedule == "eden":
        # Eden counts epochs. The trainer builds this before any schedule is fitted or resumed, when
        # schedule_end() is train.epochs x the steps of an epoch; read once, so the learning rate stays
        # a function of the step alone (a resume rebuilds the same number from the same data).
        steps_per_epoch = max(1, schedule_end() // tc.epochs)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: eden_factor(step, step // steps_per_epoch, tc)
        )
    else:
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


# -- icefall's Eden schedule and ScaledAdam (the Zipformer's optimizer; any model may use them) ------


def eden_factor(step: int, epoch: int, config) -> float:
    """Eden (icefall ``optim.py``): the learning rate's factor after ``step`` optimizer steps in
    epoch ``epoch`` (0 during the first)::

        ((step^2 + S^2) / S^2)^-0.25 * ((epoch^2 + E^2) / E^2)^-0.25 * warm-up

    S = ``train.eden_steps``, E = ``train.eden_epochs``: about 1 until S steps and E epochs, then
    falling as step^-0.5 and epoch^-0.5. The warm-up rises linearly from 0.5 to 1 over
    ``train.warmup_steps`` (icefall's warmup_start 0.5; its warmup_batches is 500).
    """
    steps, epochs = config.eden_steps, config.eden_epochs
    factor = ((step**2 + steps**2) / steps**2) ** -0.25 * ((epoch**2 + epochs**2) / epochs**2) ** -0.25
    if step < config.warmup_steps:
        factor *= 0.5 + 0.5 * step / config.warmup_steps
    return factor


class ScaledAdam(torch.optim.Optimizer):
    """ScaledAdam (Yao et al. 2023; icefall ``optim.py``): Adam whose update of a tensor is scaled by
    that tensor's RMS, so every parameter changes by about the same *relative* amount per step
    (``lr`` 0.045 is icefall's), plus a learned overall scale: the gradient with respect to a
    tensor's log-scale, sum(p * grad), moves the tensor's size with its own Adam-normalised step,
    every ``size_update_period`` steps, never below ``param_min_rms`` nor above ``param_max_rms``.
    Tensors of one element take a plain Adam step at ``lr * scalar_lr_scale``, clamped to
    +-``scalar_max``. Momentum (beta1) acts on the combined update; there is no bias correction of
    the first moment (icefall: a slower start helps stability).

    Simplified against icefall's: one tensor at a time (icefall batches tensors of the same shape);
    no gradient clipping by the recent median norm (``train.grad_clip`` clips as for any optimizer);
    no logging of the dominant parameter; no weight decay (icefall has none; ``train.weight_decay``
    applies to AdamW only). A tensor initialised to zeros (a LayerNorm bias) starts from
    ``param_min_rms``-sized steps and grows from there, as in icefall.
    """

    def __init__(
        self,
        params,
        lr: float = 0.045,
        betas: tuple[float, float] = (0.9, 0.98),
        eps: float = 1e-8,
        scalar_lr_scale: float = 0.1,
        param_min_rms: float = 1e-5,
        param_max_rms: float = 3.0,
        scalar_max: float = 10.0,
        size_update_period: int = 4,
    ):
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            scalar_lr_scale=scalar_lr_scale,
            param_min_rms=param_min_rms,
            param_max_rms=param_max_rms,
            scalar_max=scalar_max,
            size_update_period=size_update_period,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["delta"] = torch.zeros_like(p)  # the update with momentum
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if p.numel() > 1:
                        state["param_rms"] = p.pow(2).mean().sqrt()
                        state["scale_grads"] = p.new_zeros(group["size_update_period"])
                        state["scale_exp_avg_sq"] = p.new_zeros(())
                state["delta"].mul_(group["betas"][0])
                if p.numel() > 1:
                    self._tensor_step(group, p, grad, state)
                else:
                    self._scalar_step(group, p, grad, state)
                state["step"] += 1
        return loss

    def _tensor_step(self, group: dict, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        """The update of a tensor (more than one element): its size, then its direction."""
        beta1, beta2 = group["betas"]
        step, period, delta = state["step"], group["size_update_period"], state["delta"]
        state["scale_grads"][step % period] = (p * grad).sum()  # d loss / d log(scale of p)
        if step % period == period - 1:
            state["param_rms"].copy_(p.pow(2).mean().sqrt())
            if step > 0:
                self._size_step(group, p, state)
        exp_avg_sq = state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        correction = 1 - beta2 ** (step + 1)
        if correction < 0.99:
            exp_avg_sq = exp_avg_sq / correction
        scale = -group["lr"] * (1 - beta1) * state["param_rms"].clamp(min=group["param_min_rms"])
        delta.add_(grad / (exp_avg_sq.sqrt() + group["eps"]) * scale)
        p.add_(delta)

    def _size_step(self, group: dict, p: torch.Tensor, state: dict) -> None:
        """Grow or shrink p as a whole, from the log-scale gradients of the last period's steps."""
        beta1, beta2 = group["betas"]
        period = group["size_update_period"]
        size_lr = group["lr"] * group["scalar_lr_scale"]
        beta2_period = beta2**period  # one of these updates per period: a faster decay
        scale_grads, moment = state["scale_grads"], state["scale_exp_avg_sq"]
        moment.mul_(beta2_period).add_(scale_grads.pow(2).mean(), alpha=1 - beta2_period)
        correction = 1 - beta2_period ** ((state["step"] + 1) // period)
        scale_step = -size_lr * correction**0.5 * scale_grads.sum() / (moment.sqrt() + group["eps"])
        rms = state["param_rms"]
        if rms < group["param_min_rms"]:
            scale_step = torch.zeros_like(scale_step)  # too small: never shrink further
        elif rms > group["param_max_rms"]:
            scale_step = torch.full_like(scale_step, -size_lr * period)  # too large: shrink
        state["delta"].add_(p * scale_step, alpha=1 - beta1)

    def _scalar_step(self, group: dict, p: torch.Tensor, grad: torch.Tensor, state: dict) -> None:
        """Adam at ``lr * scalar_lr_scale`` for a one-element tensor (its RMS says nothing of its scale)."""
        beta1, beta2 = group["betas"]
        exp_avg_sq = state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq / (1 - beta2 ** (state["step"] + 1))).sqrt() + group["eps"]
        state["delta"].add_(grad / denom, alpha=-group["lr"] * group["scalar_lr_scale"] * (1 - beta1))
        p.clamp_(-group["scalar_max"], group["scalar_max"])
        p.add_(state["delta"])
