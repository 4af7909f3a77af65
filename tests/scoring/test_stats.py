"""Bootstrap CIs, the paired bootstrap, sign and matched-pairs tests against slow or hand-computed references."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from asrbench.scoring import stats
from asrbench.scoring.stats import (
    binomial_two_sided,
    bootstrap_ci,
    bootstrap_cis,
    compare_systems,
    matched_pairs_test,
    paired_bootstrap,
    paired_bootstrap_matrix,
    resample_indices,
    resampled_sums,
    sign_test,
)


def synthetic(utterances: int, error_rate: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-utterance (errors, words) of a system with about ``error_rate`` errors per word."""
    rng = np.random.default_rng(seed)
    words = rng.integers(1, 20, utterances)
    return rng.binomial(words, error_rate), words


def slow_ci(errors, totals, indices: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The textbook loop: one resample at a time, its rate from the drawn utterances."""
    rates = []
    for row in indices:
        drawn_errors = sum(int(errors[i]) for i in row)
        drawn_totals = sum(int(totals[i]) for i in row)
        rates.append(100.0 * drawn_errors / drawn_totals if drawn_totals else 0.0)
    tail = (1 - confidence) / 2
    low, high = np.quantile(np.array(rates), [tail, 1 - tail])
    return float(low), float(high)


# --- resampling ------------------------------------------------------------------------------------


def test_resampled_sums_equal_summing_the_drawn_rows():
    values = np.random.default_rng(1).integers(0, 9, (37, 3))
    indices = resample_indices(37, 50, seed=4)
    assert indices.shape == (50, 37) and indices.min() >= 0 and indices.max() < 37
    np.testing.assert_array_equal(resampled_sums(values, 50, seed=4), values[indices].sum(axis=1))


def test_blocks_of_resamples_give_the_same_draws_as_one_array(monkeypatch):
    values = np.arange(30.0)
    indices = resample_indices(30, 20, seed=2)
    monkeypatch.setattr(stats, "_BLOCK_DRAWS", 100)  # 3 resamples per block: 7 blocks
    np.testing.assert_array_equal(resampled_sums(values, 20, seed=2)[:, 0], values[resample_indices(30, 20, 2)].sum(1))
    assert resample_indices(30, 20, seed=2).shape == indices.shape


# --- bootstrap CIs -----------------------------------------------------------------------------------


def test_ci_matches_a_slow_per_resample_loop_exactly():
    errors, words = synthetic(25, seed=3)
    indices = resample_indices(25, 200, seed=7)
    assert bootstrap_ci(errors, words, resamples=200, seed=7) == slow_ci(errors, words, indices)
    assert bootstrap_ci(errors, words, resamples=200, confidence=0.8, seed=7) == slow_ci(errors, words, indices, 0.8)


@pytest.mark.parametrize("seed", range(5))
def test_ci_contains_the_point_estimate(seed):
    errors, words = synthetic(200, error_rate=0.05 + 0.1 * seed, seed=seed)
    low, high = bootstrap_ci(errors, words, seed=seed)
    wer = 100.0 * errors.sum() / words.sum()
    assert low <= wer <= high
    assert 0.0 <= low < high


def test_ci_narrows_with_more_utterances():
    widths = []
    for utterances in (50, 500, 5000):
        low, high = bootstrap_ci(*synthetic(utterances, seed=utterances))
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(10.0, rel=0.3)  # width ~ 1 / sqrt(U)


def test_ci_is_reproducible_for_a_seed():
    errors, words = synthetic(300)
    assert bootstrap_ci(errors, words, seed=5) == bootstrap_ci(errors, words, seed=5)
    assert bootstrap_ci(errors, words, seed=5) != bootstrap_ci(errors, words, seed=6)


def test_batched_cis_equal_one_system_at_a_time():
    systems = [synthetic(120, rate, seed=i) for i, rate in enumerate((0.1, 0.2, 0.3))]
    words = systems[0][1]
    errors = np.stack([np.minimum(e, words) for e, _ in systems])
    batched = bootstrap_cis(errors, words, resamples=300, seed=9)
    assert batched.shape == (3, 2)
    for row, system_errors in zip(batched, errors, strict=True):
        assert tuple(row) == bootstrap_ci(system_errors, words, resamples=300, seed=9)


def test_per_system_totals_are_allowed():
    errors, words = synthetic(80)
    chars = words * 5
    both = bootstrap_cis(np.stack([errors, errors * 2]), np.stack([words, chars]), resamples=100)
    assert tuple(both[0]) == bootstrap_ci(errors, words, resamples=100)
    assert tuple(both[1]) == bootstrap_ci(errors * 2, chars, resamples=100)


def test_degenerate_inputs():
    assert bootstrap_ci([0, 0, 0], [3, 4, 5]) == (0.0, 0.0)
    assert bootstrap_ci([1, 2], [1, 2]) == (100.0, 100.0)
    # Regression (issue 15.2): no reference words: the rate is undefined (NaN here, None in results), not 0.
    assert all(math.isnan(bound) for bound in bootstrap_ci([], []))
    assert all(math.isnan(bound) for bound in bootstrap_ci([2, 0], [0, 0]))
    with pytest.raises(ValueError, match="no reference words"):
        compare_systems([[1, 0], [0, 1]], [0, 0])
    with pytest.raises(ValueError):
        bootstrap_ci([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        bootstrap_ci([1], [1], confidence=1.5)


# --- paired tests ------------------------------------------------------------------------------------


def test_paired_bootstrap_is_one_for_a_system_better_on_every_utterance():
    errors, words = synthetic(100, seed=2)
    better = np.maximum(errors - 1, 0)
    worse = errors + 1
    assert paired_bootstrap(errors, worse, words) == 1.0
    assert paired_bootstrap(worse, errors, words) == 0.0
    assert paired_bootstrap(better, worse, words) == 1.0


def test_paired_bootstrap_is_one_half_for_identical_systems():
    errors, words = synthetic(100, seed=2)
    assert paired_bootstrap(errors, errors, words) == 0.5


def test_paired_bootstrap_matrix_is_complementary_and_shares_resamples():
    words = synthetic(60, seed=1)[1]
    errors = np.stack([np.random.default_rng(s).binomial(words, 0.2) for s in range(4)])
    matrix = paired_bootstrap_matrix(errors, words, resamples=400, seed=3)
    np.testing.assert_allclose(matrix + matrix.T, 1.0)
    np.testing.assert_allclose(np.diag(matrix), 0.5)
    assert matrix[1, 2] == paired_bootstrap(errors[1], errors[2], words, resamples=400, seed=3)


def test_paired_bootstrap_matches_a_slow_loop():
    words = synthetic(30, seed=4)[1]
    a, b = (np.random.default_rng(s).binomial(words, 0.3) for s in (1, 2))
    indices = resample_indices(30, 300, seed=11)
    wins = 0.0
    for row in indices:
        rate_a, rate_b = a[row].sum() / words[row].sum(), b[row].sum() / words[row].sum()
        wins += 1.0 if rate_a < rate_b else 0.5 if rate_a == rate_b else 0.0
    assert paired_bootstrap(a, b, words, resamples=300, seed=11) == pytest.approx(wins / 300, abs=1e-12)


def exact_two_sided(successes: int, trials: int) -> float:
    tail = sum(math.comb(trials, i) for i in range(min(successes, trials - successes) + 1))
    return float(min(Fraction(1), 2 * Fraction(tail, 2**trials)))


def test_binomial_p_values_by_hand():
    assert binomial_two_sided(2, 10) == pytest.approx(2 * (1 + 10 + 45) / 1024, rel=1e-12)  # 0.109375
    assert binomial_two_sided(8, 10) == pytest.approx(0.109375, rel=1e-12)
    assert binomial_two_sided(0, 5) == pytest.approx(2 / 32, rel=1e-12)
    assert binomial_two_sided(5, 20) == pytest.approx(2 * 21700 / 2**20, rel=1e-12)  # 1+20+190+1140+4845+15504
    assert binomial_two_sided(3, 6) == 1.0
    assert binomial_two_sided(0, 0) == 1.0
    assert binomial_two_sided(0, 1) == 1.0


def test_binomial_p_values_against_exact_fractions():
    rng = np.random.default_rng(0)
    for _ in range(100):
        trials = int(rng.integers(1, 300))
        successes = int(rng.integers(0, trials + 1))
        assert binomial_two_sided(successes, trials) == exact_two_sided(successes, trials)
    assert binomial_two_sided(5000, 10000) == 1.0
    assert 0.0 < binomial_two_sided(4700, 10000) < 1e-8


def test_log_space_binomial_tails_agree_with_exact_ones(monkeypatch):
    cases = [(2, 10), (0, 5), (40, 100), (130, 300), (149, 300), (990, 2000)]
    exact = [binomial_two_sided(k, n) for k, n in cases]
    monkeypatch.setattr(stats, "_EXACT_TRIALS", 0)
    for (k, n), value in zip(cases, exact, strict=True):
        assert binomial_two_sided(k, n) == pytest.approx(value, rel=1e-9)


def test_sign_test_counts_only_utterances_that_differ():
    result = sign_test([0, 1, 2, 3, 4], [1, 1, 3, 5, 4])
    assert (result.a_better, result.b_better) == (3, 0)
    assert result.p_value == pytest.approx(2 / 8)
    assert sign_test([1, 2], [1, 2]).p_value == 1.0


def test_matched_pairs_by_hand():
    a, b = np.array([3, 4, 5, 2]), np.array([2, 2, 2, 2])  # differences 1, 2, 3, 0
    mean = 1.5
    sd = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (3 - mean) ** 2 + (0 - mean) ** 2) / 3)
    z = mean / (sd / 2)
    result = matched_pairs_test(a, b)
    assert result.mean_difference == pytest.approx(mean)
    assert result.z == pytest.approx(z)
    assert result.p_value == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert result.p_value == pytest.approx(0.02014, abs=1e-4)
    assert matched_pairs_test(b, a).z == pytest.approx(-z)
    assert matched_pairs_test(a, a).p_value == 1.0
    assert matched_pairs_test(a + 1, a).p_value == 0.0


# --- many systems --------------------------------------------------------------------------------------


def test_compare_systems_finds_the_best_and_the_ones_not_significantly_worse():
    rng = np.random.default_rng(0)
    words = rng.integers(5, 15, 400)
    base = rng.binomial(words, 0.1)
    near = base.copy()
    near[:8] += 1  # 8 utterances worse, 5 better: 3 more errors in 400 utterances, not significant
    near[np.flatnonzero(base > 0)[-5:]] -= 1
    far = base + rng.binomial(words, 0.1)  # about twice the errors: significant
    errors = np.stack([near, base, far])
    for test in stats.DECISION_TESTS:
        comparison = compare_systems(errors, words, ["near", "base", "far"], resamples=500, test=test)
        assert comparison.best == "base"
        flags = {s.name: (s.best, s.not_significantly_worse) for s in comparison.systems}
        assert flags == {"near": (False, True), "base": (True, True), "far": (False, False)}, test
    assert [(p.a, p.b) for p in comparison.pairs] == [("near", "base"), ("near", "far"), ("base", "far")]
    pair = comparison.pair("base", "far")
    assert pair.p_a_better == 1.0 and pair.sign_p < 1e-6 and pair.mp_p < 1e-6 and pair.mp_z < 0
    assert comparison.pair("far", "base").p_a_better == 0.0
    np.testing.assert_array_equal([s.ci for s in comparison.systems], bootstrap_cis(errors, words, resamples=500))
    assert comparison.systems[1].rate == pytest.approx(100 * base.sum() / words.sum())
    assert comparison.to_dict()["best"] == "base"


def test_compare_systems_rejects_bad_arguments():
    errors, words = synthetic(10)
    with pytest.raises(ValueError, match="test"):
        compare_systems(np.stack([errors, errors]), words, test="t-test")
    with pytest.raises(ValueError, match="names"):
        compare_systems(np.stack([errors, errors]), words, names=["a", "a"])


# -- issue 31: speakers, many-way corrections, the minimum detectable difference ------------------


def test_holm_and_benjamini_hochberg_against_hand_computed_adjustments():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max.
    np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02])
    # BH: sorted times 4/1, 4/2, 4/3, 4/4 = 0.02, 0.02, 0.04, 0.04 -> running min from the top.
    np.testing.assert_allclose(stats.benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    assert stats.holm([0.9, 0.8]).max() == 1.0 and stats.holm([]).size == 0


def test_t_quantiles_match_the_tables():
    table = {1: 12.706, 2: 4.303, 5: 2.571, 9: 2.262, 30: 2.042}  # two-sided 95%
    for df, value in table.items():
        assert stats.t_quantile(0.975, df) == pytest.approx(value, abs=5e-4)
    assert stats.t_quantile(0.975, 10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        stats.t_quantile(0.3, 5)


def test_the_speaker_sign_flip_test_counts_every_pattern_up_to_16_speakers():
    # |sum| of (+-1, +-2, +-3): 6, 4, 2, 0, 0, 2, 4, 6 -> 2 of 8 patterns reach the observed 6.
    assert stats.speaker_flip_tests(np.array([1.0, 2.0, 3.0]))[0] == pytest.approx(0.25)
    assert stats.speaker_flip_tests(np.zeros(4))[0] == 1.0
    both = stats.speaker_flip_tests(np.array([[1.0, 5.0], [2.0, -5.0], [3.0, 5.0]]))
    assert both[0] == pytest.approx(0.25) and both[1] == pytest.approx(stats.speaker_flip_tests([5.0, -5, 5])[0])
    many = np.full(40, 1.0)  # 40 speakers all one way: beyond exact enumeration, about 2 / 2**40
    p = stats.speaker_flip_tests(many, seed=1)[0]
    assert p == pytest.approx(1 / (1 + stats.FLIPS)) and p == stats.speaker_flip_tests(many, seed=1)[0]


def test_speaker_intervals_keep_a_speaker_s_utterances_together():
    """Two speakers with identical utterances inside each: resampling utterances sees 100 independent
    draws, resampling speakers sees two. The speaker interval is far wider, and relabelling the
    speakers changes nothing."""
    words = np.full(100, 10)
    errors = np.array([0] * 50 + [4] * 50)
    speakers = ["a"] * 50 + ["b"] * 50
    utterance = bootstrap_ci(errors, words, 500, seed=2)
    speaker = bootstrap_ci(errors, words, 500, seed=2, groups=speakers)
    assert speaker[1] - speaker[0] > 3 * (utterance[1] - utterance[0])
    assert bootstrap_ci(errors, words, 500, seed=2, groups=["x"] * 50 + ["y"] * 50) == speaker
    many = np.repeat(np.arange(20), 5)
    errors, words = synthetic(100, 0.2, seed=4)
    low, high = bootstrap_ci(errors, words, 500, seed=2, groups=many)
    assert low < 100 * errors.sum() / words.sum() < high
    with pytest.raises(ValueError, match="speaker labels"):
        bootstrap_ci(errors, words, 50, groups=many[:-1])


def test_compare_systems_corrects_the_comparisons_with_the_best_by_holm():
    """Two systems each worse than the best at raw p = 0.034, which Holm's correction over the three
    comparisons raises to 0.068 (not worse) and Benjamini-Hochberg leaves at 0.034 (worse)."""
    rng = np.random.default_rng(5)
    words = rng.integers(5, 15, 300)
    best = rng.binomial(words, 0.1)
    far = best.copy()
    far[:40] += 1
    lower = np.flatnonzero(best > 0)[-15:]
    edges = []
    for start in (0, 100):  # 29 utterances one error worse, 15 one better: z = 2.13, p = 0.034
        edge = best.copy()
        edge[lower] -= 1
        edge[np.setdiff1d(np.arange(300), lower)[start : start + 29]] += 1
        edges.append(edge)
    errors = np.stack([best, far, *edges])
    names = ["best", "far", "edge1", "edge2"]
    raw = compare_systems(errors, words, names, 200, correction="none")
    holm = compare_systems(errors, words, names, 200)
    bh = compare_systems(errors, words, names, 200, correction="bh")
    assert holm.correction == "holm" and raw.correction == "none"
    p = {s.name: s.p_value for s in holm.systems}
    assert p["best"] is None and p["far"] < 1e-6 and p["edge1"] == pytest.approx(0.0338, abs=5e-4)
    np.testing.assert_allclose([s.p_adjusted for s in holm.systems[1:]], stats.holm([p[n] for n in names[1:]]))
    worse = {c.correction: [not s.not_significantly_worse for s in c.systems] for c in (raw, holm, bh)}
    assert worse == {
        "none": [False, True, True, True],
        "holm": [False, True, False, False],
        "bh": [False, True, True, True],
    }
    with pytest.raises(ValueError, match="correction"):
        compare_systems(errors, words, correction="bonferroni")


def test_the_bootstrap_decision_is_two_sided():
    """Regression: 'worse' used to mean P(best better) >= 0.95, one-sided, though the best is read from
    the data: 10% of equal pairs were called different (the calibration test's simulations)."""
    pair = stats.PairResult("best", "other", 0.96, 1.0, 0, 0, 1.0, 0.0)
    p, favours = stats.decision_p(pair, "bootstrap")
    assert p == pytest.approx(0.08) and favours


def test_compare_systems_with_speakers_tests_at_the_speaker_level():
    rng = np.random.default_rng(6)
    speakers = np.repeat(np.arange(8), 25)
    words = rng.integers(5, 15, 200)
    base = rng.binomial(words, 0.1)
    errors = np.stack([base, base + (speakers == 0) * rng.integers(0, 3, 200)])  # b worse, on one speaker only
    comparison = compare_systems(errors, words, ["a", "b"], 300, groups=speakers)
    assert comparison.resample == "speaker" and comparison.speakers == 8
    pair = comparison.pair("a", "b")
    per_speaker = stats.group_sums((errors[0] - errors[1])[:, None], speakers)[:, 0]
    assert pair.speaker_p == pytest.approx(stats.speaker_flip_tests(per_speaker)[0])
    assert pair.speaker_bootstrap_p is not None and 0 <= pair.speaker_bootstrap_p <= 1
    # One speaker carries the difference: utterances call it significant, 1 speaker of 8 cannot be.
    assert pair.mp_p < 0.05 and pair.speaker_p == 1.0
    assert comparison.systems[1].not_significantly_worse
    assert compare_systems(errors, words, ["a", "b"], 300).systems[1].not_significantly_worse is False
    np.testing.assert_array_equal(
        [s.ci for s in comparison.systems], bootstrap_cis(errors, words, 300, groups=speakers)
    )


def test_the_minimum_detectable_difference_is_the_paired_standard_error_times_2_8():
    rng = np.random.default_rng(7)
    words = rng.integers(5, 15, 500)
    a, b = rng.binomial(words, 0.1), rng.binomial(words, 0.12)
    d = (a - b).astype(float)
    expected = (1.959964 + 0.841621) * 100 * math.sqrt(d.size * d.var(ddof=1)) / words.sum()
    assert stats.minimum_detectable_difference(a, b, words) == pytest.approx(expected, rel=1e-5)
    speakers = np.repeat(np.arange(10), 50)
    per = stats.group_sums(d[:, None], speakers)[:, 0]
    by_speaker = (1.959964 + 0.841621) * 100 * math.sqrt(10 * per.var(ddof=1)) / words.sum()
    assert stats.minimum_detectable_difference(a, b, words, speakers) == pytest.approx(by_speaker, rel=1e-5)
    assert math.isnan(stats.minimum_detectable_difference([1], [0], [3]))
    comparison = compare_systems(np.stack([a, b]), words, ["a", "b"], 100)
    assert comparison.mdd == pytest.approx(expected, rel=1e-5) and comparison.mdd_by_system == {"b": comparison.mdd}


def test_with_one_seed_the_hierarchical_interval_is_the_speaker_interval():
    rng = np.random.default_rng(8)
    speakers = np.repeat(np.arange(12), 10)
    words = rng.integers(5, 15, 120)
    errors = np.stack([rng.binomial(words, 0.1), rng.binomial(words, 0.15)])
    seeded = stats.compare_seeded_systems([errors[:1], errors[1:]], words, ["a", "b"], 400, groups=speakers)
    plain = compare_systems(errors, words, ["a", "b"], 400, groups=speakers)
    np.testing.assert_allclose([s.ci for s in seeded.systems], [s.ci for s in plain.systems])
    assert seeded.test == "seeded" and seeded.best == plain.best == "a" and seeded.speakers == 12


def test_seeds_that_disagree_widen_the_interval_and_weaken_the_test():
    rng = np.random.default_rng(9)
    words = rng.integers(5, 15, 300)
    steady = np.stack([rng.binomial(words, 0.10)] * 3)  # three seeds, the same errors
    shaky = np.stack([rng.binomial(words, rate) for rate in (0.07, 0.10, 0.13)])
    worse = np.stack([rng.binomial(words, 0.125)] * 3)
    calm = stats.compare_seeded_systems([steady, worse], words, ["a", "b"], 400)
    loud = stats.compare_seeded_systems([shaky, worse], words, ["a", "b"], 400)
    width = [c.systems[0].ci[1] - c.systems[0].ci[0] for c in (calm, loud)]
    assert width[1] > 2 * width[0]
    assert not calm.systems[1].not_significantly_worse and loud.systems[1].not_significantly_worse
    resampled = stats.seeded_resampling([shaky, worse], words, 400)
    assert resampled.seed_counts == [3, 3] and resampled.full.shape == (400, 2)
    np.testing.assert_allclose(resampled.point, 100 * np.array([shaky.sum() / 3, worse.sum() / 3]) / words.sum())
    # the units' draws are resampled_sums' own (the same seed gives the same resamples)
    np.testing.assert_allclose(
        resampled.units[:, 1],
        100 * resampled_sums(np.stack([worse[0], words], 1), 400)[:, 0] / resampled_sums(words, 400)[:, 0],
    )
    assert stats.effective_dof([1.0, 10.0], [49, 2]) == 2 and stats.effective_dof([10.0, 0.1], [49, 2]) == 49
