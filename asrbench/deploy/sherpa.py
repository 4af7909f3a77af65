"""``asrbench export RUN --format sherpa-onnx``: the graphs, names, metadata and ``tokens.txt`` that
the sherpa-onnx runtime (k2-fsa) loads unmodified, as its own model folders lay them out.

- CTC models: ``model.onnx`` in sherpa-onnx's ``zipformer2_ctc`` layout: ``x (N, T, F)`` float32
  and ``x_lens (N,)`` int64 in, ``log_probs (N, T', V)`` and ``log_probs_len (N,)`` out, metadata
  ``model_type=zipformer2_ctc``; blank 0.
- Transducers with the stateless predictor: icefall's layout. ``encoder.onnx`` (``x``, ``x_lens`` ->
  ``encoder_out (N, T', J)``, ``encoder_out_lens``) with the joiner's encoder projection folded in
  (metadata ``model_type``); ``decoder.onnx`` (``y (N, context_size)`` int64 -> ``decoder_out (N, J)``)
  with the joiner's predictor projection folded in, where -1 (the start of a hypothesis, as
  sherpa-onnx pads it) reads as the blank context (metadata ``vocab_size``, ``context_size``);
  ``joiner.onnx`` (``encoder_out (N, J)``, ``decoder_out (N, J)`` -> ``logit (N, V)``). The joiner
  returns log-probabilities (sherpa-onnx's log-softmax of them is the identity); the last token,
  ``<sos/eos>``, is ``-inf`` as in training.
- The global CMVN is the first operation of the encoder graph: sherpa-onnx feeds raw filterbanks.
- ``tokens.txt``: ``symbol id`` lines; the blank is ``<blk>``, the character tokenizer's space is
  ``▁`` (sherpa-onnx turns a leading ``▁`` into a space, as for sentencepiece pieces); phones are
  written ``▁PHONE`` and the word boundary ``▁|``, so sherpa-onnx returns the phones separated by
  spaces with ``|`` between words (words come from phones only through a lexicon, which it does not
  have).

What sherpa-onnx cannot run is refused in one line: a front end other than ``features.preset:
sherpa`` at 25/10 ms (it computes exactly that one), an LSTM predictor (the NeMo transducer layout,
not written), attention decoders. An asrbench ``manifest.json`` beside the graphs lets ``asrbench
transcribe`` drive the same files (its front end in the preset's convention, an identity CMVN).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from asrbench import fileio
from asrbench.data.special_tokens import BLANK, SOS_EOS, UNK
from asrbench.errors import AsrbenchError

if TYPE_CHECKING:
    from asrbench.data.features import GlobalCMVN
    from asrbench.models.base import CTCFamily
    from asrbench.models.transducer import StatelessPredictor, TransducerModel
    from asrbench.recipe.config import FeatureConfig

WORD_MARK = "\u2581"  # "▁": sherpa-onnx's symbol table turns a leading one into a space
# sherpa-onnx's front end (FeatureExtractorConfig): the frame lengths it computes; the rate and the
# number of bins are the recognizer's sample_rate and feature_dim.
FRAME_LENGTH_MS, FRAME_SHIFT_MS = 25.0, 10.0


def refusal(features: FeatureConfig, search: str, predictor_kind: str | None, model_name: str) -> str | None:
    """Why sherpa-onnx cannot run this model as trained (None if it can)."""
    if features.kind != "fbank" or features.preset != "sherpa":
        return (
            f"{model_name}: sherpa-onnx computes its own filterbanks (kaldi-native-fbank: centred frames, "
            f"banks to rate/2 - 400 Hz, samples in [-1, 1]); this run used features.kind {features.kind}, "
            f"preset {features.preset}: train it with --set features.preset=sherpa"
        )
    if (features.frame_length_ms, features.frame_shift_ms) != (FRAME_LENGTH_MS, FRAME_SHIFT_MS):
        return (
            f"{model_name}: sherpa-onnx frames are {FRAME_LENGTH_MS:g}/{FRAME_SHIFT_MS:g} ms; this run used "
            f"{features.frame_length_ms:g}/{features.frame_shift_ms:g} ms"
        )
    if search == "attention":
        return f"{model_name}: sherpa-onnx has no layout for an attention decoder; export it with --format onnx"
    if search == "transducer" and predictor_kind != "stateless":
        return (
            f"{model_name}: its {predictor_kind} predictor needs sherpa-onnx's NeMo transducer layout, which "
            "asrbench does not write; train the transducer with predictor: stateless, or export with --format onnx"
        )
    return None


class _Normalized(nn.Module):
    """The global CMVN as a graph's first operation: (x - mean) / std."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cmvn: GlobalCMVN):
        super().__init__()
        self.register_buffer("mean", cmvn.mean.detach().float().clone())
        self.register_buffer("std", cmvn.std.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SherpaCTC(nn.Module):
    """``x``, ``x_lens`` -> ``log_probs``, ``log_probs_len``: CMVN, then the CTC model."""

    def __init__(self, model: CTCFamily, cmvn: GlobalCMVN):
        super().__init__()
        self.normalize, self.model = _Normalized(cmvn), model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor):
        return self.model.ctc_log_probs(self.normalize(x), x_lens)


