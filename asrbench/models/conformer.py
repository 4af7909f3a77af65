"""Conformer encoder for CTC: conv subsampling, then torchaudio's Conformer blocks.

torchaudio's ``Conformer`` is pure Python (no compiled extension) and is the reference
implementation of Gulati et al. (2020) macaron feed-forward / self-attention / convolution
blocks; we add subsampling, absolute positions and the CTC head around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from asrbench.models.common import Conv2dSubsampling, CTCHead, SinusoidalPositionalEncoding
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


class Conformer(nn.Module):
    def __init__(self, input_dim: int, vocab_size: int, config: ConformerConfig):
        super().__init__()
        self.subsampling = Conv2dSubsampling(input_dim, config.d_model, config.subsample_channels)
        self.positions = SinusoidalPositionalEncoding(config.d_model, config.dropout)
        self.encoder = torchaudio.models.Conformer(
            input_dim=config.d_model,
            num_heads=config.num_heads,
            ffn_dim=config.ff_dim,
            num_layers=config.num_layers,
            depthwise_conv_kernel_size=config.kernel_size,
            dropout=config.dropout,
        )
        self.head = CTCHead(config.d_model, vocab_size)

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> log_probs (B, T/4, V), output_lengths (B,)."""
        x, lengths = self.subsampling(features, feature_lengths)
        x, lengths = self.encoder(self.positions(x), lengths)
        return self.head(x), lengths
