"""The CTC prefix beam search's per-utterance loop without LM fusion, compiled with numba.

:class:`asrbench.decoding.ctc_beam._Search` holds the search in plain Python; these are the same
loops over arrays, for the searches without an LM: :func:`prefix_search` scores with the acoustic
model alone (no lexicon, no word bonus: ``_Search.fused`` is False), :func:`fused_prefix_search`
adds a lexicon, a word bonus or both (the word rules of ``WordRules`` as :class:`WordArrays`).
Each does the same float64 operations in the same order as the Python loop, so it returns the
same prefixes with the same bits (tests/decoding/test_ctc_beam_kernel.py holds both to that):
prefix totals are summed in the order the Python loop sums them; the plain beam is ranked by a
stable sort of the prefixes in the order the Python loop first meets them, the fused one by
(score, node) as Python sorts those tuples.

What changes is the bookkeeping: the prefix trie is three arrays (parent, last label, and an
open-addressing hash table from ``node * V + token`` to the child node) and a frame's prefix
totals live in slots reached through a node -> slot array, instead of dicts.

numba (BSD-2; LLVM through llvmlite) compiles the loop on first use and caches the machine code
next to this file (``cache=True``; ``NUMBA_CACHE_DIR`` moves it). Measured against the Python loop
and flashlight-text in benchmarks/decode_bench.py. A search with an LM calls back into the LM (a
Python object) for every new prefix and stays in ``_Search``.
"""

from __future__ import annotations

import math
import weakref
from functools import cache

import numpy as np

_RESCALE_BELOW = 1e-100  # as in ctc_beam: renormalize the beams before their probabilities underflow


def available() -> bool:
    """Whether the compiled loop can run here (numba imports; imported only when a search asks, as
    importing numba takes ~0.3 s)."""
    return _compiled() is not None


@cache
def _compiled():
    try:
        from numba import njit
    except ImportError:  # numba is a dependency; a platform without its wheels still decodes, in Python
        return None
    return njit(cache=True, nogil=True)(_prefix_search)


def prefix_search(rows, tokens, counts, skipped, beam: int, cut: float):
    """:func:`_prefix_search`, compiled (call only where :func:`available`)."""
    return _compiled()(rows, tokens, counts, skipped, beam, cut)


