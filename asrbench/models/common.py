"""Building blocks shared by several encoders."""

from __future__ import annotations

import math

import torch
from torch import nn


def padding_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask, True at padded positions."""
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) >= lengths.unsqueeze(1)


class Conv2dSubsampling(nn.Module):
    """Two stride-2 3x3 convolutions over (time, frequency): (B, T, F) -> (B, ~T/4, d_model).

    Subsampling time by 4 is what makes attention and recurrent encoders affordable on a CPU
    (a BiLSTM at 100 frames/s is 4x the work and barely more accurate for characters).
    """

    def __init__(self, input_dim: int, d_model: int, channels: int = 64, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        freq = ((input_dim - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq, d_model)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return ((lengths - 1) // 2 - 1) // 2

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if features.size(1) < 7:  # the two convolutions need 7 frames to give one
            features = nn.functional.pad(features, (0, 0, 0, 7 - features.size(1)))
        x = self.conv(features.unsqueeze(1))  # (B, C, T', F')
        batch, channels, time, freq = x.shape
        x = self.out(x.transpose(1, 2).reshape(batch, time, channels * freq))
        return self.dropout(x), self.output_lengths(lengths).clamp(min=1, max=time)


class SinusoidalPositionalEncoding(nn.Module):
    """Adds fixed sine/cosine position codes to (B, T, d_model) inputs scaled by sqrt(d_model)."""

    def __init__(self, d_model: int, dropout: float = 0.0, max_length: int = 10000):
        super().__init__()
        position = torch.arange(max_length).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_length, d_model)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div)
        self.register_buffer("table", table, persistent=False)
        self.scale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(1) > self.table.size(0):
            raise ValueError(f"sequence of {x.size(1)} frames exceeds the positional table ({self.table.size(0)})")
        return self.dropout(x * self.scale + self.table[: x.size(1)])


class CTCHead(nn.Module):
    """Projection to the vocabulary: (B, T, d) -> log-probabilities (B, T, V)."""

    def __init__(self, input_dim: int, vocab_size: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(input_dim, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.proj(self.dropout(x)).float(), dim=-1)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over (B, C, T) whose training statistics count only real frames, not padding.

    The (B, 1, T) padding mask is passed to ``forward`` or, where the module sits inside a
    library's Sequential (the Conformer), returned by the ``padding`` callable. In eval mode the
    running statistics make it a per-frame affine map, so padding never leaks. Unlike a per-frame
    LayerNorm it does not blow silence frames up to unit scale, which matters on small corpora.
    """

    def __init__(self, num_features: int, padding=None):
        super().__init__(num_features)
        self._padding = padding

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        if pad is None and self._padding is not None:
            pad = self._padding()
        if not self.training or pad is None:
            return super().forward(x)
        valid = (~pad).to(x.dtype)  # (B, 1, T)
        count = valid.sum().clamp(min=2)
        mean = (x * valid).sum(dim=(0, 2)) / count
        var = ((x - mean[None, :, None]).pow(2) * valid).sum(dim=(0, 2)) / count
        with torch.no_grad():
            momentum = self.momentum if self.momentum is not None else 0.1
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
            unbiased = var.detach() * count / (count - 1)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
            self.num_batches_tracked += 1
        x = (x - mean[None, :, None]) * torch.rsqrt(var[None, :, None] + self.eps)
        return x * self.weight[None, :, None] + self.bias[None, :, None]


class CTCModel(nn.Module):
    """The CTC family: ``forward`` gives ``(log_probs (B, T', V), output_lengths (B,))``.

    A family contributes what the trainer and decoder call, so neither branches on a model's name:
    ``compute_loss`` (sum over the batch / B), ``greedy_decode`` (token ids per utterance),
    ``dev_decode`` (what the trainer picks checkpoints by) and,
    where a CTC output exists, ``ctc_log_probs`` for beam search.
    """

    family = "ctc"

    def ctc_log_probs(self, features: torch.Tensor, feature_lengths: torch.Tensor):
        return self(features, feature_lengths)

    def compute_loss(self, features, feature_lengths, targets, target_lengths) -> torch.Tensor:
        """Targets are concatenated (sum U,) with lengths (B,); CTC summed then divided by B."""
        log_probs, output_lengths = self(features, feature_lengths)
        return ctc_loss(log_probs, output_lengths, targets, target_lengths)

    def greedy_decode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> list[list[int]]:
        from asrbench.data.tokenizer import ctc_greedy

        log_probs, output_lengths = self(features, feature_lengths)
        return ctc_greedy(log_probs, output_lengths)

    dev_decode = greedy_decode  # what the trainer scores on dev to pick checkpoints


def ctc_loss(log_probs, output_lengths, targets, target_lengths, blank: int = 0) -> torch.Tensor:
    """CTC (blank 0) summed over the batch and divided by B; impossible alignments count zero."""
    loss = nn.functional.ctc_loss(
        log_probs.float().transpose(0, 1),
        targets,
        output_lengths,
        target_lengths,
        blank=blank,
        reduction="sum",
        zero_infinity=True,
    )
    return loss / log_probs.size(0)
