"""asrbench/scoring/metrics.py, the arithmetic: corpus WER/CER and error counts against an independent
Levenshtein distance, and the text normalization both sides go through (asrbench/text.py).

The files, alignments, trn/sclite, reports and the `score` command: tests/scoring/test_scoring_reports.py.
"""

from __future__ import annotations

import random

import pytest
from helpers import levenshtein

from asrbench.errors import AsrbenchError
from asrbench.scoring.metrics import error_rates
from asrbench.text import DEFAULT_NORMALIZER, NORMALIZERS, normalize


def test_levenshtein_reference_implementation():
    assert levenshtein(list("kitten"), list("sitting")) == 3
    assert levenshtein([], list("abc")) == 3
    assert levenshtein(list("abc"), []) == 3
    assert levenshtein(list("abc"), list("abc")) == 0


WORDS = ["YES", "NO", "THE", "CAT", "SAT", "ON", "A", "MAT", "DON'T", "GO", "IT'S", "FINE", "X"]


def random_sentence(rng: random.Random, min_words: int = 1) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, 8)))


def mutate(rng: random.Random, sentence: str) -> str:
    words = sentence.split()
    for _ in range(rng.randint(0, 4)):
        action = rng.choice(["sub", "del", "ins"])
        if action == "ins" or not words:
            words.insert(rng.randint(0, len(words)), rng.choice(WORDS))
        elif action == "del":
            words.pop(rng.randrange(len(words)))
        else:
            words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


@pytest.mark.parametrize("seed", range(200))
def test_wer_and_cer_equal_levenshtein_on_random_sentences(seed):
    rng = random.Random(seed)
    references = [random_sentence(rng) for _ in range(rng.randint(1, 4))]
    hypotheses = [mutate(rng, ref) if rng.random() < 0.8 else random_sentence(rng, 0) for ref in references]
    rates = error_rates(references, hypotheses)

    word_errors = sum(levenshtein(r.split(), h.split()) for r, h in zip(references, hypotheses, strict=True))
    words = sum(len(r.split()) for r in references)
    char_errors = sum(levenshtein(list(r), list(h)) for r, h in zip(references, hypotheses, strict=True))
    characters = sum(len(r) for r in references)  # spaces count as characters

    assert rates.words == words
    assert rates.characters == characters
    assert rates.substitutions + rates.deletions + rates.insertions == word_errors
    assert rates.char_substitutions + rates.char_deletions + rates.char_insertions == char_errors
    assert rates.wer == pytest.approx(100.0 * word_errors / words)
    assert rates.cer == pytest.approx(100.0 * char_errors / characters)
    assert rates.utterances == len(references)
    assert rates.sentence_errors == sum(r != h for r, h in zip(references, hypotheses, strict=True))
    # Every reference word is either matched, substituted or deleted.
    assert rates.substitutions + rates.deletions <= words


def test_counts_on_hand_examples():
    # One substitution (B -> X) and one insertion (D).
    rates = error_rates(["A B C"], ["A X C D"])
    assert (rates.substitutions, rates.deletions, rates.insertions, rates.words) == (1, 0, 1, 3)
    assert rates.wer == pytest.approx(200 / 3)
    # Two deletions.
    rates = error_rates(["THE CAT SAT"], ["CAT"])
    assert (rates.substitutions, rates.deletions, rates.insertions) == (0, 2, 0)
    assert rates.wer == pytest.approx(200 / 3)
    # Characters: "CAT" -> "CART" is one insertion over 3 characters.
    rates = error_rates(["CAT"], ["CART"])
    assert (rates.char_substitutions, rates.char_deletions, rates.char_insertions) == (0, 0, 1)
    assert rates.characters == 3
    assert rates.cer == pytest.approx(100 / 3)
    assert rates.wer == 100.0


def test_counts_are_summed_over_utterances():
    rates = error_rates(["A B", "C D E"], ["A B", "C E"])
    assert rates.words == 5 and rates.deletions == 1
    assert rates.wer == pytest.approx(20.0)
    assert rates.sentence_errors == 1 and rates.utterances == 2


def test_cer_counts_spaces():
    # Joining two words deletes the space: one character error out of 5 ("AB CD").
    rates = error_rates(["AB CD"], ["ABCD"])
    assert rates.characters == 5
    assert rates.char_deletions == 1
    assert rates.cer == pytest.approx(20.0)
    assert rates.wer == 100.0  # one substitution and one deletion over 2 words


def test_wer_can_exceed_100_percent():
    rates = error_rates(["A"], ["B C D"])
    assert rates.wer == pytest.approx(300.0)


def test_empty_hypothesis_deletes_everything():
    rates = error_rates(["HELLO WORLD"], [""])
    assert (rates.deletions, rates.substitutions, rates.insertions) == (2, 0, 0)
    assert rates.wer == 100.0
    assert rates.cer == 100.0
    assert rates.char_deletions == len("HELLO WORLD")


def test_no_utterances():
    rates = error_rates([], [])
    assert rates.wer is None and rates.utterances == 0 and rates.words == 0  # undefined, not 0%


def test_mismatched_list_lengths_are_an_error():
    with pytest.raises(ValueError):
        error_rates(["A", "B"], ["A"])


def test_result_records_the_normalizer():
    assert error_rates(["A"], ["A"]).normalizer == DEFAULT_NORMALIZER
    rates = error_rates(["Yes"], ["yes"], normalizer="none")
    assert rates.normalizer == "none"
    assert rates.wer == 100.0  # "none" keeps case
    assert rates.to_dict()["normalizer"] == "none"


# --- normalization -----------------------------------------------------------------------------


def test_basic_1_upper_cases_and_removes_punctuation():
    assert normalize("Hello, world!") == "HELLO WORLD"
    assert normalize("  yes\tno \n ") == "YES NO"
    assert normalize("well-known") == "WELL KNOWN"
    assert normalize("a_b") == "A B"
    assert normalize('(one) [two] {three} "four"') == "ONE TWO THREE FOUR"


def test_basic_1_keeps_apostrophes_digits_and_letters():
    assert normalize("Don't stop") == "DON'T STOP"
    assert normalize("it's 42") == "IT'S 42"
    assert normalize("caf\u00e9 na\u00efve") == "CAF\u00c9 NA\u00cfVE"


def test_basic_1_applies_nfkc():
    # The "ﬁ" ligature and full-width letters become plain letters under NFKC.
    assert normalize("\ufb01ne") == "FINE"
    assert normalize("\uff21\uff22") == "AB"


def test_normalization_is_applied_to_both_sides():
    rates = error_rates(["Hello, World!"], ["hello world"])
    assert rates.wer == 0.0 and rates.cer == 0.0 and rates.sentence_errors == 0
    rates = error_rates(["HELLO   WORLD"], ["hello, world."])
    assert rates.wer == 0.0


def test_normalization_is_idempotent():
    for text in ["Hello, world!", "don't  STOP", "a_b-c"]:
        once = normalize(text)
        assert normalize(once) == once


def test_none_normalizer_only_collapses_whitespace():
    assert normalize("  Hello,   World! ", "none") == "Hello, World!"


def test_unknown_normalizer_lists_valid_ones():
    with pytest.raises(AsrbenchError) as err:
        normalize("x", "basic-2")
    for name in NORMALIZERS:
        assert name in str(err.value)
