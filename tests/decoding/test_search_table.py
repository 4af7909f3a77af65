"""The one table from (head, mode) to search (asrbench.decoding.search_table): every mode a model
declares has a searcher and a tuning grid there; a mode it does not declare fails in one place."""

from __future__ import annotations

import pytest
import torch
from helpers import INPUT_DIM, make

from asrbench.data.tokenizer import CharTokenizer
from asrbench.decoding.search_table import (
    HEAD_SEARCHES,
    SEARCHES,
    build_searcher,
    greedy_decode,
    resolve_mode,
    tuning_grid,
)
from asrbench.decoding.searchers import DecodeOptions, TuningRequest
from asrbench.errors import AsrbenchError
from asrbench.models import MODELS

TOKENIZER = CharTokenizer.build(["ab ba", "abc"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_declared_mode_of_every_model_has_a_search(name):
    model = make(name).eval()
    modes = model.search_modes()
    assert model.head_kind in HEAD_SEARCHES
    assert resolve_mode(model, "auto") == modes[0] == MODELS[name].family.default_mode
    features, lengths = torch.randn(2, 60, INPUT_DIM), torch.tensor([60, 41])
    for mode in modes:
        assert (model.head_kind, mode) in SEARCHES
        searcher = build_searcher(model, TOKENIZER, DecodeOptions(mode=mode))
        with torch.no_grad():
            hypotheses = searcher(features, lengths)
        assert len(hypotheses) == 2 and all(isinstance(token, int) for hyp in hypotheses for token in hyp)
        grid = tuning_grid(model, TuningRequest(beams=(1, 4), mode=mode))
        assert grid and all(options.mode == mode for options in grid)
    with torch.no_grad():
        assert len(greedy_decode(model, features, lengths)) == 2


class _Declared:
    """A model as decoding sees it: only its declarations."""

    head_kind = "attention"

    def search_modes(self):
        return ("attention",)


def test_a_mode_the_model_does_not_declare_is_one_error_listing_its_modes():
    with pytest.raises(
        AsrbenchError,
        match=r"^--mode ctc: this attention model decodes with --mode attention only "
        r"\(it has no CTC branch: trained with ctc_weight 0\)$",
    ):
        resolve_mode(_Declared(), "ctc")
    with pytest.raises(
        AsrbenchError,
        match=r"^--mode transducer: this attention model decodes with --mode "
        r"attention only$",
    ):
        build_searcher(_Declared(), TOKENIZER, DecodeOptions(mode="transducer"))
    assert resolve_mode(_Declared(), "auto") == "attention"
