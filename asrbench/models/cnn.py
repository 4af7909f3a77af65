"""CNN: 2-D convolutional subsampling then 1-D time convolutions (Wav2Letter/QuartzNet spirit).

The 1-D blocks are depthwise-separable (depthwise conv over time, then pointwise mixing) with a
residual connection, as in QuartzNet: wide receptive fields for few parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from asrbench.models.common import Conv2dSubsampling, MaskedBatchNorm1d, padding_mask
from asrbench.models.ctc import CTCHead, CTCModel


@dataclass
class CNNConfig:
    subsample_channels: int = 32
    channels: int = 256
    kernel_size: int = 11
    num_blocks: int = 5
    dropout: float = 0.1


class SeparableBlock(nn.Module):
    """(B, C, T) -> (B, C, T): depthwise conv, pointwise conv, batch norm, ReLU, residual."""

    def __init__(self, channels: int, kernel_size: int, dropout: float):
        super().__init__()
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.pointwise = nn.Conv1d(channels, channels, 1)
        self.norm = MaskedBatchNorm1d(channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x.masked_fill(pad.unsqueeze(1), 0.0)))
        y = self.norm(y, pad.unsqueeze(1))
        return x + self.dropout(torch.relu(y))


class CNN(CTCModel):
    """CTC: 2-D conv subsampling, then residual depthwise-separable time convolutions (QuartzNet-like)."""

    def __init__(self, input_dim: int, vocab_size: int, config: CNNConfig):
        super().__init__()
        self.subsampling = Conv2dSubsampling(input_dim, config.channels, config.subsample_channels)
        self.blocks = nn.ModuleList(
            SeparableBlock(config.channels, config.kernel_size, config.dropout) for _ in range(config.num_blocks)
        )
        self.encoder_dim = config.channels
        self.head = CTCHead(config.channels, vocab_size)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoded (B, T/4, channels), output_lengths (B,)."""
        x, lengths = self.subsampling(features, feature_lengths)
        pad = padding_mask(lengths, x.size(1))
        x = x.transpose(1, 2)  # (B, C, T')
        for block in self.blocks:
            x = block(x, pad)
        return x.transpose(1, 2), lengths
