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
import statistics
from dataclasses import asdict, dataclass, field

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
    return np.concatenate([counts @ values for counts in _count_blocks(utterances, resamples, seed)])


def _count_blocks(units: int, resamples: int, seed: int):
    """Yield the draw counts of :func:`_index_blocks`' resamples, (rows, n) float64 blocks."""
    for indices in _index_blocks(units, resamples, seed):
        rows = indices.shape[0]
        offsets = (np.arange(rows, dtype=indices.dtype) * units)[:, None]
        counts = np.bincount((indices + offsets).ravel(), minlength=rows * units)
        yield counts.reshape(rows, units).astype(np.float64)


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


def group_codes(groups) -> tuple[np.ndarray, int]:
    """Speaker (or any block) labels of U utterances -> (codes (U,) in 0..G-1, G), in first-seen order."""
    labels = list(groups)
    index: dict = {}
    codes = np.array([index.setdefault(label, len(index)) for label in labels], dtype=np.int64)
    return codes, len(index)


def group_sums(values: np.ndarray, groups) -> np.ndarray:
    """Row sums of ``values`` (U, K) within each group: (G, K), groups in first-seen order."""
    codes, count = group_codes(groups)
    values = np.asarray(values, dtype=np.float64)
    summed = np.zeros((count, *values.shape[1:]))
    np.add.at(summed, codes, values)
    return summed


def resampled_rates(errors, totals, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, groups=None) -> np.ndarray:
    """Error rates in percent of S systems in each resample, (R, S); errors (S, U) or (U,).

    ``groups`` (U,) speaker labels: the speaker-blocked bootstrap. A resample draws G speakers with
    replacement and keeps each drawn speaker's utterances as they are (the cluster bootstrap, Davison
    & Hinkley 1997, section 3.8, strategy 1), so utterances of one speaker stay together: it is the
    utterance bootstrap over per-speaker sums. (Resampling the utterances of each drawn speaker again,
    their strategy 2, counts the within-speaker variance twice: intervals too wide when speakers are
    alike.)"""
    errors, totals = _as_systems(errors, totals)
    systems = errors.shape[0]
    shared = bool(np.all(totals == totals[:1]))
    columns = np.concatenate([errors, totals[:1] if shared else totals]).T  # (U, S + 1) or (U, 2S)
    if groups is not None:
        if len(groups) != columns.shape[0]:
            raise ValueError(f"{len(groups)} speaker labels for {columns.shape[0]} utterances")
        columns = group_sums(columns, groups)
    sums = resampled_sums(columns, resamples, seed)
    total_sums = sums[:, systems:] if not shared else sums[:, systems : systems + 1]
    return _percent(sums[:, :systems], total_sums)


