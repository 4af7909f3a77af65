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
from asrbench.models.conformer import Conformer

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


class SherpaStreamingEncoder(nn.Module):
    """sherpa-onnx's online ``conformer`` encoder (``OnlineConformerTransducerModel``) around
    asrbench's chunked conformer, at a chunk of ``chunk`` encoder frames with ``left_chunks``
    chunks of left context. Inputs by position, as sherpa-onnx binds them:

    - ``x`` (N, T, F) raw filterbanks, T = ``4 * chunk + 3`` (the chunk's window; sherpa-onnx
      advances ``4 * chunk`` frames: metadata ``T`` and ``decode_chunk_len``);
    - ``cached_attn`` (L, lc, N, D): each layer's last lc = ``left_chunks * chunk`` attention inputs
      (after its layer norm; keys and values are recomputed from them), zeros at a stream's start;
    - ``cached_conv`` (L, kernel - 1, N, D): each depthwise convolution's last inputs;
    - ``processed_frames`` (N,) int64: feature frames consumed before this chunk (4 per encoder
      frame), which gives the chunk's positions and how many cached frames are real;

    -> ``encoder_out`` (N, chunk, J) with the joiner's encoder projection applied, and the two
    caches for the next chunk. The outputs equal asrbench's :meth:`Conformer.encode_chunk` (and so
    one masked pass, ``decode --chunk-ms --left-chunks``): the cache holds what its attention
    would see, with the slots before the stream's start masked out. Positions past the encoder's
    table (10,000 frames: 400 s) are clamped to its last row; sherpa-onnx resets
    ``processed_frames`` at an endpoint.
    """

    def __init__(self, model: TransducerModel, cmvn: GlobalCMVN, chunk: int, left_chunks: int):
        super().__init__()
        self.normalize = _Normalized(cmvn)
        self.encoder = cast(Conformer, model.encoder)
        self.proj = model.joiner.encoder_proj
        self.chunk, self.left = chunk, chunk * left_chunks
        self.kernel = self.encoder.kernel_size

    def forward(self, x, cached_attn, cached_conv, processed_frames):
        encoder, chunk, left = self.encoder, self.chunk, self.left
        x = encoder.subsampling.stream_window(self.normalize(x))  # (N, chunk, D)
        offset = torch.div(processed_frames, 4, rounding_mode="floor")  # encoder frames before this chunk
        table = encoder.positions.table
        positions = (offset[:, None] + torch.arange(chunk, device=x.device)[None]).clamp(max=table.size(0) - 1)
        x = (x * encoder.positions.scale + table[positions]).transpose(0, 1)  # (chunk, N, D)
        # Key j of [cache | chunk] is real unless it is a cache slot from before the stream began.
        real = offset.clamp(max=left)  # (N,)
        slots = torch.arange(left + chunk, device=x.device)
        visible = (slots[None, :] >= (left - real)[:, None])[:, None, None, :]  # (N, 1, 1, lc + chunk)
        half = self.kernel // 2
        new_attn, new_conv = [], []
        for index, layer in enumerate(encoder.encoder.conformer_layers):
            x = x + 0.5 * layer.ffn1(x)
            normed = layer.self_attn_layer_norm(x)
            context = torch.cat([cached_attn[index], normed], dim=0)  # (lc + chunk, N, D)
            new_attn.append(context[chunk:])
            x = x + _attend(layer.self_attn, normed, context, visible)
            cache = cached_conv[index].permute(1, 2, 0)  # (N, D, kernel - 1)
            if encoder.chunk_conv:  # the dynamic chunk convolution sees kernel // 2 frames back
                cache = cache[:, :, cache.size(2) - half :]
            x, kept = encoder._convolve(layer, x, None, cache, streamed=True)
            assert kept is not None  # a streaming conformer keeps its convolution's inputs
            if encoder.chunk_conv:
                kept = nn.functional.pad(kept, (self.kernel - 1 - half, 0))
            new_conv.append(kept.permute(2, 0, 1))
            x = layer.final_layer_norm(x + 0.5 * layer.ffn2(x))
        return self.proj(x.transpose(0, 1)), torch.stack(new_attn), torch.stack(new_conv)


def _attend(attention: nn.MultiheadAttention, query: torch.Tensor, context: torch.Tensor, visible: torch.Tensor):
    """Self-attention of a chunk (t, N, D) over ``context`` (s, N, D), the cached inputs then the
    chunk's, where ``visible`` (N, 1, 1, s) allows: torch's MultiheadAttention with its weights."""
    time, batch, width = query.shape
    heads = attention.num_heads
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    q = nn.functional.linear(query, weight[:width], bias[:width])
    k = nn.functional.linear(context, weight[width : 2 * width], bias[width : 2 * width])
    v = nn.functional.linear(context, weight[2 * width :], bias[2 * width :])

    def heads_first(y: torch.Tensor) -> torch.Tensor:  # (s, N, D) -> (N, H, s, D/H)
        return y.reshape(y.size(0), batch, heads, width // heads).permute(1, 2, 0, 3)

    out = nn.functional.scaled_dot_product_attention(heads_first(q), heads_first(k), heads_first(v), visible)
    return attention.out_proj(out.permute(2, 0, 1, 3).reshape(time, batch, width))


def streaming_refusal(model: nn.Module, name: str, left_chunks: int) -> str | None:
    """Why the online conformer layout cannot hold this transducer (None if it can)."""
    encoder = getattr(model, "encoder", None)
    if type(encoder) is not Conformer:
        kind = type(encoder).__name__ if encoder is not None else "a CTC model"
        return (
            f"{name}: sherpa-onnx's online layout written here is its conformer transducer's; this is {kind} "
            "(export without --chunk-ms for the offline layout)"
        )
    if not encoder.streaming:
        return f"{name}: --chunk-ms needs a conformer trained with streaming: true (export without it)"
    if left_chunks < 1:
        return (
            f"{name}: sherpa-onnx's online conformer keeps a fixed left context: give --left-chunks 1 or more "
            "(check its WER first with decode --chunk-ms CHUNK --left-chunks N)"
        )
    return None


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
