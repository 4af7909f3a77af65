"""Which search runs on a model: the one table from (head, mode) to a searcher and a tuning grid.

Models know nothing of search. A model declares two things through its contract
(:mod:`asrbench.models.base`): ``head_kind``, the head it decodes through ("ctc", "attention" or
"transducer"), and ``search_modes()``, the ``--mode`` values it offers, its default first (an
attention model or a transducer offers "ctc" only when it has a CTC branch). Everything else is
chosen here, for a PyTorch model and an exported one (:mod:`asrbench.deploy.onnx_runtime`) alike:

- :data:`SEARCHES`: (head, mode) -> the searcher builder and the grid ``asrbench tune`` searches;
- :data:`HEAD_SEARCHES`: per head, the cheapest search (greedy), the search the trainer scores dev
  with (and the loss from the same network outputs), and the Viterbi alignment for word times.

A mode the model does not declare fails in :func:`resolve_mode`, the one place, listing the modes
it has. A new head is one row per mode it offers here plus one :class:`HeadSearch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from asrbench.data.tokenizer import Tokenizer
from asrbench.decoding.alignment import ctc_alignments, subsampling_of, transducer_alignments
from asrbench.decoding.greedy import attention_greedy, ctc_greedy
from asrbench.decoding.searchers import (
    DecodeOptions,
    Searcher,
    TuningRequest,
    attention_model_searcher,
    attention_tuning_grid,
    ctc_searcher,
    ctc_tuning_grid,
    transducer_searcher,
    transducer_tuning_grid,
)
from asrbench.decoding.transducer_search import greedy_search
from asrbench.errors import AsrbenchError


@dataclass(frozen=True)
class Search:
    """How one (head, mode) decodes: ``build(model, tokenizer, options, data_dir, lm, lexicon)`` gives
    the searcher; ``grid(model, request)`` the options ``tune`` tries on dev."""

    build: Callable[..., Searcher]
    grid: Callable[[object, TuningRequest], list[DecodeOptions]]


def _ctc_grid(model, request: TuningRequest) -> list[DecodeOptions]:
    return ctc_tuning_grid(request)


def _attention_grid(model, request: TuningRequest) -> list[DecodeOptions]:
    return attention_tuning_grid(request, has_ctc=model.ctc_head is not None)


def _transducer_grid(model, request: TuningRequest) -> list[DecodeOptions]:
    return transducer_tuning_grid(request)


SEARCHES: dict[tuple[str, str], Search] = {
    ("ctc", "ctc"): Search(ctc_searcher, _ctc_grid),
    ("attention", "attention"): Search(attention_model_searcher, _attention_grid),
    ("attention", "ctc"): Search(ctc_searcher, _ctc_grid),  # the hybrid's CTC branch: lexicon and LM
    ("transducer", "transducer"): Search(transducer_searcher, _transducer_grid),
    ("transducer", "ctc"): Search(ctc_searcher, _ctc_grid),  # the auxiliary CTC branch
}


def resolve_mode(model, mode: str) -> str:
    """``--mode`` for this model: "auto" is its default (the first it declares); a mode it does not
    declare is a user error listing the ones it has."""
    modes = tuple(model.search_modes())
    if mode == "auto":
        return modes[0]
    if mode not in modes:
        branch = "" if "ctc" in modes or mode != "ctc" else " (it has no CTC branch: trained with ctc_weight 0)"
        raise AsrbenchError(
            f"--mode {mode}: this {model.head_kind} model decodes with --mode {' or '.join(modes)} only{branch}"
        )
    return mode


def search_for(model, mode: str) -> Search:
    return SEARCHES[(model.head_kind, resolve_mode(model, mode))]


def build_searcher(
    model, tokenizer: Tokenizer, options: DecodeOptions, data_dir: str | Path | None = None, lm=None, lexicon=None
) -> Searcher:
    """The searcher ``options`` select for ``model``; ``lm`` and ``lexicon`` may come already loaded
    (tuning builds one searcher per grid point and loads them once)."""
    return search_for(model, options.mode).build(model, tokenizer, options, data_dir, lm, lexicon)


def tuning_grid(model, request: TuningRequest) -> list[DecodeOptions]:
    """The grid ``asrbench tune`` searches on dev for this model and ``request.mode``."""
    return search_for(model, request.mode).grid(model, request)


# --- per head: greedy, dev and alignment -----------------------------------------------------------


@dataclass(frozen=True)
class HeadSearch:
    """What every head offers besides its modes' searches.

    - ``greedy(model, features (B, T, F), feature_lengths (B,)) -> token ids``: the cheapest search;
    - ``dev(model) -> Searcher``: what the trainer scores dev with after each epoch, with the loss
      from the same network outputs (``Searcher.loss``) so that dev costs one pass, not two;
    - ``align(model, features, feature_lengths, token_ids) -> [TokenAlignment | None]``: where each
      hypothesis's tokens sit on the output frames (None where the model cannot say, e.g. an
      attention model without a CTC branch), for word times.
    """

    greedy: Callable[..., list[list[int]]]
    dev: Callable[[object], Searcher]
    align: Callable[..., list]


def _ctc_greedy_decode(model, features, feature_lengths):
    return ctc_greedy(*model.ctc_log_probs(features, feature_lengths))


def _ctc_dev(model) -> Searcher:
    # The dev loss is the model's CTC loss; imported here because only training needs it, and an
    # exported model's transcribe (this module, without PyTorch models) must not load the registry.
    from asrbench.models.ctc import ctc_loss

    return Searcher(
        "dev",
        model.ctc_log_probs,
        lambda out: ctc_greedy(*out),
        {"kind": "dev"},
        loss=lambda out, targets, lengths: ctc_loss(out[0], out[1], targets, lengths),
    )


@torch.no_grad()
def _ctc_align(model, features, feature_lengths, token_ids):
    log_probs, lengths = model.ctc_log_probs(features, feature_lengths)
    return ctc_alignments(log_probs, lengths, feature_lengths, token_ids, subsampling_of(model))


@torch.no_grad()
def _attention_greedy_decode(model, features, feature_lengths):
    return attention_greedy(model, *model.encode(features, feature_lengths))


def _attention_dev_search(model, memory, memory_lengths):
    """The CTC branch's best path when there is one (it tracks the encoder from the first epoch,
    while a decoder that has not learned to align yet loops or stops early and makes greedy CER
    noise), else attention greedy."""
    if model.ctc_head is None:
        return attention_greedy(model, memory, memory_lengths)
    return ctc_greedy(model.ctc_head(memory), memory_lengths)


def _attention_dev(model) -> Searcher:
    return Searcher(
        "dev",
        model.encode,
        lambda out: _attention_dev_search(model, *out),
        {"kind": "dev"},
        loss=lambda out, targets, lengths: model.loss_from_memory(*out, targets, lengths),
    )


def _attention_align(model, features, feature_lengths, token_ids):
    """The CTC branch's Viterbi alignment; None for every utterance without a CTC branch (the
    attention weights say where the decoder looked, not when a token was spoken)."""
    if model.ctc_head is None:
        return [None] * len(token_ids)
    return _ctc_align(model, features, feature_lengths, token_ids)


@torch.no_grad()
def _transducer_greedy_search(model, encoded, lengths):
    return [hypothesis.token_ids for hypothesis in greedy_search(model, encoded, lengths, model.max_symbols_per_frame)]


@torch.no_grad()
def _transducer_greedy_decode(model, features, feature_lengths):
    return _transducer_greedy_search(model, *model.encode(features, feature_lengths))


def _transducer_dev(model) -> Searcher:
    return Searcher(
        "dev",
        model.encode,
        lambda out: _transducer_greedy_search(model, *out),
        {"kind": "dev"},
        loss=lambda out, targets, lengths: model.loss_from_encoded(*out, targets, lengths),
    )


@torch.no_grad()
def _transducer_align(model, features, feature_lengths, token_ids):
    """Viterbi alignment through the joiner's lattice: each token on the frame that emits it."""
    encoded, lengths = model.encode(features, feature_lengths)
    return transducer_alignments(model, encoded, lengths, feature_lengths, token_ids)


