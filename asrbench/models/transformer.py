"""Transformer encoder for CTC: conv subsampling, sinusoidal positions, pre-norm self-attention.

With ``streaming: true`` (WeNet's U2, :mod:`asrbench.models.chunked`) self-attention is chunked and
trained with dynamic chunks, the convolutional positions (``positional: conv``) become causal, and
:meth:`Transformer.encode_chunk` encodes chunk by chunk with each layer's keys and values cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from asrbench.errors import AsrbenchError
from asrbench.models.chunked import ChunkedAttention, ChunkStream, attend_cached, causal_convolve
from asrbench.models.common import D_MODEL, Conv2dSubsampling, SinusoidalPositionalEncoding, padding_mask
from asrbench.models.ctc import CTCHead, CTCModel
from asrbench.recipe.schema import ALL_OR_COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY, choices


@dataclass
class TransformerConfig:
    d_model: int = 144
    num_heads: int = 4
    num_layers: int = 6
    ff_dim: int = 576
    dropout: float = 0.1
    subsample_channels: int = 32
    positional: str = "sinusoidal"  # sinusoidal | conv (relative, wav2vec 2.0 style) | none
    conv_positional_kernel: int = 15  # positional: conv
    attention_window: int = 0  # > 0: each frame attends only to frames within this distance; 0 = all
    final_norm: bool = True  # LayerNorm on the encoder output (pre-norm Transformers usually have one)
    # Streaming (U2): chunked attention, causal convolutional positions, dynamic chunk training.
    streaming: bool = False
    max_train_chunk: int = 25  # streaming: chunks of 1..this many encoder frames in half the batches
    train_left_chunks: int = -1  # streaming: left chunks seen in training; -1 = all

    # What target_params scales (asrbench.models.sizing): d_model, the feed-forward in proportion.
    WIDTH: ClassVar[tuple] = ("d_model", "ff_dim")
    LIMITS: ClassVar[dict] = {
        "d_model": D_MODEL,
        "num_heads": POSITIVE,
        "num_layers": POSITIVE,
        "ff_dim": POSITIVE,
        "dropout": PROBABILITY,
        "subsample_channels": POSITIVE,
        "positional": choices("sinusoidal", "conv", "none"),
        "conv_positional_kernel": POSITIVE,
        "attention_window": NON_NEGATIVE,
        "max_train_chunk": POSITIVE,
        "train_left_chunks": ALL_OR_COUNT,
    }


class Transformer(ChunkedAttention, CTCModel):
    """CTC: conv subsampling, then a pre-norm Transformer self-attention encoder."""

    def __init__(self, input_dim: int, vocab_size: int, config: TransformerConfig):
        super().__init__()
        self.subsampling = Conv2dSubsampling(input_dim, config.d_model, config.subsample_channels)
        if config.positional not in ("sinusoidal", "conv", "none"):
            raise AsrbenchError(f"positional must be 'sinusoidal', 'conv' or 'none', not {config.positional!r}")
        self.positions = (
            SinusoidalPositionalEncoding(config.d_model, config.dropout)
            if config.positional == "sinusoidal"
            else nn.Dropout(config.dropout)
        )
        self.conv_positions: nn.Sequential | None = None  # (depthwise Conv1d, GELU) when positional: conv
        self._init_chunking(config)
        if config.positional == "conv":
            # Relative positions from a depthwise convolution over time, added to the input: the
            # attention layers then know local order without absolute positions to memorize.
            # Streaming: causal, the kernel - 1 frames before from causal_convolve's left context.
            kernel = config.conv_positional_kernel | 1
            self.conv_positions = nn.Sequential(
                nn.Conv1d(
                    config.d_model,
                    config.d_model,
                    kernel,
                    padding=0 if self.streaming else kernel // 2,
                    groups=config.d_model,
                ),
                nn.GELU(),
            )
        layer = nn.TransformerEncoderLayer(
            config.d_model,
            config.num_heads,
            config.ff_dim,
            config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.d_model) if config.final_norm else nn.Identity()
        self.attention_window = config.attention_window
        self.encoder_dim = config.d_model
        self.head = CTCHead(config.d_model, vocab_size)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoder output (B, T/4, d_model), output_lengths (B,)."""
        x, lengths = self.subsampling(features, feature_lengths)
        pad = padding_mask(lengths, x.size(1))
        if self.conv_positions is not None:
            x = x.masked_fill(pad.unsqueeze(-1), 0.0)  # padding must not leak into real frames
            x = x + self._conv_positions(x.transpose(1, 2), None)[0].transpose(1, 2)
        window = self.attention_mask(x.size(1), x.device)
        if self.attention_window > 0:
            positions = torch.arange(x.size(1), device=x.device)
            near = (positions[None, :] - positions[:, None]).abs() > self.attention_window  # (T, T), True = hidden
            window = near if window is None else window | near
        x = self.encoder(self.positions(x), mask=window, src_key_padding_mask=pad)
        return self.norm(x), lengths

    def _conv_positions(self, x: torch.Tensor, cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, D, T) -> the positional term (B, D, T), and in streaming mode the last inputs for the next chunk."""
        assert self.conv_positions is not None  # callers check
        conv, activation = self.conv_positions
        assert isinstance(conv, nn.Conv1d)
        if not self.streaming:
            return activation(conv(x)), None
        out, cache = causal_convolve(conv, x, cache, conv.kernel_size[0] - 1)
        return activation(out), cache

    @torch.no_grad()
    def encode_chunk(self, features: torch.Tensor, state: ChunkStream) -> tuple[torch.Tensor, ChunkStream]:
        """One chunk of B streams: its feature window (B, W, F) -> encoder output (B, <= chunk, D); in
        eval mode equal to :meth:`encode` with :meth:`set_chunk` (same chunk and left context)."""
        if self.attention_window > 0:
            raise ValueError("chunk-by-chunk encoding does not combine with attention_window")
        x = self.subsampling.stream_window(features)
        if x.size(1) == 0:
            return x, state
        if self.conv_positions is not None:
            term, cache = self._conv_positions(x.transpose(1, 2), state.convolution[0] if state.convolution else None)
            state.convolution[:1] = [cache]
            x = x + term.transpose(1, 2)
        x = (
            self.positions(x, offset=state.offset)
            if isinstance(self.positions, SinusoidalPositionalEncoding)
            else self.positions(x)
        )
        for index, layer in enumerate(self.encoder.layers):  # pre-norm layers: norm_first=True
            x = x + layer.dropout1(
                attend_cached(layer.self_attn, layer.norm1(x).transpose(0, 1), state, index).transpose(0, 1)
            )
            x = x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(x))))))
        state.offset += x.size(1)
        return self.norm(x), state
