"""Bootstrap confidence intervals and paired significance tests for error rates.

The utterance is the unit of resampling (Bisani & Ney 2004, "Bootstrap estimates for confidence
intervals in ASR performance evaluation"): a resample draws U utterances with replacement, and its
error rate is sum(errors) / sum(totals) over the drawn utterances, as the corpus WER itself is, so
long utterances weigh more than short ones. Intervals are percentile intervals of R resampled
rates (numpy's default linear interpolation between order statistics).

Speed: resample indices (R, U) are drawn once from one seeded ``numpy.random.Generator`` and
turned into draw counts (R, U), so every resampled sum is one matrix product ``counts @ values``
with values (U, K) holding all systems' errors and the totals: no Python loop over resamples or
utterances. Systems compared together share the same resamples, which is what makes the paired
bootstrap paired. Resamples are processed in blocks of about 2**23 draws to bound memory.

Paired tests over per-utterance error counts of two systems on the same utterances:
- paired bootstrap: Bisani & Ney's probability of improvement, the share of resamples in which
  system A has the lower error rate (ties count one half, so identical systems give 0.5);
- sign test: exact two-sided binomial test over the utterances where the error counts differ;
- matched pairs: an utterance-level variant of sclite's MAPSSWE test (sclite cuts segments at words
  both systems got right; here every utterance is a segment): the mean per-utterance difference in
  errors over its standard error, two-sided normal p-value.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_ALPHA = 0.05
DECISION_TESTS = ("mp", "sign", "bootstrap")
_EXACT_TRIALS = 2000  # sign test: exact integer binomial tails up to this many differing utterances
_BLOCK_DRAWS = 1 << 23  # draws per block of resamples: (rows, U) counts in float64 stay near 64 MiB


def _block_rows(utterances: int, resamples: int) -> int:
    return max(1, min(resamples, _BLOCK_DRAWS // max(utterances, 1)))


def _index_blocks(utterances: int, resamples: int, seed: int):
    """Yield resample indices in blocks of rows, (rows, U), from one Generator seeded with ``seed``.

    The block size depends only on U, so the stream (and every statistic) is a function of
    (U, resamples, seed) alone.
    """
    rng = np.random.default_rng(seed)
    rows = _block_rows(utterances, resamples)
    dtype = np.int32 if rows * utterances < 2**31 else np.int64
    for start in range(0, resamples, rows):
        yield rng.integers(0, utterances, size=(min(rows, resamples - start), utterances), dtype=dtype)


def resample_indices(utterances: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """The utterance indices of every resample, (R, U): row r lists the utterances resample r draws."""
    if utterances == 0:
        return np.zeros((resamples, 0), dtype=np.int32)
    return np.concatenate(list(_index_blocks(utterances, resamples, seed)))


def resampled_sums(values: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Column sums of ``values`` (U, K) over each resample of its rows: (R, K), float64.

    Equal to ``values[resample_indices(U, R, seed)].sum(axis=1)``, computed as draw counts
    (R, U) @ values without materializing the (R, U, K) gather. Integer values stay exact (float64
    holds integers up to 2**53).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    utterances = values.shape[0]
    if utterances == 0:
        return np.zeros((resamples, values.shape[1]))
    sums = []
    for indices in _index_blocks(utterances, resamples, seed):
        rows = indices.shape[0]
        offsets = (np.arange(rows, dtype=indices.dtype) * utterances)[:, None]
        counts = np.bincount((indices + offsets).ravel(), minlength=rows * utterances)
        sums.append(counts.reshape(rows, utterances).astype(np.float64) @ values)
    return np.concatenate(sums)


def _percent(errors: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """100 * errors / totals, and NaN where totals is 0: with no reference word the rate is undefined
    (as ErrorRates reports it), however many insertions there are."""
    rates = np.full(np.broadcast_shapes(errors.shape, totals.shape), np.nan)
    np.divide(100.0 * errors, totals, out=rates, where=totals > 0)
    return rates


def _as_systems(errors, totals) -> tuple[np.ndarray, np.ndarray]:
    """Errors as (S, U) and totals as (S, U), checking that they describe the same utterances."""
    errors = np.atleast_2d(np.asarray(errors, dtype=np.float64))
    totals = np.asarray(totals, dtype=np.float64)
    totals = np.broadcast_to(totals, errors.shape) if totals.ndim == 1 else totals
    if totals.shape != errors.shape:
        raise ValueError(f"errors {errors.shape} and totals {totals.shape} cover different utterances")
    return errors, totals


def resampled_rates(errors, totals, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Error rates in percent of S systems in each resample, (R, S); errors (S, U) or (U,)."""
    errors, totals = _as_systems(errors, totals)
    systems = errors.shape[0]
    shared = bool(np.all(totals == totals[:1]))
    columns = np.concatenate([errors, totals[:1] if shared else totals]).T  # (U, S + 1) or (U, 2S)
    sums = resampled_sums(columns, resamples, seed)
    total_sums = sums[:, systems:] if not shared else sums[:, systems : systems + 1]
    return _percent(sums[:, :systems], total_sums)


