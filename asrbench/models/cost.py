"""A model's compute cost: forward GFLOPs per second of audio, measured, not estimated.

The method (docs/models.md, "Cost"): one utterance of ``SECONDS`` (10 s) of features, its frame count
as the front end gives it (Kaldi framing: ``1 + (10 s - frame length) // frame shift`` frames, 998 at
25/10 ms), run through the model in eval mode under :class:`torch.utils.flop_counter.FlopCounterMode`;
the FLOPs counted, divided by 1e9 and by the 10 s, are the figure. What runs is the encoder and the
head of the model's default decoding mode (its ``head_kind``), one step of the head per encoder output
frame:

- ``ctc``: the encoder and the CTC projection at every output frame (the model's forward);
- ``transducer``: the encoder, then one prediction-network step and one joiner step per encoder frame
  (greedy search's work when it emits nothing: what every frame costs at least; each emitted token
  adds one more predictor + joiner step, and beam search multiplies them by the beam);
- ``attention``: the encoder, then the decoder run teacher-forced over as many tokens as there are
  encoder frames (an upper bound for greedy search, whose hypotheses are shorter; a beam multiplies it).

An auxiliary CTC branch of an attention model or a transducer is not counted (its default mode does
not use it). What is counted is torch's convention (as in fvcore and ptflops): a multiply-add of a
matrix product, a convolution or an attention kernel is 2 FLOPs; element-wise work (activations,
normalisation, softmax, masking) and bias additions are not counted. Recurrent layers and attention
are counted through their matrix products: the fused kernels the counter cannot see into (oneDNN and
cuDNN recurrent layers, the Transformer layers' inference fast path) are switched off while counting.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import asrbench.models as registry  # the registry's names at call time (tests replace build_model)
from asrbench.models.attention import AttentionModel
from asrbench.models.base import Encoder, TransducerFamily

SECONDS = 10.0  # the fixed input every model is measured on


def input_frames(seconds: float, frame_shift_ms: float, frame_length_ms: float) -> int:
    """The feature frames the front end gives ``seconds`` of audio (frames that fit, Kaldi's snip edges)."""
    return 1 + int((seconds * 1000 - frame_length_ms) // frame_shift_ms)


def _head_step(model: nn.Module, encoded: torch.Tensor, lengths: torch.Tensor) -> None:
    """One step of the model's default head per encoder frame; ``encoded`` (1, T', D)."""
    frames, device = encoded.size(1), encoded.device
    kind = getattr(model, "head_kind", "ctc")
    if kind == "transducer":
        transducer = cast(TransducerFamily, model)
        state = transducer.predictor_init_state(frames, device)
        blanks = torch.zeros(frames, dtype=torch.long, device=device)  # the blank is the start symbol
        predicted, _ = transducer.predictor_step(blanks, state)
        transducer.join(encoded[0], predicted)
    elif kind == "attention":
        attention = cast(AttentionModel, model)  # the family's base: its decoder starts from <sos>
        tokens = torch.full((1, frames), attention.sos, dtype=torch.long, device=device)
        attention.decoder_logits(encoded, lengths, tokens, torch.tensor([frames], device=device))


@torch.no_grad()
def forward_flops(
    model: nn.Module,
    input_dim: int,
    frame_shift_ms: float = 10.0,
    frame_length_ms: float = 25.0,
    seconds: float = SECONDS,
) -> int:
    """FLOPs of one forward pass of the encoder and its head over ``seconds`` of features (module docstring)."""
    device = next(model.parameters()).device
    frames = input_frames(seconds, frame_shift_ms, frame_length_ms)
    features = torch.zeros(1, frames, input_dim, device=device)
    lengths = torch.tensor([frames], device=device)
    was_training, fastpath = model.training, torch.backends.mha.get_fastpath_enabled()
    model.eval()
    # nn.TransformerEncoderLayer's and nn.MultiheadAttention's inference fast path is one fused
    # kernel the counter cannot see into; off, they run as the matrix products they are.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # mkldnn.flags warns about TF32 on Intel GPUs
            with (
                torch.backends.mkldnn.flags(enabled=False),
                torch.backends.cudnn.flags(enabled=False),
                FlopCounterMode(display=False) as counter,
            ):
                if getattr(model, "head_kind", "ctc") == "ctc":
                    model(features, lengths)
                else:
                    encoded, encoded_lengths = cast(Encoder, model).encode(features, lengths)
                    _head_step(model, encoded, encoded_lengths)
    finally:
        model.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


def forward_gflops_per_second(
    model: nn.Module, input_dim: int, frame_shift_ms: float = 10.0, frame_length_ms: float = 25.0
) -> float:
    """The model's forward GFLOPs per second of audio: :func:`forward_flops` / 1e9 / ``SECONDS``."""
    return forward_flops(model, input_dim, frame_shift_ms, frame_length_ms) / 1e9 / SECONDS


_MEASURED: dict[str, float] = {}  # measure_key -> GFLOPs/s: one measure per process


@functools.cache
def code_fingerprint() -> str:
    """What a count depends on beside its model, options, sizes and framing: the source of every
    module of this package and torch's version (a digest; the key of a kept count)."""
    digest = hashlib.sha256(torch.__version__.encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def measure_key(name: str, options: dict, input_dim: int, vocab_size: int, shift: float, length: float) -> str:
    """One count's key: the model and everything it was measured at, with :func:`code_fingerprint`."""
    written = json.dumps([name, options, input_dim, vocab_size, shift, length], sort_keys=True, default=str)
    return hashlib.sha256(f"{code_fingerprint()} {written}".encode()).hexdigest()[:24]


def gflops_per_second_table(
    options: dict[str, dict],
    input_dim: int,
    vocab_size: int,
    frame_shift_ms: float = 10.0,
    frame_length_ms: float = 25.0,
    kept: dict[str, float] | None = None,
) -> dict[str, float]:
    """Every registered model's :func:`forward_gflops_per_second`: at ``options[name]`` where given,
    else at its defaults (as :func:`asrbench.models.parameter_counts` counts its parameters).

    ``kept``: counts measured before (:func:`measure_key` -> GFLOPs/s, as ``asrbench models`` keeps
    them on disk); a model found there is not measured again, and each new count is added to it.
    The key holds the package's source, so a changed model is measured afresh."""
    kept = {} if kept is None else kept
    table = {}
    for name in registry.MODELS:
        given = options.get(name, registry.default_options(name))
        key = measure_key(name, given, input_dim, vocab_size, frame_shift_ms, frame_length_ms)
        if key not in kept:
            if key not in _MEASURED:
                model = registry.build_model(name, given, input_dim, vocab_size)
                _MEASURED[key] = forward_gflops_per_second(model, input_dim, frame_shift_ms, frame_length_ms)
            kept[key] = _MEASURED[key]
        table[name] = kept[key]
    return table
