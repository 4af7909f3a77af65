"""DNN: a feed-forward network on spliced frames, the acoustic model that first replaced GMMs.

Each output frame sees a window of +-``context`` input frames (B, T, (2k+1)F); only every
``stride``-th window is kept, which subsamples time for CTC the way later models do with
convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from asrbench.models.common import CTCHead


@dataclass
class DNNConfig:
    context: int = 5  # frames of left and right context
    stride: int = 3  # keep every stride-th spliced frame
    hidden_size: int = 512
    num_layers: int = 4
    dropout: float = 0.1


class DNN(nn.Module):
    def __init__(self, input_dim: int, vocab_size: int, config: DNNConfig):
        super().__init__()
        self.config = config
        width = (2 * config.context + 1) * input_dim
        layers: list[nn.Module] = []
        for _ in range(config.num_layers):
            layers += [nn.Linear(width, config.hidden_size), nn.LayerNorm(config.hidden_size), nn.ReLU()]
            layers.append(nn.Dropout(config.dropout))
            width = config.hidden_size
        self.layers = nn.Sequential(*layers)
        self.head = CTCHead(width, vocab_size)

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> log_probs (B, ceil(T/stride), V), output_lengths (B,)."""
        k, stride = self.config.context, self.config.stride
        padded = nn.functional.pad(features.transpose(1, 2), (k, k), mode="replicate").transpose(1, 2)
        windows = padded.unfold(1, 2 * k + 1, stride)  # (B, T', F, 2k+1)
        spliced = windows.transpose(2, 3).reshape(windows.size(0), windows.size(1), -1)
        output_lengths = (feature_lengths + stride - 1) // stride
        return self.head(self.layers(spliced)), output_lengths.clamp(max=spliced.size(1))
