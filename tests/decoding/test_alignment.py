"""Token alignment for word times: CTC and transducer Viterbi against brute force, word grouping."""

from __future__ import annotations

import itertools

import pytest
import torch
from helpers import TINY, make

from asrbench.data.tokenizer import CharTokenizer
from asrbench.decoding.alignment import (
    TokenAlignment,
    ctc_viterbi,
    transducer_viterbi,
    word_groups,
    word_spans,
)
from asrbench.decoding.search_table import align


def _brute_ctc(log_probs: torch.Tensor, tokens: list[int]) -> list[tuple[int, int]] | None:
    """The best CTC path by enumeration, as (first, last) frame per token."""
    frames, vocab = log_probs.shape
    best, best_path = float("-inf"), None
    for path in itertools.product(range(vocab), repeat=frames):
        if [k for k, _ in itertools.groupby(path) if k != 0] != tokens:
            continue
        score = sum(float(log_probs[t, k]) for t, k in enumerate(path))
        if score > best:
            best, best_path = score, path
    if best_path is None:
        return None
    spans: list[list[int]] = []
    previous = 0
    for t, k in enumerate(best_path):
        if k != 0 and k != previous:
            spans.append([t, t])
        elif k != 0:
            spans[-1][1] = t
        previous = k
    return [tuple(span) for span in spans]


def test_ctc_viterbi_is_the_best_path_found_by_enumeration():
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(40):
        log_probs = torch.randn(6, 3, generator=generator).log_softmax(-1)
        count = int(torch.randint(1, 4, (), generator=generator))
        tokens = torch.randint(1, 3, (count,), generator=generator).tolist()
        expected = _brute_ctc(log_probs, tokens)
        if expected is None:
            continue
        spans, probabilities = ctc_viterbi(log_probs, tokens)
        assert spans == expected, (tokens, spans, expected)
        for (first, last), token, probability in zip(spans, tokens, probabilities, strict=True):
            assert probability == pytest.approx(float(log_probs[first : last + 1, token].exp().max()))
        checked += 1
    assert checked > 30


def test_ctc_viterbi_repeated_tokens_need_a_blank_between_them():
    log_probs = torch.full((5, 3), -5.0)
    log_probs[:, 1] = -0.1  # token 1 everywhere: "1 1" still needs a blank to split the repeat
    spans, _ = ctc_viterbi(log_probs.log_softmax(-1), [1, 1])
    assert spans[0][1] + 1 < spans[1][0]


def test_ctc_viterbi_too_few_frames_splits_evenly_with_zero_confidence():
    spans, probabilities = ctc_viterbi(torch.zeros(2, 3).log_softmax(-1), [1, 1, 2])
    assert len(spans) == 3 and probabilities == [0.0, 0.0, 0.0]
    assert all(0 <= first <= last < 2 for first, last in spans)


def _brute_transducer(lattice: torch.Tensor, tokens: list[int]) -> list[int]:
    """Frame emitting each token on the best path (T blanks and U tokens, ending with a blank)."""
    frames, count = lattice.size(0), len(tokens)
    best, best_frames = float("-inf"), None
    for positions in itertools.combinations(range(frames + count - 1), count):
        t = u = 0
        score, emitted = 0.0, []
        for step in range(frames + count):
            if step in positions:
                score += float(lattice[t, u, tokens[u]])
                emitted.append(t)
                u += 1
            else:
                score += float(lattice[t, u, 0])
                t += 1
        if score > best:
            best, best_frames = score, emitted
    return best_frames


def test_transducer_viterbi_is_the_best_path_found_by_enumeration():
    generator = torch.Generator().manual_seed(1)
    for _ in range(30):
        count = int(torch.randint(1, 4, (), generator=generator))
        tokens = torch.randint(1, 3, (count,), generator=generator).tolist()
        lattice = torch.randn(4, count + 1, 3, generator=generator).log_softmax(-1)
        spans, probabilities = transducer_viterbi(lattice, tokens)
        assert [first for first, _ in spans] == _brute_transducer(lattice, tokens)
        for u, ((frame, _), probability) in enumerate(zip(spans, probabilities, strict=True)):
            assert probability == pytest.approx(float(lattice[frame, u, tokens[u]].exp()))


def test_words_split_at_the_separator_and_take_their_tokens_times_and_lowest_confidence():
    tokenizer = CharTokenizer.build(["AB C"])
    tokens = tokenizer.encode("AB C")
    assert word_groups(tokens, tokenizer) == [[0, 1], [3]]
    alignment = TokenAlignment(
        tokens,
        spans=[(2, 2), (4, 5), (7, 7), (10, 11)],
        probabilities=[0.9, 0.6, 1.0, 0.8],
        frames=20,
        input_frames=80,
        subsampling=4,
    )
    words = word_spans(alignment, tokenizer, frame_shift_seconds=0.01)  # 40 ms output frames
    assert [w.word for w in words] == ["AB", "C"]
    assert (words[0].start, words[0].end, words[0].confidence) == (0.08, 0.24, 0.6)
    assert (words[1].start, words[1].end) == (0.4, 0.48)


def test_subword_word_start_pieces_begin_new_words():
    class Pieces:  # sentencepiece-like: no separator, "▁" pieces start words
        word_separator_id = None
        word_start_ids = frozenset({1, 3})
        special_ids = frozenset({0})

    assert word_groups([1, 2, 3, 1, 2], Pieces()) == [[0, 1], [2], [3, 4]]


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_family_aligns_its_hypotheses_within_their_frames(name: str):
    model = make(name).eval()
    features, lengths = torch.randn(2, 60, 20), torch.tensor([60, 41])
    alignments = align(model, features, lengths, [[1, 2, 3], [4]])
    assert len(alignments) == 2
    for alignment, tokens, length in zip(alignments, [[1, 2, 3], [4]], lengths.tolist(), strict=True):
        if alignment is None:  # an attention model without a CTC branch
            assert getattr(model, "ctc_head", "absent") is None
            continue
        assert alignment.tokens == tokens and alignment.input_frames == length
        assert all(0 <= first <= last < alignment.frames for first, last in alignment.spans)
        assert [first for first, _ in alignment.spans] == sorted(first for first, _ in alignment.spans)
        assert all(0.0 <= p <= 1.0 for p in alignment.probabilities)
