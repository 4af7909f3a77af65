"""The compiled CTC prefix beam search loop returns what the Python loop returns, bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import AN4_LIKE_LEXICON

from asrbench.data.tokenizer import CharTokenizer, build_tokenizer
from asrbench.decoding import ctc_beam_kernel
from asrbench.decoding.ctc_beam import CTCBeamOptions, Lexicon, ctc_prefix_beam_search
from asrbench.decoding.lm import train_ngram
from asrbench.decoding.searchers import DecodeOptions, ctc_searcher
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import TokenizerConfig

TEXTS = ["one two three four five", "seven eight nine ten", "enter erase rubout", "two to one"] * 20


def peaky_batch(batch: int, frames: int, vocab: int, seed: int, blank: float = 0.6):
    """(B, T, V) log-probs shaped like a trained CTC head's: mostly blank, with competing label
    spikes (so prefixes merge, repeat and branch), and lengths shorter than T for all but the first."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(batch, frames, vocab)) * 2.0
    logits[..., 0] += np.where(rng.random((batch, frames)) < blank, 8.0, -2.0)
    logits[..., -1] = -30.0  # <sos/eos>: never emitted by a trained CTC head
    log_probs = torch.from_numpy(logits).log_softmax(-1).float()
    lengths = torch.from_numpy(rng.integers(frames // 2, frames + 1, size=batch))
    lengths[0] = frames
    return log_probs, lengths


def both(log_probs, lengths, tokenizer, lexicon_object=None, **options):
    python, compiled = (
        ctc_prefix_beam_search(
            log_probs, lengths, tokenizer, CTCBeamOptions(kernel=kernel, **options), lexicon=lexicon_object
        )
        for kernel in ("python", "compiled")
    )
    return python, compiled


@pytest.fixture(scope="module")
def phone_tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("lexicon") / "an4like.dic"
    path.write_text(AN4_LIKE_LEXICON)
    return build_tokenizer(TokenizerConfig(kind="phone", lexicon=str(path)), [text.upper() for text in TEXTS])


def test_numba_is_there():
    assert ctc_beam_kernel.available()  # a dependency: the tests below would compare Python with itself


@pytest.mark.parametrize("unit", ["char", "unigram"])
@pytest.mark.parametrize(
    "options",
    [
        {"beam": 1},
        {"beam": 4},
        {"beam": 10},
        {"beam": 32, "token_top_k": 20, "blank_skip": 1.0},
        {"beam": 10, "score_beam": math.inf, "token_beam": math.inf},
    ],
)
def test_same_nbest_with_the_same_scores(unit, options):
    if unit == "char":
        tokenizer = CharTokenizer.build(TEXTS)
    else:
        tokenizer = build_tokenizer(TokenizerConfig(kind="unigram", vocab_size=27), TEXTS)
    log_probs, lengths = peaky_batch(4, 120, len(tokenizer), seed=len(tokenizer) + options["beam"])
    python, compiled = both(log_probs, lengths, tokenizer, **options)
    assert [len(hyps) for hyps in compiled] == [len(hyps) for hyps in python]
    assert compiled == python  # token ids, score, acoustic and lm of every hypothesis, exactly
    assert any(len(hyps[0].token_ids) > 3 for hyps in compiled)  # the inputs do make words


def test_long_utterance_grows_the_trie_and_renormalizes():
    """Thousands of prefixes (the hash table and node arrays grow several times) and probabilities
    that would underflow without the beams' renormalization."""
    tokenizer = CharTokenizer.build(TEXTS)
    log_probs, lengths = peaky_batch(1, 3000, len(tokenizer), seed=7, blank=0.2)
    python, compiled = both(log_probs, lengths, tokenizer, beam=16, token_top_k=12, blank_skip=1.0)
    assert compiled == python
    assert compiled[0][0].acoustic < math.log(1e-100)  # the rescaling did run


def test_empty_and_all_blank_utterances():
    tokenizer = CharTokenizer.build(TEXTS)
    log_probs = torch.full((2, 5, len(tokenizer)), -50.0)
    log_probs[..., 0] = 0.0
    python, compiled = both(log_probs, torch.tensor([5, 0]), tokenizer, beam=4)
    assert compiled == python
    assert [hyps[0].token_ids for hyps in compiled] == [[], []]


def test_lm_searches_stay_in_python_and_the_searcher_says_which_loop_ran(tmp_path):
    tokenizer = CharTokenizer.build(TEXTS)
    assert ctc_searcher(None, tokenizer, DecodeOptions(beam=4)).description["loop"] == "compiled"
    assert ctc_searcher(None, tokenizer, DecodeOptions(beam=4, word_bonus=0.5)).description["loop"] == "compiled"
    words = tmp_path / "words.txt"
    words.write_text("\n".join(sorted({word for text in TEXTS for word in text.split()})) + "\n")
    with_lexicon = ctc_searcher(None, tokenizer, DecodeOptions(beam=4, lexicon=str(words)))
    assert with_lexicon.description["loop"] == "compiled" and with_lexicon.description["lexicon_words"] == 13
    # With an LM the loop calls back into it for every new prefix: Python, with the LM's say.
    lm = train_ngram([text.split() for text in TEXTS], order=2)
    with_lm = ctc_searcher(None, tokenizer, DecodeOptions(beam=4, lm_weight=0.5, word_bonus=0.5), lm=lm)
    assert with_lm.description["loop"] == "python"
    log_probs, lengths = peaky_batch(2, 60, len(tokenizer), seed=3)
    fused = ctc_prefix_beam_search(log_probs, lengths, tokenizer, CTCBeamOptions(beam=4, lm_weight=0.5), lm=lm)
    assert all(hyps and hyps[0].lm != 0.0 for hyps in fused)


def lexicon_of(tokenizer, words=None) -> Lexicon:
    return Lexicon.from_words(words or sorted({word for text in TEXTS for word in text.split()}), tokenizer)


@pytest.mark.parametrize("unit", ["char", "unigram", "phone"])
@pytest.mark.parametrize(
    "options",
    [
        {"beam": 10, "word_bonus": -0.7},
        {"beam": 10, "lexicon": True, "word_bonus": 1.5},
        {"beam": 32, "lexicon": True, "token_top_k": 20, "blank_skip": 1.0},
        {"beam": 10, "lexicon": True, "score_beam": math.inf, "token_beam": math.inf},
    ],
)
def test_fused_without_lm_same_nbest_with_the_same_scores(unit, options, phone_tokenizer):
    """A lexicon, a word bonus or both: the compiled fused loop returns the Python loop's n-best
    lists, scores and acoustic log-probs bit for bit (words closed, lexicon words only)."""
    if unit == "char":
        tokenizer = CharTokenizer.build(TEXTS)
    elif unit == "unigram":
        tokenizer = build_tokenizer(TokenizerConfig(kind="unigram", vocab_size=27), TEXTS)
    else:
        tokenizer = phone_tokenizer
    lexicon = lexicon_of(tokenizer, tokenizer.lexicon_words() if unit == "phone" else None)
    log_probs, lengths = peaky_batch(4, 120, len(tokenizer), seed=len(tokenizer) + options["beam"])
    python, compiled = both(log_probs, lengths, tokenizer, lexicon_object=lexicon, **options)
    assert [len(hyps) for hyps in compiled] == [len(hyps) for hyps in python]
    assert compiled == python
    assert any(len(hyps[0].token_ids) > 3 for hyps in compiled if hyps)
    separator = tokenizer.word_separator_id
    if options.get("lexicon") and separator is not None:  # the best spells lexicon words (the last may be unfinished)
        spelled = {tuple(ids) for _, ids in lexicon.spellings()}
        begun = {ids[:n] for ids in spelled for n in range(1, len(ids) + 1)}
        for hyps in compiled:
            words: list[list[int]] = [[]]
            for token in hyps[0].token_ids if hyps else []:
                if token == separator:
                    words.append([])
                else:
                    words[-1].append(token)
            assert all(tuple(word) in spelled for word in words[:-1])
            assert not words[-1] or tuple(words[-1]) in begun


def test_fused_long_utterance_grows_the_trie_and_renormalizes():
    tokenizer = CharTokenizer.build(TEXTS)
    log_probs, lengths = peaky_batch(1, 3000, len(tokenizer), seed=7, blank=0.2)
    python, compiled = both(log_probs, lengths, tokenizer, beam=16, token_top_k=12, blank_skip=1.0, word_bonus=0.3)
    assert compiled == python
    assert compiled[0][0].acoustic < math.log(1e-100)  # the rescaling did run


def test_fused_labels_the_lexicon_forbids_leave_the_empty_prefix():
    tokenizer = CharTokenizer.build(TEXTS)
    log_probs = torch.full((1, 6, len(tokenizer)), -50.0)
    log_probs[0, :, tokenizer.encode("t")[0]] = 0.0  # "t" every frame: no word of this lexicon starts with it
    lexicon = lexicon_of(tokenizer, ["one"])
    python, compiled = both(log_probs, torch.tensor([6]), tokenizer, lexicon_object=lexicon, beam=4, lexicon=True)
    assert compiled == python
    assert [hyp.token_ids for hyp in compiled[0]] == [[]]


def test_kernel_option_is_validated():
    with pytest.raises(AsrbenchError, match="kernel"):
        CTCBeamOptions(kernel="fortran")


def test_lexicon_arrays_follow_words_added_later():
    tokenizer = CharTokenizer.build(TEXTS)
    lexicon = lexicon_of(tokenizer, ["one", "two"])
    offsets, tokens, children, is_word = ctc_beam_kernel.lexicon_arrays(lexicon)
    assert ctc_beam_kernel.lexicon_arrays(lexicon)[0] is offsets  # kept between searches
    assert len(offsets) == len(lexicon.children) + 1 and is_word.sum() == 2
    lexicon.add("on", tokenizer.encode("on"))  # a word on nodes that exist: no new node
    assert ctc_beam_kernel.lexicon_arrays(lexicon)[3].sum() == 3
    lexicon.add("nine", tokenizer.encode("nine"))
    offsets, tokens, children, is_word = ctc_beam_kernel.lexicon_arrays(lexicon)
    assert len(offsets) == len(lexicon.children) + 1 and is_word.sum() == 4
    for node, edges in enumerate(lexicon.children):  # node n's children, as the trie has them
        span = slice(offsets[node], offsets[node + 1])
        assert dict(zip(tokens[span].tolist(), children[span].tolist(), strict=True)) == edges
