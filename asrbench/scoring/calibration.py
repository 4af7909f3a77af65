"""Calibration of the statistics in :mod:`asrbench.scoring.stats` on simulated test sets.

A simulated test set has ``speakers`` speakers of ``per_speaker`` utterances, each of 1 + Poisson(6)
reference words. Word errors are binomial at a rate set on the logit scale:

    logit p(speaker g, utterance u, system k) = logit(rate) + speaker_sd z_g + interaction_sd z_gk + utterance_sd z_u

with every z standard normal and independent: ``speaker_sd`` makes a speaker's utterances alike for
every system (what AN4's and FSDD's few test speakers do), ``interaction_sd`` makes two systems differ
by speaker (one system suits some voices better), ``utterance_sd`` is an utterance's difficulty,
shared by the systems. Both systems have the same true rate, the population's expected errors per
reference word (computed here by quadrature), so a "significantly worse" call is a false positive
and an interval either covers that rate or does not.

:func:`calibrate` runs ``simulations`` test sets at once (vectorised: the resamples are shared
across test sets, which are independent, so the rates stay unbiased) and returns, per method, the
share of intervals that cover the true rate and the share of comparisons that call one system
significantly worse at ``alpha``. ``tests/scoring/test_calibration.py`` holds the methods to their
targets; ``benchmarks/stats_calibration.py`` prints the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from asrbench.scoring import stats


@dataclass(frozen=True)
class Design:
    speakers: int = 50
    per_speaker: int = 10
    rate: float = 0.10  # the true error rate, errors per reference word
    speaker_sd: float = 0.0
    interaction_sd: float = 0.0
    utterance_sd: float = 0.5
    seeds: int = 1  # training runs per system (calibrate_seeded)
    seed_sd: float = 0.0  # a training run's own shift of the logit, for all its utterances

    def true_rate(self) -> float:
        """The population's expected errors per reference word: E[p] over the logit-normal (quadrature)."""
        spread = math.sqrt(self.speaker_sd**2 + self.interaction_sd**2 + self.utterance_sd**2 + self.seed_sd**2)
        nodes, weights = np.polynomial.hermite_e.hermegauss(80)
        logits = math.log(self.rate / (1 - self.rate)) + spread * nodes
        return float((weights / (1 + np.exp(-logits))).sum() / weights.sum())


