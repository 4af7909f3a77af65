"""Zipformer encoder for CTC (Yao et al. 2023, "Zipformer: A faster and better encoder for automatic
speech recognition"; the reference is icefall's ``egs/librispeech/ASR/zipformer``).

The design, as in the paper:

- a convolutional embed that halves the frame rate (100 -> 50 frames/s for 10 ms features: three
  3x3 convolutions, the second of stride 2, SwooshR between them, then a projection and BiasNorm);
  it reads 7 frames per output frame, ``T' = (T - 7) // 2``;
- a stack of encoder *stacks*, each at its own frame rate relative to the embed's
  (``downsampling_factors``, 1, 2, 4, 8, 4, 2 by default): a stack downsamples its input by a
  learned softmax-weighted average of each group of frames, runs its layers, repeats each frame
  back to the embed's rate, and mixes the result with its input through a learned per-channel
  bypass (``x + (y - x) * c``). Stacks differ in width; between them the channels are truncated or
  zero-padded, and the encoder's output takes each channel from the last stack that had it (so it
  is ``max(encoder_dims)`` wide);
- a final downsample by 2 to the output rate: 4x overall, 25 frames/s, the rate of every other
  encoder here; ``T_out = ((T - 7) // 2 + 1) // 2``;
- the Zipformer block: attention *weights* computed once per block (multi-head, with relative
  positions) and shared by its two self-attention modules and its non-linear attention (which uses
  the first head's weights); three feed-forward modules (3/4, 1 and 5/4 of ``ff_dims``), two
  convolution modules, a mid-block bypass, and BiasNorm and a bypass at the end::

      w = weights(x)
      x += ff1(x); x += nla(x, w[:1]); x += attn1(x, w); x += conv1(x); x += ff2(x)
      x = bypass_mid(x_in, x)
      x += attn2(x, w); x += conv2(x); x += ff3(x)
      x = bypass(x_in, BiasNorm(x))

- BiasNorm (``x / rms(x - b) * exp(s)``, a learned bias inside the RMS and a learned scalar scale)
  instead of LayerNorm, and the Swoosh activations, SwooshR(x) = log(1 + e^(x-1)) - 0.08x - 0.313261687
  (convolution modules, the embed) and SwooshL(x) = log(1 + e^(x-4)) - 0.08x - 0.035 (feed-forward).

Simplified, against icefall's ``zipformer.py`` / ``scaling.py``:

- no Balancer / Whiten modules and no ScheduledFloat schedules (of dropout, skip rates or bypass
  minimums); no layer skipping, no straight-through bypass; bypass scales are clamped to
  [0.2, 1] (layers) or [0, 1] (stacks) in training and in evaluation alike;
- relative positions: the same compressed offsets (log-compressed, then atan, then harmonics) give
  a position code per offset, but it is computed directly for the (T, T) offsets of each stack's
  frames, without icefall's dropout on it; no ConvNeXt layer after the embed's convolutions;
- attention is scaled by 1/sqrt(query_head_dim) explicitly (icefall folds it into the projections'
  initial scale), and linear layers use PyTorch's initialisation (no ScaledLinear initial scales);
- dropout is on the feed-forward hidden units only;
- no streaming (causal / chunked) variant: it declares no ``encode_chunk``.

Padding never reaches real frames: every downsample pads a sequence with its own last frame (icefall
pads a batch with the batch's last frame), attention masks padded keys, and padded frames are zeroed
before each depthwise convolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from asrbench.models.common import padding_mask
from asrbench.models.ctc import CTCHead, CTCModel
from asrbench.recipe.schema import POSITIVE, PROBABILITY, Limit


@dataclass(frozen=True)
class EachLimit(Limit):
    """A :class:`Limit` on every value of a per-stack list (a number is checked as itself)."""

    def problem(self, value: Any, values: dict | None = None, name=str) -> str | None:
        if not isinstance(value, list):
            return super().problem(value, values, name)
        for item in value:
            message = super().problem(item, values, name)
            if message is not None:
                return f"each value {message}"
        return None


@dataclass
class ZipformerConfig:
    # One value per stack (len(downsampling_factors) stacks). The defaults are icefall's "small"
    # Zipformer at half its width and half its depth: 3.04M parameters with 80 features and 30 tokens.
    downsampling_factors: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 4, 2])
    num_layers: list[int] = field(default_factory=lambda: [1, 1, 1, 1, 1, 1])
    encoder_dims: list[int] = field(default_factory=lambda: [96, 128, 128, 128, 128, 128])
    ff_dims: list[int] = field(default_factory=lambda: [256, 384, 384, 384, 384, 384])
    num_heads: list[int] = field(default_factory=lambda: [4, 4, 4, 8, 4, 4])
    kernel_sizes: list[int] = field(default_factory=lambda: [31, 31, 15, 15, 15, 31])
    query_head_dim: int = 32  # per head, queries and keys
    pos_head_dim: int = 4  # per head, the queries' part that scores relative positions
    value_head_dim: int = 12  # per head, the self-attention modules' values
    pos_dim: int = 48  # width of the relative position code (even)
    subsample_channels: int = 64  # the embed's last convolution (the first two have 1/16 and 1/4)
    dropout: float = 0.1

    # What target_params scales (asrbench.models.sizing): every stack's width, its feed-forward in proportion.
    WIDTH: ClassVar[tuple] = ("encoder_dims", "ff_dims")
    LIMITS: ClassVar[dict] = {
        "downsampling_factors": EachLimit(low=1),
        "num_layers": EachLimit(low=1),
        "encoder_dims": EachLimit(low=0, low_open=True),
        "ff_dims": EachLimit(low=0, low_open=True),
        "num_heads": EachLimit(low=0, low_open=True),
        "kernel_sizes": EachLimit(low=1, odd=True),
        "query_head_dim": POSITIVE,
        "pos_head_dim": POSITIVE,
        "value_head_dim": POSITIVE,
        "pos_dim": Limit(low=2, multiple_of=(2,)),
        "subsample_channels": POSITIVE,
        "dropout": PROBABILITY,
    }


# -- activations and normalisation -------------------------------------------------------------


def swoosh_l(x: torch.Tensor) -> torch.Tensor:
    """SwooshL(x) = log(1 + e^(x-4)) - 0.08x - 0.035: the feed-forward modules' activation."""
    return nn.functional.softplus(x - 4.0) - 0.08 * x - 0.035


