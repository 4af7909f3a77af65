"""Conformer encoder for CTC: conv subsampling, then torchaudio's Conformer blocks.

torchaudio's ``Conformer`` is pure Python (no compiled extension) and a reference implementation
of Gulati et al. (2020): macaron feed-forward, self-attention and convolution modules. Two
changes make it padding-invariant, so an utterance decodes the same alone or in a padded batch:
padded frames are zeroed before each depthwise convolution, and the convolution module's
BatchNorm computes its training statistics over real frames only (MaskedBatchNorm1d).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from asrbench.models.common import Conv2dSubsampling, MaskedBatchNorm1d, SinusoidalPositionalEncoding, padding_mask
from asrbench.models.ctc import CTCHead, CTCModel
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


class Conformer(CTCModel):
    """CTC: conv subsampling, then Conformer blocks (self-attention + convolution modules)."""

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
        self._padding: torch.Tensor | None = None  # (B, 1, T) of the batch being encoded
        for layer in self.encoder.conformer_layers:
            conv = layer.conv_module.sequential
            conv[3] = MaskedBatchNorm1d(conv[3].num_features, self._current_padding)
            conv[2].register_forward_pre_hook(self._zero_padding)
        self.encoder_dim = config.d_model
        self.head = CTCHead(config.d_model, vocab_size)

    def _current_padding(self) -> torch.Tensor | None:
        return self._padding

    def _zero_padding(self, module: nn.Module, inputs: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
        return (inputs[0].masked_fill(self._padding, 0.0),)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoder output (B, T/4, d_model), output_lengths (B,)."""
        x, lengths = self.subsampling(features, feature_lengths)
        self._padding = padding_mask(lengths, x.size(1)).unsqueeze(1)
        try:
            x, lengths = self.encoder(self.positions(x), lengths)
        finally:
            self._padding = None
        return x, lengths