def _interval(rates: np.ndarray, confidence: float) -> np.ndarray:
    """Percentile interval over axis 0 of (R, S) rates: (S, 2).

    Resamples that drew no reference word at all (only empty references: possible when some are
    empty) have no rate and are left out; a system with no defined resample gets NaN bounds.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} is not in (0, 1)")
    tail = (1.0 - confidence) / 2.0
    if not np.isnan(rates).any():
        return np.quantile(rates, [tail, 1.0 - tail], axis=0).T
    intervals = np.full((rates.shape[1], 2), np.nan)
    for system in range(rates.shape[1]):
        defined = rates[:, system][~np.isnan(rates[:, system])]
        if defined.size:
            intervals[system] = np.quantile(defined, [tail, 1.0 - tail])
    return intervals


def bootstrap_cis(
    errors, totals, resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0
) -> np.ndarray:
    """Confidence intervals in percent for S systems at once, (S, 2) [low, high].

    ``errors`` (S, U) per-utterance error counts; ``totals`` (U,) reference words (or characters),
    or (S, U). All systems share the same resamples; each row equals ``bootstrap_ci`` of that
    system alone with the same seed.
    """
    return _interval(resampled_rates(errors, totals, resamples, seed), confidence)


def bootstrap_ci(
    errors, totals, resamples: int = DEFAULT_RESAMPLES, confidence: float = DEFAULT_CONFIDENCE, seed: int = 0
) -> tuple[float, float]:
    """Bootstrap confidence interval (low, high) in percent of one system's error rate.

    ``errors`` (U,) per-utterance error counts (S + D + I) and ``totals`` (U,) per-utterance
    reference lengths. NaN bounds when no utterance has a reference word (the rate is undefined).
    """
    low, high = bootstrap_cis(np.asarray(errors)[None, :], totals, resamples, confidence, seed)[0]
    return float(low), float(high)


def _improvement_matrix(rates: np.ndarray) -> np.ndarray:
    """(S, S): entry [i, j] is the share of resamples where system i's rate is below system j's.

    Systems on the same utterances share their totals, so a resample with no reference word is
    undefined for all of them at once; such resamples are left out (0.5 if none is defined).
    """
    rates = rates[~np.isnan(rates).any(axis=1)]
    if rates.shape[0] == 0:
        return np.full((rates.shape[1], rates.shape[1]), 0.5)
    lower = (rates[:, :, None] < rates[:, None, :]).mean(axis=0)
    ties = (rates[:, :, None] == rates[:, None, :]).mean(axis=0)
    return lower + 0.5 * ties


def paired_bootstrap_matrix(errors, totals, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Probability of improvement for every ordered pair of S systems: (S, S), [i, j] = P(i better than j)."""
    return _improvement_matrix(resampled_rates(errors, totals, resamples, seed))


def paired_bootstrap(errors_a, errors_b, totals, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> float:
    """Bisani & Ney's probability of improvement: the share of resamples where A's error rate is lower than B's.

    Ties count one half. Both systems are scored on each resample of the same utterances.
    """
    return float(paired_bootstrap_matrix(np.stack([errors_a, errors_b]), totals, resamples, seed)[0, 1])


@dataclass(frozen=True)
class SignTest:
    a_better: int  # utterances where A has fewer errors than B
    b_better: int
    p_value: float  # exact, two-sided


def binomial_two_sided(successes: int, trials: int) -> float:
    """Exact two-sided p-value of ``successes`` out of ``trials`` under Binomial(trials, 1/2).

    Twice the smaller tail, capped at 1. Up to ``_EXACT_TRIALS`` trials the tail is an exact
    integer sum divided once (correctly rounded); beyond, it is summed in log space.
    """
    if trials == 0:
        return 1.0
    smaller = min(successes, trials - successes)
    if trials <= _EXACT_TRIALS:
        term, tail = 1, 1
        for index in range(smaller):
            term = term * (trials - index) // (index + 1)
            tail += term
        return min(1.0, 2 * tail / 2**trials)
    steps = np.arange(1, smaller + 1, dtype=np.float64)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log(trials - steps + 1) - np.log(steps))])
    log_pmf = log_choose - trials * math.log(2.0)
    peak = log_pmf.max()
    upper_tail = math.exp(peak) * float(np.exp(log_pmf - peak).sum())
    return min(1.0, 2.0 * upper_tail)


def sign_test(errors_a, errors_b) -> SignTest:
    """Exact two-sided sign test over the utterances where A's and B's error counts differ."""
    difference = np.asarray(errors_a, dtype=np.float64) - np.asarray(errors_b, dtype=np.float64)
    a_better, b_better = int((difference < 0).sum()), int((difference > 0).sum())
    return SignTest(a_better, b_better, binomial_two_sided(a_better, a_better + b_better))


@dataclass(frozen=True)
class MatchedPairsTest:
    mean_difference: float  # mean over utterances of errors_a - errors_b
    z: float
    p_value: float  # two-sided, normal approximation


