"""Noise and reverberation (asrbench/data/corruption.py) and the noise study (asrbench/studies/noise.py):
SNRs measured over speech, noise colours, babble from other speakers, looping recordings, room
impulse responses, seeded reproducibility; end to end on the tone runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from asrbench.data import corruption
from asrbench.decoding.decode import decode
from asrbench.errors import AsrbenchError
from asrbench.studies.noise import Condition, noise_study, parse_conditions, render, write_study

RATE = 16000


def _speech(seconds: float = 1.0, silence: float = 0.0) -> np.ndarray:
    time = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * time) * (1 + 0.5 * np.sin(2 * np.pi * 3 * time))
    quiet = np.random.default_rng(5).normal(0, 1e-4, int(silence * RATE))
    return np.concatenate([quiet, tone, quiet])


@pytest.mark.parametrize("snr", [20.0, 5.0, 0.0, -5.0])
def test_mixing_reaches_the_snr_over_the_speech_not_the_silence(snr: float):
    for silence in (0.0, 2.0):  # leading and trailing silence must not change the noise level
        speech = _speech(1.0, silence)
        noise = np.random.default_rng(0).standard_normal(speech.size)
        mix = corruption.mix(speech, noise, snr, RATE)
        added = mix.astype(np.float64) - speech
        measured = 10 * np.log10(np.mean(_speech(1.0) ** 2) / np.mean(added**2))
        assert measured == pytest.approx(snr, abs=0.15)  # frame edges: within 0.15 dB
        assert mix.dtype == np.float32 and mix.shape == speech.shape


def test_speech_power_counts_only_the_speech_frames():
    assert corruption.speech_power(_speech(1.0, 3.0), RATE) == pytest.approx(np.mean(_speech(1.0) ** 2), rel=0.03)
    silence = np.zeros(RATE)
    assert corruption.speech_power(silence, RATE) == 0.0
    assert np.array_equal(corruption.mix(silence, np.ones(RATE), 10.0, RATE), silence.astype(np.float32))


def test_pink_noise_falls_by_ten_decibels_a_decade():
    noise = corruption.pink_noise(RATE * 8, np.random.default_rng(0), RATE)
    power = np.abs(np.fft.rfft(noise)) ** 2
    frequencies = np.fft.rfftfreq(noise.size, 1 / RATE)

    def band(low, high):
        return power[(frequencies >= low) & (frequencies < high)].mean()

    assert 10 * np.log10(band(100, 200) / band(1000, 2000)) == pytest.approx(10.0, abs=1.0)
    assert band(0, 15) < 1e-6 * band(100, 200)  # nothing below 20 Hz
    assert np.std(noise) == pytest.approx(1.0, rel=1e-6)


def test_generators_are_reproducible_and_differ_by_condition_and_utterance():
    draw = [corruption.generator(0, "white 10 dB", "u1").standard_normal(4) for _ in range(2)]
    assert np.array_equal(*draw)
    assert not np.array_equal(draw[0], corruption.generator(0, "white 10 dB", "u2").standard_normal(4))
    assert not np.array_equal(draw[0], corruption.generator(1, "white 10 dB", "u1").standard_normal(4))


def test_babble_is_other_speakers_and_recordings_are_cut_or_looped():
    alternating = np.tile([1.0, -1.0], 150)
    pool = [("me", np.linspace(1.0, 2.0, 100)), ("you", alternating)]
    source = corruption.NoiseSource("babble", RATE, pool=pool, talkers=1)
    for seed in range(5):  # never the utterance's own speaker
        babble = source.sample(200, np.random.default_rng(seed), speaker="me")
        assert babble.shape == (200,) and np.allclose(np.abs(babble), 1.0) and np.all(babble[1:] == -babble[:-1])
    two = corruption.NoiseSource("babble", RATE, pool=[*pool, ("them", np.ones(80))], talkers=2)
    summed = two.sample(200, np.random.default_rng(0), speaker="me")  # you + them, each at unit power
    assert set(np.round(np.unique(summed), 6)) == {0.0, 2.0}
    looped = corruption.fit(np.arange(10.0), 35, np.random.default_rng(0))
    assert looped.size == 35 and np.all(np.diff(looped)[np.diff(looped) != -9.0] == 1.0)  # 0..9 repeated
    with pytest.raises(AsrbenchError, match="babble noise needs other utterances"):
        corruption.NoiseSource("babble", RATE).sample(10, np.random.default_rng(0))


def test_babble_speakers_are_given_never_read_off_the_id():
    """Regression (issue 28.3): the noise study took the id's prefix as the speaker, so on yesno
    (ids ``0_0_1_...``) babble for an utterance left out every utterance that starts with the same
    label. Without speakers only the utterance itself is left out."""
    from asrbench.data.manifest import Utterance
    from asrbench.studies.noise import _talker

    first, second = Utterance("0_0_1", "a.wav", 1.0, "NO NO YES"), Utterance("0_1_1", "b.wav", 1.0, "NO YES YES")
    assert _talker(first) != _talker(second)
    assert _talker(Utterance("an251-fash-b", "c.wav", 1.0, "A", "fash")) == _talker(
        Utterance("cen1-fash-b", "d.wav", 1.0, "B", "fash")
    )


def test_a_room_impulse_response_decays_sixty_decibels_in_its_rt60():
    rng = np.random.default_rng(0)
    response = corruption.room_impulse_response(0.5, RATE, rng)
    assert response.size == RATE // 2 and np.sum(response**2) == pytest.approx(1.0)
    tail = response[1:] ** 2
    early, late = tail[: RATE // 20].mean(), tail[-RATE // 20 :].mean()  # first and last 50 ms of the tail
    assert 10 * np.log10(early / late) == pytest.approx(60 * 0.45 / 0.5, abs=4.0)
    speech = _speech(1.0)
    wet = corruption.reverberate(speech, 0.5, RATE, rng)
    assert wet.shape == speech.shape and np.mean(wet.astype(np.float64) ** 2) == pytest.approx(np.mean(speech**2))
    assert not np.allclose(wet, speech)


def test_noise_directories_and_conditions_are_checked_in_one_line(tmp_path: Path):
    with pytest.raises(AsrbenchError, match="not white, pink, babble or a directory"):
        parse_conditions("purple", "10")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsrbenchError, match="no audio files in it"):
        parse_conditions(str(tmp_path / "empty"), "10")
    with pytest.raises(AsrbenchError, match="give numbers"):
        parse_conditions("white", "loud")
    with pytest.raises(AsrbenchError, match="reverberation times are positive"):
        parse_conditions("white", "inf", "-1")
    conditions = parse_conditions("white,pink", "inf,10,0", "0.3")
    assert [c.name for c in conditions] == [
        "clean",
        "white 10 dB",
        "white 0 dB",
        "pink 10 dB",
        "pink 0 dB",
        "reverb 0.3 s",
    ]


@pytest.mark.slow
def test_the_noise_study_decodes_every_run_on_the_same_audio(tone_run, streaming_run, tmp_path: Path):
    cnn, _ = tone_run
    conformer, _ = streaming_run
    noise_dir = tmp_path / "noise"
    noise_dir.mkdir()
    soundfile.write(noise_dir / "hum.wav", np.random.default_rng(3).normal(0, 0.1, 3000), 8000)
    conditions = [
        Condition("clean"),
        Condition("white", 0.0),
        Condition("babble", 10.0),
        Condition(str(noise_dir), 5.0),
        Condition("reverb", rt60=0.4),
    ]
    study = noise_study([cnn, conformer], conditions, seed=0, batch_seconds=1.0, resamples=200)
    assert len(study["rows"]) == 2 * len(conditions)
    clean = {row["run"]: row for row in study["rows"] if row["noise"] == "clean"}
    assert clean[str(cnn)]["wer"] == decode(cnn, "test").wer  # clean audio: decode's own figure
    checksums = {c["name"]: c["checksum"] for c in study["conditions"]}
    assert len(set(checksums.values())) == len(conditions)  # every condition its own audio
    rows_of = {(row["run"], row["condition"]): row for row in study["rows"]}
    for condition in conditions:
        pair = [rows_of[(str(run), condition.name)] for run in (cnn, conformer)]
        assert pair[0]["checksum"] == pair[1]["checksum"]  # both runs heard the same audio
        assert {row["vs_best"] for row in pair} & {"best"}
    white = rows_of[(str(cnn), "white 0 dB")]
    base = clean[str(cnn)]["wer"]
    assert white["wer"] >= base and white["degradation_points"] == white["wer"] - base
    low, high = white["degradation_ci"]  # paired over utterances: it holds the point estimate
    assert low <= white["degradation_points"] <= high and clean[str(cnn)]["degradation_ci"] is None
    again = noise_study([cnn], conditions[:2], seed=0, batch_seconds=3.0, resamples=200)  # other batches, one run
    assert [c["checksum"] for c in again["conditions"]] == [checksums["clean"], checksums["white 0 dB"]]
    assert again["rows"][1]["wer"] == white["wer"]
    other = noise_study([cnn], conditions[1:2], seed=1, resamples=200)
    assert other["conditions"][0]["checksum"] != checksums["white 0 dB"]
    markdown = render(study, "markdown")
    assert "| clean | white 0 dB | babble 10 dB | noise 5 dB | reverb 0.4 s |" in markdown and "★" in markdown
    written = write_study(study, tmp_path / "out")
    assert json.loads(written[0].read_text())["conditions"][0]["checksum"] == checksums["clean"]
    assert written[2].read_bytes()[:4] == b"\x89PNG"


def test_the_degradation_ci_is_of_the_paired_difference():
    """Noise that adds exactly one error to every utterance: the CI of the degradation stays within
    one error per 5 to 20 words (the utterances' lengths), however much their clean errors vary."""
    from asrbench.studies.noise import _degradation

    words = np.array([5.0, 10.0, 5.0, 20.0])
    clean_errors = np.array([0.0, 7.0, 1.0, 12.0])
    rows = [
        {
            "run": "r",
            "noise": "clean",
            "wer": 100 * clean_errors.sum() / words.sum(),
            "_errors": clean_errors,
            "_words": words,
        },
        {
            "run": "r",
            "noise": "white",
            "wer": 100 * (clean_errors + 1).sum() / words.sum(),
            "_errors": clean_errors + 1,
            "_words": words,
        },
    ]
    _degradation(rows, resamples=300)
    noisy = rows[1]
    assert noisy["degradation_points"] == pytest.approx(100 * 4 / 40)
    low, high = noisy["degradation_ci"]
    assert 100 * 1 / 20 - 1e-9 <= low <= high <= 100 * 1 / 5 + 1e-9  # one error per 5..20 words
    assert rows[0]["degradation_ci"] is None and "_errors" not in noisy


def test_with_speakers_the_noise_study_s_degradation_ci_is_a_speaker_t_interval():
    """Issue 31: the paired difference resampled by speaker (t with G - 1 degrees of freedom), wider
    than over utterances when the speakers' degradations differ, and still holding the point."""
    from asrbench.studies.noise import _degradation, legend

    rng = np.random.default_rng(4)
    words = rng.integers(5, 15, 60).astype(float)
    speakers = [f"s{i % 6}" for i in range(60)]
    clean = rng.binomial(words.astype(int), 0.1).astype(float)
    noisy = clean + np.array([(i % 6) for i in range(60)], float)  # speaker k loses k words each

    def rows():
        return [
            {"run": "r", "noise": "clean", "wer": 1.0, "_errors": clean, "_words": words},
            {"run": "r", "noise": "white", "wer": 2.0, "_errors": noisy, "_words": words},
        ]

    by_utterance, by_speaker = rows(), rows()
    _degradation(by_utterance, resamples=400)
    _degradation(by_speaker, resamples=400, speakers=speakers)
    point = 100 * (noisy - clean).sum() / words.sum()
    low, high = by_speaker[1]["degradation_ci"]
    assert low < point < high
    assert high - low > (by_utterance[1]["degradation_ci"][1] - by_utterance[1]["degradation_ci"][0])
    assert "6 speakers" in legend({"resample": "speaker", "speakers": 6}) and "utterances" in legend({})
