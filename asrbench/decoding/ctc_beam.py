"""CTC prefix beam search with optional n-gram LM fusion and a lexicon constraint.

Without an LM the per-utterance loop runs compiled by numba (:mod:`asrbench.decoding.ctc_beam_kernel`:
the same float64 operations in the same order, so the same hypotheses and scores): the plain loop
(4x faster on AN4), and with a lexicon or a word bonus the fused one, whose word rules are arrays
there. With an LM it runs here, in Python, calling the LM for every new prefix.

The search keeps, for every surviving label prefix, the probability of all alignments that
collapse to it and end in blank (``pb``) and in its last label (``pnb``); extending a prefix
whose last label is ``c`` by ``c`` again is only possible from ``pb`` (CTC needs a blank between
repeats), and alignments reaching the same prefix are summed.

Speed comes from doing little per frame (in both loops), not from vectorizing it:

* Prefixes are nodes of a trie that lives for one utterance. A node is created (and, with an LM,
  scored) once, the first time any beam extends into it; after that an extension is a dict
  lookup keyed by one int, and identical prefixes merge by node id instead of hashing tuples.
* Probabilities, not log-probabilities: each frame is divided by its best token probability
  (the same factor for every path, so rankings do not change; the log of it is added back at
  the end), which makes merging a ``+`` instead of a log-sum-exp. Beams are renormalized on the
  rare occasion their best probability drops below 1e-100.
* Per frame only the top ``token_top_k`` labels within ``token_beam`` nats of the frame's best
  are tried (the whole batch is pruned with numpy before the Python loop starts), most likely
  first, stopping at the first that cannot come within ``score_beam`` of the frame's best
  candidate; prefixes that fall more than ``score_beam`` behind are dropped even when fewer than
  ``beam`` remain.
* Frames where blank has probability above ``blank_skip`` only extend with blank; a run of them
  costs one pass over the beam, whatever its length.

LM fusion (natural-log scores): with a word LM, a word is scored when it is closed (the
tokenizer's word separator, ``word_separator_id``, the space for characters and ``|`` for
phones, after a non-empty word; a token that starts a word, ``word_start_ids``, sentencepiece's
``▁`` pieces, after one; or the end of the utterance); with a char LM every character is scored,
the space between words included (so a char LM needs units written in characters: not phones).
A word's text is its tokens' ``piece`` texts joined, or, with a lexicon, the lexicon's word.
A hypothesis' score is ``acoustic + lm_weight * lm + word_bonus * words`` plus, at the end,
``lm_weight`` times the LM's end-of-sentence log-probability.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np
import torch

from asrbench.data.phones import read_pronunciations
from asrbench.data.tokenizer import Tokenizer
from asrbench.decoding import ctc_beam_kernel
from asrbench.errors import AsrbenchError

CHAR_LM_SPACE = "<space>"  # how ARPA files of char LMs write the space; asrbench.decoding.lm reads it back as " "
_RESCALE_BELOW = 1e-100  # renormalize the beams before their probabilities can underflow
_second = itemgetter(1)


@dataclass(frozen=True)
class CTCBeamOptions:
    beam: int = 10  # prefixes kept after every frame
    lm_weight: float = 0.0  # times the LM's natural-log probability
    word_bonus: float = 0.0  # added per emitted word (counters the LM's preference for short outputs)
    token_top_k: int = 8  # labels (besides blank) tried per frame
    token_beam: float = 10.0  # ... and only those within this many nats of the frame's best label
    # Frames with P(blank) above this extend every prefix with blank only: no label can start
    # or continue there, and the (< 1 - blank_skip) non-blank mass is dropped from the scores.
    # Peaky CTC models put most frames there, so this is the largest speed-up; 1.0 turns it off.
    blank_skip: float = 0.999
    # Prefixes (and label extensions) more than this many nats below the frame's best are dropped.
    score_beam: float = 15.0
    lexicon: bool = False  # words must come from the lexicon (given, or the word LM's vocabulary)
    # The loop without fusion: "compiled" (numba, ctc_beam_kernel) where numba imports, else Python;
    # "python" forces the Python loop. Both return the same hypotheses with the same scores.
    kernel: str = "compiled"

    def __post_init__(self) -> None:
        if self.beam < 1 or self.token_top_k < 1:
            raise AsrbenchError(f"ctc beam: beam and token_top_k must be >= 1 (got {self.beam}, {self.token_top_k})")
        if not 0.5 <= self.blank_skip <= 1.0:  # above 0.5, blank is the frame's best label (scaled to 1)
            raise AsrbenchError(f"ctc beam: blank_skip must be in [0.5, 1] (got {self.blank_skip})")
        if self.kernel not in ("compiled", "python"):
            raise AsrbenchError(f"ctc beam: kernel must be 'compiled' or 'python' (got {self.kernel!r})")


@dataclass(frozen=True)
class Hypothesis:
    token_ids: list[int]
    score: float  # acoustic + lm_weight * lm + word_bonus * words: what the search ranks by
    acoustic: float  # log-probability of all (kept) alignments of token_ids
    lm: float  # unweighted LM log-probability, end of sentence included (0.0 without an LM)


class Lexicon:
    """A trie over token ids: which label sequences spell a word, and which word they spell."""

    def __init__(self) -> None:
        self.children: list[dict[int, int]] = [{}]  # node -> {token id: child node}; node 0 is the root
        self.words: list[str | None] = [None]  # the word a node completes, if any
        self.skipped = 0  # words left out because the tokenizer cannot spell them

    def __len__(self) -> int:
        return sum(word is not None for word in self.words)

    def add(self, word: str, token_ids: list[int]) -> None:
        node = 0
        for token in token_ids:
            child = self.children[node].get(token)
            if child is None:
                child = len(self.children)
                self.children[node][token] = child
                self.children.append({})
                self.words.append(None)
            node = child
        if node and self.words[node] is None:
            self.words[node] = word

    def spellings(self) -> list[tuple[str, list[int]]]:
        """Every (word, token ids) in the trie, depth first."""
        found: list[tuple[str, list[int]]] = []
        stack: list[tuple[int, list[int]]] = [(0, [])]
        while stack:
            node, prefix = stack.pop()
            word = self.words[node]
            if word is not None:
                found.append((word, prefix))
            stack.extend((child, prefix + [token]) for token, child in self.children[node].items())
        return found

    @classmethod
    def from_words(cls, words: Iterable[str], tokenizer: Tokenizer) -> Lexicon:
        """Words spelled by the tokenizer (``spell``); ones it cannot spell are counted in ``skipped``."""
        lexicon = cls()
        for word in words:
            spellings = tokenizer.spellings(word)  # every pronunciation, for phones
            if not spellings:
                lexicon.skipped += 1
            for spelling in spellings:
                lexicon.add(word, spelling)
        return lexicon

    @classmethod
    def from_file(cls, path: str | Path, tokenizer: Tokenizer) -> Lexicon:
        """``WORD<TAB>W O R D`` lines (the spelling in the tokenizer's token texts), one word per
        line (spelled by the tokenizer: every pronunciation, for phones), or, for phones, a CMUdict /
        Sphinx pronunciation lexicon (``WORD(2)  PH O N E S``)."""
        if tokenizer.writes_words_through_lexicon:
            from_phones = cls._from_pronunciations(path, tokenizer)
            if from_phones is not None:
                return from_phones
        path = Path(path)
        if not path.is_file():
            raise AsrbenchError(f"{path}: lexicon not found")
        lexicon = cls()
        unusable = tokenizer.special_ids | {tokenizer.word_separator_id}
        index = {token: i for i, token in enumerate(tokenizer.tokens) if i not in unusable}
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\n").rstrip("\r")
                if not line.strip():
                    continue
                fields = line.split("\t")
                word = fields[0].strip()
                if len(fields) > 2 or not word or len(word.split()) != 1:
                    raise AsrbenchError(
                        f"{path}:{number}: expected 'WORD<TAB>W O R D' or one word per line, got {line[:80]!r}"
                    )
                if len(fields) == 1:
                    ids = tokenizer.spell(word)
                else:
                    spelling = fields[1].split()
                    if not spelling:
                        raise AsrbenchError(f"{path}:{number}: {word!r} has an empty spelling")
                    ids = [index[symbol] for symbol in spelling] if all(s in index for s in spelling) else None
                if ids is None:
                    lexicon.skipped += 1
                    continue
                lexicon.add(word, ids)
        return lexicon

    @classmethod
    def _from_pronunciations(cls, path: str | Path, tokenizer: Tokenizer) -> Lexicon | None:
        """A pronunciation lexicon file in the tokenizer's phones; None for a word list (one word a
        line, or ``WORD<TAB>...``), which :meth:`from_file` reads as for any unit."""
        path = Path(path)
        if not path.is_file():
            raise AsrbenchError(f"{path}: lexicon not found")
        text = path.read_text(encoding="utf-8", errors="replace")
        if "\t" in text or all(len(line.split()) <= 1 for line in text.splitlines()):
            return None
        index = {
            token: i
            for i, token in enumerate(tokenizer.tokens)
            if i not in tokenizer.special_ids and i != tokenizer.word_separator_id
        }
        lexicon = cls()
        for word, entries in read_pronunciations(path).items():
            usable = [entry for entry in entries if all(phone in index for phone in entry)]
            if not usable:
                lexicon.skipped += 1
            for entry in usable:
                lexicon.add(word, [index[phone] for phone in entry])
        return lexicon


def _lm_words(lm) -> list[str]:
    return [word for word in lm.vocabulary if word not in ("<s>", "</s>", "<unk>")]


def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    tokenizer: Tokenizer,
    options: CTCBeamOptions = CTCBeamOptions(),
    lm=None,
    lexicon: Lexicon | None = None,
) -> list[list[Hypothesis]]:
    """(B, T, V) log-softmax outputs, (B,) lengths -> per utterance the n-best, best first.

    ``lm`` is an n-gram LM from :mod:`asrbench.decoding.lm` (or anything with ``start``/``score``/``finish``,
    ``unit`` "word" or "char"). With ``options.lexicon`` the words come from ``lexicon`` or, when it
    is None, from the word LM's vocabulary (rebuilt on every call: pass a :class:`Lexicon` when
    decoding many batches). Without an LM or lexicon the search is plain CTC prefix search; with
    either, a space may only follow a non-empty word. ``<sos/eos>`` is never emitted.

    Every hypothesis' ``acoustic`` is the log-probability of the alignments of its labels that the
    search kept: exact without pruning, a lower bound with it. An utterance whose every prefix was
    forbidden by the lexicon gets an empty list; with a lexicon, a hypothesis ending inside a word
    is returned only when none ends on a word boundary.
    """
    if log_probs.dim() != 3 or log_probs.size(2) != len(tokenizer):
        raise AsrbenchError(f"ctc beam: expected log_probs (B, T, {len(tokenizer)}), got {tuple(log_probs.shape)}")
    if options.lexicon and lexicon is None:
        if lm is None or getattr(lm, "unit", "word") != "word":
            raise AsrbenchError("ctc beam: lexicon=True needs a lexicon or a word LM to take the words from")
        lexicon = Lexicon.from_words(_lm_words(lm), tokenizer)
    if not options.lexicon:
        lexicon = None
    batch, frames, vocab = log_probs.shape
    scores = log_probs.detach().to("cpu", torch.float64).numpy()  # (B, T, V), converted once
    lengths_list = [min(int(length), frames) for length in lengths.tolist()]

    blank = tokenizer.blank_id
    allowed = np.ones(vocab, dtype=bool)
    allowed[blank] = False
    if tokenizer.sos_id is not None:
        allowed[tokenizer.sos_id] = False  # CTC heads carry <sos/eos> but are never trained to emit it
    best = scores.max(axis=2)  # (B, T)
    scaled = np.exp(scores - best[..., None])  # (B, T, V), each frame's best label at 1.0
    skip = scores[..., blank] > math.log(options.blank_skip) if options.blank_skip < 1.0 else np.zeros_like(best, bool)
    # Candidate labels per frame: top-k of the allowed ones, and within token_beam of the frame's best.
    masked = np.where(allowed, scores, -np.inf)
    k = min(options.token_top_k, int(allowed.sum()))
    top = (
        np.argpartition(-masked, k - 1, axis=2)[..., :k]
        if k < vocab
        else np.broadcast_to(np.arange(vocab), masked.shape)
    )
    top_scores = np.take_along_axis(masked, top, axis=2)
    order = np.argsort(-top_scores, axis=2, kind="stable")  # most likely first: the search stops early
    top, top_scores = np.take_along_axis(top, order, axis=2), np.take_along_axis(top_scores, order, axis=2)
    keep = top_scores >= (best - options.token_beam)[..., None]

    search = _Search(tokenizer, options, lm, lexicon)
    results = []
    for b in range(batch):
        length = lengths_list[b]
        active = np.flatnonzero(~skip[b, :length])
        # Skipped frames before each active frame, and after the last one.
        skipped_before = np.diff(np.concatenate(([-1], active, [length]))) - 1
        offset = float(best[b, :length].sum())
        if search.compiled or search.compiled_fused:
            counts = keep[b, active].sum(axis=1)
            run = search.run_compiled if search.compiled else search.run_compiled_fused
            results.append(run(scaled[b, active], top[b, active], counts, skipped_before, offset))
            continue
        rows = scaled[b, active].tolist()
        tokens_b, keep_b = top[b, active].tolist(), keep[b, active].tolist()
        candidates = [
            [(token, row[token]) for token, ok in zip(frame_tokens, frame_keep, strict=True) if ok]
            for frame_tokens, frame_keep, row in zip(tokens_b, keep_b, rows, strict=True)
        ]
        results.append(search.run(rows, candidates, skipped_before.tolist(), offset))
    return results


# A prefix's words (WordRules): (LM state, unweighted LM log-prob, words closed, the word being spelled,
# its lexicon node). A plain tuple: the CTC search creates one per trie node in its hot loop.
WordState = tuple


class WordRules:
    """How a search's tokens make words, and what the words score: the one implementation behind
    CTC prefix beam search (:class:`_Search`) and the label-synchronous searches' word fusion
    (:class:`asrbench.decoding.word_fusion.WordFusion`).

    A separator token (``word_separator_id``: the space, the phones' ``|``) closes the word before
    it; a word-start token (``word_start_ids``: sentencepiece's ``▁`` pieces) closes the word before
    it and begins one. A closed word is scored by a word LM and counted (for the word bonus); with
    a lexicon, a token that leaves the lexicon's trie, or a word closed on a node that is no word,
    is not allowed (None). With a char LM every character is scored, the space between words too.
    With an LM or a lexicon, words matter: a leading or second separator is not allowed.
    """

    def __init__(self, tokenizer: Tokenizer, lm=None, lexicon: Lexicon | None = None, who: str = ""):
        self.lm, self.lexicon = lm, lexicon
        self.pieces = [tokenizer.piece(token) for token in range(len(tokenizer))]
        self.separator = tokenizer.word_separator_id  # None: this tokenizer has no separator
        self.starts = tokenizer.word_start_ids
        self.word_lm = lm is not None and getattr(lm, "unit", "word") == "word"
        self.char_lm = lm is not None and not self.word_lm
        if self.char_lm and tokenizer.writes_words_through_lexicon:
            raise AsrbenchError(
                f"{who}a char LM scores characters; {tokenizer.kind} units are not written in "
                "characters (use a word LM)"
            )
        self.lm_space = CHAR_LM_SPACE if self.char_lm and CHAR_LM_SPACE in lm.vocabulary else " "
        self.words_matter = lm is not None or lexicon is not None

    def start(self) -> WordState:
        return (self.lm.start() if self.lm is not None else None, 0.0, 0, "", 0)

    def append(self, state: WordState, token: int) -> WordState | None:
        """``state`` followed by ``token`` (None: not allowed)."""
        lm_state, lm_raw, words, partial, lex_node = state
        separator = token == self.separator
        if separator or (token in self.starts and (partial or lex_node)):
            if partial or lex_node:
                closed = self.close(state)
                if closed is None:
                    return None
                lm_state, lm_raw, words, partial, lex_node = closed
            elif self.words_matter:  # a leading or second space: plain CTC allows it, word-level decoding not
                return None
            if self.char_lm:
                logprob, lm_state = self.lm.score(lm_state, self.lm_space)
                lm_raw += logprob
        if not separator:
            if self.lexicon is not None:
                lex_node = self.lexicon.children[lex_node].get(token, -1)
                if lex_node < 0:
                    return None
            text = self.pieces[token]
            partial = partial + text
            if self.char_lm:
                for char in text:
                    logprob, lm_state = self.lm.score(lm_state, char)
                    lm_raw += logprob
        return (lm_state, lm_raw, words, partial, lex_node)

    def close(self, state: WordState) -> WordState | None:
        """The word being spelled, closed: scored by a word LM and counted; None if it is no lexicon word."""
        lm_state, lm_raw, words, word, lex_node = state
        if self.lexicon is not None:
            word = self.lexicon.words[lex_node]
            if word is None:
                return None
        if self.word_lm:
            logprob, lm_state = self.lm.score(lm_state, word)
            lm_raw += logprob
        return (lm_state, lm_raw, words + 1, "", 0)


class _Search:
    """The per-utterance loop; prefix-trie nodes are kept in parallel lists indexed by node id."""

    def __init__(self, tokenizer: Tokenizer, options: CTCBeamOptions, lm, lexicon: Lexicon | None):
        self.options = options
        self.lm = lm
        self.rules = WordRules(tokenizer, lm, lexicon, "ctc beam: ")
        self.vocab = len(tokenizer)
        self.fused = self.rules.words_matter or options.word_bonus != 0.0
        self.info: list[WordState] = []  # the Python loop's word state of every trie node
        # Without an LM the loop runs compiled (same bits; ctc_beam_kernel), unless asked not to: the
        # plain loop, or with a lexicon or word bonus the fused one. An LM is a Python object the loop
        # calls for every new prefix, so with one the loop runs here.
        compiled = options.kernel != "python" and lm is None and ctc_beam_kernel.available()
        self.compiled = compiled and not self.fused
        self.compiled_fused = compiled and self.fused
        self.word_arrays = (
            ctc_beam_kernel.WordArrays(self.rules, self.vocab, options.lm_weight, options.word_bonus)
            if self.compiled_fused
            else None
        )

    def run_compiled(
        self, rows: np.ndarray, tokens: np.ndarray, counts: np.ndarray, skipped: np.ndarray, offset: float
    ) -> list[Hypothesis]:
        """:meth:`run` without fusion, compiled: ``rows`` (A, V), ``tokens`` (A, K) with the first
        ``counts[a]`` kept, ``skipped`` (A + 1,) as arrays (ctc_beam_kernel.prefix_search)."""
        nodes, pb, pnb, parent, last, log_scale = ctc_beam_kernel.prefix_search(
            np.ascontiguousarray(rows),
            np.ascontiguousarray(tokens, dtype=np.int64),
            counts.astype(np.int64),
            skipped[: len(rows)].astype(np.int64),
            self.options.beam,
            math.exp(-self.options.score_beam),
        )
        self.parent, self.last = parent.tolist(), last.tolist()
        beams = list(zip(nodes.tolist(), pb.tolist(), pnb.tolist(), strict=True))
        return self._finish(beams, offset + log_scale)

    def run_compiled_fused(
        self, rows: np.ndarray, tokens: np.ndarray, counts: np.ndarray, skipped: np.ndarray, offset: float
    ) -> list[Hypothesis]:
        """:meth:`run` with a lexicon or word bonus and no LM, compiled (ctc_beam_kernel.fused_prefix_search);
        the final prefixes' words are replayed through :class:`WordRules` for :meth:`_finish`."""
        theta = self.options.score_beam + max(self.options.word_bonus, 0.0)
        nodes, pb, pnb, parent, last, offset = ctc_beam_kernel.fused_prefix_search(
            np.ascontiguousarray(rows),
            np.ascontiguousarray(tokens, dtype=np.int64),
            counts.astype(np.int64),
            skipped[: len(rows)].astype(np.int64),
            self.options.beam,
            theta,
            offset,
            self.word_arrays,
        )
        self.parent, self.last = parent.tolist(), last.tolist()
        beams = list(zip(nodes.tolist(), pb.tolist(), pnb.tolist(), strict=True))
        info: dict[int, WordState] = {}
        for node, _, _ in beams:
            state: WordState | None = self.rules.start()
            for token in self._token_ids(node):
                state = self.rules.append(state, token) if state is not None else None
            if state is None:  # the compiled loop kept a prefix the word rules forbid: a bug, never a result
                raise RuntimeError(f"ctc beam: the compiled loop kept a forbidden prefix {self._token_ids(node)}")
            info[node] = state
        return self._finish(beams, offset, info)

    def run(
        self, rows: list[list[float]], candidates: list[list[tuple[int, float]]], skipped: list[int], offset: float
    ) -> list[Hypothesis]:
        """Prefix beam search over one utterance's active frames (the hot loop: every frame and
        candidate token runs through it, so it stays one function with attributes bound to locals;
        a helper call per frame or per candidate would cost more than the work it holds).

        ``rows``: each active frame's probabilities scaled by its best one; ``candidates``: its
        tokens worth extending, most likely first; ``skipped``: the blank-only frames before it;
        ``offset``: the sum of every frame's best log-prob (the scale taken out of the rows)."""
        # Prefix trie of this utterance; node 0 is the empty prefix.
        self.parent, self.last, self.fused_score = [-1], [-1], [0.0]
        # (LM state, unweighted LM log-prob, words closed, partial word, lexicon node); fused search only
        self.info = [self.rules.start()]
        self.children: dict[int, int] = {}  # node * V + token -> child node, or -1 where not allowed
        vocab, beam, fused = self.vocab, self.options.beam, self.fused
        children, parent, last_token, fused_score = self.children, self.parent, self.last, self.fused_score
        extend = self._extend
        log, exp = math.log, math.exp
        # A label extension is skipped, without creating its node, when it could not come within
        # score_beam of the frame's best candidate (an LM or word bonus only lowers a new node's
        # score relative to its parent, except by at most one word bonus). Ranking keys are
        # probabilities without fusion, log-scores with it.
        theta = self.options.score_beam + (max(self.options.word_bonus, 0.0) if fused else 0.0)
        cut = exp(-theta)

        beams = [(0, 1.0, 0.0, 0.0 if fused else 1.0)]  # (node, pb, pnb, key); pb, pnb relative to exp(offset)
        for row, frame_candidates, before in zip(rows, candidates, skipped, strict=False):
            if before:  # blank-only frames: every alignment now ends in blank, scaled P(blank) = 1
                beams = [(node, pb + pnb, 0.0, key) for node, pb, pnb, key in beams]
            p_blank = row[0]
            frame_best = max(p_blank, frame_candidates[0][1]) if frame_candidates else p_blank
            best_key = beams[0][3]
            next_blank: dict[int, float] = {}
            next_label: dict[int, float] = {}
            for node, pb, pnb, key in beams:
                total = pb + pnb
                next_blank[node] = total * p_blank
                last = last_token[node]
                if pnb and last >= 0:  # the last label continues (no new label)
                    next_label[node] = next_label.get(node, 0.0) + pnb * row[last]
                if fused:
                    p_min = frame_best * exp(best_key - key - theta)
                else:
                    p_min = frame_best * cut * best_key / key if key > 0.0 else math.inf
                base = node * vocab
                for token, p in frame_candidates:  # sorted, most likely first
                    if p < p_min:
                        break
                    child = children.get(base + token)
                    if child is None:
                        if fused:
                            child = extend(node, token)
                        else:
                            child = len(parent)
                            parent.append(node)
                            last_token.append(token)
                            children[base + token] = child
                    if child < 0:
                        continue
                    if token == last:  # a repeat is a new label only after a blank
                        if pb:
                            next_label[child] = next_label.get(child, 0.0) + pb * p
                    else:
                        next_label[child] = next_label.get(child, 0.0) + total * p
            # Prefix totals: every labelled extension, plus the (at most beam) blank-extended prefixes.
            totals = next_label.copy()
            for node, p in next_blank.items():
                totals[node] = totals.get(node, 0.0) + p
            if fused:
                ranked = sorted(
                    ((log(total) + fused_score[node], node) for node, total in totals.items() if total > 0.0),
                    reverse=True,
                )
                floor = ranked[0][0] - theta if ranked else 0.0
                beams = [
                    (node, next_blank.get(node, 0.0), next_label.get(node, 0.0), key)
                    for key, node in ranked[:beam]
                    if key >= floor
                ]
            else:
                kept = sorted(totals.items(), key=_second, reverse=True)[:beam]  # (node, total)
                floor = kept[0][1] * cut
                beams = [
                    (node, next_blank.get(node, 0.0), next_label.get(node, 0.0), key)
                    for node, key in kept
                    if key >= floor
                ]
            if not beams:  # every prefix was forbidden (lexicon) or underflowed
                return []
            top = max(pb + pnb for _, pb, pnb, _ in beams) if fused else beams[0][3]
            if 0.0 < top < _RESCALE_BELOW:
                offset += log(top)
                beams = [(node, pb / top, pnb / top, key if fused else key / top) for node, pb, pnb, key in beams]
        # Blank-only frames after the last active one change no prefix's total: nothing to do.
        return self._finish([beam[:3] for beam in beams], offset)

    def _extend(self, node: int, token: int) -> int:
        """Create the child prefix ``node + token`` (LM-scored, lexicon-checked); -1 if not allowed."""
        key = node * self.vocab + token
        state = self.rules.append(self.info[node], token)
        if state is None:
            self.children[key] = -1
            return -1
        child = len(self.parent)
        self.parent.append(node)
        self.last.append(token)
        self.fused_score.append(self.options.lm_weight * state[1] + self.options.word_bonus * state[2])
        self.info.append(state)
        self.children[key] = child
        return child

    def _finish(
        self,
        beams: list[tuple[int, float, float]],
        offset: float,
        info: dict[int, WordState] | list[WordState] | None = None,
    ) -> list[Hypothesis]:
        """The final prefixes as hypotheses, best first; ``info``: their word states (default: the
        Python loop's, every node's)."""
        options = self.options
        info = self.info if info is None else info
        finished = []
        for node, pb, pnb in beams:
            total = pb + pnb
            if total <= 0.0:
                continue
            acoustic = math.log(total) + offset
            if not self.fused:  # plain CTC: the trie kept no LM or word fields
                finished.append((True, acoustic, acoustic, 0.0, node))
                continue
            state = info[node]
            complete = True
            if state[3] or state[4]:  # a word being spelled: close it (an unfinished lexicon word stays open)
                closed = self.rules.close(state)
                complete = closed is not None
                state = closed or state
            lm_state, lm_raw, words = state[:3]
            if self.lm is not None:
                lm_raw += self.lm.finish(lm_state)
            score = acoustic + options.lm_weight * lm_raw + options.word_bonus * words
            finished.append((complete, score, acoustic, lm_raw, node))
        if any(complete for complete, *_ in finished):  # an unfinished lexicon word only if nothing else
            finished = [entry for entry in finished if entry[0]]
        finished.sort(key=lambda entry: entry[1], reverse=True)
        return [
            Hypothesis(self._token_ids(node), score, acoustic, lm_raw) for _, score, acoustic, lm_raw, node in finished
        ]

    def _token_ids(self, node: int) -> list[int]:
        ids = []
        while node > 0:
            ids.append(self.last[node])
            node = self.parent[node]
        return ids[::-1]