def _prefix_search(rows, tokens, counts, skipped, beam, cut):  # pragma: no cover - compiled; tested through it
    """The hot loop: one utterance's plain prefix beam search over its active frames, in one
    function because numba compiles one function's locals into registers.

    ``rows`` (A, V) float64: each active frame's probabilities scaled by its best one; ``tokens``
    (A, K) int64: its candidate labels, most likely first, of which the first ``counts[a]`` are kept;
    ``skipped`` (A,) int64: the blank-only frames before each; ``beam``: prefixes kept; ``cut``:
    exp(-score_beam).

    Returns (beam nodes, their pb, their pnb, parent (N,), last label (N,), log scale taken out).
    """
    frames, vocab = rows.shape
    capacity = 1024
    parent = np.empty(capacity, np.int64)
    last_token = np.empty(capacity, np.int64)
    parent[0], last_token[0] = -1, -1
    nodes = 1
    # children: open addressing, linear probing; key node * V + token, -1 marks a free cell.
    table_size = 4096
    table_keys = np.full(table_size, -1, np.int64)
    table_values = np.empty(table_size, np.int64)
    table_used = 0
    # A frame's prefix totals: node -> slot, and per slot its node, label and blank sums. Slot i < size
    # is beam prefix i (the only ones with a blank sum), the labelled extensions come after.
    slot_of = np.full(capacity, -1, np.int64)
    most = beam * (tokens.shape[1] + 2)
    slot_node = np.empty(most, np.int64)
    slot_label = np.zeros(most, np.float64)
    slot_has_label = np.zeros(most, np.bool_)
    slot_blank = np.zeros(most, np.float64)
    label_order = np.empty(most, np.int64)  # slots in the order their label sum was first added to
    order_slots = np.empty(most, np.int64)
    order_totals = np.empty(most, np.float64)
    ranking = np.empty(most, np.int64)

    beam_node = np.zeros(beam, np.int64)
    beam_pb = np.zeros(beam, np.float64)
    beam_pnb = np.zeros(beam, np.float64)
    beam_key = np.zeros(beam, np.float64)
    beam_pb[0], beam_key[0] = 1.0, 1.0
    size = 1
    log_scale = 0.0

    for frame in range(frames):
        if skipped[frame]:
            for i in range(size):
                beam_pb[i] = beam_pb[i] + beam_pnb[i]
                beam_pnb[i] = 0.0
        p_blank = rows[frame, 0]
        count = counts[frame]
        frame_best = p_blank
        if count > 0 and rows[frame, tokens[frame, 0]] > p_blank:
            frame_best = rows[frame, tokens[frame, 0]]
        best_key = beam_key[0]
        for i in range(size):
            slot_of[beam_node[i]] = i
            slot_node[i] = beam_node[i]
            slot_label[i], slot_has_label[i] = 0.0, False
            slot_blank[i] = (beam_pb[i] + beam_pnb[i]) * p_blank
        slots = size
        labelled = 0
        for i in range(size):
            node, pb, pnb, key = beam_node[i], beam_pb[i], beam_pnb[i], beam_key[i]
            total = pb + pnb
            slot = i
            last = last_token[node]
            if pnb != 0.0 and last >= 0:  # the last label continues (no new label)
                if not slot_has_label[slot]:
                    slot_has_label[slot] = True
                    label_order[labelled] = slot
                    labelled += 1
                slot_label[slot] = slot_label[slot] + pnb * rows[frame, last]
            if key > 0.0:
                p_min = frame_best * cut * best_key / key
            else:
                p_min = math.inf
            base = node * vocab
            for c in range(count):  # sorted, most likely first
                token = tokens[frame, c]
                p = rows[frame, token]
                if p < p_min:
                    break
                key_code = base + token
                cell = key_code % table_size
                while table_keys[cell] != -1 and table_keys[cell] != key_code:
                    cell = (cell + 1) % table_size
                if table_keys[cell] == key_code:
                    child = table_values[cell]
                else:
                    child = nodes
                    if nodes == capacity:
                        capacity *= 2
                        parent = np.concatenate((parent, np.empty(capacity - nodes, np.int64)))
                        last_token = np.concatenate((last_token, np.empty(capacity - nodes, np.int64)))
                        slot_of = np.concatenate((slot_of, np.full(capacity - nodes, -1, np.int64)))
                    parent[nodes], last_token[nodes] = node, token
                    nodes += 1
                    table_keys[cell], table_values[cell] = key_code, child
                    table_used += 1
                    if 2 * table_used > table_size:  # keep the table at most half full
                        old_keys, old_values = table_keys, table_values
                        table_size *= 2
                        table_keys = np.full(table_size, -1, np.int64)
                        table_values = np.empty(table_size, np.int64)
                        for j in range(old_keys.shape[0]):
                            if old_keys[j] != -1:
                                moved = old_keys[j] % table_size
                                while table_keys[moved] != -1:
                                    moved = (moved + 1) % table_size
                                table_keys[moved], table_values[moved] = old_keys[j], old_values[j]
                if token == last:  # a repeat is a new label only after a blank
                    if pb == 0.0:
                        continue
                    added = pb * p
                else:
                    added = total * p
                child_slot = slot_of[child]
                if child_slot < 0:
                    child_slot = slots
                    slots += 1
                    slot_of[child] = child_slot
                    slot_node[child_slot] = child
                    slot_label[child_slot], slot_has_label[child_slot] = 0.0, False
                if not slot_has_label[child_slot]:
                    slot_has_label[child_slot] = True
                    label_order[labelled] = child_slot
                    labelled += 1
                slot_label[child_slot] = slot_label[child_slot] + added
        # Prefix totals in the Python loop's dict order: labelled prefixes as first met, then the
        # beam's blank-only ones in beam order; label sum plus blank sum.
        ordered = 0
        for j in range(labelled):
            slot = label_order[j]
            order_slots[ordered] = slot
            order_totals[ordered] = slot_label[slot] + slot_blank[slot] if slot < size else slot_label[slot]
            ordered += 1
        for i in range(size):
            if not slot_has_label[i]:
                order_slots[ordered] = i
                order_totals[ordered] = 0.0 + slot_blank[i]
                ordered += 1
        # Rank by total, highest first, ties in order (sorted(reverse=True) is stable): insertion
        # sort, as there are at most beam x (K + 2) prefixes and it compiles faster than argsort.
        for j in range(ordered):
            ranking[j] = j
            r = j
            while r > 0 and order_totals[ranking[r - 1]] < order_totals[j]:
                ranking[r] = ranking[r - 1]
                r -= 1
            ranking[r] = j
        keep = min(beam, ordered)
        floor = order_totals[ranking[0]] * cut
        previous, size = size, 0
        for r in range(keep):
            j = ranking[r]
            total = order_totals[j]
            if total < floor:
                continue
            slot = order_slots[j]
            beam_node[size] = slot_node[slot]
            beam_pb[size] = slot_blank[slot] if slot < previous else 0.0
            beam_pnb[size] = slot_label[slot] if slot_has_label[slot] else 0.0
            beam_key[size] = total
            size += 1
        for j in range(slots):
            slot_of[slot_node[j]] = -1
        top = beam_key[0]
        if 0.0 < top < _RESCALE_BELOW:
            log_scale += math.log(top)
            for i in range(size):
                beam_pb[i] = beam_pb[i] / top
                beam_pnb[i] = beam_pnb[i] / top
                beam_key[i] = beam_key[i] / top
    beams = (beam_node[:size].copy(), beam_pb[:size].copy(), beam_pnb[:size].copy())
    return beams[0], beams[1], beams[2], parent[:nodes], last_token[:nodes], log_scale


