"""The written contracts between the models and everything that trains, decodes and tunes them.

The trainer, ``decode``, ``tune``, ``bench`` and the benchmark scripts call only what these
protocols name; they never branch on a model's name. Search is not the models' business: it is
chosen in :mod:`asrbench.decoding.search_table` from the ``head_kind`` and ``search_modes`` a model
declares. A family is a base class that
implements its protocol once (:class:`asrbench.models.ctc.CTCModel`,
:class:`asrbench.models.attention.AttentionModel`, :class:`asrbench.models.transducer.TransducerModel`)
plus a :class:`Family` record; the registry (:mod:`asrbench.models`) refuses a model class that satisfies no family.

Shapes: features ``(B, T, F)`` float, ``feature_lengths (B,)`` int64; targets concatenated
``(sum U,)`` with ``target_lengths (B,)``; token id 0 is the CTC blank.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Encoder(Protocol):
    """Acoustic encoder: ``encode(features (B, T, F), feature_lengths (B,)) -> (encoded (B, T', D),
    output_lengths (B,))`` with ``D == encoder_dim``. Every model of the zoo has one (dnn, cnn and
    crdnn included), so any encoder can back any head: a CTC projection, an attention decoder, or
    a transducer joiner."""

    encoder_dim: int
    # Declared capabilities, read by streaming and export (never probed with hasattr): an encoder
    # with chunk_streaming has ``encode_chunk`` and runs chunk by chunk when trained with
    # ``streaming: true`` (its ``streaming`` attribute).
    chunk_streaming: bool
    # Feature frames per output frame: what word times (output frame -> seconds), chunk sizes
    # (milliseconds -> output frames) and streaming latency read, never assume.
    subsampling_factor: int

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def acoustic_encoder(self) -> torch.nn.Module:
        """The module that holds the encoder's own capabilities: a CTC model itself, the wrapped
        encoder of an attention model or a transducer."""
        ...


@runtime_checkable
class ASRModel(Protocol):
    """What every family gives the trainer, and what it declares to decoding.

    Models know nothing of search: ``head_kind`` and ``search_modes`` are declarations, and
    :mod:`asrbench.decoding.search_table` chooses the searcher, the tuning grid, the dev search and
    the alignment from them (the one table from (head, mode) to search)."""

    head_kind: str  # "ctc" | "attention" | "transducer": the head it decodes through

    def compute_loss(
        self, features: torch.Tensor, feature_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
    ) -> torch.Tensor:
        """The training loss of the batch: a scalar, summed over utterances and divided by B."""
        ...

    def search_modes(self) -> tuple[str, ...]:
        """The decoding modes (``--mode``) this model offers, its default first (e.g. ("ctc",),
        ("attention", "ctc") for a hybrid with a CTC branch)."""
        ...


@runtime_checkable
class CTCFamily(ASRModel, Encoder, Protocol):
    """CTC models: ``forward(features, feature_lengths) -> (log_probs (B, T', V), output_lengths (B,))``,
    ``ctc_log_probs`` the same, for beam search."""

    def ctc_log_probs(
        self, features: torch.Tensor, feature_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class AttentionFamily(ASRModel, Encoder, Protocol):
    """Attention encoder-decoders: teacher-forced ``decoder_logits``, and the incremental
    ``init_state`` / ``step`` / ``reorder_state`` beam search drives; ``ctc_head`` is the hybrid
    CTC branch or None."""

    def decoder_logits(
        self, memory: torch.Tensor, memory_lengths: torch.Tensor, tokens: torch.Tensor, token_lengths: torch.Tensor
    ) -> torch.Tensor: ...

    def init_state(self, memory: torch.Tensor, memory_lengths: torch.Tensor): ...

    def step(self, state, prefixes: torch.Tensor) -> tuple[torch.Tensor, object]: ...

    def reorder_state(self, state, indices: torch.Tensor): ...

    def max_length(self, memory_length: int) -> int:
        """Search stops an utterance after this many tokens."""
        ...

    def loss_from_memory(
        self, memory: torch.Tensor, memory_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
    ) -> torch.Tensor:
        """``compute_loss`` from the encoder's output (dev scores loss and CER from one encoder pass)."""
        ...


@runtime_checkable
class TransducerFamily(ASRModel, Encoder, Protocol):
    """Transducers (RNN-T): the encoder, a prediction network over the tokens emitted so far, and a
    joiner of the two; ``ctc_head`` is the auxiliary CTC branch or None. What search drives, for
    ``N`` hypotheses at once (token id 0, the blank, is also the predictor's start symbol):

    - ``predictor_init_state(batch, device)``: the state of ``batch`` hypotheses that have read nothing;
    - ``predictor_step(tokens (N,), state) -> (predicted (N, P), state)``: read one token per
      hypothesis (the start symbol first, then each emitted token);
    - ``select_state(state, indices (M,))``: the states of hypotheses ``indices`` (reorder, repeat, drop);
    - ``merge_state(state, new_state, mask (N,) bool)``: ``new_state`` where ``mask``, else ``state``;
    - ``join(encoded (..., D), predicted (..., P)) -> log_probs (..., V)``: float32 log-softmax,
      broadcasting over the leading dimensions; ``<sos/eos>`` (``V - 1``) is always ``-inf``.
    """

    def predictor_init_state(self, batch: int, device: torch.device): ...

    def predictor_step(self, tokens: torch.Tensor, state) -> tuple[torch.Tensor, object]: ...

    def select_state(self, state, indices: torch.Tensor): ...

    def merge_state(self, state, new_state, mask: torch.Tensor): ...

    def join(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor: ...

    def joint_log_probs(self, encoded: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """encoded (B, T', D), targets (B, U) -> the lattice (B, T', U+1, V), for alignment."""
        ...

    def loss_from_encoded(
        self, encoded: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
    ) -> torch.Tensor:
        """``compute_loss`` from the encoder's output (dev scores loss and CER from one encoder pass)."""
        ...


def protocol_members(protocol: type) -> list[str]:
    """The attributes and methods a protocol (and the protocols it extends) requires."""
    names: list[str] = []
    for klass in reversed(protocol.__mro__):
        if klass is object or klass is Protocol or not getattr(klass, "_is_protocol", False):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in names:
                continue
            if inspect.isfunction(value) or isinstance(value, property):
                names.append(name)
        for name in getattr(klass, "__annotations__", {}):
            if not name.startswith("_") and name not in names:
                names.append(name)
    return names


@dataclass(frozen=True)
class Family:
    """A model family: the protocol its models satisfy and the base class that implements it."""

    name: str  # shown by `asrbench models`
    protocol: type
    base: type
    default_mode: str  # the decoding mode (DecodeOptions.mode) "auto" means for its models

    def missing(self, model_class: type) -> list[str]:
        """What ``model_class`` lacks to belong to this family ([] when it belongs).

        Attributes a model sets in ``__init__`` (``encoder_dim``) cannot be seen on the class, so
        only the methods are checked here; the shape tests build every model and check the rest.
        """
        if not issubclass(model_class, self.base):
            return [f"a subclass of {self.base.__name__}"]
        return [
            name
            for name in protocol_members(self.protocol)
            if name not in ("encoder_dim", "head_kind", "chunk_streaming", "subsampling_factor")
            and not callable(getattr(model_class, name, None))
        ]
