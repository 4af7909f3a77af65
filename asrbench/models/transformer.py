"""Transformer encoder for CTC: conv subsampling, sinusoidal positions, pre-norm self-attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from asrbench.errors import AsrbenchError
from asrbench.models.common import Conv2dSubsampling, SinusoidalPositionalEncoding, padding_mask
from asrbench.models.ctc import CTCHead, CTCModel


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


class Transformer(CTCModel):
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
        self.conv_positions = None
        if config.positional == "conv":
            # Relative positions from a depthwise convolution over time, added to the input: the
            # attention layers then know local order without absolute positions to memorize.
            kernel = config.conv_positional_kernel | 1
            self.conv_positions = nn.Sequential(
                nn.Conv1d(config.d_model, config.d_model, kernel, padding=kernel // 2, groups=config.d_model),
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
            x = x + self.conv_positions(x.transpose(1, 2)).transpose(1, 2)
        window = None
        if self.attention_window > 0:
            positions = torch.arange(x.size(1), device=x.device)
            window = (positions[None, :] - positions[:, None]).abs() > self.attention_window  # (T, T), True = hidden
        x = self.encoder(self.positions(x), mask=window, src_key_padding_mask=pad)
        return self.norm(x), lengths
