"""Transformer and Conformer encoders with a Transformer decoder (ESPnet's hybrid CTC/attention).

The encoders are the CTC models of this registry, reused whole: their ``encode`` gives the
memory the decoder attends to, and their CTC head is the hybrid CTC branch (dropped when
``ctc_weight`` is 0, so a pure attention model carries no unused parameters).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from asrbench.models.attention import AttentionModel, TransformerDecoder, TransformerDecoderMixin
from asrbench.models.conformer import Conformer, ConformerConfig
from asrbench.models.transformer import Transformer, TransformerConfig
from asrbench.recipe.schema import FRACTION, POSITIVE, PROBABILITY


@dataclass
class DecoderOptions:
    """What every Transformer-decoder model adds to its encoder's options."""

    decoder_layers: int = 3
    decoder_ff_dim: int = 576
    ctc_weight: float = 0.3  # hybrid CTC/attention; 0 = pure attention (ESPnet's AN4 recipe uses 0.3)
    label_smoothing: float = 0.1
    max_length_ratio: float = 1.0  # decoding stops after this many tokens per encoder frame

    LIMITS: ClassVar[dict] = {
        "decoder_layers": POSITIVE,
        "decoder_ff_dim": POSITIVE,
        "ctc_weight": FRACTION,
        "label_smoothing": PROBABILITY,
        "max_length_ratio": POSITIVE,
    }


@dataclass
class TransformerAEDConfig(TransformerConfig, DecoderOptions):
    num_layers: int = 6  # encoder


@dataclass
class ConformerAEDConfig(ConformerConfig, DecoderOptions):
    num_layers: int = 4  # encoder


def _encoder_options(encoder_config, config):
    """The encoder's own options out of an encoder-decoder config."""
    return encoder_config(**{f.name: getattr(config, f.name) for f in dataclasses.fields(encoder_config)})


class _EncoderDecoder(TransformerDecoderMixin, AttentionModel):
    """An encoder of the zoo + a Transformer decoder of width ``d_model`` with ``heads`` heads (by
    default the encoder's own ``d_model`` and ``num_heads``: transformer_aed, conformer_aed)."""

    def __init__(self, encoder, vocab_size: int, config, d_model: int | None = None, heads: int | None = None):
        super().__init__(vocab_size, config.ctc_weight, config.label_smoothing, config.max_length_ratio)
        self.encoder = encoder
        self.encoder_dim = encoder.encoder_dim
        self.ctc_head = encoder.head if config.ctc_weight > 0 else None
        del encoder.head  # registered once, as ctc_head
        self.decoder = TransformerDecoder(
            vocab_size,
            d_model or config.d_model,
            heads or config.num_heads,
            config.decoder_layers,
            config.decoder_ff_dim,
            getattr(config, "dropout", 0.0),
        )

    def encode(self, features, feature_lengths):
        """(B, T, F), (B,) -> memory (B, T/4, d_model), memory_lengths (B,)."""
        return self.encoder.encode(features, feature_lengths)


class TransformerAED(_EncoderDecoder):
    """Attention: Transformer encoder + Transformer decoder, with an optional CTC branch (hybrid)."""

    def __init__(self, input_dim: int, vocab_size: int, config: TransformerAEDConfig):
        encoder = Transformer(input_dim, vocab_size, _encoder_options(TransformerConfig, config))
        super().__init__(encoder, vocab_size, config)


class ConformerAED(_EncoderDecoder):
    """Attention: Conformer encoder + Transformer decoder, with an optional CTC branch (hybrid)."""

    def __init__(self, input_dim: int, vocab_size: int, config: ConformerAEDConfig):
        encoder = Conformer(input_dim, vocab_size, _encoder_options(ConformerConfig, config))
        super().__init__(encoder, vocab_size, config)


@dataclass
class AEDOptions(DecoderOptions):
    """The attention-decoder head's options for any encoder (``<encoder>_aed``): the decoder's width is
    the encoder's output width, so only its number of heads is new."""

    decoder_heads: int = 4  # must divide the encoder's output width

    LIMITS: ClassVar[dict] = {"decoder_heads": POSITIVE}


class ComposedAED(_EncoderDecoder):
    """The attention-decoder head over any registered encoder (``encoder_class`` built from the
    config's encoder fields); the encoder's CTC head is the hybrid CTC branch."""

    encoder_class: ClassVar[type]
    encoder_config: ClassVar[type]

    def __init__(self, input_dim: int, vocab_size: int, config):
        encoder = self.encoder_class(input_dim, vocab_size, _encoder_options(self.encoder_config, config))
        if encoder.encoder_dim % config.decoder_heads:
            raise ValueError(
                f"decoder_heads {config.decoder_heads} must divide the encoder's output width {encoder.encoder_dim}"
            )
        super().__init__(encoder, vocab_size, config, d_model=encoder.encoder_dim, heads=config.decoder_heads)
