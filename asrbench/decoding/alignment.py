"""Where each token of a hypothesis sits in time: Viterbi alignment of a token sequence to the
network's output frames, for word timestamps and confidences (``asrbench transcribe``).

Whatever search produced the tokens (greedy, beam, lexicon, LM), they are aligned afterwards to
the model's own outputs, so every decoder gets times the same way:

- CTC (a CTC model, or the CTC branch of a hybrid): the best path over the usual CTC topology
  (blank, token, blank, ... with repeats and skips between different tokens). A token spans the
  frames its path stays on it; CTC paths are peaky, so a token is usually one or two frames and
  the blanks around it belong to no token.
- Transducer: the best path through the T x (U+1) lattice of the joiner (a blank moves to the
  next frame, a token to the next position on the same frame); a token sits on the frame that
  emitted it.

A token's probability is ``exp`` of its best frame's log-probability (CTC) or of its emission's
(transducer): what :func:`word_spans` turns into a word's confidence (its lowest token's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BLANK = 0


@dataclass(frozen=True)
class TokenAlignment:
    """One utterance: per token its first and last output frame and its probability, on a grid
    of ``frames`` output frames that cover ``input_frames`` feature frames, ``subsampling``
    feature frames to an output frame (what the model declares, :func:`subsampling_of`)."""

    tokens: list[int]
    spans: list[tuple[int, int]]  # (first, last) output frame per token, inclusive
    probabilities: list[float]  # per token, in [0, 1]
    frames: int  # T', the output frames of the utterance
    input_frames: int  # T, its feature frames
    subsampling: int | None  # feature frames per output frame; None: an export that does not say

    def seconds_per_frame(self, frame_shift_seconds: float) -> float:
        """The duration of one output frame: the encoder's declared subsampling times the feature
        shift. (Without a declared one, an older export: the utterance's T / T', which overstates
        it on short utterances, e.g. 20 / 3 frames for an 8x encoder.)"""
        if self.subsampling is not None:
            return frame_shift_seconds * self.subsampling
        return frame_shift_seconds * self.input_frames / max(1, self.frames)


def subsampling_of(model) -> int | None:
    """Feature frames per output frame, as the model's encoder declares it (``subsampling_factor``,
    :class:`asrbench.models.base.Encoder`; an exported model's from its manifest, None when an
    older export's manifest does not record it)."""
    return model.acoustic_encoder().subsampling_factor


