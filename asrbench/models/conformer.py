"""Conformer encoder for CTC: conv subsampling, then Conformer blocks built from torchaudio's modules.

torchaudio's ``Conformer`` is pure Python (no compiled extension) and a reference implementation
of Gulati et al. (2020): macaron feed-forward, self-attention and convolution modules. Its blocks'
parameters are used as they are (so checkpoints keep their names), but the block's forward is
ours, for three things torchaudio's does not do:

- padding invariance, so an utterance decodes the same alone or in a padded batch: padded frames
  are zeroed before each depthwise convolution, and the convolution module's BatchNorm computes
  its training statistics over real frames only (MaskedBatchNorm1d);
- streaming (``streaming: true``, WeNet's U2): self-attention restricted to chunks, each frame
  seeing its own chunk and the chunks before it (all of them, or ``left_chunks``), and a causal
  depthwise convolution; trained with a chunk size drawn per batch (dynamic chunk training), so
  one model decodes at any chunk size, full context included;
- chunk-by-chunk encoding with caches (:meth:`Conformer.init_stream`, :meth:`Conformer.encode_chunk`):
  each block keeps its attention keys and values and its convolution's last ``kernel - 1`` inputs,
  so feeding an utterance chunk by chunk gives the outputs of one masked pass over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import nn

from asrbench.models.chunked import (
    ChunkedAttention,
    ChunkStream,
    attend_cached,
    causal_convolve,
    chunk_convolve,
    chunk_convolve_cached,
    chunk_mask,
    keep,
)
from asrbench.models.common import (
    D_MODEL,
    Conv2dSubsampling,
    MaskedBatchNorm1d,
    SinusoidalPositionalEncoding,
    padding_mask,
)
from asrbench.models.ctc import CTCHead, CTCModel
from asrbench.recipe.schema import ALL_OR_COUNT, ODD, POSITIVE, PROBABILITY, choices
from asrbench.torchaudio_compat import torchaudio


@dataclass
class ConformerConfig:
    d_model: int = 144
    num_heads: int = 4
    num_layers: int = 4
    ff_dim: int = 576
    kernel_size: int = 15
    dropout: float = 0.1
    subsample_channels: int = 32
    # Streaming (U2): chunked attention, causal convolution, dynamic chunk training.
    streaming: bool = False
    max_train_chunk: int = 25  # streaming: chunks of 1..this many encoder frames in half the batches
    train_left_chunks: int = -1  # streaming: left chunks seen in training; -1 = all
    # streaming: the depthwise convolution's context. causal: the kernel - 1 frames before (U2);
    # chunk: kernel // 2 on each side, the right ones only inside the frame's chunk (dynamic chunk
    # convolution, Li et al. 2023): no more latency, and at full context an ordinary convolution.
    conv_context: str = "causal"

    # What target_params scales (asrbench.models.sizing): d_model, the feed-forward in proportion.
    WIDTH: ClassVar[tuple] = ("d_model", "ff_dim")
    LIMITS: ClassVar[dict] = {
        "d_model": D_MODEL,
        "num_heads": POSITIVE,
        "num_layers": POSITIVE,
        "ff_dim": POSITIVE,
        "kernel_size": ODD,
        "dropout": PROBABILITY,
        "subsample_channels": POSITIVE,
        "max_train_chunk": POSITIVE,
        "train_left_chunks": ALL_OR_COUNT,
        "conv_context": choices("causal", "chunk"),
    }


class Conformer(ChunkedAttention, CTCModel):
    """CTC: conv subsampling, then Conformer blocks (self-attention + convolution modules)."""

    def __init__(self, input_dim: int, vocab_size: int, config: ConformerConfig):
        super().__init__()
        self.subsampling = self.make_subsampling(input_dim, config)
        self.positions = SinusoidalPositionalEncoding(config.d_model, config.dropout)
        self.encoder = torchaudio.models.Conformer(
            input_dim=config.d_model,
            num_heads=config.num_heads,
            ffn_dim=config.ff_dim,
            num_layers=config.num_layers,
            depthwise_conv_kernel_size=config.kernel_size,
            dropout=config.dropout,
        )
        self._init_chunking(config)
        self.kernel_size = config.kernel_size
        self.chunk_conv = self.streaming and config.conv_context == "chunk"
        for layer in self.encoder.conformer_layers:
            conv = layer.conv_module.sequential
            conv[3] = MaskedBatchNorm1d(conv[3].num_features)
            if self.streaming:
                conv[2].padding = (0,)  # the context comes from _convolve's padding (causal, or chunked)
        self.encoder_dim = config.d_model
        self.head = CTCHead(config.d_model, vocab_size)

    def make_subsampling(self, input_dim: int, config: ConformerConfig) -> nn.Module:
        """The front end, (B, T, F) -> (B, T', d_model): 4x here; FastConformer's is 8x."""
        return Conv2dSubsampling(input_dim, config.d_model, config.subsample_channels)

    def subsample_chunk(self, features: torch.Tensor, state: ChunkStream) -> torch.Tensor:
        """A chunk's feature window (B, W, F) -> (B, n, d_model); the 4x front end keeps no state
        (its windows overlap), FastConformer's keeps its convolutions' last inputs in ``state``."""
        return cast(Conv2dSubsampling, self.subsampling).stream_window(features)

    # -- one Conformer block -------------------------------------------------------------------
    # ``layer``: a torchaudio ConformerLayer; torchaudio ships no type information, so it is Any to mypy.
    def _convolve(
        self,
        layer: Any,
        x: torch.Tensor,
        pad: torch.Tensor | None,
        cache: torch.Tensor | None = None,
        chunk: int = 0,
        streamed: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The convolution module with its residual: (T, B, D) -> (T, B, D), and in streaming mode
        the last depthwise inputs (B, D, kernel - 1 or kernel // 2) for the next chunk. ``chunk``:
        the pass's chunk (chunked convolution); ``streamed``: x is one chunk after ``cache``."""
        module = layer.conv_module
        conv = module.sequential
        y = module.layer_norm(x).permute(1, 2, 0)  # (B, D, T)
        y = conv[1](conv[0](y))
        if pad is not None:
            y = y.masked_fill(pad.unsqueeze(1), 0.0)  # padding must not reach real frames
        new_cache = None
        if self.chunk_conv and streamed:
            y, new_cache = chunk_convolve_cached(conv[2], y, cache)
        elif self.chunk_conv:
            y = chunk_convolve(conv[2], y, chunk)
        elif self.streaming:
            y, new_cache = causal_convolve(conv[2], y, cache, self.kernel_size - 1)
        else:
            y = conv[2](y)
        y = conv[3](y, None if pad is None else pad.unsqueeze(1))
        y = conv[6](conv[5](conv[4](y)))
        return x + y.permute(2, 0, 1), new_cache

    def _block(
        self, layer: Any, x: torch.Tensor, pad: torch.Tensor | None, attention_mask: torch.Tensor | None, chunk: int = 0
    ) -> torch.Tensor:
        """torchaudio's ConformerLayer.forward (convolution after attention), with the attention
        mask and the padding-aware convolution. x: (T, B, D)."""
        x = x + 0.5 * layer.ffn1(x)
        normed = layer.self_attn_layer_norm(x)
        attended, _ = layer.self_attn(
            normed, normed, normed, key_padding_mask=pad, attn_mask=attention_mask, need_weights=False
        )
        x = x + layer.self_attn_dropout(attended)
        x, _ = self._convolve(layer, x, pad, chunk=chunk)
        x = x + 0.5 * layer.ffn2(x)
        return layer.final_layer_norm(x)

    # -- full utterances ----------------------------------------------------------------------
    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoder output (B, T/4, d_model), output_lengths (B,)."""
        x, lengths = self.subsampling(features, feature_lengths)
        pad = padding_mask(lengths, x.size(1))
        chunk, left = self.forward_chunk(x.size(1))  # one draw per pass, for the mask and the convolutions
        mask = chunk_mask(x.size(1), chunk, left, x.device)
        x = self.positions(x).transpose(0, 1)  # (T, B, D), torchaudio's layout
        for layer in self.encoder.conformer_layers:
            x = self._block(layer, x, pad, mask, chunk)
        return x.transpose(0, 1), lengths

    # -- chunk by chunk -----------------------------------------------------------------------
    @torch.no_grad()
    def encode_chunk(self, features: torch.Tensor, state: ChunkStream) -> tuple[torch.Tensor, ChunkStream]:
        """One chunk of B streams: the chunk's feature window (B, W, F), W = ``chunk_window(chunk)[0]``
        or fewer at a stream's end -> encoder output (B, <= chunk, D). In eval mode, the outputs
        equal those of :meth:`encode` with :meth:`set_chunk` (same chunk and left context)."""
        x = self.subsample_chunk(features, state)
        if x.size(1) == 0:
            return x, state
        x = self.positions(x, offset=state.offset).transpose(0, 1)  # (T, B, D)
        for index, layer in enumerate(self.encoder.conformer_layers):
            x = x + 0.5 * layer.ffn1(x)
            x = x + attend_cached(layer.self_attn, layer.self_attn_layer_norm(x), state, index)
            x, cache = self._convolve(
                layer, x, None, state.convolution[index] if index < len(state.convolution) else None, streamed=True
            )
            keep(state.convolution, index, cache)
            x = layer.final_layer_norm(x + 0.5 * layer.ffn2(x))
        state.offset += x.size(0)
        return x.transpose(0, 1), state