def matched_pairs_test(errors_a, errors_b) -> MatchedPairsTest:
    """Matched-pairs test on per-utterance error differences (utterance-level MAPSSWE).

    z = mean(d) / (sd(d) / sqrt(U)), d = errors_a - errors_b; p = 2 (1 - Phi(|z|)). With no
    variation in d the p-value is 1 when the mean is 0 and 0 otherwise.
    """
    difference = np.asarray(errors_a, dtype=np.float64) - np.asarray(errors_b, dtype=np.float64)
    count = difference.size
    mean = float(difference.mean()) if count else 0.0
    deviation = float(difference.std(ddof=1)) if count > 1 else 0.0
    if deviation == 0.0:
        return MatchedPairsTest(mean, 0.0 if mean == 0.0 else math.copysign(math.inf, mean), float(mean == 0.0))
    z = mean / (deviation / math.sqrt(count))
    return MatchedPairsTest(mean, z, math.erfc(abs(z) / math.sqrt(2.0)))


@dataclass
class PairResult:
    a: str
    b: str
    p_a_better: float  # paired bootstrap probability that A's error rate is lower than B's
    sign_p: float
    a_better_utterances: int  # sign test: utterances where A has fewer errors
    b_better_utterances: int
    mp_p: float
    mp_z: float  # matched pairs z of errors_a - errors_b: negative when A makes fewer errors


@dataclass
class SystemResult:
    name: str
    rate: float  # percent
    ci: list[float]  # [low, high] percent
    best: bool
    not_significantly_worse: bool  # than the best (True for the best itself)


@dataclass
class SystemComparison:
    systems: list[SystemResult]
    pairs: list[PairResult]  # every unordered pair once, in input order (a before b)
    best: str
    test: str  # the test deciding "significantly worse": mp | sign | bootstrap
    alpha: float
    resamples: int
    confidence: float
    seed: int

    def pair(self, a: str, b: str) -> PairResult:
        for pair in self.pairs:
            if (pair.a, pair.b) == (a, b):
                return pair
            if (pair.b, pair.a) == (a, b):
                return PairResult(
                    a,
                    b,
                    1.0 - pair.p_a_better,
                    pair.sign_p,
                    pair.b_better_utterances,
                    pair.a_better_utterances,
                    pair.mp_p,
                    -pair.mp_z,
                )
        raise KeyError(f"no pair {a!r}, {b!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def _significantly_worse(pair: PairResult, test: str, alpha: float) -> bool:
    """Whether B is significantly worse than A (A the best system)."""
    if test == "bootstrap":
        return pair.p_a_better >= 1.0 - alpha
    if test == "sign":
        return pair.sign_p < alpha and pair.a_better_utterances > pair.b_better_utterances
    return pair.mp_p < alpha and pair.mp_z < 0


def compare_systems(
    errors,
    totals,
    names: list[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    test: str = "mp",
) -> SystemComparison:
    """Confidence intervals and all pairwise tests for S systems scored on the same U utterances.

    ``errors`` (S, U) per-utterance error counts, ``totals`` (U,) per-utterance reference
    lengths. The best system has the lowest error rate (the first one on a tie); another is "not
    significantly worse" unless ``test`` rejects equality at ``alpha`` in the best one's favour:
    ``mp`` (matched pairs, two-sided p < alpha), ``sign`` (two-sided p < alpha) or ``bootstrap``
    (probability that the best is better >= 1 - alpha).
    """
    if test not in DECISION_TESTS:
        raise ValueError(f"unknown test '{test}' (valid: {', '.join(DECISION_TESTS)})")
    errors = np.atleast_2d(np.asarray(errors, dtype=np.float64))
    totals = np.asarray(totals, dtype=np.float64)
    systems = errors.shape[0]
    names = list(names) if names is not None else [f"system{index}" for index in range(systems)]
    if len(names) != systems or len(set(names)) != systems:
        raise ValueError(f"{systems} systems need {systems} distinct names, got {names}")
    if not totals.sum() > 0:
        raise ValueError("no reference words: error rates are undefined, so systems cannot be compared")
    rates = resampled_rates(errors, totals, resamples, seed)
    intervals = _interval(rates, confidence)
    improvement = _improvement_matrix(rates)
    point = _percent(errors.sum(axis=1), np.full(systems, totals.sum()))
    best = int(np.argmin(point))
    pairs = []
    for i in range(systems):
        for j in range(i + 1, systems):
            sign = sign_test(errors[i], errors[j])
            matched = matched_pairs_test(errors[i], errors[j])
            pairs.append(
                PairResult(
                    names[i],
                    names[j],
                    float(improvement[i, j]),
                    sign.p_value,
                    sign.a_better,
                    sign.b_better,
                    matched.p_value,
                    matched.z,
                )
            )
    comparison = SystemComparison([], pairs, names[best], test, alpha, resamples, confidence, seed)
    for index, name in enumerate(names):
        worse = index != best and _significantly_worse(comparison.pair(names[best], name), test, alpha)
        comparison.systems.append(
            SystemResult(name, float(point[index]), [float(v) for v in intervals[index]], index == best, not worse)
        )
    return comparison