def t_quantile(probability: float, df: int) -> float:
    """Student's t quantile for an integer number of degrees of freedom (``probability`` > 0.5), by
    bisection on the closed-form two-sided CDF (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    if not 0.5 < probability < 1.0 or df < 1:
        raise ValueError(f"t quantile needs 0.5 < probability < 1 and df >= 1, got {probability}, {df}")
    low, high = 0.0, 1e6
    for _ in range(200):
        middle = (low + high) / 2.0
        if _t_two_sided_cdf(middle, df) < 2.0 * probability - 1.0:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def _t_two_sided_cdf(t: float, df: int) -> float:
    """P(|T| <= t), T ~ Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    cos2, sine = math.cos(theta) ** 2, math.sin(theta)
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        term = total = math.cos(theta)
        for k in range(1, (df - 3) // 2 + 1):
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        return 2.0 / math.pi * (theta + sine * total)
    term = total = 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return sine * total


def speaker_intervals(rates: np.ndarray, point: np.ndarray, speakers: int, confidence: float) -> np.ndarray:
    """Intervals (S, 2) from speaker-blocked resampled rates (R, S) and the point rates (S,).

    Few speakers make the percentile interval too short and skewed rates move it too low (it
    covered 89% at 10 speakers of 13 utterances in the calibration). So: the log rate +- t_(G-1) x
    its bootstrap standard deviation, scaled by sqrt(G / (G - 1)) (the resampled speakers' variance
    is (G - 1) / G of the unbiased one): 93-96% coverage from 6 to 200 speakers
    (asrbench.scoring.calibration). A system with no error, or a resample with none, has no log:
    the percentile interval expanded to the same t tail (Hesterberg 2015) instead."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} is not in (0, 1)")
    if speakers < 2:
        return _interval(rates, confidence)
    t = t_quantile(0.5 + confidence / 2.0, speakers - 1)
    scale = math.sqrt(speakers / (speakers - 1))
    tail = statistics.NormalDist().cdf(-t)
    intervals = np.full((rates.shape[1], 2), np.nan)
    for system in range(rates.shape[1]):
        defined = rates[:, system][~np.isnan(rates[:, system])]
        if point[system] > 0 and defined.size > 1 and bool((defined > 0).all()):
            spread = t * scale * float(np.log(defined).std(ddof=1))
            intervals[system] = [point[system] * math.exp(-spread), point[system] * math.exp(spread)]
        elif defined.size:
            intervals[system] = np.quantile(defined, [tail, 1.0 - tail])
    return intervals


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
    errors,
    totals,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    groups=None,
) -> np.ndarray:
    """Confidence intervals in percent for S systems at once, (S, 2) [low, high].

    ``errors`` (S, U) per-utterance error counts; ``totals`` (U,) reference words (or characters),
    or (S, U). All systems share the same resamples; each row equals ``bootstrap_ci`` of that
    system alone with the same seed. ``groups``: speaker labels, for the speaker-blocked bootstrap
    (:func:`resampled_rates`).
    """
    rates = resampled_rates(errors, totals, resamples, seed, groups)
    if groups is None:
        return _interval(rates, confidence)
    errors, totals = _as_systems(errors, totals)
    return speaker_intervals(
        rates, _percent(errors.sum(axis=1), totals.sum(axis=1)), group_codes(groups)[1], confidence
    )


def bootstrap_ci(
    errors,
    totals,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    groups=None,
) -> tuple[float, float]:
    """Bootstrap confidence interval (low, high) in percent of one system's error rate.

    ``errors`` (U,) per-utterance error counts (S + D + I) and ``totals`` (U,) per-utterance
    reference lengths; ``groups`` (U,) speaker labels for the speaker-blocked bootstrap. NaN bounds
    when no utterance has a reference word (the rate is undefined).
    """
    low, high = bootstrap_cis(np.asarray(errors)[None, :], totals, resamples, confidence, seed, groups)[0]
    return float(low), float(high)


def difference_ci(
    differences,
    totals,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    groups=None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, float]:
    """CI in WER points of a paired difference (per-utterance errors of one decoding minus another's,
    which may be negative) over ``totals`` words: the percentile interval over utterances, or with
    ``groups`` the point +- t_(G-1) x the speaker-resampled standard deviation x sqrt(G / (G - 1))
    (a difference has no log: the t interval on its own scale)."""
    rates = resampled_rates(np.asarray(differences)[None, :], totals, resamples, seed, groups)[:, 0]
    if groups is None:
        low, high = _interval(rates[:, None], confidence)[0]
        return float(low), float(high)
    count = group_codes(groups)[1]
    totals = np.asarray(totals, dtype=np.float64)
    point = float(_percent(np.array(np.asarray(differences, dtype=np.float64).sum()), np.array(totals.sum())))
    defined = rates[~np.isnan(rates)]
    if count < 2 or defined.size < 2:
        return point, point
    spread = t_quantile(0.5 + confidence / 2, count - 1) * float(defined.std(ddof=1)) * math.sqrt(count / (count - 1))
    return point - spread, point + spread


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


_EXACT_FLIPS = 16  # speaker sign-flip test: all 2**G sign patterns up to this many speakers
FLIPS = 10_000  # beyond, this many random patterns (seeded)


def speaker_flip_tests(differences: np.ndarray, seed: int = 0) -> np.ndarray:
    """Two-sided p-values of the paired randomization test at the speaker level, for P pairs at once.

    ``differences`` (G, P): per speaker, one system's errors minus the other's, summed over the
    speaker's utterances. Under the null hypothesis that the two systems are exchangeable within a
    speaker, each speaker's difference is as likely negated; the p-value is the share of sign
    patterns whose |sum| is at least the observed |sum|: all 2**G patterns up to 16 speakers (exact),
    else the observed one and ``FLIPS`` random ones ((1 + hits) / (1 + FLIPS)). Speakers are the
    independent units, so utterances of one speaker never count as independent evidence.
    """
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim == 1:
        differences = differences[:, None]
    speakers = differences.shape[0]
    observed = np.abs(differences.sum(axis=0))
    tolerance = 1e-9 * np.maximum(1.0, observed)
    if speakers <= _EXACT_FLIPS:
        patterns = 1 - 2 * ((np.arange(2**speakers)[:, None] >> np.arange(speakers)) & 1)  # (2**G, G) of +-1
        sums = np.abs(patterns.astype(np.float64) @ differences)
        return ((sums >= observed - tolerance).sum(axis=0) / patterns.shape[0]).clip(max=1.0)
    rng = np.random.default_rng(seed)
    hits = np.zeros(differences.shape[1])
    for start in range(0, FLIPS, 2000):
        signs = rng.integers(0, 2, size=(min(2000, FLIPS - start), speakers)) * 2 - 1
        hits += (np.abs(signs.astype(np.float64) @ differences) >= observed - tolerance).sum(axis=0)
    return (1.0 + hits) / (1.0 + FLIPS)


def speaker_bootstrap_p(rates_a: np.ndarray, rates_b: np.ndarray, difference: float, speakers: int) -> float:
    """Two-sided p-value of a WER difference (points) from speaker-blocked resampled rates of both
    systems: t = difference / (the resampled differences' standard deviation x sqrt(G / (G - 1))),
    referred to Student's t with G - 1 degrees of freedom (few speakers: few independent units)."""
    paired = rates_a - rates_b
    paired = paired[~np.isnan(paired)]
    if speakers < 2 or paired.size < 2:
        return 1.0
    spread = float(paired.std(ddof=1)) * math.sqrt(speakers / (speakers - 1))
    if spread == 0.0:
        return 1.0 if difference == 0.0 else 0.0
    return max(0.0, 1.0 - _t_two_sided_cdf(abs(difference) / spread, speakers - 1))


def holm(p_values) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values: controls the family-wise error rate over the m tests."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order]).clip(max=1.0)
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini & Hochberg's (1995) adjusted p-values: controls the false discovery rate over the m tests."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = p.size
    scaled = p[order] * m / np.arange(1, m + 1)
    stepped = np.minimum.accumulate(scaled[::-1])[::-1].clip(max=1.0)
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted


CORRECTIONS = {"holm": holm, "bh": benjamini_hochberg, "none": lambda p: np.asarray(p, dtype=np.float64)}
RESAMPLING = ("utterance", "speaker")


def minimum_detectable_difference(
    errors_a, errors_b, totals, groups=None, alpha: float = DEFAULT_ALPHA, power: float = 0.8
) -> float:
    """The smallest absolute WER difference (points) a paired test detects with ``power`` at ``alpha``
    (two-sided) on these utterances: (z_(1-alpha/2) + z_power) x the standard error of the WER
    difference, estimated from the observed per-utterance differences in errors (per-speaker sums
    with ``groups``): SE = 100 sqrt(n var(d)) / N over n units and N reference words. NaN with fewer
    than two units or no reference word."""
    difference = np.asarray(errors_a, dtype=np.float64) - np.asarray(errors_b, dtype=np.float64)
    totals = np.asarray(totals, dtype=np.float64)
    words = float(totals.sum())
    units = group_sums(difference, groups) if groups is not None else difference
    if units.size < 2 or not words > 0:
        return math.nan
    normal = statistics.NormalDist()
    z_alpha, z_power = normal.inv_cdf(1.0 - alpha / 2.0), normal.inv_cdf(power)
    return (z_alpha + z_power) * 100.0 * math.sqrt(units.size * float(units.var(ddof=1))) / words


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
    speaker_p: float | None = None  # speaker sign-flip test (resample "speaker"), two-sided
    error_difference: float = 0.0  # errors of A minus errors of B, summed over the utterances
    speaker_bootstrap_p: float | None = None  # speaker-blocked bootstrap t test (speaker_bootstrap_p), two-sided


@dataclass
class SystemResult:
    name: str
    rate: float  # percent
    ci: list[float]  # [low, high] percent
    best: bool
    not_significantly_worse: bool  # than the best (True for the best itself)
    p_value: float | None = None  # the deciding test's p-value against the best (None for the best)
    p_adjusted: float | None = None  # that p-value corrected over the k - 1 comparisons with the best


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
    resample: str = "utterance"  # the unit the CIs and tests resample: utterance | speaker
    correction: str = "holm"  # over the k - 1 comparisons with the best: holm | bh | none
    speakers: int | None = None  # with resample "speaker"
    mdd: float = math.nan  # median over the comparisons with the best of minimum_detectable_difference
    mdd_by_system: dict[str, float] = field(default_factory=dict)

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
                    pair.speaker_p,
                    -pair.error_difference,
                    pair.speaker_bootstrap_p,
                )
        raise KeyError(f"no pair {a!r}, {b!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def decision_p(pair: PairResult, test: str, resample: str = "utterance") -> tuple[float, bool]:
    """(p-value, whether the data favour A) of the test deciding whether B is worse than A.

    Utterance resampling: ``mp`` matched pairs, ``sign`` sign test, ``bootstrap`` twice the smaller of
    the probability of improvement and its complement (all two-sided: which system is the best is
    itself read from the data; the one-sided bootstrap rule called 10% of equal pairs worse).
    Speaker resampling: ``mp`` and ``sign`` both mean the speaker sign-flip test (their
    speaker-level form); ``bootstrap`` the speaker-blocked bootstrap t test
    (:func:`speaker_bootstrap_p`: with few speakers the share of resamples called 11-15% of equal
    pairs worse at 6-10 speakers)."""
    if test == "bootstrap" and resample == "speaker":
        if pair.speaker_bootstrap_p is None:
            raise ValueError("speaker resampling without speaker labels")
        return pair.speaker_bootstrap_p, pair.error_difference < 0
    if test == "bootstrap":  # two-sided: the best is chosen by the data, so either side could have won
        return min(1.0, 2.0 * min(pair.p_a_better, 1.0 - pair.p_a_better)), pair.p_a_better > 0.5
    if resample == "speaker":
        if pair.speaker_p is None:
            raise ValueError("speaker resampling without speaker labels")
        return pair.speaker_p, pair.error_difference < 0
    if test == "sign":
        return pair.sign_p, pair.a_better_utterances > pair.b_better_utterances
    return pair.mp_p, pair.mp_z < 0


def _pair_results(
    errors: np.ndarray,
    names: list[str],
    rates: np.ndarray,
    point: np.ndarray,
    improvement: np.ndarray,
    groups,
    seed: int,
) -> list[PairResult]:
    """Every unordered pair's tests: paired bootstrap, sign, matched pairs, and with ``groups`` the
    speaker sign-flip test and the speaker bootstrap t test."""
    index_pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    speaker_p: list[float | None] = [None] * len(index_pairs)
    speaker_boot: list[float | None] = [None] * len(index_pairs)
    if groups is not None and index_pairs:
        per_speaker = group_sums(errors.T, groups)  # (G, S)
        differences = np.stack([per_speaker[:, i] - per_speaker[:, j] for i, j in index_pairs], axis=1)
        speaker_p = [float(p) for p in speaker_flip_tests(differences, seed)]
        count = per_speaker.shape[0]
        speaker_boot = [
            speaker_bootstrap_p(rates[:, i], rates[:, j], float(point[i] - point[j]), count) for i, j in index_pairs
        ]
    pairs = []
    for (i, j), flip_p, boot_p in zip(index_pairs, speaker_p, speaker_boot, strict=True):
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
                flip_p,
                float(errors[i].sum() - errors[j].sum()),
                boot_p,
            )
        )
    return pairs


