"""FastConformer (Rekesh et al. 2023, "Fast Conformer with Linearly Scalable Attention for
Efficient Speech Recognition"; NeMo's ``FastConformer``): the Conformer at an 80 ms frame rate.

The only differences from :mod:`asrbench.models.conformer` (whose blocks, padding invariance,
chunked streaming and caches are used as they are, by subclassing) are the two the paper makes:

- **8x subsampling** by three stride-2 3x3 convolutions over (time, frequency) with ReLUs, the
  last two depthwise-separable (NeMo's ``dw_striding``: a regular convolution from one channel,
  then twice a depthwise 3x3 and a pointwise 1x1), ``subsample_channels`` channels (256, NeMo's
  at every model size), then a linear projection to ``d_model``. Padding 1 on both axes, as NeMo's
  non-causal subsampling, so ``T' = ceil(T / 8) = (T + 7) // 8`` (each stage ``ceil(t / 2)``). The
  attention, a quadratic cost, then sees half the Conformer's frames.
- **Convolution kernel 9** (the Conformer's 15 at half the frame rate would see twice as far).

Design choices and deviations:

- Padding invariance: padded frames are zeroed before each stage's 3x3 convolution (the frame
  after an utterance's end then reads zeros, alone or in a batch), which NeMo does not do.
- NeMo's FastConformer uses relative positional attention (Transformer-XL's); this one keeps our
  Conformer's absolute sinusoidal positions, so the two differ only where the paper says. NeMo's
  limited-context attention and global token (the "linearly scalable" part, for hour-long audio)
  are not here; utterances in this zoo are seconds long.
- Streaming (``streaming: true``): the Conformer's chunked attention and causal (or chunked)
  depthwise convolution. The subsampling needs no change: an output frame ``c`` reads feature
  frames ``8c - 7 .. 8c + 7``, so a chunk of ``n`` frames reads exactly its own ``8n`` feature
  frames and the 7 before it; chunk by chunk, each stage keeps its last input frame (its left
  context) and a stream's last, odd-length chunk is closed by the zero its full pass pads with.
  The chunk's window is its own frames, no lookahead (the Conformer's 4x front end reads 3 more).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from asrbench.models.chunked import ChunkStream, keep
from asrbench.models.common import padding_mask
from asrbench.models.conformer import Conformer, ConformerConfig


@dataclass
class FastConformerConfig(ConformerConfig):
    """The Conformer's options (d_model 144, 4 heads, 4 layers, ff_dim 576 by default) with the
    FastConformer's kernel and subsampling width."""

    kernel_size: int = 9
    subsample_channels: int = 256