def simulate(design: Design, simulations: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``simulations`` test sets of two systems, one run each -> (errors_a (N, U), errors_b (N, U),
    words (N, U), speakers (U,)): :func:`simulate_seeded`'s first seed."""
    errors_a, errors_b, words, speakers = simulate_seeded(design, simulations, seed)
    return errors_a[:, 0], errors_b[:, 0], words, speakers


@dataclass(frozen=True)
class Calibration:
    method: str  # utterance | speaker
    design: Design
    simulations: int
    coverage: float  # share of 95% intervals covering the true rate
    false_positive: dict[str, float]  # deciding test -> share of test sets with a "significantly worse" call


def calibrate(
    design: Design,
    method: str,
    simulations: int = 2000,
    resamples: int = 500,
    alpha: float = stats.DEFAULT_ALPHA,
    seed: int = 0,
) -> Calibration:
    """Coverage and false-positive rates of ``method`` (``utterance`` or ``speaker`` resampling)."""
    if method not in stats.RESAMPLING:
        raise ValueError(f"unknown resampling '{method}' (valid: {', '.join(stats.RESAMPLING)})")
    errors_a, errors_b, words, speakers = simulate(design, simulations, seed)
    groups = speakers if method == "speaker" else None
    # One call for every test set and both systems: (2N, U) systems sharing the resamples.
    rates = stats.resampled_rates(
        np.concatenate([errors_a, errors_b]), np.concatenate([words, words]), resamples, seed + 1, groups
    )
    point_a = 100 * errors_a.sum(axis=1) / words.sum(axis=1)
    if method == "speaker":  # as bootstrap_cis gives them
        intervals = stats.speaker_intervals(rates[:, :simulations], point_a, design.speakers, 0.95)
    else:
        intervals = np.quantile(rates[:, :simulations], [0.025, 0.975], axis=0).T
    truth = 100 * design.true_rate()
    coverage = float(((intervals[:, 0] <= truth) & (truth <= intervals[:, 1])).mean())
    a_lower = rates[:, :simulations] < rates[:, simulations:]
    ties = rates[:, :simulations] == rates[:, simulations:]
    p_a_better = (a_lower + 0.5 * ties).mean(axis=0)
    # The two-sided p-value stats.decision_p gives the bootstrap (utterances): whichever system is better.
    false_positive = {"bootstrap": float((2 * np.minimum(p_a_better, 1 - p_a_better) < alpha).mean())}
    if method == "speaker":
        differences = np.stack([stats.group_sums(a - b, speakers) for a, b in zip(errors_a, errors_b, strict=True)], 1)
        false_positive["speaker flip"] = float((stats.speaker_flip_tests(differences, seed + 2) < alpha).mean())
        point_b = 100 * errors_b.sum(axis=1) / words.sum(axis=1)
        boot = [
            stats.speaker_bootstrap_p(rates[:, n], rates[:, simulations + n], point_a[n] - point_b[n], design.speakers)
            for n in range(simulations)
        ]
        false_positive["bootstrap"] = float((np.array(boot) < alpha).mean())
    else:
        matched = [stats.matched_pairs_test(a, b).p_value for a, b in zip(errors_a, errors_b, strict=True)]
        sign = [stats.sign_test(a, b).p_value for a, b in zip(errors_a, errors_b, strict=True)]
        false_positive["matched pairs"] = float((np.array(matched) < alpha).mean())
        false_positive["sign"] = float((np.array(sign) < alpha).mean())
    return Calibration(method, design, simulations, coverage, false_positive)


def simulate_seeded(
    design: Design, simulations: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """As :func:`simulate`, each system trained ``design.seeds`` times: (errors_a (N, m, U), errors_b,
    words (N, U), speakers (U,)); a run's logit is shifted by its own ``seed_sd`` draw."""
    rng = np.random.default_rng(seed)
    count = design.speakers * design.per_speaker
    speakers = np.repeat(np.arange(design.speakers), design.per_speaker)
    words = 1 + rng.poisson(6, size=(simulations, count))
    base = math.log(design.rate / (1 - design.rate))
    speaker = design.speaker_sd * rng.standard_normal((simulations, design.speakers))[:, speakers]
    utterance = design.utterance_sd * rng.standard_normal((simulations, count))

    def system() -> np.ndarray:
        interaction = design.interaction_sd * rng.standard_normal((simulations, design.speakers))[:, speakers]
        # A run's own shift; drawn only where there is one, so a design without seeds draws what it did.
        shift = design.seed_sd * rng.standard_normal((simulations, design.seeds, 1)) if design.seed_sd else 0.0
        logit = (base + speaker + interaction + utterance)[:, None, :] + shift
        return rng.binomial(words[:, None, :], 1 / (1 + np.exp(-logit))).astype(np.float64)

    return system(), system(), words.astype(np.float64), speakers


def calibrate_seeded(
    design: Design,
    method: str,
    simulations: int = 2000,
    resamples: int = 300,
    alpha: float = stats.DEFAULT_ALPHA,
    seed: int = 0,
) -> Calibration:
    """Coverage and false positives of the hierarchical bootstrap (units and seeds resampled:
    stats.seeded_intervals, stats.seeded_p) over ``design.seeds`` runs per system."""
    if method not in stats.RESAMPLING:
        raise ValueError(f"unknown resampling '{method}' (valid: {', '.join(stats.RESAMPLING)})")
    errors_a, errors_b, words, speakers = simulate_seeded(design, simulations, seed)
    groups = speakers if method == "speaker" else None
    truth = 100 * design.true_rate()
    covered, rejected = 0, 0
    for index in range(simulations):
        resampled = stats.seeded_resampling(
            [errors_a[index], errors_b[index]], words[index], resamples, seed + index, groups
        )
        low, high = stats.seeded_intervals(resampled)[0]
        covered += bool(low <= truth <= high)
        rejected += stats.seeded_p(resampled, 0, 1) < alpha
    return Calibration(
        f"{method} + seeds", design, simulations, covered / simulations, {"seeded t": rejected / simulations}
    )