def _conclude(
    comparison: SystemComparison,
    names: list[str],
    best: int,
    point: np.ndarray,
    intervals: np.ndarray,
    decisions: list[tuple[float, bool]],
    errors: list[np.ndarray],
    totals: np.ndarray,
    groups,
) -> None:
    """The systems' rows: each one's p-value against the best, raw and corrected over the comparisons
    with the best, its 'not significantly worse' call, and the minimum detectable differences
    (``errors``: per system, the per-utterance errors the differences are taken of)."""
    others = [index for index in range(len(names)) if index != best]
    adjusted = CORRECTIONS[comparison.correction]([p for p, _ in decisions]) if decisions else np.zeros(0)
    verdict = {
        index: (p, float(fixed), bool(favours and fixed < comparison.alpha))
        for index, (p, favours), fixed in zip(others, decisions, adjusted, strict=True)
    }
    for index in others:
        comparison.mdd_by_system[names[index]] = minimum_detectable_difference(
            errors[best], errors[index], totals, groups, comparison.alpha
        )
    finite = [value for value in comparison.mdd_by_system.values() if math.isfinite(value)]
    comparison.mdd = float(np.median(finite)) if finite else math.nan
    for index, name in enumerate(names):
        p, fixed, worse = verdict.get(index, (None, None, False))
        comparison.systems.append(
            SystemResult(
                name, float(point[index]), [float(v) for v in intervals[index]], index == best, not worse, p, fixed
            )
        )