def swoosh_r(x: torch.Tensor) -> torch.Tensor:
    """SwooshR(x) = log(1 + e^(x-1)) - 0.08x - 0.313261687 (zero at x = 0): convolutions' activation."""
    return nn.functional.softplus(x - 1.0) - 0.08 * x - 0.313261687


class BiasNorm(nn.Module):
    """x / sqrt(mean((x - b)^2)) * exp(s) over the last dim: LayerNorm without the mean's removal,
    whose learned bias ``b`` keeps a channel's magnitude from being normalised away."""

    def __init__(self, dim: int, log_scale: float = 1.0):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.tensor(log_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the floor keeps an all-zero (padded) frame finite: NaN there would reach real frames as 0 * NaN
        mean_square = (x - self.bias).pow(2).mean(-1, keepdim=True).clamp(min=1e-20)
        return x * mean_square.rsqrt() * self.log_scale.exp()


class Bypass(nn.Module):
    """x_in + (x - x_in) * c, a learned per-channel c clamped to [low, 1] (1: x alone, 0: x_in alone)."""

    def __init__(self, dim: int, low: float, initial: float = 0.5):
        super().__init__()
        self.scale = nn.Parameter(torch.full((dim,), initial))
        self.low = low

    def forward(self, x_in: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x_in + (x - x_in) * self.scale.clamp(self.low, 1.0)


# -- frame rates -------------------------------------------------------------------------------


class Downsample(nn.Module):
    """(B, T, D), lengths (B,) -> (B, ceil(T/f), D), ceil(lengths/f): each group of f frames averaged
    with learned softmax weights; a sequence is padded with its own last frame, never another's."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor
        self.weights = nn.Parameter(torch.zeros(factor))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, time, dim = x.shape
        # Shape arithmetic stays on tensors, so an exported graph takes any length (ONNX).
        frames = torch.arange(time, device=x.device)
        frames = torch.cat([frames, frames.new_full(((self.factor - time % self.factor) % self.factor,), time - 1)])
        index = torch.minimum(frames.unsqueeze(0), (lengths - 1).unsqueeze(1))  # (B, ceil(T/f) * f)
        x = x.gather(1, index.unsqueeze(2).expand(-1, -1, dim)).reshape(batch, -1, self.factor, dim)
        weights = self.weights.softmax(0).view(1, 1, self.factor, 1)
        return (x * weights).sum(2), (lengths + self.factor - 1) // self.factor


def upsample(x: torch.Tensor, factor: int, time: int) -> torch.Tensor:
    """(B, T/f, D) -> (B, time, D): each frame repeated ``factor`` times."""
    batch, frames, dim = x.shape
    return x.unsqueeze(2).expand(batch, frames, factor, dim).reshape(batch, frames * factor, dim)[:, :time]


def relative_position_code(time: int, dim: int, device: torch.device) -> torch.Tensor:
    """The code of each offset -(time-1) .. time-1: (2 time - 1, dim). Offsets are log-compressed
    beyond sqrt(dim) frames and mapped by atan into (-pi/2, pi/2); the code is the cosines and sines
    of the first dim/2 harmonics of that angle (the last channel is 1, a bias), so near offsets are
    told apart finely and far ones coarsely, whatever the sequence's length."""
    offsets = torch.arange(-(time - 1), time, device=device, dtype=torch.float32)
    compression = dim**0.5
    compressed = compression * offsets.sign() * ((offsets.abs() + compression).log() - math.log(compression))
    angle = torch.atan(compressed / (dim / (2 * math.pi)))
    harmonics = torch.arange(1, dim // 2 + 1, device=device, dtype=torch.float32)
    code = torch.stack([(angle[:, None] * harmonics).cos(), (angle[:, None] * harmonics).sin()], dim=2)
    code = code.reshape(2 * time - 1, dim)
    code[:, -1] = 1.0
    return code


# -- the block's modules -----------------------------------------------------------------------


class AttentionWeights(nn.Module):
    """(B, T, D), position code (2T-1, pos_dim), padding (B, T) -> attention weights (B, H, T, T):
    query-key scores plus query-position scores (the queries' own pos_head_dim part against the
    projected code of each key's offset), padded keys masked out."""

    def __init__(self, dim: int, heads: int, query_head_dim: int, pos_head_dim: int, pos_dim: int):
        super().__init__()
        self.heads, self.query_head_dim, self.pos_head_dim = heads, query_head_dim, pos_head_dim
        self.in_proj = nn.Linear(dim, heads * (2 * query_head_dim + pos_head_dim))
        self.pos_proj = nn.Linear(pos_dim, heads * pos_head_dim, bias=False)

    def forward(self, x: torch.Tensor, pos_code: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        batch, time, _ = x.shape
        heads, qd, pd = self.heads, self.query_head_dim, self.pos_head_dim
        projected = self.in_proj(x).view(batch, time, heads, 2 * qd + pd).transpose(1, 2)  # (B, H, T, .)
        query, key, pos_query = projected.split([qd, qd, pd], dim=-1)
        scores = (query * qd**-0.5) @ key.transpose(-1, -2)  # (B, H, T, T)
        positions = self.pos_proj(pos_code).view(-1, heads, pd).permute(1, 2, 0)  # (H, pd, 2T-1)
        by_offset = pos_query @ positions  # (B, H, T, 2T-1): query i against every offset
        frames = torch.arange(time, device=x.device)
        offset_index = frames.unsqueeze(0) - frames.unsqueeze(1) + time - 1  # [i, j] -> offset j - i
        scores = scores + by_offset.gather(3, offset_index.expand(batch, heads, time, time))
        scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
        return scores.softmax(-1)


class SelfAttention(nn.Module):
    """Values of every head weighted by the block's shared weights: (B, T, D), (B, H, T, T) -> (B, T, D)."""

    def __init__(self, dim: int, heads: int, value_head_dim: int):
        super().__init__()
        self.heads = heads
        self.in_proj = nn.Linear(dim, heads * value_head_dim)
        self.out_proj = nn.Linear(heads * value_head_dim, dim)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        batch, time, _ = x.shape
        values = self.in_proj(x).view(batch, time, self.heads, -1).transpose(1, 2)  # (B, H, T, v)
        return self.out_proj((weights @ values).transpose(1, 2).reshape(batch, time, -1))


class NonlinearAttention(nn.Module):
    """Non-linear attention: out(g * A(tanh(s) * v)) with A one head's attention weights and s, v, g
    three projections of the input (3/4 of its width each): (B, T, D), (B, 1, T, T) -> (B, T, D)."""

    def __init__(self, dim: int):
        super().__init__()
        hidden = 3 * dim // 4
        self.in_proj = nn.Linear(dim, 3 * hidden)
        self.out_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        gate_in, values, gate_out = self.in_proj(x).chunk(3, dim=-1)
        mixed = weights[:, 0] @ (values * torch.tanh(gate_in))  # (B, T, hidden)
        return self.out_proj(mixed * gate_out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.in_proj = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(swoosh_l(self.in_proj(x))))


class ConvolutionModule(nn.Module):
    """Gated projection, depthwise convolution over time, SwooshR, projection: (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        self.in_proj = nn.Linear(dim, 2 * dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        values, gate = self.in_proj(x).chunk(2, dim=-1)
        y = (values * torch.sigmoid(gate)).masked_fill(pad.unsqueeze(2), 0.0)  # padding must not reach real frames
        return self.out_proj(swoosh_r(self.depthwise(y.transpose(1, 2)).transpose(1, 2)))


class ZipformerBlock(nn.Module):
    """One Zipformer layer (the module docstring gives its order): (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, ff_dim: int, heads: int, kernel_size: int, config: ZipformerConfig):
        super().__init__()
        self.attention_weights = AttentionWeights(
            dim, heads, config.query_head_dim, config.pos_head_dim, config.pos_dim
        )
        self.ff1 = FeedForward(dim, 3 * ff_dim // 4, config.dropout)
        self.nonlinear_attention = NonlinearAttention(dim)
        self.attention1 = SelfAttention(dim, heads, config.value_head_dim)
        self.conv1 = ConvolutionModule(dim, kernel_size)
        self.ff2 = FeedForward(dim, ff_dim, config.dropout)
        self.bypass_mid = Bypass(dim, low=0.2)
        self.attention2 = SelfAttention(dim, heads, config.value_head_dim)
        self.conv2 = ConvolutionModule(dim, kernel_size)
        self.ff3 = FeedForward(dim, 5 * ff_dim // 4, config.dropout)
        self.norm = BiasNorm(dim)
        self.bypass = Bypass(dim, low=0.2)

    def forward(self, x: torch.Tensor, pos_code: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x_in = x
        weights = self.attention_weights(x, pos_code, pad)  # once per block, shared below
        x = x + self.ff1(x)
        x = x + self.nonlinear_attention(x, weights[:, :1])
        x = x + self.attention1(x, weights)
        x = x + self.conv1(x, pad)
        x = x + self.ff2(x)
        x = self.bypass_mid(x_in, x)
        x = x + self.attention2(x, weights)
        x = x + self.conv2(x, pad)
        x = x + self.ff3(x)
        return self.bypass(x_in, self.norm(x))


class ZipformerStack(nn.Module):
    """Layers at 1/``factor`` of the embed's frame rate: (B, T, D), lengths -> (B, T, D), with a
    learned bypass mixing the stack's input and its upsampled output when it downsamples."""

    def __init__(self, index: int, config: ZipformerConfig):
        super().__init__()
        dim = config.encoder_dims[index]
        self.factor = config.downsampling_factors[index]
        self.pos_dim = config.pos_dim
        self.layers = nn.ModuleList(
            ZipformerBlock(dim, config.ff_dims[index], config.num_heads[index], config.kernel_sizes[index], config)
            for _ in range(config.num_layers[index])
        )
        self.downsample = Downsample(self.factor) if self.factor > 1 else None
        self.bypass = Bypass(dim, low=0.0) if self.factor > 1 else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x_in, time = x, x.size(1)
        if self.downsample is not None:
            x, lengths = self.downsample(x, lengths)
        pad = padding_mask(lengths, x.size(1))
        pos_code = relative_position_code(x.size(1), self.pos_dim, x.device).to(x.dtype)
        for layer in self.layers:
            x = layer(x, pos_code, pad)
        if self.bypass is None:
            return x
        return self.bypass(x_in, upsample(x, self.factor, time))


class ConvEmbed(nn.Module):
    """(B, T, F) -> (B, (T - 7) // 2, D): three 3x3 convolutions over (time, frequency), the second
    of stride 2 in both and the third of stride 2 in frequency, SwooshR after each, a projection and
    BiasNorm. Valid in time, so a real output frame reads real input frames only."""

    def __init__(self, input_dim: int, dim: int, channels: int):
        super().__init__()
        first, second = max(1, channels // 16), max(1, channels // 4)
        self.conv1 = nn.Conv2d(1, first, 3, padding=(0, 1))
        self.conv2 = nn.Conv2d(first, second, 3, stride=2)
        self.conv3 = nn.Conv2d(second, channels, 3, stride=(1, 2))
        freq = ((input_dim - 1) // 2 - 1) // 2
        if freq < 1:
            raise ValueError(f"zipformer's embed needs at least 7 feature dimensions, got {input_dim}")
        self.out = nn.Linear(channels * freq, dim)
        self.norm = BiasNorm(dim)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return (lengths - 7) // 2

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if features.size(1) < 9:  # the convolutions need 9 frames to give one
            features = nn.functional.pad(features, (0, 0, 0, 9 - features.size(1)))
        x = swoosh_r(self.conv1(features.unsqueeze(1)))
        x = swoosh_r(self.conv3(swoosh_r(self.conv2(x))))  # (B, C, T', F')
        batch, channels, time, freq = x.shape
        x = self.norm(self.out(x.transpose(1, 2).reshape(batch, time, channels * freq)))
        return x, self.output_lengths(lengths).clamp(min=1, max=time)


def resize_channels(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, T, D) -> (B, T, dim): the first ``dim`` channels, or zeros appended."""
    if dim <= x.size(-1):
        return x[..., :dim]
    return nn.functional.pad(x, (0, dim - x.size(-1)))


class Zipformer(CTCModel):
    """CTC: Zipformer, encoder stacks at several frame rates (BiasNorm, Swoosh, shared attention weights)."""

    subsampling_factor = 4  # the embed's 2x, then the final downsample's 2x

    def __init__(self, input_dim: int, vocab_size: int, config: ZipformerConfig):
        super().__init__()
        stacks = len(config.downsampling_factors)
        for key in ("num_layers", "encoder_dims", "ff_dims", "num_heads", "kernel_sizes"):
            if len(getattr(config, key)) != stacks:
                raise ValueError(
                    f"{key} has {len(getattr(config, key))} values, one per stack is "
                    f"{stacks} (downsampling_factors {config.downsampling_factors})"
                )
        self.dims = list(config.encoder_dims)
        self.embed = ConvEmbed(input_dim, self.dims[0], config.subsample_channels)
        self.stacks = nn.ModuleList(ZipformerStack(index, config) for index in range(stacks))
        self.output_downsample = Downsample(2)
        self.encoder_dim = max(self.dims)
        self.head = CTCHead(self.encoder_dim, vocab_size)

    def combine(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        """The stacks' outputs -> (B, T, max dim): each channel from the last stack that has it."""
        combined = outputs[-1]
        for output in reversed(outputs[:-1]):
            if output.size(-1) > combined.size(-1):
                combined = torch.cat([combined, output[..., combined.size(-1) :]], dim=-1)
        return combined

    def embed_and_stacks(self, features: torch.Tensor, feature_lengths: torch.Tensor):
        """(B, T, F), (B,) -> (B, T', max dim) at the embed's rate (2x), T' lengths (B,)."""
        x, lengths = self.embed(features, feature_lengths)
        outputs = []
        for stack, dim in zip(self.stacks, self.dims, strict=True):
            x = stack(resize_channels(x, dim), lengths)
            outputs.append(x)
        return self.combine(outputs), lengths

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> (B, ((T - 7) // 2 + 1) // 2, max(encoder_dims)), output_lengths (B,): 4x."""
        x, lengths = self.embed_and_stacks(features, feature_lengths)
        return self.output_downsample(x, lengths)