@cache
def _compiled_fused():
    try:
        from numba import njit
    except ImportError:
        return None
    return njit(cache=True, nogil=True)(_fused_prefix_search)


def fused_prefix_search(rows, tokens, counts, skipped, beam: int, theta: float, offset: float, words):
    """:func:`_fused_prefix_search`, compiled (call only where :func:`available`); ``words`` is a
    :class:`WordArrays`."""
    return _compiled_fused()(
        rows,
        tokens,
        counts,
        skipped,
        beam,
        theta,
        offset,
        words.lm_weight,
        words.word_bonus,
        words.separator,
        words.is_start,
        words.piece_nonempty,
        words.words_matter,
        words.has_lexicon,
        words.lex_offsets,
        words.lex_tokens,
        words.lex_children,
        words.lex_is_word,
    )


class WordArrays:
    """:class:`asrbench.decoding.ctc_beam.WordRules` without an LM, as arrays for the compiled loop:
    the separator and word-start tokens, which pieces write text, and the lexicon's trie (each node's
    children as a slice of ``lex_tokens`` / ``lex_children`` from ``lex_offsets``)."""

    def __init__(self, rules, vocab: int, lm_weight: float, word_bonus: float):
        self.lm_weight, self.word_bonus = float(lm_weight), float(word_bonus)
        self.separator = -1 if rules.separator is None else int(rules.separator)
        self.is_start = np.zeros(vocab, np.bool_)
        for token in rules.starts:
            if 0 <= token < vocab:
                self.is_start[token] = True
        self.piece_nonempty = np.array([bool(piece) for piece in rules.pieces], np.bool_)
        self.words_matter = bool(rules.words_matter)
        lexicon = rules.lexicon
        self.has_lexicon = lexicon is not None
        self.lex_offsets, self.lex_tokens, self.lex_children, self.lex_is_word = lexicon_arrays(lexicon)


