"""Transducer (RNN-T) search: batched greedy search and icefall's modified beam search.

Both drive a model through the transducer protocol (:class:`asrbench.models.base.TransducerFamily`):
``predictor_init_state``, ``predictor_step``, ``select_state``, ``merge_state`` and ``join``, over
the encoder output ``encoded (B, T', D)`` with ``lengths (B,)``. Token id 0 is the blank, and also
the predictor's start symbol (as in icefall); the joiner gives ``<sos/eos>`` probability zero, so
it is never emitted. Scores are natural-log probabilities of the path (or, after merging, of the
paths) a hypothesis stands for.

- Greedy search: per frame, the best symbol; after a non-blank one the predictor reads it and the
  joiner scores the same frame again, up to ``max_symbols_per_frame`` symbols, and a blank moves
  on to the next frame (so does reaching the limit, as in icefall: no blank is scored then). All
  utterances of the batch step through the frames together; the predictor runs on the whole batch
  and its new output and state are kept only where a symbol was emitted.
- Modified beam search (icefall's ``modified_beam_search``; Kang et al. 2023, "Fast and parallel
  decoding for transducer"): at most one symbol per frame, so every hypothesis advances one frame
  per step and the hypotheses of all utterances go through the joiner and the predictor as one
  batch. Per frame each hypothesis proposes its ``beam`` best tokens (blank included: the
  hypothesis unchanged); proposals with the same tokens merge by log-add (two alignments of one
  label sequence), and each utterance keeps its ``beam`` best. A token proposal may also get an
  extra score (``score_extension``: an LM, a lexicon), added where the proposals are scored.
  With ``beam`` 1 it is greedy search with one symbol per frame.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from asrbench.errors import AsrbenchError

BLANK = 0

# (utterance index in the batch, the hypothesis' tokens, candidate tokens (K,), all non-blank)
# -> extra scores (K,) added to those candidates' scores: the place for LM fusion or a lexicon
# (-inf forbids a token). Called once per hypothesis and frame.
ScoreExtension = Callable[[int, tuple[int, ...], np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TransducerBeamOptions:
    beam: int = 4  # hypotheses kept per utterance after every frame
    length_norm: bool = False  # rank the final hypotheses by score / (tokens + 1); icefall ranks so
    # tokens a hypothesis may emit on one encoder frame: 1 is icefall's (and sherpa-onnx's) modified
    # beam search; more lets characters at a low frame rate come out on time, as greedy search does
    max_symbols_per_frame: int = 1

    def __post_init__(self) -> None:
        if self.beam < 1:
            raise AsrbenchError(f"transducer beam: beam must be at least 1, not {self.beam}")
        if self.max_symbols_per_frame < 1:
            raise AsrbenchError(f"--max-symbols must be at least 1, not {self.max_symbols_per_frame}")


@dataclass
class TransducerHypothesis:
    token_ids: list[int]
    score: float  # log-probability of the path(s), plus any extension scores


@dataclass
class GreedyState:
    """Greedy search part way through a batch: the predictor's output and state after each
    utterance's last symbol, the symbols so far, their frames and path scores. Resumable, so a
    stream can be searched chunk by chunk (:func:`greedy_advance`) with the result of one pass."""

    predicted: torch.Tensor  # (B, P)
    state: object
    tokens: list[list[int]]
    token_frames: list[list[int]]  # per symbol, the frame (from the stream's start) it was emitted on
    scores: torch.Tensor  # (B,) float64
    quiet: torch.Tensor  # (B,) int64: frames searched since the utterance's last symbol
    frames: int = 0  # frames searched so far


@torch.no_grad()
def greedy_init(model, batch: int, device: torch.device) -> GreedyState:
    """The state before the first frame: the predictor has read the start symbol (the blank)."""
    state = model.predictor_init_state(batch, device)
    predicted, state = model.predictor_step(torch.full((batch,), BLANK, dtype=torch.long, device=device), state)
    return GreedyState(
        predicted,
        state,
        [[] for _ in range(batch)],
        [[] for _ in range(batch)],
        torch.zeros(batch, dtype=torch.float64, device=device),
        torch.zeros(batch, dtype=torch.long, device=device),
    )


@torch.no_grad()
def greedy_advance(
    model, search: GreedyState, encoded: torch.Tensor, lengths: torch.Tensor, max_symbols_per_frame: int = 3
) -> GreedyState:
    """Search the next frames, encoded (B, T', D) with lengths (B,), from ``search`` (updated)."""
    if max_symbols_per_frame < 1:
        raise AsrbenchError(f"max_symbols_per_frame must be at least 1, not {max_symbols_per_frame}")
    lengths = lengths.to(encoded.device)
    if encoded.size(0) == 1:
        return _greedy_advance_one(model, search, encoded, int(lengths[0]), max_symbols_per_frame)
    predicted, state, scores, quiet = search.predicted, search.state, search.scores, search.quiet
    for t in range(encoded.size(1)):
        active = lengths > t  # (B,): utterances still on frame t
        quiet = quiet + active.long()
        frame = encoded[:, t]
        for _ in range(max_symbols_per_frame):
            best_log_probs, best = model.join(frame, predicted).max(dim=-1)  # (B,), (B,)
            scores += torch.where(active, best_log_probs.double(), 0.0)
            emitted = active & (best != BLANK)
            if not bool(emitted.any()):
                break
            new_predicted, new_state = model.predictor_step(torch.where(emitted, best, BLANK), state)
            predicted = torch.where(emitted[:, None], new_predicted, predicted)
            state = model.merge_state(state, new_state, emitted)
            quiet = torch.where(emitted, 0, quiet)
            best_tokens = best.tolist()
            for i in emitted.nonzero().flatten().tolist():
                search.tokens[i].append(best_tokens[i])
                search.token_frames[i].append(search.frames + t)
            active = emitted  # a blank moves on to the next frame
    search.predicted, search.state, search.scores, search.quiet = predicted, state, scores, quiet
    search.frames += encoded.size(1)
    return search


def _greedy_advance_one(
    model, search: GreedyState, encoded: torch.Tensor, length: int, max_symbols_per_frame: int
) -> GreedyState:
    """:func:`greedy_advance` for a batch of one (a file being transcribed, a stream): the same
    joiner and predictor calls on the same rows, and the same float64 path score added in the same
    order, with the bookkeeping in Python numbers instead of one-element tensors (which cost more
    than the joiner itself on a small model)."""
    predicted, state = search.predicted, search.state
    score, quiet = float(search.scores[0]), int(search.quiet[0])
    tokens, token_frames = search.tokens[0], search.token_frames[0]
    frames = encoded[0]
    for t in range(min(length, encoded.size(1))):
        quiet += 1
        frame = frames[t : t + 1]  # (1, D)
        for _ in range(max_symbols_per_frame):
            best_log_prob, best_tensor = model.join(frame, predicted).max(dim=-1)
            score += float(best_log_prob.double())
            best = int(best_tensor)
            if best == BLANK:
                break
            predicted, state = model.predictor_step(best_tensor, state)
            quiet = 0
            tokens.append(best)
            token_frames.append(search.frames + t)
    search.predicted, search.state = predicted, state
    search.scores = torch.tensor([score], dtype=torch.float64, device=encoded.device)
    search.quiet = torch.tensor([quiet], dtype=torch.long, device=encoded.device)
    search.frames += encoded.size(1)
    return search


@torch.no_grad()
def greedy_search(
    model, encoded: torch.Tensor, lengths: torch.Tensor, max_symbols_per_frame: int = 3
) -> list[TransducerHypothesis]:
    """Batched greedy search: encoded (B, T', D), lengths (B,) -> one hypothesis per utterance."""
    search = greedy_advance(
        model, greedy_init(model, encoded.size(0), encoded.device), encoded, lengths, max_symbols_per_frame
    )
    return [TransducerHypothesis(ids, score) for ids, score in zip(search.tokens, search.scores.tolist(), strict=True)]


@dataclass
class _Beams:
    """The live hypotheses of every utterance, grouped by utterance: row r of ``predicted`` (N, P)
    and of the predictor state belongs to utterance ``owners[r]``."""

    owners: list[int]
    prefixes: list[tuple[int, ...]]
    scores: list[float]
    predicted: torch.Tensor
    state: object

    def select(self, model, rows: list[int]) -> _Beams:
        index = torch.tensor(rows, dtype=torch.long, device=self.predicted.device)
        return _Beams(
            [self.owners[r] for r in rows],
            [self.prefixes[r] for r in rows],
            [self.scores[r] for r in rows],
            self.predicted.index_select(0, index),
            model.select_state(self.state, index),
        )


def _proposals(
    beams: _Beams, log_probs: torch.Tensor, beam: int, score_extension: ScoreExtension | None
) -> list[tuple[int, int, float]]:
    """Each utterance's ``beam`` best (source row, token, score) extensions, identical prefixes
    merged by log-add; grouped by utterance, best first within each. log_probs (N, V)."""
    width = min(beam, log_probs.size(1))
    totals, top_tokens = _scored_top(beams, list(range(len(beams.owners))), log_probs, beam, score_extension)
    chosen: list[tuple[int, int, float]] = []
    start = 0
    for _, group in itertools.groupby(beams.owners):
        stop = start + len(list(group))
        merged: dict[tuple[int, ...], list] = {}  # prefix -> [source row, token, score]
        for row in range(start, stop):
            for column in range(width):
                score = float(totals[row, column])
                if score == float("-inf"):
                    continue
                token = int(top_tokens[row, column])
                prefix = beams.prefixes[row] + (token,) if token != BLANK else beams.prefixes[row]
                if prefix in merged:  # the same label sequence by another alignment
                    merged[prefix][2] = float(np.logaddexp(merged[prefix][2], score))
                else:
                    merged[prefix] = [row, token, score]
        best = sorted(merged.values(), key=lambda entry: -entry[2])[:beam]
        chosen.extend((row, token, score) for row, token, score in best)
        start = stop
    return chosen


def _frame_rounds(
    model, beams: _Beams, frame: torch.Tensor, options: TransducerBeamOptions, score_extension: ScoreExtension | None
) -> _Beams:
    """One encoder frame (``frame`` (B, D)) of modified beam search where a hypothesis may emit up
    to ``options.max_symbols_per_frame`` tokens: in each round the hypotheses still open on the
    frame extend by blank (which closes them) or by a token (which keeps them open, until the last
    round); closed ones pass through. Hypotheses with the same tokens and openness merge by log-add,
    and each utterance keeps its ``beam`` best after every round."""
    is_open = [True] * len(beams.owners)
    for round_ in range(options.max_symbols_per_frame):
        rows = [row for row, flag in enumerate(is_open) if flag]
        if not rows:
            break
        totals, tokens = _extensions(model, beams, rows, frame, options.beam, score_extension)
        last = round_ + 1 == options.max_symbols_per_frame
        kept = _round_choice(beams, is_open, rows, totals, tokens, options.beam, last)
        beams = _advance(model, beams, [(row, token, score) for _, (row, token, score) in kept])
        is_open = [key[2] for key, _ in kept]
    return beams


def _extensions(
    model, beams: _Beams, rows: list[int], frame: torch.Tensor, beam: int, score_extension: ScoreExtension | None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``beam`` best (scores, tokens) of each of ``rows`` on ``frame``, extension scores added."""
    index = torch.tensor(rows, dtype=torch.long, device=beams.predicted.device)
    owners = torch.tensor([beams.owners[row] for row in rows], dtype=torch.long, device=frame.device)
    log_probs = model.join(frame[owners], beams.predicted.index_select(0, index))  # (rows, V)
    return _scored_top(beams, rows, log_probs, beam, score_extension)


def _scored_top(
    beams: _Beams, rows: list[int], log_probs: torch.Tensor, beam: int, score_extension: ScoreExtension | None
) -> tuple[np.ndarray, np.ndarray]:
    """Path scores (float64) and tokens of the ``beam`` best tokens of each of ``rows`` (log_probs
    (len(rows), V), one row each): the only tokens a hypothesis can keep; extension scores added to
    the non-blank ones."""
    top_log_probs, top_token_ids = log_probs.topk(min(beam, log_probs.size(1)), dim=-1)
    totals = np.asarray([beams.scores[row] for row in rows])[:, None] + top_log_probs.double().cpu().numpy()
    tokens = top_token_ids.cpu().numpy()
    if score_extension is not None:
        for at, row in enumerate(rows):
            labels = tokens[at] != BLANK
            if labels.any():
                totals[at, labels] += score_extension(beams.owners[row], beams.prefixes[row], tokens[at, labels])
    return totals, tokens


def _round_choice(
    beams: _Beams, is_open: list[bool], rows: list[int], totals: np.ndarray, tokens: np.ndarray, beam: int, last: bool
) -> list[tuple[tuple[int, tuple[int, ...], bool], list]]:
    """One round's hypotheses, ((owner, prefix, open), [source row, token, score]), each utterance's
    ``beam`` best, grouped by utterance: closed rows pass through (token blank), open rows extend."""
    candidates: dict[tuple[int, tuple[int, ...], bool], list] = {}
    offers = [(row, BLANK, beams.scores[row], False) for row, flag in enumerate(is_open) if not flag]
    offers += [
        (row, int(tokens[at, column]), float(totals[at, column]), int(tokens[at, column]) != BLANK and not last)
        for at, row in enumerate(rows)
        for column in range(tokens.shape[1])
        if totals[at, column] != float("-inf")
    ]
    for row, token, score, stays_open in offers:
        prefix = beams.prefixes[row] + (token,) if token != BLANK else beams.prefixes[row]
        key = (beams.owners[row], prefix, stays_open)
        if key in candidates:  # the same tokens by another alignment
            candidates[key][2] = float(np.logaddexp(candidates[key][2], score))
        else:
            candidates[key] = [row, token, score]
    kept: list[tuple[tuple[int, tuple[int, ...], bool], list]] = []
    by_owner = sorted(candidates.items(), key=lambda item: item[0][0])
    for _, group in itertools.groupby(by_owner, key=lambda item: item[0][0]):
        kept += sorted(group, key=lambda item: -item[1][2])[:beam]
    return kept


def _advance(model, beams: _Beams, chosen: list[tuple[int, int, float]]) -> _Beams:
    """The hypotheses ``chosen`` makes: the predictor reads the emitted tokens (one batched step)."""
    rows = [row for row, _, _ in chosen]
    selected = beams.select(model, rows)
    tokens = torch.tensor([token for _, token, _ in chosen], dtype=torch.long, device=beams.predicted.device)
    emitted = tokens != BLANK
    predicted, state = selected.predicted, selected.state
    if bool(emitted.any()):
        new_predicted, new_state = model.predictor_step(tokens, state)
        predicted = torch.where(emitted[:, None], new_predicted, predicted)
        state = model.merge_state(state, new_state, emitted)
    prefixes = [
        selected.prefixes[i] + (token,) if token != BLANK else selected.prefixes[i]
        for i, (_, token, _) in enumerate(chosen)
    ]
    return _Beams(selected.owners, prefixes, [score for _, _, score in chosen], predicted, state)


@torch.no_grad()
def modified_beam_search(
    model,
    encoded: torch.Tensor,
    lengths: torch.Tensor,
    options: TransducerBeamOptions,
    score_extension: ScoreExtension | None = None,
    score_end: Callable[[tuple[int, ...]], float] | None = None,
) -> list[list[TransducerHypothesis]]:
    """encoded (B, T', D), lengths (B,) -> each utterance's hypotheses, best first.

    ``score_end(tokens)`` is added to each final hypothesis' score before ranking (an LM's end of
    sentence and last word; ``-inf`` where a lexicon word is unfinished). Hypotheses scored
    ``-inf`` rank last, and are returned only when nothing else is."""
    batch, frames, _ = encoded.shape
    device = encoded.device
    ends = [int(length) for length in lengths.tolist()]
    state = model.predictor_init_state(batch, device)
    predicted, state = model.predictor_step(torch.full((batch,), BLANK, dtype=torch.long, device=device), state)
    beams = _Beams(list(range(batch)), [()] * batch, [0.0] * batch, predicted, state)
    finished: list[list[TransducerHypothesis]] = [[] for _ in range(batch)]
    for t in range(frames + 1):
        live = [row for row, owner in enumerate(beams.owners) if ends[owner] > t]
        if len(live) < len(beams.owners):  # utterances that end here leave the search
            for row, owner in enumerate(beams.owners):
                if ends[owner] <= t:
                    finished[owner].append(TransducerHypothesis(list(beams.prefixes[row]), beams.scores[row]))
            beams = beams.select(model, live)
        if not live:
            break
        if options.max_symbols_per_frame > 1:
            beams = _frame_rounds(model, beams, encoded[:, t], options, score_extension)
            continue
        owners = torch.tensor(beams.owners, dtype=torch.long, device=device)
        log_probs = model.join(encoded[owners, t], beams.predicted)  # (N, V)
        beams = _advance(model, beams, _proposals(beams, log_probs, options.beam, score_extension))

    if score_end is not None:
        for hypotheses in finished:
            for hypothesis in hypotheses:
                hypothesis.score += score_end(tuple(hypothesis.token_ids))

    def rank(hypothesis: TransducerHypothesis) -> float:
        return hypothesis.score / (len(hypothesis.token_ids) + 1) if options.length_norm else hypothesis.score

    return [sorted(hypotheses, key=rank, reverse=True) for hypotheses in finished]