def compare_systems(
    errors,
    totals,
    names: list[str] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    test: str = "mp",
    groups=None,
    correction: str = "holm",
) -> SystemComparison:
    """Confidence intervals and all pairwise tests for S systems scored on the same U utterances.

    ``errors`` (S, U) per-utterance error counts, ``totals`` (U,) per-utterance reference
    lengths. The best system has the lowest error rate (the first one on a tie); another is "not
    significantly worse" unless ``test`` (:func:`decision_p`) rejects equality in the best one's
    favour at ``alpha`` after ``correction`` over the S - 1 comparisons with the best (Holm's
    step-down by default, Benjamini-Hochberg, or none).

    ``groups`` (U,) speaker labels: the CIs and the paired bootstrap resample speakers
    (:func:`resampled_rates`), and the matched-pairs and sign tests become the speaker sign-flip test
    (:func:`speaker_flip_tests`); without, utterances are the unit (Bisani & Ney 2004). The minimum
    detectable difference is computed on the same unit.
    """
    if test not in DECISION_TESTS:
        raise ValueError(f"unknown test '{test}' (valid: {', '.join(DECISION_TESTS)})")
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction '{correction}' (valid: {', '.join(CORRECTIONS)})")
    errors = np.atleast_2d(np.asarray(errors, dtype=np.float64))
    totals = np.asarray(totals, dtype=np.float64)
    systems = errors.shape[0]
    names = list(names) if names is not None else [f"system{index}" for index in range(systems)]
    if len(names) != systems or len(set(names)) != systems:
        raise ValueError(f"{systems} systems need {systems} distinct names, got {names}")
    if not totals.sum() > 0:
        raise ValueError("no reference words: error rates are undefined, so systems cannot be compared")
    resample = "speaker" if groups is not None else "utterance"
    rates = resampled_rates(errors, totals, resamples, seed, groups)
    point = _percent(errors.sum(axis=1), np.full(systems, totals.sum()))
    if groups is None:
        intervals = _interval(rates, confidence)
    else:
        intervals = speaker_intervals(rates, point, group_codes(groups)[1], confidence)
    improvement = _improvement_matrix(rates)
    best = int(np.argmin(point))
    pairs = _pair_results(errors, names, rates, point, improvement, groups, seed)
    comparison = SystemComparison(
        [], pairs, names[best], test, alpha, resamples, confidence, seed, resample, correction
    )
    if groups is not None:
        comparison.speakers = group_codes(groups)[1]
    others = [index for index in range(systems) if index != best]
    decisions = [decision_p(comparison.pair(names[best], names[index]), test, resample) for index in others]
    _conclude(comparison, names, best, point, intervals, decisions, list(errors), totals, groups)
    return comparison