def _zero_tails(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, C, T, F), a convolution's output (no autograd node keeps it), with every frame from
    ``lengths[b]`` on zeroed in place. Without autograd only where there is padding (a whole-tensor
    mask costs as much as a convolution stage here); under autograd by one mask over the whole
    tensor (a slice written in place copies the whole gradient per row in backward), and so when
    traced or compiled for export (the rows with padding are data, not a graph)."""
    if x.requires_grad or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return x.masked_fill_(padding_mask(lengths, x.size(2))[:, None, :, None], 0.0)
    short = (lengths < x.size(2)).nonzero().flatten().tolist()
    for row, length in zip(short, lengths[short].tolist(), strict=True):
        x[row, :, length:] = 0.0
    return x


class DepthwiseStridingSubsampling(nn.Module):
    """NeMo's ``dw_striding``: (B, T, F) -> (B, ceil(T/8), d_model) by three stride-2 3x3
    convolutions, the last two depthwise + pointwise, each followed by a ReLU."""

    factor = 8  # feature frames per output frame

    def __init__(self, input_dim: int, d_model: int, channels: int):
        super().__init__()
        # Time padding is applied by hand (both sides, or a chunk's cache): the convolutions pad frequency only.
        self.stages = nn.ModuleList(
            [
                nn.Conv2d(1, channels, kernel_size=3, stride=2, padding=(0, 1)),
                *[
                    nn.Sequential(
                        nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=(0, 1), groups=channels),
                        nn.Conv2d(channels, channels, kernel_size=1),
                    )
                    for _ in range(2)
                ],
            ]
        )
        freq = input_dim
        for _ in self.stages:
            freq = (freq - 1) // 2 + 1
        self.out = nn.Linear(channels * freq, d_model)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        """Three times ``ceil(t / 2)`` (kernel 3, stride 2, padding 1): ``ceil(T / 8)``."""
        return (lengths + 7) // 8

    @staticmethod
    def chunk_window(chunk: int) -> tuple[int, int]:
        """(feature frames a chunk of ``chunk`` output frames reads, frames it advances): its own
        ``8 * chunk``; the 7 frames of left context come from the stream's cache."""
        return 8 * chunk, 8 * chunk

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, time, freq = x.shape  # (B, C, T', F')
        return self.out(x.transpose(1, 2).reshape(batch, time, channels * freq))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> (B, ceil(T/8), d_model), output lengths (B,).

        Each stage's input is zero past each utterance's end, so that its last frame reads the zero
        it reads alone: the features by a mask, each later input by zeroing the padded tail of the
        convolution's output (ReLU keeps the zeros; :func:`_zero_tails`). The convolutions pad time
        themselves, on channels-last tensors. Together they make the front end 2-4x faster than
        masking whole tensors and padding by copy in torch's default layout, with the same outputs."""
        x = features.unsqueeze(1).masked_fill(padding_mask(lengths, features.size(1))[:, None, :, None], 0.0)
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's convolutions: 2-4x faster here
        stage_lengths = lengths
        for index, stage in enumerate(self.stages):
            x = self._strided(stage, x)
            stage_lengths = (stage_lengths + 1) // 2
            if index + 1 < len(self.stages):
                x = _zero_tails(x, stage_lengths)
            x = torch.relu_(x)
        return self._project(x), self.output_lengths(lengths).clamp(min=1, max=x.size(2))

    @staticmethod
    def _strided(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """A stage's stride-2 convolution(s) with one zero frame of time padding on each side."""
        first = cast(nn.Conv2d, stage if isinstance(stage, nn.Conv2d) else cast(nn.Sequential, stage)[0])
        x = nn.functional.conv2d(x, first.weight, first.bias, stride=2, padding=(1, 1), groups=first.groups)
        return x if first is stage else cast(nn.Sequential, stage)[1](x)

    def stream(self, features: torch.Tensor, caches: list) -> torch.Tensor:
        """One chunk (B, W, F) of a stream -> (B, ceil(W/8), d_model), equal to the full pass's
        frames there. ``caches``: per stage its last input frame (B, C, 1, F'), zeros at a stream's
        start, updated here. W is a multiple of 8 except in a stream's last chunk."""
        x = features.unsqueeze(1)
        for index, stage in enumerate(self.stages):
            left = caches[index] if index < len(caches) else x.new_zeros(x.size(0), x.size(1), 1, x.size(3))
            joined = torch.cat([left, x], dim=2)
            keep(caches, index, joined[:, :, -1:])
            right = x.size(2) % 2  # a last chunk of odd length: the zero the full pass pads after the end
            x = torch.relu(stage(nn.functional.pad(joined, (0, 0, 0, right))))
        return self._project(x)


@dataclass
class FastConformerStream(ChunkStream):
    """The Conformer's stream state plus the subsampling's per-stage left context."""

    subsampling: list = field(default_factory=list)


class FastConformer(Conformer):
    """CTC: 8x depthwise-separable conv subsampling, then Conformer blocks with kernel 9 (NeMo's FastConformer)."""

    subsampling_factor = DepthwiseStridingSubsampling.factor
    chunk_window = staticmethod(DepthwiseStridingSubsampling.chunk_window)

    def __init__(self, input_dim: int, vocab_size: int, config: FastConformerConfig):
        super().__init__(input_dim, vocab_size, config)

    def make_subsampling(self, input_dim: int, config: ConformerConfig) -> nn.Module:
        return DepthwiseStridingSubsampling(input_dim, config.d_model, config.subsample_channels)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoder output (B, ceil(T/8), d_model), output_lengths (B,)."""
        return super().encode(features, feature_lengths)

    def init_stream(self, chunk: int, left_chunks: int = -1) -> FastConformerStream:
        super().init_stream(chunk, left_chunks)  # the checks
        return FastConformerStream(chunk, left_chunks)

    def subsample_chunk(self, features: torch.Tensor, state: ChunkStream) -> torch.Tensor:
        assert isinstance(state, FastConformerStream)  # made by init_stream
        return cast(DepthwiseStridingSubsampling, self.subsampling).stream(features, state.subsampling)
