"""The model registry: name -> (options dataclass, module class).

Two families, one contract for the trainer and the decoder (``compute_loss``, ``greedy_decode``,
and ``ctc_log_probs`` where a CTC output exists):

- CTC models (``models.common.CTCModel``): ``forward(features (B, T, F), feature_lengths (B,))
  -> (log_probs (B, T', V), output_lengths (B,))``, trained with CTC (blank = 0).
- Attention encoder-decoders (``models.attention.AttentionModel``): a decoder trained with
  label-smoothed cross-entropy, optionally with a CTC branch (hybrid CTC/attention); ``encode``,
  ``init_state``, ``step`` and ``reorder_state`` drive beam search.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from asrbench.errors import AsrbenchError, did_you_mean
from asrbench.models.aed import ConformerAED, ConformerAEDConfig, TransformerAED, TransformerAEDConfig
from asrbench.models.cnn import CNN, CNNConfig
from asrbench.models.conformer import Conformer, ConformerConfig
from asrbench.models.crdnn import CRDNN, CRDNNConfig
from asrbench.models.dnn import DNN, DNNConfig
from asrbench.models.las import LAS, LASConfig
from asrbench.models.rnn import GRU, LSTM, RNNConfig
from asrbench.models.transformer import Transformer, TransformerConfig

MODELS: dict[str, tuple[type, type[nn.Module]]] = {
    "dnn": (DNNConfig, DNN),
    "cnn": (CNNConfig, CNN),
    "lstm": (RNNConfig, LSTM),
    "gru": (RNNConfig, GRU),
    "crdnn": (CRDNNConfig, CRDNN),
    "transformer": (TransformerConfig, Transformer),
    "conformer": (ConformerConfig, Conformer),
    "las": (LASConfig, LAS),
    "transformer_aed": (TransformerAEDConfig, TransformerAED),
    "conformer_aed": (ConformerAEDConfig, ConformerAED),
}


def _entry(name: str) -> tuple[type, type[nn.Module]]:
    if name not in MODELS:
        raise AsrbenchError(f"unknown model '{name}'{did_you_mean(name, MODELS)} (valid models: {', '.join(MODELS)})")
    return MODELS[name]


def model_config_class(name: str) -> type:
    return _entry(name)[0]


def build_model(name: str, options: dict, input_dim: int, vocab_size: int) -> nn.Module:
    config_class, model_class = _entry(name)
    from asrbench.config import build_dataclass

    config = build_dataclass(config_class, options, f"model {name}")
    from asrbench.models.common import use_fast_dropout

    try:
        model = model_class(input_dim, vocab_size, config)
    except ValueError as err:  # an option value the model refuses (e.g. crdnn rnn_type, gru forget_bias)
        raise AsrbenchError(f"model {name}: {err}") from None
    return use_fast_dropout(model)


def describe_model(name: str) -> str:
    """What the model is, in one line: the first line of its class docstring."""
    model_class = _entry(name)[1]
    return (model_class.__doc__ or model_class.__name__).strip().splitlines()[0]


def default_options(name: str) -> dict:
    return dataclasses.asdict(model_config_class(name)())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
