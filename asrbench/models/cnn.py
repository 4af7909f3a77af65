"""CNN: 2-D convolutional subsampling then 1-D time convolutions (Wav2Letter/QuartzNet spirit).

The 1-D blocks are depthwise-separable (depthwise conv over time, then pointwise mixing) with a
residual connection, as in QuartzNet: wide receptive fields for few parameters. With ``causal:
true`` each depthwise convolution reads only the current and past frames, so the encoder streams:
:meth:`CNN.encode_chunk` keeps each block's last ``kernel - 1`` inputs between chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from asrbench.models.chunked import ChunkIndependent
from asrbench.models.common import Conv2dSubsampling, MaskedBatchNorm1d, padding_mask
from asrbench.models.ctc import CTCHead, CTCModel
from asrbench.recipe.schema import ODD, POSITIVE, PROBABILITY


@dataclass
class CNNConfig:
    subsample_channels: int = 32
    channels: int = 256
    kernel_size: int = 11
    num_blocks: int = 5
    dropout: float = 0.1
    causal: bool = False  # convolutions over past frames only: the encoder streams

    WIDTH: ClassVar[str] = "channels"  # what target_params scales (asrbench.models.sizing)
    LIMITS: ClassVar[dict] = {
        "subsample_channels": POSITIVE,
        "channels": POSITIVE,
        "kernel_size": ODD,
        "num_blocks": POSITIVE,
        "dropout": PROBABILITY,
    }


class SeparableBlock(nn.Module):
    """(B, C, T) -> (B, C, T): depthwise conv, pointwise conv, batch norm, ReLU, residual."""

    def __init__(self, channels: int, kernel_size: int, dropout: float, causal: bool = False):
        super().__init__()
        self.causal, self.context = causal, kernel_size - 1
        padding = 0 if causal else kernel_size // 2  # causal: the left pad is _depthwise's
        self.depthwise = nn.Conv1d(channels, channels, kernel_size, padding=padding, groups=channels)
        self.pointwise = nn.Conv1d(channels, channels, 1)
        self.norm = MaskedBatchNorm1d(channels)
        self.dropout = nn.Dropout(dropout)

    def _depthwise(self, x: torch.Tensor, cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not self.causal:
            return self.depthwise(x), None
        left = cache if cache is not None else x.new_zeros(x.size(0), x.size(1), self.context)
        joined = torch.cat([left, x], dim=2)
        return self.depthwise(joined), joined[:, :, joined.size(2) - self.context :]

    def forward(
        self, x: torch.Tensor, pad: torch.Tensor | None, cache: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (output, with ``causal`` the last kernel - 1 inputs for the next chunk, else None)."""
        y, cache = self._depthwise(x if pad is None else x.masked_fill(pad.unsqueeze(1), 0.0), cache)
        y = self.norm(self.pointwise(y), None if pad is None else pad.unsqueeze(1))
        return x + self.dropout(torch.relu(y)), cache


@dataclass
class ConvolutionStream:
    """What a causal CNN keeps between chunks: each block's last kernel - 1 inputs."""

    chunk: int
    left_chunks: int = -1
    caches: list = field(default_factory=list)
    offset: int = 0


class CNN(ChunkIndependent, CTCModel):
    """CTC: 2-D conv subsampling, then residual depthwise-separable time convolutions (QuartzNet-like)."""

    streaming_option = "causal: true"
    no_left_chunks = "a causal CNN's context is its kernels'"
    stream_state = ConvolutionStream

    def __init__(self, input_dim: int, vocab_size: int, config: CNNConfig):
        super().__init__()
        self.subsampling = Conv2dSubsampling(input_dim, config.channels, config.subsample_channels)
        self.blocks = nn.ModuleList(
            SeparableBlock(config.channels, config.kernel_size, config.dropout, config.causal)
            for _ in range(config.num_blocks)
        )
        self.encoder_dim = config.channels
        self.head = CTCHead(config.channels, vocab_size)
        self.streaming = config.causal

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoded (B, T/4, channels), output_lengths (B,)."""
        x, lengths = self.subsampling(features, feature_lengths)
        pad = padding_mask(lengths, x.size(1))
        x = x.transpose(1, 2)  # (B, C, T')
        for block in self.blocks:
            x, _ = block(x, pad)
        return x.transpose(1, 2), lengths

    # -- streaming (causal: true): set_chunk, init_stream from ChunkIndependent ---------------
    @torch.no_grad()
    def encode_chunk(self, features: torch.Tensor, state: ConvolutionStream) -> tuple[torch.Tensor, ConvolutionStream]:
        """A chunk's feature window (B, W, F) -> its encoder output (B, <= chunk, C)."""
        x = self.subsampling.stream_window(features)
        if x.size(1) == 0:
            return x, state
        x = x.transpose(1, 2)
        for index, block in enumerate(self.blocks):
            x, cache = block(x, None, state.caches[index] if index < len(state.caches) else None)
            state.caches[index : index + 1] = [cache]
        state.offset += x.size(2)
        return x.transpose(1, 2), state
