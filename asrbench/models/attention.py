"""The attention encoder-decoder family and the Transformer decoder it shares.

A family contributes its loss and what search drives (search itself is chosen in
:mod:`asrbench.decoding.search_table`); the trainer and ``decode`` never read a model's name:

- ``compute_loss``: teacher-forced cross-entropy with label smoothing on ``<sos> y`` -> ``y <eos>``,
  plus, when ``ctc_weight > 0``, CTC on the encoder output (hybrid CTC/attention, Watanabe et
  al. 2017): ``(1 - ctc_weight) * attention + ctc_weight * ctc``, each summed and divided by B.
- ``encode``, ``init_state``, ``step``, ``reorder_state``: what beam search needs.
- ``ctc_log_probs``: the CTC branch, for joint CTC/attention scoring and CTC decoding.

``<sos>`` and ``<eos>`` are one token, the tokenizer's last (``vocab_size - 1``), as in ESPnet.
"""

from __future__ import annotations

import torch
from torch import nn

from asrbench.errors import AsrbenchError
from asrbench.models.base import AttentionFamily, Family
from asrbench.models.common import SinusoidalPositionalEncoding, padding_mask
from asrbench.models.ctc import CTCHead, CTCModel, ctc_loss

IGNORE = -1


class AttentionModel(nn.Module):
    """Base of attention encoder-decoders. Subclasses set ``ctc_head`` (or None) and ``encoder_dim``,
    and implement ``encode``, ``decoder_logits``, ``init_state``, ``step`` and ``reorder_state``."""

    head_kind = "attention"  # how it decodes: the rows of asrbench.decoding.search_table
    encoder: CTCModel  # set by each model: the acoustic encoder (a zoo CTC model without its head)
    encoder_dim: int

    def __init__(self, vocab_size: int, ctc_weight: float, label_smoothing: float, max_length_ratio: float):
        super().__init__()
        self.vocab_size = vocab_size
        self.sos = self.eos = vocab_size - 1
        self.ctc_weight = ctc_weight
        self.label_smoothing = label_smoothing
        self.max_length_ratio = max_length_ratio  # greedy/beam search stop after this many tokens per frame
        self.ctc_head: CTCHead | None = None

    # -- what subclasses implement -------------------------------------------------------------
    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decoder_logits(self, memory, memory_lengths, tokens, token_lengths) -> torch.Tensor:
        """Teacher forcing: memory (B, T, D), tokens (B, U) starting with <sos> -> logits (B, U, V)."""
        raise NotImplementedError

    def init_state(self, memory: torch.Tensor, memory_lengths: torch.Tensor):
        raise NotImplementedError

    def step(self, state, prefixes: torch.Tensor) -> tuple[torch.Tensor, object]:
        """prefixes (N, U) starting with <sos> -> log-probs of the next token (N, V), new state."""
        raise NotImplementedError

    def reorder_state(self, state, indices: torch.Tensor):
        raise NotImplementedError

    # -- the family's contract -----------------------------------------------------------------
    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor):
        """The CTC branch: (B, T, F), (B,) -> log_probs (B, T', V), output_lengths (B,)."""
        return self.ctc_log_probs(features, feature_lengths)

    def ctc_log_probs(self, features: torch.Tensor, feature_lengths: torch.Tensor):
        if self.ctc_head is None:
            raise AsrbenchError("this model has no CTC branch (trained with ctc_weight 0)")
        memory, lengths = self.encode(features, feature_lengths)
        return self.ctc_head(memory), lengths

    def teacher_forcing_pairs(self, targets: torch.Tensor, target_lengths: torch.Tensor):
        """Concatenated targets -> decoder inputs ``<sos> y`` and outputs ``y <eos>``, (B, U+1) each."""
        pieces = targets.split(target_lengths.tolist())
        sos = targets.new_full((1,), self.sos)
        inputs = nn.utils.rnn.pad_sequence(
            [torch.cat([sos, y]) for y in pieces], batch_first=True, padding_value=self.eos
        )
        outputs = nn.utils.rnn.pad_sequence(
            [torch.cat([y, sos]) for y in pieces], batch_first=True, padding_value=IGNORE
        )
        return inputs, outputs, target_lengths + 1

    def compute_loss(self, features, feature_lengths, targets, target_lengths) -> torch.Tensor:
        return self.loss_from_memory(*self.encode(features, feature_lengths), targets, target_lengths)

    def loss_from_memory(self, memory, memory_lengths, targets, target_lengths) -> torch.Tensor:
        """``compute_loss`` after the encoder."""
        inputs, outputs, lengths = self.teacher_forcing_pairs(targets, target_lengths)
        logits = self.decoder_logits(memory, memory_lengths, inputs, lengths)
        attention = nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)),
            outputs.reshape(-1),
            ignore_index=IGNORE,
            label_smoothing=self.label_smoothing,
            reduction="sum",
        ) / memory.size(0)
        if self.ctc_head is None or self.ctc_weight == 0.0:
            return attention
        ctc = ctc_loss(self.ctc_head(memory), memory_lengths, targets, target_lengths)
        return (1.0 - self.ctc_weight) * attention + self.ctc_weight * ctc

    def max_length(self, memory_length: int) -> int:
        return max(1, int(self.max_length_ratio * memory_length))

    def search_modes(self) -> tuple[str, ...]:
        return ("attention", "ctc") if self.ctc_head is not None else ("attention",)

    def acoustic_encoder(self) -> nn.Module:
        return self.encoder

    @property
    def chunk_streaming(self) -> bool:
        return self.encoder.chunk_streaming

    @property
    def subsampling_factor(self) -> int:
        return self.encoder.subsampling_factor


