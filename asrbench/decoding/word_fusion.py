"""Word-level scores for label-synchronous searches: n-gram LM shallow fusion, a word bonus and a
lexicon constraint, over any tokenizer's units (the transducer's modified beam search uses it).

A hypothesis is a tuple of token ids. Its words follow the tokenizer's boundaries by the rules
CTC beam search uses (one implementation: :class:`asrbench.decoding.ctc_beam.WordRules`): a
separator token (``word_separator_id``: the space, the phones' ``|``) closes the word before it,
a word-start token (``word_start_ids``: sentencepiece's ``▁`` pieces) closes the word before it
and begins one, and the end of the utterance closes the last. A closed word is scored by the word
LM (natural log) and earns the word bonus; with a lexicon, a token that leaves the lexicon's
trie, or a word closed on a node that is no word, is forbidden (``-inf``). With a char LM, every
character is scored, the space between words included.

``extension(prefix, tokens)`` gives what appending each of ``tokens`` to ``prefix`` adds to the
fused score (``lm_weight * lm + word_bonus * words``); ``finish(prefix)`` what ending there adds
(the last word and the LM's end of sentence; ``-inf`` in the middle of a lexicon word). The
search adds both to its acoustic scores, so a hypothesis' score is ``acoustic + lm_weight * lm +
word_bonus * words`` at the end. Hypothesis states are cached by prefix for one search call.
"""

from __future__ import annotations

import math

import numpy as np

from asrbench.data.tokenizer import Tokenizer
from asrbench.decoding.ctc_beam import Lexicon, WordRules, WordState


class WordFusion:
    """Scores of word-level knowledge for the hypotheses of one search call (the word rules are
    :class:`asrbench.decoding.ctc_beam.WordRules`, shared with CTC beam search)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        lm=None,
        lexicon: Lexicon | None = None,
        lm_weight: float = 0.0,
        word_bonus: float = 0.0,
    ):
        self.lm, self.lm_weight, self.word_bonus = lm, lm_weight, word_bonus
        self.rules = WordRules(tokenizer, lm, lexicon)
        # Prefix -> its words (None: the lexicon forbids it).
        self._cache: dict[tuple[int, ...], WordState | None] = {(): self.rules.start()}

    def fused(self, words: WordState) -> float:
        return self.lm_weight * words[1] + self.word_bonus * words[2]

    def state(self, prefix: tuple[int, ...]) -> WordState | None:
        """The words of ``prefix`` (None: the lexicon forbids it); built from its parent's."""
        if prefix not in self._cache:
            parent = self.state(prefix[:-1])
            self._cache[prefix] = None if parent is None else self.rules.append(parent, prefix[-1])
        return self._cache[prefix]

    def extension(self, prefix: tuple[int, ...], tokens: np.ndarray) -> np.ndarray:
        """(K,) candidate tokens -> (K,) score added by appending each (``-inf``: forbidden)."""
        parent = self.state(prefix)
        if parent is None:
            return np.full(len(tokens), -math.inf)
        base = self.fused(parent)
        scores = np.empty(len(tokens))
        for i, token in enumerate(tokens.tolist()):
            child = self.state(prefix + (token,))
            scores[i] = -math.inf if child is None else self.fused(child) - base
        return scores

    def finish(self, prefix: tuple[int, ...]) -> float:
        """What ending the utterance after ``prefix`` adds: the last word, the LM's ``</s>``."""
        words = self.state(prefix)
        if words is None:
            return -math.inf
        base = self.fused(words)
        if words[3] or words[4]:  # a word being spelled
            words = self.rules.close(words)
            if words is None:
                return -math.inf
        lm = words[1] + (self.lm.finish(words[0]) if self.lm is not None else 0.0)
        return self.lm_weight * lm + self.word_bonus * words[2] - base
