"""Bidirectional LSTM and GRU encoders with 4x convolutional time subsampling.

Padding is kept out of the recurrence (:func:`asrbench.models.common.run_recurrent`), so a
short utterance in a long batch gets the same output as alone. With ``bidirectional: false`` the
encoder streams: its only lookahead is the subsampling's, and :meth:`RNNEncoder.encode_chunk`
carries the recurrence's state from chunk to chunk (the same outputs as one pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from asrbench.models.chunked import ChunkIndependent
from asrbench.models.common import Conv2dSubsampling, run_recurrent
from asrbench.models.ctc import CTCHead, CTCModel
from asrbench.recipe.schema import FINITE, POSITIVE, PROBABILITY


@dataclass
class RNNConfig:
    subsample_channels: int = 32
    hidden_size: int = 256
    num_layers: int = 3
    dropout: float = 0.1
    bidirectional: bool = True
    # LSTM only: the forget gates' bias at initialization (None: PyTorch's uniform init). 1.0 is
    # the usual choice (Gers et al. 2000; Jozefowicz et al. 2015): cells keep their state early on.
    forget_bias: float | None = None

    WIDTH: ClassVar[str] = "hidden_size"  # what target_params scales (asrbench.models.sizing)
    LIMITS: ClassVar[dict] = {
        "subsample_channels": POSITIVE,
        "hidden_size": POSITIVE,
        "num_layers": POSITIVE,
        "dropout": PROBABILITY,
        "forget_bias": FINITE,
    }


@dataclass
class RecurrentStream:
    """What a unidirectional recurrent encoder keeps between chunks: its layers' state."""

    chunk: int
    left_chunks: int = -1
    hidden: Any = None  # (layers, B, H), or (h, c) for an LSTM; None before the first chunk
    offset: int = 0


class RNNEncoder(ChunkIndependent, CTCModel):
    """CTC: recurrent layers (``cell``) over 4x conv-subsampled frames."""

    cell: type[nn.LSTM] | type[nn.GRU] = nn.LSTM
    head: CTCHead
    streaming_option = "bidirectional: false"
    no_left_chunks = "a recurrent encoder carries its whole history"
    stream_state = RecurrentStream

    def __init__(self, input_dim: int, vocab_size: int, config: RNNConfig):
        super().__init__()
        self.subsampling = Conv2dSubsampling(input_dim, config.hidden_size, config.subsample_channels)
        self.rnn = self.cell(
            config.hidden_size,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        if config.forget_bias is not None:
            if self.cell is not nn.LSTM:
                raise ValueError("forget_bias applies to LSTMs only")
            with torch.no_grad():
                hidden = config.hidden_size
                for name, bias in self.rnn.named_parameters():
                    if name.startswith("bias_"):  # gates i, f, g, o; the two biases add up
                        bias[hidden : 2 * hidden] = config.forget_bias if name.startswith("bias_ih") else 0.0
        directions = 2 if config.bidirectional else 1
        self.encoder_dim = config.hidden_size * directions
        self.head = CTCHead(self.encoder_dim, vocab_size, config.dropout)
        self.streaming = not config.bidirectional  # a unidirectional recurrence looks ahead no further

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoder output (B, T/4, directions * hidden), output_lengths (B,)."""
        x, lengths = self.subsampling(features, feature_lengths)
        return run_recurrent(self.rnn, x, lengths), lengths

    # -- streaming (bidirectional: false): set_chunk, init_stream from ChunkIndependent ------
    @torch.no_grad()
    def encode_chunk(self, features: torch.Tensor, state: RecurrentStream) -> tuple[torch.Tensor, RecurrentStream]:
        """A chunk's feature window (B, W, F) -> its encoder output (B, <= chunk, H); the state carries on."""
        x = self.subsampling.stream_window(features)
        if x.size(1) == 0:
            return x.new_zeros(x.size(0), 0, self.encoder_dim), state
        x, state.hidden = self.rnn(x, state.hidden)
        state.offset += x.size(1)
        return x, state


class LSTM(RNNEncoder):
    """CTC: LSTM layers (bidirectional by default) over 4x conv-subsampled frames."""

    cell = nn.LSTM


class GRU(RNNEncoder):
    """CTC: GRU layers (bidirectional by default) over 4x conv-subsampled frames; fewer gates than the LSTM."""

    cell = nn.GRU
