"""Attention beam search with optional joint CTC/attention scoring (Watanabe et al. 2017).

A hypothesis's score is ``(1 - ctc_weight) * log p_att(y) + ctc_weight * log p_ctc(y...)`` plus a
length bonus per token, where ``p_ctc(y...)`` is the CTC *prefix* probability: the probability
that the utterance's CTC output starts with ``y``. It penalizes the two classic attention
failures, stopping early (a prefix that leaves speech unexplained has a poor ``<eos>`` score)
and looping (repeated words have no CTC support). CTC scores are computed only for the
``pre_beam`` best attention candidates of each hypothesis, as in ESPnet.

The search is synchronous: every running hypothesis has the same length. A hypothesis ends when
it picks ``<eos>``; the search stops when no running one
scores better than the best ended one (exact without length normalization or bonus; otherwise
ESPnet's end detection), or at the model's maximum length. Ended hypotheses are ranked by score,
or by score divided by length when ``length_norm`` is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from asrbench.errors import AsrbenchError

NEG_INF = -1e30


@dataclass(frozen=True)
class AttentionBeamOptions:
    beam: int = 10
    ctc_weight: float = 0.0  # 0 = attention scores only
    length_bonus: float = 0.0  # added per output token (including <eos>)
    length_norm: bool = False  # rank ended hypotheses by score / length (CTC scoring already curbs short outputs)
    pre_beam_ratio: float = 1.5  # CTC scores the best ratio * beam attention candidates per hypothesis

    def __post_init__(self) -> None:
        if self.beam < 1:
            raise AsrbenchError(f"beam must be at least 1, not {self.beam}")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise AsrbenchError(f"ctc weight must be in [0, 1], not {self.ctc_weight}")


@dataclass
class AttentionHypothesis:
    token_ids: list[int]  # without <sos> and <eos>
    score: float  # the joint score, length bonus included
    attention: float  # log p_att of the tokens and <eos>
    ctc: float  # CTC log-probability of the whole label sequence (0 when not scored)


class CTCPrefixScorer:
    """CTC prefix probabilities for one utterance, vectorized over hypotheses and candidates.

    For a prefix ``g`` the state holds ``r[t, 0]`` and ``r[t, 1]``: log-probabilities that the first
    ``t + 1`` frames produce ``g`` ending in a non-blank or in a blank frame.
    """

    def __init__(self, log_probs: np.ndarray, blank: int, eos: int):
        # (T, V); floored so cumulative sums stay finite (e^-1e4 is zero anyway)
        self.x = np.maximum(log_probs.astype(np.float64), -1e4)
        self.blank = blank
        self.eos = eos
        self.frames = log_probs.shape[0]

    def initial_state(self) -> np.ndarray:
        """(T, 2, 1) for the empty prefix: no non-blank frames, all-blank up to t."""
        r = np.full((self.frames, 2, 1), NEG_INF)
        r[:, 1, 0] = np.cumsum(self.x[:, self.blank])
        return r

    def score(self, r_prev: np.ndarray, last: np.ndarray, prefix_length: int, candidates: np.ndarray):
        """r_prev (T, 2, N); last tokens (N,) (-1 for the empty prefix); candidates (N, K) ->
        prefix log-probs (N, K) of ``g + c`` and their states (T, 2, N, K)."""
        frames = self.frames
        n, k = candidates.shape
        xs = self.x[:, candidates]  # (T, N, K)
        r = np.full((frames, 2, n, k), NEG_INF)
        if prefix_length == 0:
            r[0, 0] = xs[0]
        # phi: g's probability at t-1 that may be followed by c (a repeat needs a blank in between).
        both = np.logaddexp(r_prev[:, 0], r_prev[:, 1])  # (T, N)
        phi = np.repeat(both[:, :, None], k, axis=2)
        repeat = candidates == last[:, None]
        if repeat.any():
            phi[:, repeat] = np.broadcast_to(r_prev[:, 1, :, None], (frames, n, k))[:, repeat]
        # The recursions r_n[t] = x_c[t] + logaddexp(r_n[t-1], phi[t-1]) and r_b[t] = x_blank[t] +
        # logaddexp(r_b[t-1], r_n[t-1]) are linear in probability space, so they unroll into
        # cumulative sums: r_n[t] = C[t] + logsumexp_{s<=t}(phi[s-1] - C[s-1]) with C the cumulative
        # sum of x_c (and likewise for r_b). No Python loop over frames.
        if frames > 1:
            cum = np.cumsum(xs[1:], axis=0)  # C[1..T-1]
            cum_prev = np.concatenate([np.zeros((1, n, k)), cum[:-1]], axis=0)  # C[0..T-2]
            steps = np.logaddexp.accumulate(phi[:-1] - cum_prev, axis=0)  # over s = 1..t
            r[1:, 0] = cum + np.logaddexp(r[0, 0][None], steps)
            blank_cum = np.cumsum(self.x[1:, self.blank])  # B[1..T-1]
            blank_prev = np.concatenate([[0.0], blank_cum[:-1]])
            r[1:, 1] = blank_cum[:, None, None] + np.logaddexp.accumulate(r[:-1, 0] - blank_prev[:, None, None], axis=0)
            np.maximum(r, NEG_INF, out=r)
        terms = np.concatenate([r[:1, 0], phi[:-1] + xs[1:]], axis=0)  # (T, N, K)
        psi = np.logaddexp.reduce(terms, axis=0)
        ended = candidates == self.eos  # <eos>: the prefix is the whole label sequence
        if ended.any():
            psi[ended] = np.broadcast_to(both[-1][:, None], (n, k))[ended]
        return psi, r


END_MARGIN = 10.0  # nats: ESPnet's end detection threshold (D_end = log 1e-10 ~ -23 there; 10 is stricter)
END_LENGTHS = 3  # ... over this many consecutive lengths


def _search_is_over(
    ended: list[AttentionHypothesis], best_running: float, position: int, options: AttentionBeamOptions
) -> bool:
    """Whether more steps can no longer change the best hypothesis.

    Without length normalization or bonus, scores only fall as tokens are added, so once every
    running hypothesis scores below the best ended one the search is exact to stop. Otherwise
    (a normalized score can rise again) it stops as ESPnet does: when for each of the last
    ``END_LENGTHS`` lengths the hypotheses that ended there are ``END_MARGIN`` worse than the best.
    """
    best_ended = max(h.score for h in ended)
    if not options.length_norm and options.length_bonus <= 0:
        return best_running < best_ended
    for length in range(position - END_LENGTHS + 1, position + 1):
        same = [h.score for h in ended if len(h.token_ids) == length]
        if not same or max(same) - best_ended >= -END_MARGIN:
            return False
    return True


@torch.no_grad()
def attention_beam_search(
    model,
    memory: torch.Tensor,
    memory_length: int,
    options: AttentionBeamOptions,
    ctc_log_probs: torch.Tensor | None = None,
) -> list[AttentionHypothesis]:
    """Beam search for one utterance: memory (1, T, D); ``ctc_log_probs`` (T, V) enables joint
    scoring with ``options.ctc_weight``. Returns the ended hypotheses, best first."""
    memory = memory[:, :memory_length]
    lengths = torch.tensor([memory_length], device=memory.device)
    state = model.init_state(memory, lengths)
    eos, beam = model.eos, options.beam
    weight = options.ctc_weight if ctc_log_probs is not None else 0.0
    scorer = None
    if weight > 0 and ctc_log_probs is not None:  # weight > 0 only with ctc_log_probs
        scorer = CTCPrefixScorer(ctc_log_probs[:memory_length].float().cpu().numpy(), 0, eos)
        ctc_states = scorer.initial_state()
        ctc_prefix = np.zeros(1)
    prefixes = torch.full((1, 1), model.sos, dtype=torch.long, device=memory.device)
    scores, attention_scores = np.zeros(1), np.zeros(1)
    ended: list[AttentionHypothesis] = []
    max_length = model.max_length(memory_length)
    for position in range(max_length + 1):
        log_probs, state = model.step(state, prefixes)
        log_probs = log_probs.float().cpu().numpy().astype(np.float64)  # (N, V)
        log_probs[:, 0] = NEG_INF  # the CTC blank is not an output of the decoder
        if position == max_length:  # out of length: only <eos> remains
            forced = np.full_like(log_probs, NEG_INF)
            forced[:, eos] = log_probs[:, eos]
            log_probs = forced
        width = min(log_probs.shape[1], max(beam, int(options.pre_beam_ratio * beam)) if weight > 0 else beam)
        candidates = np.argpartition(-log_probs, width - 1, axis=1)[:, :width]  # (N, K)
        attention = np.take_along_axis(log_probs, candidates, axis=1)
        joint = attention.copy()
        if weight > 0:
            last = prefixes[:, -1].cpu().numpy() if position > 0 else np.full(len(scores), -1)
            assert scorer is not None  # built above when weight > 0
            psi, new_states = scorer.score(ctc_states, last, position, candidates)
            joint = (1 - weight) * attention + weight * (psi - ctc_prefix[:, None])
        total = scores[:, None] + joint + options.length_bonus
        flat = np.argsort(-total, axis=None)[:beam]
        rows, cols = np.unravel_index(flat, total.shape)
        keep_rows, keep_tokens = [], []
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            if total[row, col] <= NEG_INF / 2:
                continue
            token = int(candidates[row, col])
            if token == eos:
                ended.append(
                    AttentionHypothesis(
                        prefixes[row, 1:].tolist(),
                        float(total[row, col]),
                        float(attention_scores[row] + attention[row, col]),
                        float(psi[row, col]) if weight > 0 else 0.0,
                    )
                )
            else:
                keep_rows.append(row)
                keep_tokens.append((row, col))
        if not keep_rows:
            break
        if ended and _search_is_over(ended, max(total[r, c] for r, c in keep_tokens), position, options):
            break
        index = torch.tensor(keep_rows, device=memory.device)
        state = model.reorder_state(state, index)
        new_tokens = torch.tensor([int(candidates[r, c]) for r, c in keep_tokens], device=memory.device)
        prefixes = torch.cat([prefixes.index_select(0, index), new_tokens.unsqueeze(1)], dim=1)
        scores = np.array([total[r, c] for r, c in keep_tokens])
        attention_scores = np.array([attention_scores[r] + attention[r, c] for r, c in keep_tokens])
        if weight > 0:
            ctc_states = np.stack([new_states[:, :, r, c] for r, c in keep_tokens], axis=2)
            ctc_prefix = np.array([psi[r, c] for r, c in keep_tokens])
    if not ended:  # cannot happen with max_length forcing, but never return nothing
        ended.append(AttentionHypothesis(prefixes[0, 1:].tolist(), float(scores[0]), float(attention_scores[0]), 0.0))
    if options.length_norm:
        ended.sort(key=lambda h: h.score / (len(h.token_ids) + 1), reverse=True)
    else:
        ended.sort(key=lambda h: h.score, reverse=True)
    return ended


@torch.no_grad()
def batch_attention_beam_search(
    model, features: torch.Tensor, feature_lengths: torch.Tensor, options: AttentionBeamOptions
) -> list[list[int]]:
    """Encode a batch once, then search each utterance; returns the best token ids per utterance."""
    memory, memory_lengths = model.encode(features, feature_lengths)
    ctc = None
    if options.ctc_weight > 0:
        if model.ctc_head is None:
            raise AsrbenchError("joint CTC/attention scoring needs a model trained with a CTC branch (ctc_weight > 0)")
        ctc = model.ctc_head(memory)
    return search_encoded(model, memory, memory_lengths, ctc, options)


def search_encoded(
    model, memory: torch.Tensor, memory_lengths: torch.Tensor, ctc: torch.Tensor | None, options: AttentionBeamOptions
) -> list[list[int]]:
    """Beam search each utterance of an encoded batch: memory (B, T, D), CTC log-probs (B, T, V)
    or None; returns the best token ids per utterance."""
    best = []
    for i, length in enumerate(memory_lengths.tolist()):
        hypotheses = attention_beam_search(
            model, memory[i : i + 1], int(length), options, None if ctc is None else ctc[i]
        )
        best.append(hypotheses[0].token_ids)
    return best
