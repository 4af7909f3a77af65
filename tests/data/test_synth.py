"""The built-in synthesized corpus: layout, audio format, determinism, held-out test voices."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from asrbench.data import synth
from asrbench.data.manifest import SPLITS, read_manifest
from asrbench.errors import AsrbenchError

TINY = synth.SynthConfig(seed=0, train_utterances=6, dev_utterances=2, test_utterances=2)
needs_espeak = pytest.mark.skipif(not synth.espeak_available(), reason="needs the synth extra")


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("synth")
    counts = synth.synthesize_corpus(out_dir, TINY, progress=False)
    assert counts == {"train": 6, "dev": 2, "test": 2}
    return out_dir


@needs_espeak
def test_audio_is_16k_mono_speech_matching_the_manifest(corpus):
    for split in SPLITS:
        utterances = read_manifest(corpus / f"{split}.jsonl")
        assert [utt.id for utt in utterances] == [f"synth-{split}-{i:06d}" for i in range(len(utterances))]
        for utt in utterances:
            assert Path(utt.audio) == (corpus / "audio" / split / f"{utt.id}.wav").resolve()
            info = soundfile.info(utt.audio)
            assert (info.samplerate, info.channels, info.format, info.subtype) == (16000, 1, "WAV", "PCM_16")
            assert utt.duration == pytest.approx(info.frames / info.samplerate, abs=1e-6)
            assert 0.3 < utt.duration < 5.0
            samples, _ = soundfile.read(utt.audio, dtype="float32")
            assert np.sqrt(np.mean(samples**2)) > 0.01, f"{utt.id} is (nearly) silent"
            assert not samples[:100].any() and not samples[-100:].any(), "expected silence padding"


@needs_espeak
def test_same_seed_gives_identical_bytes(corpus, tmp_path):
    synth.synthesize_corpus(tmp_path, TINY, progress=False)
    assert _files(tmp_path) == _files(corpus)


@needs_espeak
def test_different_seed_gives_a_different_corpus(corpus, tmp_path):
    config = synth.SynthConfig(seed=1, train_utterances=6, dev_utterances=2, test_utterances=2)
    synth.synthesize_corpus(tmp_path, config, progress=False)
    assert (tmp_path / "train.jsonl").read_text() != (corpus / "train.jsonl").read_text()


@needs_espeak
def test_other_sample_rate(tmp_path):
    config = synth.SynthConfig(train_utterances=1, dev_utterances=1, test_utterances=1, sample_rate=8000)
    synth.synthesize_corpus(tmp_path, config, progress=False)
    (utt,) = read_manifest(tmp_path / "test.jsonl")
    assert soundfile.info(utt.audio).samplerate == 8000


@needs_espeak
def test_manifest_speakers_are_held_out(corpus):
    seen = {utt.speaker for split in ("train", "dev") for utt in read_manifest(corpus / f"{split}.jsonl")}
    heard_in_test = {utt.speaker for utt in read_manifest(corpus / "test.jsonl")}
    assert seen <= set(synth.TRAIN_VOICES)
    assert heard_in_test <= set(synth.TEST_VOICES)
    assert not seen & heard_in_test


def test_plan_holds_test_voices_out_and_uses_them_all():
    plans = synth.plan_corpus(synth.SynthConfig())
    train_dev = {plan.voice for split in ("train", "dev") for plan in plans[split]}
    test = {plan.voice for plan in plans["test"]}
    assert not set(synth.TRAIN_VOICES) & set(synth.TEST_VOICES)
    assert train_dev == set(synth.TRAIN_VOICES)
    assert test == set(synth.TEST_VOICES)


def test_plan_texts_come_from_the_vocabulary():
    plans = synth.plan_corpus(synth.SynthConfig())
    texts = [plan.text for split_plans in plans.values() for plan in split_plans]
    for text in texts:
        assert re.fullmatch(r"[A-Z']+( [A-Z']+)*", text), text
        words = text.split()
        is_digits = all(word in synth.DIGIT_WORDS for word in words) and 1 <= len(words) <= 4
        assert is_digits or text in synth.COMMANDS, text
    assert set(synth.COMMANDS) <= set(texts)  # every command is spoken somewhere


def test_plan_is_deterministic_and_splits_are_independent():
    small = synth.plan_corpus(TINY)
    assert small == synth.plan_corpus(TINY)
    grown = synth.SynthConfig(train_utterances=6, dev_utterances=2, test_utterances=9)
    bigger_test = synth.plan_corpus(grown)
    assert bigger_test["train"] == small["train"]
    assert bigger_test["test"][:2] == small["test"]
    for plan in small["train"]:
        assert synth.RATE_RANGE[0] <= plan.rate <= synth.RATE_RANGE[1]
        assert synth.PITCH_RANGE[0] <= plan.pitch <= synth.PITCH_RANGE[1]


@needs_espeak
def test_every_voice_variant_exists():
    # espeak_SetVoiceByName silently ignores an unknown "+variant", so a typo would go unnoticed.
    import espeakng_loader

    variants = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    for voice in synth.TRAIN_VOICES + synth.TEST_VOICES:
        assert (variants / voice.split("+")[1]).is_file(), voice


def test_missing_extra_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes the import fail
    assert not synth.espeak_available()
    with pytest.raises(AsrbenchError, match=re.escape("pip install 'asrbench[synth]'")):
        synth.synthesize_corpus(tmp_path / "corpus", TINY, progress=False)
    assert not (tmp_path / "corpus").exists()


def test_negative_count_is_rejected():
    with pytest.raises(AsrbenchError, match="dev_utterances"):
        synth.SynthConfig(dev_utterances=-1)


@pytest.mark.parametrize("target_rate", [16000, 8000, 44100])
def test_resample_keeps_a_tone(target_rate):
    def tone(rate: int, seconds: float) -> np.ndarray:
        return 1000 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)

    resampled = synth._resample(tone(22050, 1.0), 22050, target_rate)
    expected = tone(target_rate, 1.0)
    assert resampled.shape == expected.shape
    middle = slice(target_rate // 10, -target_rate // 10)  # the edges see the signal's abrupt start and end
    assert np.abs(resampled[middle] - expected[middle]).max() < 5  # 0.5% of the amplitude
