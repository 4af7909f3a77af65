"""DNN: a feed-forward network on spliced frames, the acoustic model that first replaced GMMs.

Each output frame sees a window of +-``context`` input frames (B, T, (2k+1)F); only every
``stride``-th window is kept, which subsamples time for CTC the way later models do with
convolutions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from asrbench.models.common import MaskedBatchNorm1d, padding_mask
from asrbench.models.ctc import CTCHead, CTCModel
from asrbench.recipe.schema import NON_NEGATIVE, POSITIVE, PROBABILITY


@dataclass
class DNNConfig:
    context: int = 5  # frames of left and right context
    stride: int = 3  # keep every stride-th spliced frame
    hidden_size: int = 512
    num_layers: int = 4
    dropout: float = 0.1

    WIDTH: ClassVar[str] = "hidden_size"  # what target_params scales (asrbench.models.sizing)
    LIMITS: ClassVar[dict] = {
        "context": NON_NEGATIVE,
        "stride": POSITIVE,
        "hidden_size": POSITIVE,
        "num_layers": POSITIVE,
        "dropout": PROBABILITY,
    }


class DNN(CTCModel):
    """CTC: feed-forward layers on spliced frames (+-context), the first neural acoustic model."""

    def __init__(self, input_dim: int, vocab_size: int, config: DNNConfig):
        super().__init__()
        self.config = config
        self.subsampling_factor = config.stride  # one spliced frame kept in every stride
        width = (2 * config.context + 1) * input_dim
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        for _ in range(config.num_layers):
            self.linears.append(nn.Linear(width, config.hidden_size))
            self.norms.append(MaskedBatchNorm1d(config.hidden_size))
            width = config.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.encoder_dim = width
        self.head = CTCHead(width, vocab_size)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoded (B, ceil(T/stride), hidden_size), output_lengths (B,)."""
        k, stride = self.config.context, self.config.stride
        batch, time, dim = features.shape
        centers = torch.arange(0, time, stride, device=features.device)  # (T',)
        offsets = torch.arange(-k, k + 1, device=features.device)  # (2k+1,)
        # Each window is clipped to its own utterance (edge frames repeat), never into the padding,
        # so an utterance gives the same output alone or in a padded batch.
        last = (feature_lengths - 1).clamp(min=0).view(batch, 1, 1)
        index = (centers.view(1, -1, 1) + offsets.view(1, 1, -1)).clamp(min=0)
        index = torch.minimum(index.expand(batch, -1, -1), last)  # (B, T', 2k+1)
        gathered = features.gather(1, index.reshape(batch, -1, 1).expand(-1, -1, dim))
        spliced = gathered.reshape(batch, centers.numel(), (2 * k + 1) * dim)
        output_lengths = (feature_lengths + stride - 1) // stride
        output_lengths = output_lengths.clamp(max=centers.numel())
        pad = padding_mask(output_lengths, centers.numel()).unsqueeze(1)  # (B, 1, T')
        x = spliced
        for linear, norm in zip(self.linears, self.norms, strict=True):
            # Batch norm (statistics over real frames), as in the hybrid DNNs of the 2010s.
            x = self.dropout(torch.relu(norm(linear(x).transpose(1, 2), pad).transpose(1, 2)))
        return x, output_lengths
