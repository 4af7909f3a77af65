"""The optimizers and schedules a recipe chooses (``train.optimizer``, ``train.schedule``):
ScaledAdam and Eden beside the default AdamW with warm-up and cosine decay."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from asrbench.recipe.config import TrainConfig
from asrbench.training.optimization import ScaledAdam, build_optimization, eden_factor
from asrbench.training.schedule import lr_factor

CPU = torch.device("cpu")


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def _loss(model: torch.nn.Module, step: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(16, 6, generator=generator)
    return (model(x) - x[:, :3]).pow(2).mean()


def _train(model, optimization, steps: range) -> list[float]:
    rates = []
    for step in steps:
        optimization.optimizer.zero_grad()
        _loss(model, step).backward()
        optimization.optimizer.step()
        optimization.scheduler.step()
        rates.append(optimization.scheduler.get_last_lr()[0])
    return rates


def test_scaled_adam_minimises_a_quadratic():
    torch.manual_seed(0)
    target = torch.randn(20, 10)
    weight = torch.nn.Parameter(torch.randn(20, 10) * 0.5)
    offset = torch.nn.Parameter(torch.tensor(3.0))  # a one-element tensor: the scalar step
    optimizer = ScaledAdam([weight, offset], lr=0.05)

    def loss() -> torch.Tensor:
        return (weight - target).pow(2).sum() + (offset - 1.0) ** 2

    before = float(loss().detach())
    for _ in range(300):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert float(loss().detach()) < 0.01 * before
    # A one-element tensor takes Adam steps of about lr * scalar_lr_scale (0.005) toward its optimum.
    assert 1.0 < 3.0 - float(offset.detach()) <= 300 * 0.005 + 1e-6


def test_scaled_adam_steps_are_relative_to_the_parameter_scale():
    """The same gradient direction moves a tensor 100 times larger 100 times further (Adam's first
    steps are the same size whatever the scale)."""
    changes = []
    for scale in (0.01, 1.0):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(30) * scale)
        start = p.detach().clone()
        optimizer = ScaledAdam([p], lr=0.01)
        p.grad = torch.ones(30)
        optimizer.step()
        changes.append(float((p.detach() - start).norm() / start.norm()))
    assert changes[0] == pytest.approx(changes[1], rel=1e-4)


@pytest.mark.parametrize(("step", "epoch"), [(0, 0), (50, 0), (100, 0), (7500, 2), (20000, 3), (40000, 12)])
def test_eden_follows_its_formula(step, epoch):
    tc = TrainConfig(schedule="eden", warmup_steps=100, eden_steps=7500.0, eden_epochs=3.5)
    expected = ((step**2 + 7500**2) / 7500**2) ** -0.25 * ((epoch**2 + 3.5**2) / 3.5**2) ** -0.25
    if step < 100:
        expected *= 0.5 + 0.5 * step / 100  # warm-up from 0.5
    assert eden_factor(step, epoch, tc) == pytest.approx(expected, rel=1e-12)
    no_warmup = dataclasses.replace(tc, warmup_steps=0)
    assert eden_factor(7500, 0, no_warmup) == pytest.approx(2**-0.25)  # halfway down at S steps
    assert eden_factor(0, 3.5, no_warmup) == pytest.approx(2**-0.25)  # and at E epochs


def test_the_eden_scheduler_counts_epochs_of_the_run():
    """build_optimization's Eden: epoch = step // (schedule_end() / train.epochs), read at build."""
    tc = TrainConfig(lr=0.045, optimizer="scaled_adam", schedule="eden", epochs=4, warmup_steps=2)
    tc = dataclasses.replace(tc, eden_steps=3.0, eden_epochs=1.0)
    model = _model()
    optimization = build_optimization(model, tc, CPU, lambda: 20)  # 5 steps an epoch
    assert isinstance(optimization.optimizer, ScaledAdam)
    rates = _train(model, optimization, range(12))
    for step, rate in enumerate(rates, start=1):
        assert rate == pytest.approx(0.045 * eden_factor(step, step // 5, tc), rel=1e-12)


def test_the_defaults_are_adamw_with_warmup_and_cosine():
    tc = TrainConfig(epochs=2, warmup_steps=3)
    assert (tc.optimizer, tc.schedule) == ("adamw", "cosine")
    model = _model()
    optimization = build_optimization(model, tc, CPU, lambda: 10)
    assert type(optimization.optimizer) is torch.optim.AdamW
    assert optimization.optimizer.defaults["weight_decay"] == tc.weight_decay
    rates = _train(model, optimization, range(10))
    assert rates == pytest.approx([tc.lr * lr_factor(step, 10, tc) for step in range(1, 11)], rel=1e-12)


@pytest.mark.parametrize(
    ("optimizer", "schedule"), [("scaled_adam", "eden"), ("scaled_adam", "cosine"), ("adamw", "eden")]
)
def test_a_resumed_run_restores_the_optimizer_and_schedule(optimizer, schedule):
    """Stopping after 7 steps, saving the state dicts and going on in a new optimizer gives the
    same weights and learning rates, to the bit, as 15 steps in one go."""
    tc = TrainConfig(lr=0.02, optimizer=optimizer, schedule=schedule, epochs=3, warmup_steps=4)
    tc = dataclasses.replace(tc, eden_steps=5.0, eden_epochs=1.0)

    straight = _model()
    straight_optimization = build_optimization(straight, tc, CPU, lambda: 15)
    straight_rates = _train(straight, straight_optimization, range(15))

    first = _model()
    first_optimization = build_optimization(first, tc, CPU, lambda: 15)
    first_rates = _train(first, first_optimization, range(7))
    saved = {
        "model": first.state_dict(),
        "optimizer": first_optimization.optimizer.state_dict(),
        "scheduler": first_optimization.scheduler.state_dict(),
    }
    resumed = _model(seed=1)  # other weights: the checkpoint must bring them
    resumed_optimization = build_optimization(resumed, tc, CPU, lambda: 15)
    resumed.load_state_dict(saved["model"])
    resumed_optimization.optimizer.load_state_dict(saved["optimizer"])
    resumed_optimization.scheduler.load_state_dict(saved["scheduler"])
    resumed_rates = _train(resumed, resumed_optimization, range(7, 15))

    assert first_rates + resumed_rates == straight_rates
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name
