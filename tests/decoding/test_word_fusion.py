"""Word-level fusion scores for label-synchronous search: LM, word bonus, lexicon, any unit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asrbench.data.tokenizer import CharTokenizer, build_tokenizer
from asrbench.decoding.ctc_beam import Lexicon
from asrbench.decoding.lm import train_ngram
from asrbench.decoding.word_fusion import WordFusion
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import TokenizerConfig

CHARS = CharTokenizer.build(["THE CAT SAT ON A MAT"])
SENTENCES = [["THE", "CAT", "SAT"], ["THE", "MAT"], ["A", "CAT"]]


def walk(fusion: WordFusion, tokens: list[int]) -> float:
    """The fused score of a whole hypothesis, accumulated one token at a time, then its end."""
    total, prefix = 0.0, ()
    for token in tokens:
        total += float(fusion.extension(prefix, np.array([token]))[0])
        prefix += (token,)
    return total + fusion.finish(prefix)


def lm_score(lm, words: list[str]) -> float:
    state, total = lm.start(), 0.0
    for word in words:
        logprob, state = lm.score(state, word)
        total += logprob
    return total + lm.finish(state)


@pytest.mark.parametrize("text", ["THE CAT SAT", "A MAT", "CAT"])
def test_the_accumulated_score_is_lm_weight_times_the_sentence_log_prob_plus_bonuses(text):
    lm = train_ngram(SENTENCES, order=2)
    fusion = WordFusion(CHARS, lm=lm, lm_weight=0.7, word_bonus=1.5)
    words = text.split()
    assert walk(fusion, CHARS.encode(text)) == pytest.approx(0.7 * lm_score(lm, words) + 1.5 * len(words))


def test_subword_words_close_at_the_next_word_start():
    texts = [" ".join(sentence) for sentence in SENTENCES] * 20
    pieces = build_tokenizer(TokenizerConfig(kind="unigram", vocab_size=11), texts)
    lm = train_ngram(SENTENCES, order=2)
    fusion = WordFusion(pieces, lm=lm, lm_weight=1.0)
    assert walk(fusion, pieces.encode("THE CAT SAT")) == pytest.approx(lm_score(lm, ["THE", "CAT", "SAT"]))


def test_the_lexicon_forbids_tokens_that_leave_it_and_unfinished_words():
    lexicon = Lexicon.from_words(["CAT", "SAT"], CHARS)
    fusion = WordFusion(CHARS, lexicon=lexicon)
    c, a, t, m, space = (CHARS.encode(char)[0] for char in "CATM ")
    scores = fusion.extension((), np.array([c, m, space]))
    assert scores[0] == 0.0 and scores[1] == -math.inf  # no word starts with M
    assert scores[2] == -math.inf  # nor with a space
    assert fusion.finish((c, a)) == -math.inf  # "CA" is no word
    assert fusion.finish((c, a, t)) == 0.0
    assert fusion.extension((c, a, t), np.array([space]))[0] == 0.0
    assert fusion.extension((c, a, t, space, space), np.array([c]))[0] == -math.inf  # below a forbidden prefix


def test_phones_need_a_word_lm_not_a_char_lm(tmp_path):
    path = tmp_path / "words.dic"
    path.write_text("CAT K AE T\n")
    phones = build_tokenizer(TokenizerConfig(kind="phone", lexicon=str(path)), ["CAT"])
    with pytest.raises(AsrbenchError, match="a char LM scores characters; phone units"):
        WordFusion(phones, lm=train_ngram([list("CAT")], order=2, unit="char"))
    fusion = WordFusion(
        phones, lm=train_ngram([["CAT"]], order=2), lexicon=Lexicon.from_words(["CAT"], phones), lm_weight=1.0
    )
    assert walk(fusion, phones.encode("CAT")) > -1.0  # the one word the LM knows
