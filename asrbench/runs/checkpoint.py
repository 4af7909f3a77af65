"""Self-describing checkpoints: config + tokenizer + normalization stats + weights.

``decode`` needs nothing but a checkpoint. Files load with ``torch.load(weights_only=True)``, so a
checkpoint from a stranger can hold tensors and plain containers but never run code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from asrbench import fileio
from asrbench.data.features import GlobalCMVN
from asrbench.data.tokenizer import Tokenizer, tokenizer_from_dict
from asrbench.errors import AsrbenchError, excerpt
from asrbench.models import build_model
from asrbench.recipe.config import RunConfig, run_config_from_dict

FORMAT = "asrbench-checkpoint-1"


def save(path: Path, config: RunConfig, tokenizer: Tokenizer, cmvn: GlobalCMVN, model: nn.Module, **extra) -> None:
    state = {
        "format": FORMAT,
        "config": config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "cmvn": cmvn.to_dict(),
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    fileio.torch_save(state, path)


def save_rotating(path: Path, previous: Path, *args, **extra) -> None:
    """Save like :func:`save`, keeping the file it replaces as ``previous`` (the fallback).

    Each step is an atomic rename, so a crash at any point leaves ``path`` or ``previous`` whole.
    """
    if path.is_file():
        os.replace(path, previous)
    save(path, *args, **extra)


def load_resumable(path: Path, required: tuple[str, ...]) -> dict:
    """A checkpoint to resume training from (``required``: the keys the trainer needs, see
    ``asrbench.training.state.RESUME_KEYS``); a damaged or incomplete one is a clear error."""
    state = load_state(path)
    missing = [key for key in required if key not in state]
    if missing:
        raise AsrbenchError(f"{path}: not a resumable checkpoint (missing {', '.join(missing)})")
    return state


def load_state(path: Path) -> dict:
    if not path.is_file():
        raise AsrbenchError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure here means a damaged or foreign file
        detail = str(err).split("WeightsUnpickler error:", 1)[-1]  # torch's reason, after its long preamble
        raise AsrbenchError(f"{path}: unreadable checkpoint ({type(err).__name__}: {excerpt(detail)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AsrbenchError(f"{path}: not an asrbench checkpoint")
    return state


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the checkpoints' weights (ESPnet's n-best model averaging).

    Floating-point tensors (weights, batch-norm running statistics) are averaged in float64 and
    cast back; integer ones (batch-norm step counters) come from the first checkpoint.
    """
    checkpoints = [load_state(path) for path in paths]
    states = [entry["model_state"] for entry in checkpoints]
    first = states[0]
    for path, entry, state in zip(paths[1:], checkpoints[1:], states[1:], strict=True):
        # Only checkpoints of one architecture: the same model and options, the same tensors.
        if entry["config"].get("model") != checkpoints[0]["config"].get("model"):
            raise AsrbenchError(f"{path}: its model config differs from {paths[0]}'s; they cannot be averaged")
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise AsrbenchError(f"{path}: its weights do not match {paths[0]}'s; they cannot be averaged")
    return {
        key: torch.stack([state[key].double() for state in states]).mean(0).to(value.dtype)
        if value.is_floating_point()
        else value
        for key, value in first.items()
    }


@dataclass
class LoadedModel:
    config: RunConfig
    tokenizer: Tokenizer
    cmvn: GlobalCMVN
    model: nn.Module
    state: dict


def load_model(path: Path) -> LoadedModel:
    """Rebuild the model from a checkpoint alone (eval mode, CPU)."""
    state = load_state(path)
    config = run_config_from_dict(state["config"], str(path))
    tokenizer = tokenizer_from_dict(state["tokenizer"])
    cmvn = GlobalCMVN.from_dict(state["cmvn"])
    model = build_model(config.model.name, config.model.options, config.features.dim(), len(tokenizer))
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as err:
        raise AsrbenchError(f"{path}: weights do not match the model config ({excerpt(err)})") from None
    model.eval()
    return LoadedModel(config, tokenizer, cmvn, model, state)
