"""Issue 31: the statistics hold their stated error rates on simulated test sets where both systems
have the same true error rate (asrbench/scoring/calibration.py says how they are drawn).

- every deciding test calls a system "significantly worse" in at most alpha + 0.01 of 2,000
  simulations, and every 95% interval covers the true rate in 93-97% of them, each with the
  resampling it is meant for: utterances when utterances are independent, speakers when a speaker's
  utterances are alike (from 6 speakers, FSDD's test set, to 50);
- seeds in the interval: with three training runs per system, the hierarchical bootstrap (units
  and seeds) holds the same targets;
- and why speakers are the default where they are known: on test sets with speaker effects, the
  utterance-only interval under-covers and the utterance-level tests call equal systems different
  far more often than alpha.
"""

from __future__ import annotations

import pytest

from asrbench.scoring.calibration import Design, calibrate, calibrate_seeded

ALPHA = 0.05
SIMULATIONS = 2000
INDEPENDENT = Design()  # 50 speakers x 10 utterances, no speaker effect
SPEAKERS = {  # speaker effects, and systems that suit different speakers (interaction)
    "50 speakers x 10": Design(speaker_sd=0.8, interaction_sd=0.5),
    "AN4 test, 10 x 13": Design(speakers=10, per_speaker=13, speaker_sd=0.8, interaction_sd=0.5),
    "FSDD test, 6 x 50": Design(speakers=6, per_speaker=50, speaker_sd=0.8, interaction_sd=0.5, rate=0.03),
}


@pytest.mark.slow
def test_utterance_resampling_is_calibrated_when_utterances_are_independent():
    result = calibrate(INDEPENDENT, "utterance", SIMULATIONS)
    assert 0.93 <= result.coverage <= 0.97, result
    assert set(result.false_positive) == {"bootstrap", "matched pairs", "sign"}
    for test, rate in result.false_positive.items():
        assert rate <= ALPHA + 0.01, (test, result)


@pytest.mark.slow
@pytest.mark.parametrize("design", [INDEPENDENT, *SPEAKERS.values()], ids=["independent", *SPEAKERS])
def test_speaker_resampling_is_calibrated_with_and_without_speaker_effects(design: Design):
    result = calibrate(design, "speaker", SIMULATIONS)
    assert 0.93 <= result.coverage <= 0.97, result
    assert set(result.false_positive) == {"bootstrap", "speaker flip"}
    for test, rate in result.false_positive.items():
        assert rate <= ALPHA + 0.01, (test, result)


@pytest.mark.slow
@pytest.mark.parametrize("design", list(SPEAKERS.values()), ids=list(SPEAKERS))
def test_with_speaker_effects_utterance_resampling_under_covers_and_over_rejects(design: Design):
    """What made speakers the default: intervals that miss the true rate in a third of the test sets
    or more, and equal systems called different in 15-40% of them."""
    result = calibrate(design, "utterance", SIMULATIONS)
    assert result.coverage < 0.85, result
    assert min(result.false_positive.values()) > 3 * ALPHA, result


def test_the_true_rate_is_the_populations_errors_per_word():
    """The quadrature's expected rate against a large sample: with no spread it is the rate itself."""
    assert Design(utterance_sd=0.0).true_rate() == pytest.approx(0.10)
    design = Design(speaker_sd=0.8, interaction_sd=0.5)
    import numpy as np

    from asrbench.scoring.calibration import simulate

    errors, _, words, _ = simulate(design, 400, seed=3)
    assert errors.sum() / words.sum() == pytest.approx(design.true_rate(), rel=0.03)
    with pytest.raises(ValueError, match="unknown resampling"):
        calibrate(design, "speakers", 10)
    assert np.isfinite(design.true_rate())


SEEDED = {  # three training runs per system, each shifting its logit by a N(0, 0.3) draw
    "50 x 10, independent": Design(seeds=3, seed_sd=0.3),
    "50 x 10, speaker effects": Design(seeds=3, seed_sd=0.3, speaker_sd=0.8, interaction_sd=0.5),
    "AN4 test, 10 x 13": Design(speakers=10, per_speaker=13, seeds=3, seed_sd=0.3, speaker_sd=0.8, interaction_sd=0.5),
}


@pytest.mark.slow
@pytest.mark.parametrize("design", list(SEEDED.values()), ids=list(SEEDED))
def test_seeds_and_speakers_resampled_together_are_calibrated(design: Design):
    """The hierarchical bootstrap (speakers and each system's seeds): 93-97% coverage of the true
    rate of a system over its seeds, and at most alpha + 0.01 false 'different' calls."""
    result = calibrate_seeded(design, "speaker", SIMULATIONS)
    assert 0.93 <= result.coverage <= 0.97, result
    assert result.false_positive["seeded t"] <= ALPHA + 0.01, result


@pytest.mark.slow
def test_seeds_with_utterances_resampled_are_calibrated_when_utterances_are_independent():
    result = calibrate_seeded(SEEDED["50 x 10, independent"], "utterance", SIMULATIONS)
    assert 0.93 <= result.coverage <= 0.97, result
    assert result.false_positive["seeded t"] <= ALPHA + 0.01, result
