"""CRDNN: convolution, recurrence, then fully connected layers (DeepSpeech2-style).

Two 2-D conv layers with batch norm and clipped ReLU (DeepSpeech2's Hardtanh(0, 20)) subsample
time by 4, bidirectional GRUs model the sequence, and a DNN stack sits before the CTC output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from asrbench.models.common import padding_mask, run_recurrent
from asrbench.models.ctc import CTCHead, CTCModel
from asrbench.recipe.schema import NON_NEGATIVE, POSITIVE, PROBABILITY, choices


@dataclass
class CRDNNConfig:
    conv_channels: int = 32
    rnn_type: str = "gru"  # gru | lstm
    rnn_hidden: int = 256
    rnn_layers: int = 2
    dnn_hidden: int = 256
    dnn_layers: int = 1
    dropout: float = 0.1

    # What target_params scales (asrbench.models.sizing): the recurrent width, the DNN in proportion.
    WIDTH: ClassVar[tuple] = ("rnn_hidden", "dnn_hidden")
    LIMITS: ClassVar[dict] = {
        "conv_channels": POSITIVE,
        "rnn_type": choices("gru", "lstm"),
        "rnn_hidden": POSITIVE,
        "rnn_layers": POSITIVE,
        "dnn_hidden": POSITIVE,
        "dnn_layers": NON_NEGATIVE,
        "dropout": PROBABILITY,
    }


class CRDNN(CTCModel):
    """CTC: conv layers, bidirectional GRUs (or LSTMs), then a DNN stack (DeepSpeech2-style)."""

    def __init__(self, input_dim: int, vocab_size: int, config: CRDNNConfig):
        super().__init__()
        channels = config.conv_channels
        self.conv = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(1, channels, kernel_size=(11, 41), stride=(2, 2), padding=(5, 20)),
                    nn.BatchNorm2d(channels),
                    nn.Hardtanh(0, 20),
                ),
                nn.Sequential(
                    nn.Conv2d(channels, channels, kernel_size=(11, 21), stride=(2, 1), padding=(5, 10)),
                    nn.BatchNorm2d(channels),
                    nn.Hardtanh(0, 20),
                ),
            ]
        )
        freq = (input_dim + 2 * 20 - 41) // 2 + 1
        cell = nn.GRU if config.rnn_type == "gru" else nn.LSTM
        self.rnn = cell(
            channels * freq,
            config.rnn_hidden,
            num_layers=config.rnn_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.rnn_layers > 1 else 0.0,
        )
        layers: list[nn.Module] = []
        width = 2 * config.rnn_hidden
        for _ in range(config.dnn_layers):
            layers += [nn.Linear(width, config.dnn_hidden), nn.ReLU(), nn.Dropout(config.dropout)]
            width = config.dnn_hidden
        self.dnn = nn.Sequential(*layers)
        self.encoder_dim = width
        self.head = CTCHead(width, vocab_size)

    @staticmethod
    def block_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + 2 * 5 - 11) // 2 + 1  # kernel 11, stride 2, padding 5 along time

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoded (B, T/4, dnn_hidden or 2 * rnn_hidden), output_lengths (B,)."""
        lengths = feature_lengths
        x = features.unsqueeze(1)  # (B, 1, T, F)
        for block in self.conv:
            # Zero the padding before each block so no frame of an utterance sees a neighbour's data.
            x = block(x.masked_fill(padding_mask(lengths, x.size(2)).view(x.size(0), 1, -1, 1), 0.0))
            lengths = self.block_lengths(lengths).clamp(min=1, max=x.size(2))
        batch, channels, time, freq = x.shape  # (B, C, T/4, F')
        x = x.transpose(1, 2).reshape(batch, time, channels * freq)
        return self.dnn(run_recurrent(self.rnn, x, lengths)), lengths
