"""Word-level scores for label-synchronous searches: n-gram LM shallow fusion, a word bonus and a
lexicon constraint, over any tokenizer's units (the transducer's modified beam search uses it).

A hypothesis is a tuple of token ids. Its words follow the tokenizer's boundaries, as in CTC
beam search (:mod:`asrbench.decoding.ctc_beam`): a separator token (``word_separator_id``: the
space, the phones' ``|``) closes the word before it, a word-start token (``word_start_ids``:
sentencepiece's ``▁`` pieces) closes the word before it and begins one, and the end of the
utterance closes the last. A closed word is scored by the word LM (natural log) and earns the
word bonus; with a lexicon, a token that leaves the lexicon's trie, or a word closed on a node
that is no word, is forbidden (``-inf``). With a char LM, every character is scored, the space
between words included.

``extension(prefix, tokens)`` gives what appending each of ``tokens`` to ``prefix`` adds to the
fused score (``lm_weight * lm + word_bonus * words``); ``finish(prefix)`` what ending there adds
(the last word and the LM's end of sentence; ``-inf`` in the middle of a lexicon word). The
search adds both to its acoustic scores, so a hypothesis' score is ``acoustic + lm_weight * lm +
word_bonus * words`` at the end. Hypothesis states are cached by prefix for one search call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from asrbench.data.tokenizer import Tokenizer
from asrbench.decoding.ctc_beam import CHAR_LM_SPACE, Lexicon
from asrbench.errors import AsrbenchError

_FORBIDDEN = None  # a prefix the lexicon does not allow


@dataclass(frozen=True)
class _Words:
    """What a prefix has said so far: LM state and raw log-probability, closed words, the word
    being spelled (its text and lexicon node)."""

    lm_state: object
    lm: float
    words: int
    partial: str
    node: int


class WordFusion:
    """Scores of word-level knowledge for the hypotheses of one search call."""

    def __init__(self, tokenizer: Tokenizer, lm=None, lexicon: Lexicon | None = None, lm_weight: float = 0.0,
                 word_bonus: float = 0.0):
        self.tokenizer, self.lm, self.lexicon = tokenizer, lm, lexicon
        self.lm_weight, self.word_bonus = lm_weight, word_bonus
        self.word_lm = lm is not None and getattr(lm, "unit", "word") == "word"
        self.char_lm = lm is not None and not self.word_lm
        if self.char_lm and tokenizer.writes_words_through_lexicon:
            raise AsrbenchError(f"a char LM scores characters; {tokenizer.kind} units are not written in characters "
                                "(use a word LM)")
        self.lm_space = CHAR_LM_SPACE if self.char_lm and CHAR_LM_SPACE in lm.vocabulary else " "
        self.separator = tokenizer.word_separator_id
        self.starts = tokenizer.word_start_ids
        self.pieces = [tokenizer.piece(token) for token in range(len(tokenizer))]
        self.words_matter = lm is not None or lexicon is not None
        start = _Words(lm.start() if lm is not None else None, 0.0, 0, "", 0)
        self._cache: dict[tuple[int, ...], _Words | None] = {(): start}

    def fused(self, words: _Words) -> float:
        return self.lm_weight * words.lm + self.word_bonus * words.words

    def state(self, prefix: tuple[int, ...]) -> _Words | None:
        """The words of ``prefix`` (None: the lexicon forbids it); built from its parent's."""
        if prefix not in self._cache:
            parent = self.state(prefix[:-1])
            self._cache[prefix] = _FORBIDDEN if parent is _FORBIDDEN else self._append(parent, prefix[-1])
        return self._cache[prefix]

    def extension(self, prefix: tuple[int, ...], tokens: np.ndarray) -> np.ndarray:
        """(K,) candidate tokens -> (K,) score added by appending each (``-inf``: forbidden)."""
        parent = self.state(prefix)
        if parent is _FORBIDDEN:
            return np.full(len(tokens), -math.inf)
        base = self.fused(parent)
        scores = np.empty(len(tokens))
        for i, token in enumerate(tokens.tolist()):
            child = self.state(prefix + (token,))
            scores[i] = -math.inf if child is _FORBIDDEN else self.fused(child) - base
        return scores

    def finish(self, prefix: tuple[int, ...]) -> float:
        """What ending the utterance after ``prefix`` adds: the last word, the LM's ``</s>``."""
        words = self.state(prefix)
        if words is _FORBIDDEN:
            return -math.inf
        base = self.fused(words)
        if words.partial or words.node:
            words = self._close(words)
            if words is _FORBIDDEN:
                return -math.inf
        lm = words.lm + (self.lm.finish(words.lm_state) if self.lm is not None else 0.0)
        return self.lm_weight * lm + self.word_bonus * words.words - base

    def _append(self, words: _Words, token: int) -> _Words | None:
        if token == self.separator:
            if not (words.partial or words.node):  # a leading or second separator
                return _FORBIDDEN if self.words_matter else words
            closed = self._close(words)
            return _FORBIDDEN if closed is _FORBIDDEN else self._score_chars(closed, self.lm_space)
        if token in self.starts and (words.partial or words.node):  # a new word closes the one before
            words = self._close(words)
            if words is _FORBIDDEN:
                return _FORBIDDEN
            words = self._score_chars(words, self.lm_space)
        node = words.node
        if self.lexicon is not None:
            node = self.lexicon.children[node].get(token, -1)
            if node < 0:
                return _FORBIDDEN
        text = self.pieces[token]
        words = _Words(words.lm_state, words.lm, words.words, words.partial + text, node)
        return self._score_chars(words, text)

    def _close(self, words: _Words) -> _Words | None:
        """The word being spelled, closed: scored by a word LM, counted; None if not a lexicon word."""
        word = words.partial
        if self.lexicon is not None:
            word = self.lexicon.words[words.node]
            if word is None:
                return _FORBIDDEN
        lm_state, lm = words.lm_state, words.lm
        if self.word_lm:
            logprob, lm_state = self.lm.score(lm_state, word)
            lm += logprob
        return _Words(lm_state, lm, words.words + 1, "", 0)

    def _score_chars(self, words: _Words, text: str) -> _Words:
        if not self.char_lm:
            return words
        lm_state, lm = words.lm_state, words.lm
        for char in text:
            logprob, lm_state = self.lm.score(lm_state, char)
            lm += logprob
        return _Words(lm_state, lm, words.words, words.partial, words.node)
