"""Transformer and Conformer encoders with a Transformer decoder (ESPnet's hybrid CTC/attention).

The encoders are the CTC models of this registry, reused whole: their ``encode`` gives the
memory the decoder attends to, and their CTC head is the hybrid CTC branch (dropped when
``ctc_weight`` is 0, so a pure attention model carries no unused parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

from asrbench.models.attention import AttentionModel, TransformerDecoder, TransformerDecoderMixin
from asrbench.models.conformer import Conformer, ConformerConfig
from asrbench.models.transformer import Transformer, TransformerConfig


@dataclass
class TransformerAEDConfig:
    d_model: int = 144
    num_heads: int = 4
    num_layers: int = 6  # encoder
    ff_dim: int = 576
    dropout: float = 0.1
    subsample_channels: int = 32
    positional: str = "sinusoidal"  # encoder positions: sinusoidal | none
    decoder_layers: int = 3
    decoder_ff_dim: int = 576
    ctc_weight: float = 0.3  # 0 = pure attention; ESPnet's AN4 recipe uses 0.3
    label_smoothing: float = 0.1
    max_length_ratio: float = 1.0  # decoding stops after this many tokens per encoder frame


@dataclass
class ConformerAEDConfig:
    d_model: int = 144
    num_heads: int = 4
    num_layers: int = 4  # encoder
    ff_dim: int = 576
    kernel_size: int = 15
    dropout: float = 0.1
    subsample_channels: int = 32
    decoder_layers: int = 3
    decoder_ff_dim: int = 576
    ctc_weight: float = 0.3
    label_smoothing: float = 0.1
    max_length_ratio: float = 1.0


class _EncoderDecoder(TransformerDecoderMixin, AttentionModel):
    def __init__(self, encoder, vocab_size: int, config):
        super().__init__(vocab_size, config.ctc_weight, config.label_smoothing, config.max_length_ratio)
        self.encoder = encoder
        self.ctc_head = encoder.head if config.ctc_weight > 0 else None
        del encoder.head  # registered once, as ctc_head
        self.decoder = TransformerDecoder(vocab_size, config.d_model, config.num_heads, config.decoder_layers,
                                          config.decoder_ff_dim, config.dropout)

    def encode(self, features, feature_lengths):
        """(B, T, F), (B,) -> memory (B, T/4, d_model), memory_lengths (B,)."""
        return self.encoder.encode(features, feature_lengths)


class TransformerAED(_EncoderDecoder):
    def __init__(self, input_dim: int, vocab_size: int, config: TransformerAEDConfig):
        encoder = Transformer(input_dim, vocab_size, TransformerConfig(
            d_model=config.d_model, num_heads=config.num_heads, num_layers=config.num_layers,
            ff_dim=config.ff_dim, dropout=config.dropout, subsample_channels=config.subsample_channels,
            positional=config.positional,
        ))
        super().__init__(encoder, vocab_size, config)


class ConformerAED(_EncoderDecoder):
    def __init__(self, input_dim: int, vocab_size: int, config: ConformerAEDConfig):
        encoder = Conformer(input_dim, vocab_size, ConformerConfig(
            d_model=config.d_model, num_heads=config.num_heads, num_layers=config.num_layers,
            ff_dim=config.ff_dim, kernel_size=config.kernel_size, dropout=config.dropout,
            subsample_channels=config.subsample_channels,
        ))
        super().__init__(encoder, vocab_size, config)