HEAD_SEARCHES: dict[str, HeadSearch] = {
    "ctc": HeadSearch(_ctc_greedy_decode, _ctc_dev, _ctc_align),
    "attention": HeadSearch(_attention_greedy_decode, _attention_dev, _attention_align),
    "transducer": HeadSearch(_transducer_greedy_decode, _transducer_dev, _transducer_align),
}


def greedy_decode(model, features: torch.Tensor, feature_lengths: torch.Tensor) -> list[list[int]]:
    """The head's cheapest search: token ids per utterance."""
    return HEAD_SEARCHES[model.head_kind].greedy(model, features, feature_lengths)


def greedy_searcher(model) -> Searcher:
    """:func:`greedy_decode` as a searcher (network and search timed together)."""
    return Searcher(
        "greedy",
        lambda features, lengths: (features, lengths),
        lambda out: greedy_decode(model, *out),
        {"kind": "greedy"},
    )


def dev_searcher(model) -> Searcher:
    """What the trainer runs on dev: the head's dev search and, from the same outputs, the loss."""
    return HEAD_SEARCHES[model.head_kind].dev(model)


def align(model, features: torch.Tensor, feature_lengths: torch.Tensor, token_ids: list[list[int]]) -> list:
    """Where each utterance's ``token_ids`` (from any search) sit on the model's output frames."""
    return HEAD_SEARCHES[model.head_kind].align(model, features, feature_lengths, token_ids)
