"""Greedy (best-path) CTC decoding on hand-built log-probs."""

from __future__ import annotations

import pytest
import torch

from asrbench.data.tokenizer import CharTokenizer
from asrbench.decoding.greedy import ctc_greedy


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return CharTokenizer.build(["YES NO", "NO YES", "NO'S"])


def log_probs_for(paths: list[list[int]], vocab: int = 6) -> torch.Tensor:
    """(B, T, V) log-probs whose best path is ``paths[b]`` (padded with blanks to the longest)."""
    time = max(len(path) for path in paths)
    scores = torch.full((len(paths), time, vocab), -5.0)
    for b, path in enumerate(paths):
        for t in range(time):
            scores[b, t, path[t] if t < len(path) else 0] = 0.0
    return scores.log_softmax(-1)


def test_ctc_greedy_merges_repeats_and_removes_blanks():
    log_probs = log_probs_for([[0, 2, 2, 0, 3, 3, 3, 0, 0, 2]])
    assert ctc_greedy(log_probs, torch.tensor([10])) == [[2, 3, 2]]


def test_ctc_greedy_keeps_repeats_separated_by_blank():
    log_probs = log_probs_for([[4, 0, 4, 4, 0, 0, 4]])
    assert ctc_greedy(log_probs, torch.tensor([7])) == [[4, 4, 4]]


def test_ctc_greedy_all_blank_is_empty():
    assert ctc_greedy(log_probs_for([[0, 0, 0]]), torch.tensor([3])) == [[]]


def test_ctc_greedy_respects_lengths():
    # Frames past each utterance's length are padding: whatever they say must be ignored.
    log_probs = log_probs_for([[2, 3, 4, 5, 5], [3, 0, 3, 5, 2]])
    assert ctc_greedy(log_probs, torch.tensor([5, 3])) == [[2, 3, 4, 5], [3, 3]]
    assert ctc_greedy(log_probs, torch.tensor([2, 1])) == [[2, 3], [3]]


def test_ctc_greedy_repeat_across_the_length_boundary():
    log_probs = log_probs_for([[2, 2, 2, 2]])
    assert ctc_greedy(log_probs, torch.tensor([2])) == [[2]]


def test_ctc_greedy_decodes_through_the_tokenizer(tokenizer):
    y, e, s, space, n, o = tokenizer.encode("YES NO")
    path = [y, y, 0, e, s, s, 0, space, n, 0, o, o]
    ids = ctc_greedy(log_probs_for([path], vocab=len(tokenizer)), torch.tensor([len(path)]))[0]
    assert tokenizer.decode(ids) == "YES NO"
