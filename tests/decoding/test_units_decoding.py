"""CTC beam search over subword and phone units: word boundaries, the lexicon, word LM fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import AN4_LIKE_LEXICON

from asrbench.data.tokenizer import build_tokenizer
from asrbench.decoding.ctc_beam import CTCBeamOptions, Lexicon, ctc_prefix_beam_search
from asrbench.decoding.greedy import ctc_greedy
from asrbench.decoding.lm import train_ngram
from asrbench.decoding.searchers import DecodeOptions, ctc_searcher
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import TokenizerConfig

WORDS = ["ONE", "TWO", "THREE", "FOUR", "FIVE", "SEVEN", "EIGHT", "NINE", "TEN", "ENTER", "ERASE", "RUBOUT"]
TEXTS = [" ".join(WORDS[(i * 5 + j * 7) % len(WORDS)] for j in range(1 + i % 4)) for i in range(150)]
LEXICON = AN4_LIKE_LEXICON


def spikes(ids: list[int], vocab: int, seed: int = 0, confusions: dict[int, dict[int, float]] | None = None):
    """(1, T, V) log-probs: each token a spike frame then two blank frames; ``confusions`` maps a
    position to the probabilities of its spike frame."""
    rng = np.random.default_rng(seed)
    frames = 3 * len(ids) + 2
    probs = rng.dirichlet(np.full(vocab, 0.5), size=frames) * 0.02
    probs[:, 0] += 1.0
    for i, token in enumerate(ids):
        row = probs[1 + 3 * i]
        row *= 0.1
        for choice, p in (confusions or {}).get(i, {token: 1.0}).items():
            row[choice] += p
    probs[:, -1] = 1e-12  # <sos/eos>: never emitted by a trained CTC head
    probs /= probs.sum(axis=1, keepdims=True)
    return torch.from_numpy(np.log(probs)).float().unsqueeze(0)


@pytest.fixture(scope="module")
def subword():
    return build_tokenizer(TokenizerConfig(kind="unigram", vocab_size=24), TEXTS)


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    path = tmp_path_factory.mktemp("lexicon") / "an4like.dic"
    path.write_text(LEXICON)
    return build_tokenizer(TokenizerConfig(kind="phone", lexicon=str(path)), TEXTS + ["TWO TWO"])


def best_text(tokenizer, log_probs, **kwargs) -> str:
    options = CTCBeamOptions(
        beam=kwargs.pop("beam", 8),
        **{k: kwargs.pop(k) for k in list(kwargs) if k in ("lm_weight", "word_bonus", "lexicon")},
    )
    hypotheses = ctc_prefix_beam_search(log_probs, torch.tensor([log_probs.size(1)]), tokenizer, options, **kwargs)
    return tokenizer.decode(hypotheses[0][0].token_ids)


def test_subword_beam_search_finds_the_spoken_words(subword):
    text = "SEVEN ERASE TWO"
    log_probs = spikes(subword.encode(text), len(subword))
    assert subword.decode(ctc_greedy(log_probs, torch.tensor([log_probs.size(1)]))[0]) == text
    assert best_text(subword, log_probs) == text
    lexicon = Lexicon.from_words(WORDS, subword)
    assert len(lexicon) == len(WORDS) and lexicon.skipped == 0
    hypotheses = ctc_prefix_beam_search(
        log_probs, torch.tensor([log_probs.size(1)]), subword, CTCBeamOptions(beam=8, lexicon=True), lexicon=lexicon
    )
    assert subword.decode(hypotheses[0][0].token_ids) == text


def test_the_lexicon_turns_a_misheard_subword_word_into_a_lexicon_word(subword):
    # The acoustics favour a word outside the lexicon ("SEVEN" with its last piece swapped for
    # a likelier wrong one); the lexicon keeps the search to words it lists.
    ids = subword.encode("SEVEN")
    wrong = next(
        i
        for i in range(2, len(subword) - 1)
        if i not in subword.word_start_ids
        and i != ids[-1]
        and subword.piece(i)
        and subword.decode(ids[:-1] + [i]) not in WORDS
    )
    confused = {len(ids) - 1: {wrong: 0.6, ids[-1]: 0.4}}
    log_probs = spikes(ids, len(subword), confusions=confused)
    assert best_text(subword, log_probs) != "SEVEN"
    lexicon = Lexicon.from_words(WORDS, subword)
    hypotheses = ctc_prefix_beam_search(
        log_probs, torch.tensor([log_probs.size(1)]), subword, CTCBeamOptions(beam=8, lexicon=True), lexicon=lexicon
    )
    assert subword.decode(hypotheses[0][0].token_ids) == "SEVEN"


def test_a_word_lm_scores_subword_words_where_a_word_start_closes_them(subword):
    # Two word sequences the acoustics cannot tell apart ("NINE" vs "FIVE" at even odds); the
    # word LM, which saw "ONE NINE" and never "ONE FIVE", decides. Words are closed by the next
    # word-start piece or the end of the utterance: no separator token exists.
    # Two words spelled with as many pieces, and different ones at every position.
    def differ_everywhere(a: str, b: str) -> bool:
        spelled_a, spelled_b = subword.spell(a), subword.spell(b)
        return len(spelled_a) == len(spelled_b) and all(x != y for x, y in zip(spelled_a, spelled_b, strict=True))

    first, second = next((a, b) for a in WORDS for b in WORDS if a < b and differ_everywhere(a, b))
    one = subword.spell("ONE")
    ids = one + subword.spell(first)
    confusions = {
        len(one) + i: {x: 0.5, y: 0.5}
        for i, (x, y) in enumerate(zip(subword.spell(first), subword.spell(second), strict=True))
    }
    log_probs = spikes(ids, len(subword), confusions=confusions)
    lm = train_ngram([["ONE", first]] * 5 + [[second]], order=2)
    assert best_text(subword, log_probs, lm=lm, lm_weight=1.0) == f"ONE {first}"
    lm_other = train_ngram([["ONE", second]] * 5 + [[first]], order=2)
    assert best_text(subword, log_probs, lm=lm_other, lm_weight=1.0) == f"ONE {second}"


def test_phone_greedy_reads_words_back_and_beam_search_keeps_to_the_lexicon(phone):
    text = "ERASE TWO SEVEN"
    ids = phone.encode(text)
    log_probs = spikes(ids, len(phone))
    lengths = torch.tensor([log_probs.size(1)])
    assert phone.decode(ctc_greedy(log_probs, lengths)[0]) == text
    searcher = ctc_searcher(_Fixed(log_probs, lengths), phone, DecodeOptions(beam=8))
    assert searcher.description["lexicon"] == "tokenizer"  # phone models always search their lexicon
    assert phone.decode(searcher(None, None)[0]) == text
    # A misheard phone ("T UW" heard as "T AO"): greedy writes the phones, the lexicon search a word.
    index = {token: i for i, token in enumerate(phone.tokens)}
    position = ids.index(index["UW"])
    confused = spikes(ids, len(phone), confusions={position: {index["AO"]: 0.55, index["UW"]: 0.45}})
    assert phone.decode(ctc_greedy(confused, lengths)[0]) == "ERASE TAO SEVEN"
    searcher = ctc_searcher(_Fixed(confused, lengths), phone, DecodeOptions(beam=8))
    assert phone.decode(searcher(None, None)[0]) == "ERASE TWO SEVEN"  # TWO: more frequent than TO


def test_phone_lexicon_files_hold_every_pronunciation(phone, tmp_path):
    path = tmp_path / "more.dic"
    path.write_text("EIGHT EY T\nEIGHT(2) EY\nZULU Z UW L UW\n")
    lexicon = Lexicon.from_file(path, phone)
    assert len(lexicon) == 2  # EIGHT twice (one word at two nodes); ZULU has phones the model lacks
    assert lexicon.skipped == 1
    assert sorted(word for word, _ in lexicon.spellings()) == ["EIGHT", "EIGHT"]
    words = tmp_path / "words.txt"
    words.write_text("EIGHT\nNINE\n")  # a word list: spelled by the tokenizer's pronunciations
    assert sorted(word for word, _ in Lexicon.from_file(words, phone).spellings()) == ["EIGHT", "NINE"]


def test_a_char_lm_with_phones_is_refused(phone):
    lm = train_ngram([list("ONE TWO")], order=2, unit="char")
    log_probs = spikes(phone.encode("ONE"), len(phone))
    with pytest.raises(AsrbenchError, match="a char LM scores characters; phone units are not written in characters"):
        ctc_prefix_beam_search(log_probs, torch.tensor([log_probs.size(1)]), phone, CTCBeamOptions(beam=4), lm=lm)


def test_flashlight_refuses_units_other_than_characters(subword):
    from asrbench.decoding.flashlight import FlashlightDecoder

    with pytest.raises(AsrbenchError, match="--backend flashlight decodes character units; this model's are unigram"):
        FlashlightDecoder(subword)


class _Fixed:
    """A stand-in CTC model whose outputs are given log-probs."""

    def __init__(self, log_probs, lengths):
        self.log_probs, self.lengths = log_probs, lengths

    def ctc_log_probs(self, features, feature_lengths):
        return self.log_probs, self.lengths