# -- seeds in the interval: the hierarchical bootstrap ------------------------------------------------


@dataclass
class SeededResampling:
    """Hierarchical resamples of systems trained with several seeds (:func:`seeded_resampling`):
    full resamples (units and seeds), and each level alone, per system, as WER percent (R, S)."""

    point: np.ndarray  # (S,): errors over words, every seed pooled
    full: np.ndarray  # units and seeds resampled
    units: np.ndarray  # units resampled, every seed kept
    seeds: np.ndarray  # seeds resampled, every unit kept
    unit_count: int  # speakers, or utterances
    seed_counts: list[int]


def seeded_resampling(
    errors: list[np.ndarray], totals, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, groups=None
) -> SeededResampling:
    """``errors``: per system, (m, U) per-utterance errors of its m seeds on the same U utterances.

    A resample draws the units (speakers with ``groups``, else utterances) with replacement, shared by
    every system (the comparison stays paired), and, for each system on its own, its m seeds with
    replacement: the training run is one draw of many, as the test set is (Davison & Hinkley 1997,
    section 3.8, for the levels; the seeds of two systems are independent)."""
    totals = np.asarray(totals, dtype=np.float64)
    blocks = [np.atleast_2d(np.asarray(e, dtype=np.float64)) for e in errors]
    for block in blocks:
        if block.shape[1] != totals.size:
            raise ValueError(f"errors over {block.shape[1]} utterances, totals over {totals.size}")
    stacked = np.concatenate(blocks).T  # (U, sum m)
    words = totals
    if groups is not None:
        stacked, words = group_sums(stacked, groups), group_sums(totals, groups)
    units = stacked.shape[0]
    counts = _draw_counts(units, resamples, seed)  # (R, n)
    unit_errors = counts @ stacked  # (R, sum m)
    unit_words = counts @ words  # (R,)
    rng = np.random.default_rng(seed + 1)
    full, unit_only, seed_only, point = [], [], [], []
    start = 0
    for block in blocks:
        m = block.shape[0]
        part = unit_errors[:, start : start + m]  # (R, m)
        seed_errors = stacked[:, start : start + m].sum(axis=0)  # (m,)
        start += m
        weights = rng.multinomial(m, np.full(m, 1.0 / m), size=resamples) / m  # (R, m)
        full.append(_percent((part * weights).sum(axis=1), unit_words))
        unit_only.append(_percent(part.mean(axis=1), unit_words))
        seed_only.append(_percent(weights @ seed_errors, np.full(resamples, words.sum())))
        point.append(float(_percent(np.array(seed_errors.mean()), np.array(words.sum()))))
    return SeededResampling(
        np.array(point),
        np.stack(full, axis=1),
        np.stack(unit_only, axis=1),
        np.stack(seed_only, axis=1),
        units,
        [block.shape[0] for block in blocks],
    )