def lexicon_arrays(lexicon) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A :class:`asrbench.decoding.ctc_beam.Lexicon` trie as (offsets (N + 1,), tokens, children,
    is_word (N,)): node n's children are ``children[offsets[n]:offsets[n + 1]]``, reached by
    ``tokens`` there. Kept per lexicon (a search runs per batch) until a word is added."""
    children = lexicon.children if lexicon is not None else [{}]
    version = (len(children), len(lexicon)) if lexicon is not None else None
    cached = _LEXICON_ARRAYS.get(lexicon) if lexicon is not None else None
    if cached is not None and cached[0] == version:
        return cached[1]
    offsets = np.zeros(len(children) + 1, np.int64)
    offsets[1:] = np.cumsum([len(node) for node in children])
    tokens = np.array([token for node in children for token in node], np.int64)
    targets = np.array([child for node in children for child in node.values()], np.int64)
    words = lexicon.words if lexicon is not None else [None]
    arrays = (offsets, tokens, targets, np.array([word is not None for word in words], np.bool_))
    if lexicon is not None:
        _LEXICON_ARRAYS[lexicon] = (version, arrays)
    return arrays


_LEXICON_ARRAYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # lexicon -> (version, arrays)


def _fused_prefix_search(  # pragma: no cover - compiled; tested through it
    rows,
    tokens,
    counts,
    skipped,
    beam,
    theta,
    offset,
    lm_weight,
    word_bonus,
    separator,
    is_start,
    piece_nonempty,
    words_matter,
    has_lexicon,
    lex_offsets,
    lex_tokens,
    lex_children,
    lex_is_word,
):
    """The hot loop of ``ctc_beam._Search.run`` with fusion but no LM (a lexicon, a word bonus, or
    both), in one function as :func:`_prefix_search`: the same float64 operations in the same
    order as that loop, so the same prefixes, the same bits.

    Prefixes are ranked by ``log(total) + fused score`` (the word bonus times the words closed),
    highest first, ties by the later node (Python sorts (key, node) tuples in reverse); a new
    prefix follows :meth:`WordRules.append`: a separator, or a word-start token after a word,
    closes the word (allowed with a lexicon only on a lexicon word), a leading or second separator
    is not allowed where words matter, and with a lexicon a token must continue the lexicon's trie.

    Returns (beam nodes, their pb, their pnb, parent (N,), last label (N,), the offset with the
    renormalizations added, as the Python loop adds them).
    """
    frames, vocab = rows.shape
    capacity = 1024
    parent = np.empty(capacity, np.int64)
    last_token = np.empty(capacity, np.int64)
    fused_score = np.empty(capacity, np.float64)
    node_words = np.empty(capacity, np.int64)
    node_partial = np.empty(capacity, np.bool_)
    node_lex = np.empty(capacity, np.int64)
    parent[0], last_token[0], fused_score[0] = -1, -1, 0.0
    node_words[0], node_partial[0], node_lex[0] = 0, False, 0
    nodes = 1
    table_size = 4096
    table_keys = np.full(table_size, -1, np.int64)
    table_values = np.empty(table_size, np.int64)
    table_used = 0
    slot_of = np.full(capacity, -1, np.int64)
    most = beam * (tokens.shape[1] + 2)
    slot_node = np.empty(most, np.int64)
    slot_label = np.zeros(most, np.float64)
    slot_has_label = np.zeros(most, np.bool_)
    slot_blank = np.zeros(most, np.float64)
    rank_keys = np.empty(most, np.float64)
    rank_slots = np.empty(most, np.int64)

    beam_node = np.zeros(beam, np.int64)
    beam_pb = np.zeros(beam, np.float64)
    beam_pnb = np.zeros(beam, np.float64)
    beam_key = np.zeros(beam, np.float64)
    beam_pb[0] = 1.0
    size = 1

    for frame in range(frames):
        if skipped[frame]:
            for i in range(size):
                beam_pb[i] = beam_pb[i] + beam_pnb[i]
                beam_pnb[i] = 0.0
        p_blank = rows[frame, 0]
        count = counts[frame]
        frame_best = p_blank
        if count > 0 and rows[frame, tokens[frame, 0]] > p_blank:
            frame_best = rows[frame, tokens[frame, 0]]
        best_key = beam_key[0]
        for i in range(size):
            slot_of[beam_node[i]] = i
            slot_node[i] = beam_node[i]
            slot_label[i], slot_has_label[i] = 0.0, False
            slot_blank[i] = (beam_pb[i] + beam_pnb[i]) * p_blank
        slots = size
        for i in range(size):
            node, pb, pnb, key = beam_node[i], beam_pb[i], beam_pnb[i], beam_key[i]
            total = pb + pnb
            last = last_token[node]
            if pnb != 0.0 and last >= 0:  # the last label continues (no new label)
                slot_has_label[i] = True
                slot_label[i] = slot_label[i] + pnb * rows[frame, last]
            p_min = frame_best * math.exp(best_key - key - theta)
            base = node * vocab
            for c in range(count):  # sorted, most likely first
                token = tokens[frame, c]
                p = rows[frame, token]
                if p < p_min:
                    break
                key_code = base + token
                cell = key_code % table_size
                while table_keys[cell] != -1 and table_keys[cell] != key_code:
                    cell = (cell + 1) % table_size
                if table_keys[cell] == key_code:
                    child = table_values[cell]
                else:
                    # WordRules.append: the child's words, or -1 where it is not allowed.
                    words, partial, lex = node_words[node], node_partial[node], node_lex[node]
                    allowed = True
                    is_separator = token == separator
                    if is_separator or (is_start[token] and (partial or lex != 0)):
                        if partial or lex != 0:
                            if has_lexicon and not lex_is_word[lex]:
                                allowed = False
                            words, partial, lex = words + 1, False, 0
                        elif words_matter:
                            allowed = False
                    if allowed and not is_separator:
                        if has_lexicon:
                            found = -1
                            for j in range(lex_offsets[lex], lex_offsets[lex + 1]):
                                if lex_tokens[j] == token:
                                    found = lex_children[j]
                                    break
                            if found < 0:
                                allowed = False
                            lex = found
                        partial = partial or piece_nonempty[token]
                    child = -1
                    if allowed:
                        child = nodes
                        if nodes == capacity:
                            capacity *= 2
                            grow = capacity - nodes
                            parent = np.concatenate((parent, np.empty(grow, np.int64)))
                            last_token = np.concatenate((last_token, np.empty(grow, np.int64)))
                            fused_score = np.concatenate((fused_score, np.empty(grow, np.float64)))
                            node_words = np.concatenate((node_words, np.empty(grow, np.int64)))
                            node_partial = np.concatenate((node_partial, np.empty(grow, np.bool_)))
                            node_lex = np.concatenate((node_lex, np.empty(grow, np.int64)))
                            slot_of = np.concatenate((slot_of, np.full(grow, -1, np.int64)))
                        parent[nodes], last_token[nodes] = node, token
                        fused_score[nodes] = lm_weight * 0.0 + word_bonus * words
                        node_words[nodes], node_partial[nodes], node_lex[nodes] = words, partial, lex
                        nodes += 1
                    table_keys[cell], table_values[cell] = key_code, child
                    table_used += 1
                    if 2 * table_used > table_size:  # keep the table at most half full
                        old_keys, old_values = table_keys, table_values
                        table_size *= 2
                        table_keys = np.full(table_size, -1, np.int64)
                        table_values = np.empty(table_size, np.int64)
                        for j in range(old_keys.shape[0]):
                            if old_keys[j] != -1:
                                moved = old_keys[j] % table_size
                                while table_keys[moved] != -1:
                                    moved = (moved + 1) % table_size
                                table_keys[moved], table_values[moved] = old_keys[j], old_values[j]
                if child < 0:
                    continue
                if token == last:  # a repeat is a new label only after a blank
                    if pb == 0.0:
                        continue
                    added = pb * p
                else:
                    added = total * p
                child_slot = slot_of[child]
                if child_slot < 0:
                    child_slot = slots
                    slots += 1
                    slot_of[child] = child_slot
                    slot_node[child_slot] = child
                    slot_label[child_slot], slot_has_label[child_slot] = 0.0, False
                slot_has_label[child_slot] = True
                slot_label[child_slot] = slot_label[child_slot] + added
        # Every prefix with a positive total, ranked by (log total + fused score, node), highest first.
        ranked = 0
        for slot in range(slots):
            if slot_has_label[slot]:
                total = slot_label[slot] + slot_blank[slot] if slot < size else slot_label[slot]
            else:
                total = 0.0 + slot_blank[slot]
            if total > 0.0:
                rank_key = math.log(total) + fused_score[slot_node[slot]]
                r = ranked
                while r > 0 and (
                    rank_keys[r - 1] < rank_key
                    or (rank_keys[r - 1] == rank_key and slot_node[rank_slots[r - 1]] < slot_node[slot])
                ):
                    rank_keys[r] = rank_keys[r - 1]
                    rank_slots[r] = rank_slots[r - 1]
                    r -= 1
                rank_keys[r], rank_slots[r] = rank_key, slot
                ranked += 1
        previous, size = size, 0
        if ranked > 0:
            floor = rank_keys[0] - theta
            for r in range(min(beam, ranked)):
                if rank_keys[r] < floor:
                    continue
                slot = rank_slots[r]
                beam_node[size] = slot_node[slot]
                beam_pb[size] = slot_blank[slot] if slot < previous else 0.0
                beam_pnb[size] = slot_label[slot] if slot_has_label[slot] else 0.0
                beam_key[size] = rank_keys[r]
                size += 1
        for j in range(slots):
            slot_of[slot_node[j]] = -1
        if size == 0:  # every prefix was forbidden (lexicon) or underflowed
            break
        top = beam_pb[0] + beam_pnb[0]
        for i in range(1, size):
            if beam_pb[i] + beam_pnb[i] > top:
                top = beam_pb[i] + beam_pnb[i]
        if 0.0 < top < _RESCALE_BELOW:
            offset += math.log(top)
            for i in range(size):
                beam_pb[i] = beam_pb[i] / top
                beam_pnb[i] = beam_pnb[i] / top
    return (
        beam_node[:size].copy(),
        beam_pb[:size].copy(),
        beam_pnb[:size].copy(),
        parent[:nodes],
        last_token[:nodes],
        offset,
    )
