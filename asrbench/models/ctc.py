"""The CTC family: an encoder (``encode``) and a projection to the vocabulary (``head``), trained with CTC.

A CTC model implements ``encode(features, feature_lengths) -> (encoded (B, T', encoder_dim),
output_lengths (B,))`` and sets ``encoder_dim`` and ``head`` (a :class:`CTCHead`); this base class
gives it everything else the trainer calls (:class:`CTCFamily`): the loss and the log-probabilities
search reads. Which search runs is chosen in :mod:`asrbench.decoding.search_table`.
"""

from __future__ import annotations

import torch
from torch import nn

from asrbench.models.base import CTCFamily, Family


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


class CTCModel(nn.Module):
    """Base of CTC models: ``forward`` gives ``(log_probs (B, T', V), output_lengths (B,))``."""

    head_kind = "ctc"  # how it decodes: the rows of asrbench.decoding.search_table
    chunk_streaming = False  # True on the encoders that have encode_chunk (asrbench.models.chunked)
    # Feature frames per output frame (the encoder's frame rate), read by word times, chunk sizes
    # and streaming latency: 4 for the 4x conv subsampling most encoders share.
    subsampling_factor: int = 4
    encoder_dim: int  # D of ``encode``'s output; set by each model in __init__
    head: nn.Module  # (B, T', D) -> log-probabilities (B, T', V)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> log_probs (B, T', V), output_lengths (B,)."""
        encoded, lengths = self.encode(features, feature_lengths)
        return self.head(encoded), lengths

    def ctc_log_probs(self, features: torch.Tensor, feature_lengths: torch.Tensor):
        return self(features, feature_lengths)

    def compute_loss(self, features, feature_lengths, targets, target_lengths) -> torch.Tensor:
        """Targets are concatenated (sum U,) with lengths (B,); CTC summed then divided by B."""
        log_probs, output_lengths = self(features, feature_lengths)
        return ctc_loss(log_probs, output_lengths, targets, target_lengths)

    def search_modes(self) -> tuple[str, ...]:
        return ("ctc",)

    def acoustic_encoder(self) -> nn.Module:
        return self  # a CTC model is its own encoder


class CTCHead(nn.Module):
    """Projection to the vocabulary: (B, T, d) -> log-probabilities (B, T, V)."""

    def __init__(self, input_dim: int, vocab_size: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(input_dim, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.proj(self.dropout(x)).float(), dim=-1)


CTC = Family("CTC", CTCFamily, CTCModel, default_mode="ctc")