def _draw_counts(units: int, resamples: int, seed: int) -> np.ndarray:
    """(R, n) draw counts of n units in each of R resamples, the draws :func:`resampled_sums` makes."""
    return np.concatenate(list(_count_blocks(units, resamples, seed)))


def _satterthwaite(variances: list[float], dofs: list[int]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variance estimates."""
    terms = [v * v / d for v, d in zip(variances, dofs, strict=True) if d > 0 and v > 0]
    total = sum(v for v, d in zip(variances, dofs, strict=True) if d > 0)
    return total * total / sum(terms) if terms else float(max(1, max(dofs)))


def effective_dof(variances: list[float], dofs: list[int]) -> int:
    """The t reference's degrees of freedom for a sum of variance estimates: Welch-Satterthwaite's,
    rounded down, and no more than those of the largest component. Three seeds' variance (2 degrees
    of freedom) beside a test set's gives Satterthwaite about 3.4, and its intervals covered 92.7%
    in the calibration; the largest component's 2 bring it to 95-96%."""
    largest = max(range(len(variances)), key=lambda index: variances[index])
    return max(1, min(int(_satterthwaite(variances, dofs)), dofs[largest] if dofs[largest] > 0 else 10**6))


def seeded_intervals(resampled: SeededResampling, confidence: float = DEFAULT_CONFIDENCE) -> np.ndarray:
    """(S, 2): log WER +- t x sqrt(V), V the units' and the seeds' bootstrap variances of log WER, each
    scaled by n / (n - 1) (its level's count), t with :func:`effective_dof`'s degrees of freedom.
    With one seed it is :func:`speaker_intervals`' interval; a system with a zero rate anywhere
    gets the full resamples' percentile interval at the same tail."""
    intervals = np.full((resampled.point.size, 2), np.nan)
    n = resampled.unit_count
    for system, point in enumerate(resampled.point):
        m = resampled.seed_counts[system]
        by_unit, by_seed = resampled.units[:, system], resampled.seeds[:, system]
        usable = point > 0 and bool((by_unit > 0).all()) and bool((by_seed > 0).all())
        unit_var = float(np.log(by_unit).var(ddof=1)) * n / (n - 1) if usable and n > 1 else 0.0
        seed_var = float(np.log(by_seed).var(ddof=1)) * m / (m - 1) if usable and m > 1 else 0.0
        df = effective_dof([unit_var, seed_var], [n - 1, m - 1])
        t = t_quantile(0.5 + confidence / 2.0, df)
        if usable:
            spread = t * math.sqrt(unit_var + seed_var)
            intervals[system] = [point * math.exp(-spread), point * math.exp(spread)]
        else:
            tail = statistics.NormalDist().cdf(-t)
            defined = resampled.full[:, system][~np.isnan(resampled.full[:, system])]
            if defined.size:
                intervals[system] = np.quantile(defined, [tail, 1.0 - tail])
    return intervals