class SherpaEncoder(nn.Module):
    """``x``, ``x_lens`` -> ``encoder_out`` (the joiner's encoder projection applied), ``encoder_out_lens``."""

    def __init__(self, model: TransducerModel, cmvn: GlobalCMVN):
        super().__init__()
        self.normalize, self.model = _Normalized(cmvn), model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor):
        encoded, lengths = self.model.encode(self.normalize(x), x_lens)
        return self.model.joiner.encoder_proj(encoded), lengths


class SherpaDecoder(nn.Module):
    """``y (N, context_size)`` -> ``decoder_out (N, J)``: the stateless predictor on the context, the
    joiner's predictor projection applied. A -1 (sherpa-onnx's padding before a hypothesis starts)
    embeds as zeros, the blank's embedding, which is the context training and asrbench start from."""

    def __init__(self, model: TransducerModel):
        super().__init__()
        self.predictor = cast("StatelessPredictor", model.predictor)
        self.proj = model.joiner.predictor_proj

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        embedded = self.predictor.embed(y.clamp(min=0)) * (y >= 0).unsqueeze(-1).to(torch.float32)
        return self.proj(self.predictor._convolve(embedded)[:, -1])


class SherpaJoiner(nn.Module):
    """``encoder_out (N, J)``, ``decoder_out (N, J)`` -> ``logit (N, V)``: the joiner after its two
    projections (log-probabilities; ``<sos/eos>`` last, at ``-inf``)."""

    def __init__(self, model: TransducerModel):
        super().__init__()
        self.out = model.joiner.out

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        log_probs = torch.log_softmax(self.out(torch.tanh(encoder_out + decoder_out)), dim=-1)
        return nn.functional.pad(log_probs, (0, 1), value=float("-inf"))


def token_symbols(tokenizer) -> list[str]:
    """One sherpa-onnx symbol per token id (see the module's docstring)."""
    kind, tokens = tokenizer.kind, list(tokenizer.tokens)
    symbols = []
    for token in tokens:
        if token == BLANK:
            symbols.append("<blk>")
        elif token in (UNK, SOS_EOS):
            symbols.append(token)
        elif kind == "phone":
            symbols.append(WORD_MARK + token)
        elif kind == "char" and token == " ":
            symbols.append(WORD_MARK)
        else:
            symbols.append(token)
    for token, symbol in zip(tokens, symbols, strict=True):
        if not symbol or any(char.isspace() for char in symbol):
            raise AsrbenchError(f"token {token!r}: sherpa-onnx's tokens.txt cannot hold a symbol with whitespace")
    if len(set(symbols)) != len(symbols):
        raise AsrbenchError("tokens.txt: two tokens would have the same sherpa-onnx symbol")
    return symbols


def write_tokens(path: Path, tokenizer) -> None:
    lines = [f"{symbol} {index}\n" for index, symbol in enumerate(token_symbols(tokenizer))]
    with fileio.atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(lines))


def add_metadata(path: Path, values: dict[str, object]) -> None:
    """Write ``values`` into the ONNX file's metadata (``metadata_props``), which sherpa-onnx reads."""
    import onnx  # export needs it (checked before any graph is written)

    model = onnx.load(str(path), load_external_data=False)
    kept = [entry for entry in model.metadata_props if entry.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=str(value))
    with fileio.atomic_open(path, "wb") as handle:
        handle.write(model.SerializeToString())