def ctc_viterbi(
    log_probs: torch.Tensor, tokens: list[int], blank: int = BLANK
) -> tuple[list[tuple[int, int]], list[float]]:
    """Best CTC path of ``tokens`` through ``log_probs`` (T, V): per token its (first, last) frame
    and the probability of its best frame. Tokens that cannot fit (more than T frames needed) get
    the spans of a uniform split, with probability 0."""
    frames = int(log_probs.size(0))
    if not tokens:
        return [], []
    scores = log_probs.detach().double().cpu().numpy()
    states = [blank]
    for token in tokens:
        states += [token, blank]
    labels = np.asarray(states)
    count = len(states)
    # A token state may be entered from two states back (skipping the blank) when it differs from
    # the token before it.
    skip = np.zeros(count, dtype=bool)
    skip[3::2] = labels[3::2] != labels[1:-2:2]
    needed = len(tokens) + int(sum(a == b for a, b in zip(tokens, tokens[1:], strict=False)))
    if needed > frames:
        return _uniform(frames, len(tokens))
    alpha = np.full(count, -np.inf)
    alpha[0] = scores[0, blank]
    alpha[1] = scores[0, labels[1]]
    back = np.zeros((frames, count), dtype=np.int8)  # 0 stay, 1 from the previous state, 2 skip
    for t in range(1, frames):
        stay = alpha
        step = np.concatenate(([-np.inf], alpha[:-1]))
        jump = np.where(skip, np.concatenate(([-np.inf, -np.inf], alpha[:-2])), -np.inf)
        best = np.stack([stay, step, jump])
        choice = best.argmax(axis=0)
        back[t] = choice
        alpha = best[choice, np.arange(count)] + scores[t, labels]
    state = count - 1 if alpha[count - 1] >= alpha[count - 2] else count - 2
    path = np.empty(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= int(back[t, state])
    spans: list[tuple[int, int]] = []
    probabilities: list[float] = []
    for position in range(len(tokens)):
        on = np.flatnonzero(path == 2 * position + 1)
        spans.append((int(on[0]), int(on[-1])))
        probabilities.append(float(np.exp(scores[on, tokens[position]].max())))
    return spans, probabilities


def _uniform(frames: int, count: int) -> tuple[list[tuple[int, int]], list[float]]:
    edges = np.linspace(0, frames, count + 1)
    spans = [(int(edges[i]), max(int(edges[i]), int(np.ceil(edges[i + 1])) - 1)) for i in range(count)]
    return spans, [0.0] * count


def transducer_viterbi(
    lattice: torch.Tensor, tokens: list[int], blank: int = BLANK
) -> tuple[list[tuple[int, int]], list[float]]:
    """Best transducer path of ``tokens`` through the joiner's ``lattice`` (T, U+1, V) of
    log-probabilities (row u: after the first u tokens): per token the frame that emits it (as a
    (frame, frame) span) and its emission probability."""
    frames = int(lattice.size(0))
    if not tokens:
        return [], []
    scores = lattice.detach().double().cpu().numpy()
    count = len(tokens)
    blanks = scores[:, :, blank]  # (T, U+1)
    emits = scores[:, np.arange(count), np.asarray(tokens)]  # (T, U): token u+1 emitted at (t, u)
    alpha = np.full((frames, count + 1), -np.inf)
    entry = np.full(count + 1, -np.inf)
    entry[0] = 0.0
    with np.errstate(invalid="ignore"):
        for t in range(frames):
            if t > 0:
                entry = alpha[t - 1] + blanks[t - 1]  # arrive on frame t by a blank
            # Then emissions along u on frame t: alpha[t, u] = max over k <= u of entry[k] + the
            # emissions k..u-1, a running maximum over cumulative sums.
            emitted = np.concatenate(([0.0], np.cumsum(emits[t])))
            alpha[t] = emitted + np.maximum.accumulate(np.nan_to_num(entry - emitted, nan=-np.inf))
    # The path ends with a blank on the last frame after the last token.
    t, u = frames - 1, count
    emitted_at = [0] * count
    while u > 0:
        from_emit = alpha[t, u - 1] + emits[t, u - 1]
        from_blank = alpha[t - 1, u] + blanks[t - 1, u] if t > 0 else -np.inf
        if from_emit >= from_blank:
            u -= 1
            emitted_at[u] = t
        else:
            t -= 1
    return (
        [(frame, frame) for frame in emitted_at],
        [float(np.exp(emits[frame, position])) for position, frame in enumerate(emitted_at)],
    )


@dataclass(frozen=True)
class WordSpan:
    word: str
    start: float  # seconds from the start of the utterance
    end: float
    confidence: float  # the lowest probability of its tokens


def word_groups(tokens: list[int], tokenizer) -> list[list[int]]:
    """Positions of ``tokens`` grouped into words: a word ends at the word separator (the space,
    ``|``), and a word-start token (sentencepiece's ``▁`` pieces) begins a new one. Special
    tokens belong to no word."""
    separator, starts, specials = tokenizer.word_separator_id, tokenizer.word_start_ids, tokenizer.special_ids
    groups: list[list[int]] = []
    current: list[int] = []
    for position, token in enumerate(tokens):
        if token == separator or token in specials:
            if current:
                groups.append(current)
            current = []
            continue
        if token in starts and current:
            groups.append(current)
            current = []
        current.append(position)
    if current:
        groups.append(current)
    return groups


def word_spans(alignment: TokenAlignment, tokenizer, frame_shift_seconds: float) -> list[WordSpan]:
    """Words of an aligned hypothesis with their times and confidences. A word starts at the first
    frame of its first token and ends one output frame after the last frame of its last token."""
    step = alignment.seconds_per_frame(frame_shift_seconds)
    words: list[WordSpan] = []
    for group in word_groups(alignment.tokens, tokenizer):
        text = tokenizer.decode([alignment.tokens[i] for i in group]).strip()
        if not text:
            continue
        first, last = alignment.spans[group[0]][0], alignment.spans[group[-1]][1]
        words.append(
            WordSpan(
                text,
                round(first * step, 3),
                round((last + 1) * step, 3),
                round(min(alignment.probabilities[i] for i in group), 4),
            )
        )
    return words


def ctc_alignments(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    feature_lengths: torch.Tensor,
    token_ids: list[list[int]],
    subsampling: int | None,
) -> list[TokenAlignment]:
    """A batch: log_probs (B, T', V), lengths (B,), feature_lengths (B,) -> one alignment each;
    ``subsampling``: the model's feature frames per output frame (:func:`subsampling_of`)."""
    alignments = []
    for i, tokens in enumerate(token_ids):
        frames = int(lengths[i])
        spans, probabilities = ctc_viterbi(log_probs[i, :frames], list(tokens))
        alignments.append(
            TokenAlignment(list(tokens), spans, probabilities, frames, int(feature_lengths[i]), subsampling)
        )
    return alignments


@torch.no_grad()
def transducer_alignments(
    model, encoded: torch.Tensor, lengths: torch.Tensor, feature_lengths: torch.Tensor, token_ids: list[list[int]]
) -> list[TokenAlignment]:
    """A batch through a transducer's joiner (``model.joint_log_probs``), one utterance at a time
    so the lattice is one utterance's T' x (U+1) x V."""
    alignments = []
    for i, tokens in enumerate(token_ids):
        frames = int(lengths[i])
        targets = torch.tensor([list(tokens)], dtype=torch.long, device=encoded.device)
        lattice = model.joint_log_probs(encoded[i : i + 1, :frames], targets)[0]  # (T', U+1, V)
        spans, probabilities = transducer_viterbi(lattice, list(tokens))
        alignments.append(
            TokenAlignment(list(tokens), spans, probabilities, frames, int(feature_lengths[i]), subsampling_of(model))
        )
    return alignments
