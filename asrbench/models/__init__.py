"""The model registry: name -> (options dataclass, module class, family).

A model belongs to a family (:mod:`asrbench.models.base`): it derives from the family's base class
and so satisfies its protocol, which is everything the trainer, ``decode``, ``tune`` and ``bench``
call. :func:`register` checks that when the entry is made, so a model that satisfies no family
fails at import time with what it lacks, never later as a silently wrong decode.

- CTC (:class:`asrbench.models.ctc.CTCModel`): ``encode`` + a CTC head; ``forward(features (B, T, F),
  feature_lengths (B,)) -> (log_probs (B, T', V), output_lengths (B,))``, trained with CTC (blank 0).
- Attention encoder-decoders (:class:`asrbench.models.attention.AttentionModel`): an encoder, a
  decoder trained with label-smoothed cross-entropy, optionally a CTC branch (hybrid); ``encode``,
  ``init_state``, ``step`` and ``reorder_state`` drive beam search.
- Transducers (:class:`asrbench.models.transducer.TransducerModel`): an encoder, a prediction
  network and a joiner, trained with the RNN-T loss (optionally plus CTC on the encoder);
  ``predictor_init_state``, ``predictor_step``, ``select_state``, ``merge_state`` and ``join``
  drive greedy and modified beam search.

Adding a model is one file (options dataclass + module class) and one :func:`register` line
below; see docs/extending.md.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from torch import nn

from asrbench.errors import AsrbenchError, did_you_mean
from asrbench.models.aed import ConformerAED, ConformerAEDConfig, TransformerAED, TransformerAEDConfig
from asrbench.models.attention import ATTENTION
from asrbench.models.base import Family
from asrbench.models.cnn import CNN, CNNConfig
from asrbench.models.common import use_fast_dropout
from asrbench.models.conformer import Conformer, ConformerConfig
from asrbench.models.crdnn import CRDNN, CRDNNConfig
from asrbench.models.ctc import CTC
from asrbench.models.dnn import DNN, DNNConfig
from asrbench.models.las import LAS, LASConfig
from asrbench.models.rnn import GRU, LSTM, RNNConfig
from asrbench.models.transducer import (
    TRANSDUCER,
    ConformerTransducer,
    ConformerTransducerConfig,
    LSTMTransducer,
    LSTMTransducerConfig,
)
from asrbench.models.transformer import Transformer, TransformerConfig
from asrbench.recipe.schema import build_dataclass

FAMILIES: tuple[Family, ...] = (CTC, ATTENTION, TRANSDUCER)


class ModelEntry(NamedTuple):
    config: type  # the options dataclass (recipe ``models.<name>`` keys)
    model: type[nn.Module]  # built as model(input_dim, vocab_size, config)
    family: Family


MODELS: dict[str, ModelEntry] = {}


def family_of(model_class: type) -> Family:
    """The family ``model_class`` belongs to; TypeError naming what it lacks when it belongs to none."""
    lacking = {}
    for family in FAMILIES:
        missing = family.missing(model_class)
        if not missing:
            return family
        lacking[family.name] = missing
    detail = "; ".join(f"{name} needs {', '.join(missing)}" for name, missing in lacking.items())
    raise TypeError(f"{model_class.__name__} satisfies no model family ({detail})")


def register(name: str, config_class: type, model_class: type[nn.Module]) -> None:
    """Add a model to the registry; its family is checked here (TypeError when it has none)."""
    if name in MODELS:
        raise TypeError(f"model '{name}' is registered twice")
    if not dataclasses.is_dataclass(config_class):
        raise TypeError(f"model '{name}': its options {config_class.__name__} must be a dataclass")
    MODELS[name] = ModelEntry(config_class, model_class, family_of(model_class))


def unregister(name: str) -> None:
    """Remove a model (tests and plugins that register their own)."""
    MODELS.pop(name, None)


register("dnn", DNNConfig, DNN)
register("cnn", CNNConfig, CNN)
register("lstm", RNNConfig, LSTM)
register("gru", RNNConfig, GRU)
register("crdnn", CRDNNConfig, CRDNN)
register("transformer", TransformerConfig, Transformer)
register("conformer", ConformerConfig, Conformer)
register("las", LASConfig, LAS)
register("transformer_aed", TransformerAEDConfig, TransformerAED)
register("conformer_aed", ConformerAEDConfig, ConformerAED)
register("conformer_transducer", ConformerTransducerConfig, ConformerTransducer)
register("lstm_transducer", LSTMTransducerConfig, LSTMTransducer)


def _entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise AsrbenchError(f"unknown model '{name}'{did_you_mean(name, MODELS)} (valid models: {', '.join(MODELS)})")
    return MODELS[name]


def model_config_class(name: str) -> type:
    return _entry(name).config


def model_family(name: str) -> Family:
    return _entry(name).family


def default_mode(name: str) -> str:
    """The decoding mode ``--mode auto`` means for this model: "ctc", "attention" or "transducer"."""
    return _entry(name).family.default_mode


def build_model(name: str, options: dict, input_dim: int, vocab_size: int) -> nn.Module:
    entry = _entry(name)
    config = build_dataclass(entry.config, options, f"model {name}")
    try:
        model = entry.model(input_dim, vocab_size, config)
    except ValueError as err:  # an option value the model refuses (e.g. crdnn rnn_type, gru forget_bias)
        raise AsrbenchError(f"model {name}: {err}") from None
    return use_fast_dropout(model)


def describe_model(name: str) -> str:
    """What the model is, in one line: the first line of its class docstring."""
    model_class = _entry(name).model
    return (model_class.__doc__ or model_class.__name__).strip().splitlines()[0]


def default_options(name: str) -> dict:
    return dataclasses.asdict(model_config_class(name)())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