def seeded_p(resampled: SeededResampling, a: int, b: int) -> float:
    """Two-sided p-value that systems ``a`` and ``b`` have the same expected WER, seeds included: the
    difference of their pooled rates over sqrt(V_units + V_seeds_a + V_seeds_b) (the paired units'
    variance of the difference and each system's seed variance, bootstrap estimates scaled by
    n / (n - 1)), referred to Student's t with :func:`effective_dof`'s degrees of freedom."""
    n = resampled.unit_count
    m_a, m_b = resampled.seed_counts[a], resampled.seed_counts[b]
    difference = float(resampled.point[a] - resampled.point[b])
    paired = resampled.units[:, a] - resampled.units[:, b]
    paired = paired[~np.isnan(paired)]
    variances = [float(paired.var(ddof=1)) * n / (n - 1) if n > 1 and paired.size > 1 else 0.0]
    for system, m in ((a, m_a), (b, m_b)):
        spread = resampled.seeds[:, system]
        variances.append(float(spread.var(ddof=1)) * m / (m - 1) if m > 1 else 0.0)
    total = sum(variances)
    if total == 0.0:
        return 1.0 if difference == 0.0 else 0.0
    df = effective_dof(variances, [n - 1, m_a - 1, m_b - 1])
    return max(0.0, 1.0 - _t_two_sided_cdf(abs(difference) / math.sqrt(total), df))


def compare_seeded_systems(
    errors: list[np.ndarray],
    totals,
    names: list[str],
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
    groups=None,
    correction: str = "holm",
) -> SystemComparison:
    """:func:`compare_systems` for systems trained with several seeds: ``errors[k]`` (m_k, U).

    Each system's rate pools its seeds; its interval and every pair's test resample the units
    (speakers with ``groups``, else utterances) and the seeds (:func:`seeded_resampling`,
    :func:`seeded_intervals`, :func:`seeded_p`: the ``seeded`` test, two-sided), corrected over the
    comparisons with the best as :func:`compare_systems` does. ``pairs`` carry that p-value as
    ``mp_p`` beside the paired bootstrap probability over the same resamples; the per-utterance sign
    test and z are those of the seed-averaged errors."""
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction '{correction}' (valid: {', '.join(CORRECTIONS)})")
    if len(names) != len(errors) or len(set(names)) != len(names):
        raise ValueError(f"{len(errors)} systems need {len(errors)} distinct names, got {names}")
    totals = np.asarray(totals, dtype=np.float64)
    if not totals.sum() > 0:
        raise ValueError("no reference words: error rates are undefined, so systems cannot be compared")
    resampled = seeded_resampling(errors, totals, resamples, seed, groups)
    intervals = seeded_intervals(resampled, confidence)
    improvement = _improvement_matrix(resampled.full)
    point = resampled.point
    best = int(np.argmin(point))
    averaged = [np.atleast_2d(np.asarray(e, dtype=np.float64)).mean(axis=0) for e in errors]
    pairs = _pair_results(np.stack(averaged), names, resampled.full, point, improvement, None, seed)
    index_pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    for pair, (i, j) in zip(pairs, index_pairs, strict=True):
        pair.mp_p = seeded_p(resampled, i, j)  # the deciding test: seeds and units resampled
    comparison = SystemComparison(
        [],
        pairs,
        names[best],
        "seeded",
        alpha,
        resamples,
        confidence,
        seed,
        "speaker" if groups is not None else "utterance",
        correction,
        resampled.unit_count if groups is not None else None,
    )
    others = [index for index in range(len(names)) if index != best]
    decisions = []
    for index in others:
        pair = comparison.pair(names[best], names[index])
        decisions.append((pair.mp_p, pair.error_difference < 0))
    _conclude(comparison, names, best, point, intervals, decisions, averaged, totals, groups)
    return comparison
