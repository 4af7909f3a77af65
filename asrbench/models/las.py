"""Listen, Attend and Spell (Chan et al. 2016) with location-aware attention (Chorowski et al. 2015).

Listen: the registry's BiLSTM encoder (4x conv subsampling; padding never reaches the recurrence).
Attend: additive attention whose energies also see a convolution of the previous step's
attention weights, which keeps the alignment moving forward monotonically.
Spell: a stack of LSTM cells fed the previous token's embedding and the previous context; the
output layer sees the decoder state and the new context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from asrbench.models.attention import AttentionModel
from asrbench.models.common import padding_mask
from asrbench.models.rnn import LSTM, RNNConfig
from asrbench.recipe.schema import FRACTION, ODD, POSITIVE, PROBABILITY


@dataclass
class LASConfig:
    subsample_channels: int = 32
    encoder_hidden: int = 256  # per direction
    encoder_layers: int = 3
    decoder_hidden: int = 256
    decoder_layers: int = 1
    embed_dim: int = 128
    attention_dim: int = 256
    location_channels: int = 10
    location_kernel: int = 31
    dropout: float = 0.1
    ctc_weight: float = 0.3
    label_smoothing: float = 0.1
    max_length_ratio: float = 1.0

    # What target_params scales (asrbench.models.sizing): the encoder, decoder and attention in proportion.
    WIDTH: ClassVar[tuple] = ("encoder_hidden", "decoder_hidden", "attention_dim")
    LIMITS: ClassVar[dict] = {
        "subsample_channels": POSITIVE,
        "encoder_hidden": POSITIVE,
        "encoder_layers": POSITIVE,
        "decoder_hidden": POSITIVE,
        "decoder_layers": POSITIVE,
        "embed_dim": POSITIVE,
        "attention_dim": POSITIVE,
        "location_channels": POSITIVE,
        "location_kernel": ODD,
        "dropout": PROBABILITY,
        "ctc_weight": FRACTION,
        "label_smoothing": PROBABILITY,
        "max_length_ratio": POSITIVE,
    }


class LocationAwareAttention(nn.Module):
    def __init__(self, memory_dim: int, query_dim: int, attention_dim: int, channels: int, kernel: int):
        super().__init__()
        self.memory_proj = nn.Linear(memory_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)
        self.location_conv = nn.Conv1d(1, channels, kernel, padding=kernel // 2, bias=False)
        self.location_proj = nn.Linear(channels, attention_dim, bias=False)
        self.energy = nn.Linear(attention_dim, 1)

    def forward(self, query, memory, memory_keys, memory_pad, previous_weights):
        """query (N, Q), memory (N, T, D), memory_keys = memory_proj(memory) (N, T, A), memory_pad
        (N, T) True at padding, previous_weights (N, T) -> context (N, D), weights (N, T)."""
        location = self.location_proj(self.location_conv(previous_weights.unsqueeze(1)).transpose(1, 2))
        energies = self.energy(torch.tanh(memory_keys + self.query_proj(query).unsqueeze(1) + location)).squeeze(-1)
        weights = torch.softmax(energies.masked_fill(memory_pad, float("-inf")), dim=-1)
        return torch.bmm(weights.unsqueeze(1), memory).squeeze(1), weights


class LAS(AttentionModel):
    """Attention: Listen, Attend and Spell (BiLSTM encoder, location-aware attention, LSTM decoder)."""

    def __init__(self, input_dim: int, vocab_size: int, config: LASConfig):
        super().__init__(vocab_size, config.ctc_weight, config.label_smoothing, config.max_length_ratio)
        self.encoder = LSTM(
            input_dim,
            vocab_size,
            RNNConfig(
                subsample_channels=config.subsample_channels,
                hidden_size=config.encoder_hidden,
                num_layers=config.encoder_layers,
                dropout=config.dropout,
                bidirectional=True,
            ),
        )
        self.ctc_head = self.encoder.head if config.ctc_weight > 0 else None
        del self.encoder.head
        memory_dim = self.encoder_dim = self.encoder.encoder_dim
        self.embed = nn.Embedding(vocab_size, config.embed_dim)
        self.cells = nn.ModuleList(
            nn.LSTMCell(config.embed_dim + memory_dim if i == 0 else config.decoder_hidden, config.decoder_hidden)
            for i in range(config.decoder_layers)
        )
        self.attention = LocationAwareAttention(
            memory_dim, config.decoder_hidden, config.attention_dim, config.location_channels, config.location_kernel
        )
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Sequential(
            nn.Linear(config.decoder_hidden + memory_dim, config.decoder_hidden),
            nn.Tanh(),
            nn.Linear(config.decoder_hidden, vocab_size),
        )

    def encode(self, features, feature_lengths):
        """(B, T, F), (B,) -> memory (B, T/4, 2 * encoder_hidden), memory_lengths (B,)."""
        return self.encoder.encode(features, feature_lengths)

    def init_state(self, memory, memory_lengths):
        batch = memory.size(0)
        memory_pad = padding_mask(memory_lengths, memory.size(1))
        zeros = memory.new_zeros(batch, self.cells[0].hidden_size)
        # Uniform attention over the real frames to start, as the location features expect weights.
        weights = (~memory_pad).to(memory.dtype) / memory_lengths.clamp(min=1).unsqueeze(1).to(memory.dtype)
        return {
            "memory": memory,
            "keys": self.attention.memory_proj(memory),
            "pad": memory_pad,
            "h": [zeros] * len(self.cells),
            "c": [zeros] * len(self.cells),
            "context": memory.new_zeros(batch, memory.size(2)),
            "weights": weights,
        }

    def _advance(self, state: dict, tokens: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """One decoder step from the previous tokens (N,) -> logits (N, V), new state."""
        x = torch.cat([self.embed(tokens), state["context"]], dim=-1)
        hs, cs = [], []
        for cell, h, c in zip(self.cells, state["h"], state["c"], strict=True):
            h, c = cell(x, (h, c))
            hs.append(h)
            cs.append(c)
            x = self.dropout(h)
        context, weights = self.attention(x, state["memory"], state["keys"], state["pad"], state["weights"])
        logits = self.output(torch.cat([x, context], dim=-1))
        return logits, {**state, "h": hs, "c": cs, "context": context, "weights": weights}

    def decoder_logits(self, memory, memory_lengths, tokens, token_lengths):
        state = self.init_state(memory, memory_lengths)
        outputs = []
        for position in range(tokens.size(1)):
            logits, state = self._advance(state, tokens[:, position])
            outputs.append(logits)
        return torch.stack(outputs, dim=1)

    def step(self, state, prefixes):
        logits, state = self._advance(state, prefixes[:, -1])
        return torch.log_softmax(logits.float(), dim=-1), state

    def reorder_state(self, state, indices):
        def pick(value):
            if isinstance(value, list):
                return [pick(v) for v in value]
            return value.index_select(0, indices)

        return {key: pick(value) for key, value in state.items()}