class TransformerDecoder(nn.Module):
    """Pre-norm Transformer decoder: token embedding + sinusoidal positions, causal self-attention,
    cross-attention over the encoder output. (B, U) tokens, (B, T, D) memory -> (B, U, V) logits."""

    def __init__(self, vocab_size: int, d_model: int, num_heads: int, num_layers: int, ff_dim: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.positions = SinusoidalPositionalEncoding(d_model, dropout)
        layer = nn.TransformerDecoderLayer(
            d_model, num_heads, ff_dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerDecoder(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def forward(
        self, tokens: torch.Tensor, token_lengths: torch.Tensor | None, memory: torch.Tensor, memory_pad: torch.Tensor
    ) -> torch.Tensor:
        length = tokens.size(1)
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=tokens.device), diagonal=1)
        token_pad = None if token_lengths is None else padding_mask(token_lengths, length)
        # tgt_is_causal: the mask is causal by construction, so torch need not compare it with one
        # it builds (a data-dependent check that ONNX export cannot trace).
        x = self.layers(
            self.positions(self.embed(tokens)),
            memory,
            tgt_mask=causal,
            tgt_is_causal=True,
            tgt_key_padding_mask=token_pad,
            memory_key_padding_mask=memory_pad,
        )
        return self.out(self.norm(x))


class TransformerDecoderMixin:
    """Decoding entry points for models whose decoder is a :class:`TransformerDecoder` named
    ``decoder``. The state is the memory and its padding mask; each step re-reads the prefix
    (no key/value cache: prefixes of a few dozen characters make that cheap on a CPU)."""

    def decoder_logits(self, memory, memory_lengths, tokens, token_lengths):
        return self.decoder(tokens, token_lengths, memory, padding_mask(memory_lengths, memory.size(1)))

    def init_state(self, memory, memory_lengths):
        return memory, padding_mask(memory_lengths, memory.size(1))

    def step(self, state, prefixes):
        memory, memory_pad = state
        logits = self.decoder(prefixes, None, memory, memory_pad)[:, -1]
        return torch.log_softmax(logits.float(), dim=-1), state

    def reorder_state(self, state, indices):
        memory, memory_pad = state
        return memory.index_select(0, indices), memory_pad.index_select(0, indices)


ATTENTION = Family("attention encoder-decoder", AttentionFamily, AttentionModel, default_mode="attention")
