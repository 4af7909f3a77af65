"""Stage 3, the models: options in, ``nn.Module``s out; the registry: name -> (options dataclass,
module class, family).

Enters: a model's name and options (a recipe's ``models.<name>``, a checkpoint's config), the feature
dimension and the vocabulary size. Leaves: a module that gives the trainer its loss and declares to
decoding its ``head_kind`` and ``search_modes`` (search is chosen in :mod:`asrbench.decoding`, never
here); nothing here reads a file. Encoders and heads are registered apart and composed: every
encoder under every head, ``<encoder>``, ``<encoder>_aed``, ``<encoder>_transducer`` (``MATRIX``;
``las`` is the lstm row's attention model).

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

Adding an encoder is one file and one :func:`register_encoder` line below (it then works under every
head); a head is one file, one :func:`register_head` line and its searchers in
:mod:`asrbench.decoding.search_table`; see docs/extending.md.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from torch import nn

from asrbench.errors import AsrbenchError, did_you_mean
from asrbench.models.aed import (
    AEDOptions,
    ComposedAED,
    ConformerAED,
    ConformerAEDConfig,
    TransformerAED,
    TransformerAEDConfig,
)
from asrbench.models.attention import ATTENTION
from asrbench.models.base import Family
from asrbench.models.cnn import CNN, CNNConfig
from asrbench.models.common import use_fast_dropout
from asrbench.models.conformer import Conformer, ConformerConfig
from asrbench.models.crdnn import CRDNN, CRDNNConfig
from asrbench.models.ctc import CTC
from asrbench.models.dnn import DNN, DNNConfig
from asrbench.models.e_branchformer import EBranchformer, EBranchformerConfig
from asrbench.models.fast_conformer import FastConformer, FastConformerConfig
from asrbench.models.las import LAS, LASConfig
from asrbench.models.rnn import GRU, LSTM, RNNConfig
from asrbench.models.transducer import (
    TRANSDUCER,
    ComposedTransducer,
    ConformerTransducer,
    ConformerTransducerConfig,
    LSTMTransducer,
    LSTMTransducerConfig,
    TransducerOptions,
)
from asrbench.models.transformer import Transformer, TransformerConfig
from asrbench.models.zipformer import Zipformer, ZipformerConfig
from asrbench.recipe.schema import build_dataclass, check_limits

FAMILIES: list[Family] = [CTC, ATTENTION, TRANSDUCER]


class ModelEntry(NamedTuple):
    config: type  # the options dataclass (recipe ``models.<name>`` keys)
    model: type[nn.Module]  # built as model(input_dim, vocab_size, config)
    family: Family


class EncoderEntry(NamedTuple):
    config: type  # the encoder's options dataclass
    model: type[nn.Module]  # a CTC model (its ``encode`` + a CTC head): the encoder and its CTC cell at once


class HeadEntry(NamedTuple):
    suffix: str  # the model name is <encoder>_<suffix> ("" for CTC: the encoder's own name)
    options: type | None  # the head's options dataclass, added to the encoder's (None: CTC, the encoder's own)
    base: type | None  # built as base subclass with encoder_class / encoder_config (None: the encoder itself)
    describe: str  # "{encoder}" is replaced: the first line of the composed class's docstring


MODELS: dict[str, ModelEntry] = {}
ENCODERS: dict[str, EncoderEntry] = {}
HEADS: dict[str, HeadEntry] = {}
MATRIX: dict[tuple[str, str], str] = {}  # (encoder, head) -> model name
# Cells whose model keeps an older, hand-written name (its options and checkpoints included).
NAMED_CELLS: dict[tuple[str, str], str] = {("lstm", "aed"): "las"}


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


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))  # aed -> Aed


def _compose(encoder: str, head: str) -> None:
    """Register the model of one cell of the matrix, unless a hand-written model holds its name."""
    enc, spec = ENCODERS[encoder], HEADS[head]
    name = NAMED_CELLS.get((encoder, head), f"{encoder}_{spec.suffix}" if spec.suffix else encoder)
    MATRIX[(encoder, head)] = name
    if name in MODELS:  # transformer_aed, las, conformer_transducer ...: written before the matrix
        return
    if spec.base is None:
        register(name, enc.config, enc.model)
        return
    assert spec.options is not None  # a head built on a base class adds its options
    clash = {f.name for f in dataclasses.fields(enc.config)} & {f.name for f in dataclasses.fields(spec.options)}
    if clash:
        raise TypeError(f"encoder '{encoder}' and head '{head}' both have the options {', '.join(sorted(clash))}")
    class_name = enc.model.__name__ + _camel(spec.suffix)  # CNNTransducer, GRUAed
    config = dataclasses.make_dataclass(f"{class_name}Config", [], bases=(enc.config, spec.options))
    model = type(
        class_name,
        (spec.base,),
        {
            "encoder_class": enc.model,
            "encoder_config": enc.config,
            "__module__": spec.base.__module__,
            "__doc__": spec.describe.format(encoder=encoder),
        },
    )
    register(name, config, model)


def register_encoder(name: str, config_class: type, encoder_class: type[nn.Module]) -> None:
    """Add an encoder: its options dataclass and its class (a CTC model: ``encode`` + ``head``). It
    is at once the CTC model ``name`` and, under every registered head, ``name_<suffix>``."""
    if name in ENCODERS:
        raise TypeError(f"encoder '{name}' is registered twice")
    ENCODERS[name] = EncoderEntry(config_class, encoder_class)
    for head in HEADS:
        _compose(name, head)


def register_head(
    name: str, suffix: str, options: type | None, base: type | None, describe: str, family: Family | None = None
) -> None:
    """Add a head: its options dataclass and the base class composed with each encoder (a class
    taking ``(input_dim, vocab_size, config)`` that builds ``encoder_class`` from ``encoder_config``'s
    fields of the config). A head of a new family passes its :class:`Family`; its searchers go in
    :mod:`asrbench.decoding.search_table`."""
    if name in HEADS:
        raise TypeError(f"head '{name}' is registered twice")
    if family is not None and family not in FAMILIES:
        FAMILIES.append(family)
    HEADS[name] = HeadEntry(suffix, options, base, describe)
    for encoder in ENCODERS:
        _compose(encoder, name)


def unregister_encoder(name: str) -> None:
    """Remove an encoder and the models of its row (tests and plugins)."""
    ENCODERS.pop(name, None)
    for cell in [cell for cell in MATRIX if cell[0] == name]:
        unregister(MATRIX.pop(cell))


def unregister_head(name: str) -> None:
    """Remove a head and the models of its column (tests and plugins)."""
    HEADS.pop(name, None)
    for cell in [cell for cell in MATRIX if cell[1] == name]:
        unregister(MATRIX.pop(cell))


def model_cell(name: str) -> tuple[str, str] | None:
    """(encoder, head) of a model of the matrix; None for one outside it."""
    return next((cell for cell, model in MATRIX.items() if model == name), None)


# Models written before the matrix keep their names, classes, options and checkpoints; each fills
# its cell (las is the lstm row's attention decoder: Listen, Attend and Spell's LSTM decoder).
register("las", LASConfig, LAS)
register("transformer_aed", TransformerAEDConfig, TransformerAED)
register("conformer_aed", ConformerAEDConfig, ConformerAED)
register("conformer_transducer", ConformerTransducerConfig, ConformerTransducer)
register("lstm_transducer", LSTMTransducerConfig, LSTMTransducer)

register_head("ctc", "", None, None, "")
register_head(
    "aed",
    "aed",
    AEDOptions,
    ComposedAED,
    "Attention: {encoder} encoder + Transformer decoder, with an optional CTC branch (hybrid).",
)
register_head(
    "transducer",
    "transducer",
    TransducerOptions,
    ComposedTransducer,
    "Transducer: {encoder} encoder + prediction network (stateless by default) + joiner, optional CTC branch.",
)

register_encoder("dnn", DNNConfig, DNN)
register_encoder("cnn", CNNConfig, CNN)
register_encoder("lstm", RNNConfig, LSTM)
register_encoder("gru", RNNConfig, GRU)
register_encoder("crdnn", CRDNNConfig, CRDNN)
register_encoder("transformer", TransformerConfig, Transformer)
register_encoder("conformer", ConformerConfig, Conformer)
register_encoder("fast_conformer", FastConformerConfig, FastConformer)
register_encoder("e_branchformer", EBranchformerConfig, EBranchformer)
register_encoder("zipformer", ZipformerConfig, Zipformer)

# `asrbench models` and the error messages list the models row by row of the matrix.
_ordered = {name: MODELS[name] for name in [*MATRIX.values(), *MODELS] if name in MODELS}
MODELS.clear()
MODELS.update(_ordered)


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
    # The options' LIMITS are their one statement of valid values; checked here for every caller
    # (a recipe checks them first, to name the --set that gave a bad value).
    check_limits(config, "model", {}, f"model {name}")
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


def parameter_counts(options: dict[str, dict], input_dim: int, vocab_size: int) -> dict[str, int]:
    """Every model's parameter count: at ``options[name]`` where given, else at its defaults."""
    return {
        name: count_parameters(build_model(name, options.get(name, default_options(name)), input_dim, vocab_size))
        for name in MODELS
    }
