"""Kaldi-compatible features, the on-disk feature cache, speed perturbation and CMVN."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from asrbench.config import FeatureConfig
from asrbench.data import features as features_module
from asrbench.data.audio import load_audio
from asrbench.data.features import FeatureExtractor, FeatureSet, GlobalCMVN, load_features, speed_perturb
from asrbench.data.manifest import Utterance, write_manifest
from asrbench.torchaudio_compat import kaldi

SMALL = FeatureConfig(sample_rate=8000, num_mel_bins=23)


def kaldi_frames(samples: int, rate: int, shift_ms: float = 10.0, length_ms: float = 25.0) -> int:
    """Kaldi's frame count with snip_edges: 1 + (N - window) // shift."""
    window, shift = int(rate * length_ms / 1000), int(rate * shift_ms / 1000)
    return 1 + (samples - window) // shift


@pytest.fixture
def data_dir(tmp_path, write_audio):
    """A prepared data dir with a 3-utterance train split at 8 kHz."""
    durations = [0.5, 0.8, 0.3]
    utterances = []
    for i, seconds in enumerate(durations):
        path = write_audio(tmp_path / "audio" / f"u{i}.wav", seconds, rate=8000, frequency=300 + 200 * i)
        utterances.append(Utterance(f"u{i}", str(path), seconds, "yes no"))
    write_manifest(tmp_path / "data" / "train.jsonl", utterances)
    return tmp_path / "data"


# --- FeatureExtractor --------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.3, 1.0, 1.37])
def test_fbank_shape_is_one_frame_per_10_ms(seconds):
    config = FeatureConfig(num_mel_bins=40)
    waveform = torch.randn(int(seconds * 16000)) * 0.1
    features = FeatureExtractor(config)(waveform)
    assert features.shape == (kaldi_frames(waveform.numel(), 16000), 40)
    assert abs(features.size(0) - seconds * 100) <= 3
    assert features.dtype == torch.float32
    assert torch.isfinite(features).all()


def test_mfcc_has_num_ceps_coefficients():
    config = FeatureConfig(kind="mfcc", num_ceps=13, num_mel_bins=23)
    features = FeatureExtractor(config)(torch.randn(16000) * 0.1)
    assert features.shape == (kaldi_frames(16000, 16000), 13)
    assert config.dim() == 13
    assert torch.isfinite(features).all()


def test_frame_shift_sets_the_frame_rate():
    config = FeatureConfig(sample_rate=8000, num_mel_bins=23, frame_shift_ms=20.0)
    features = FeatureExtractor(config)(torch.randn(8000) * 0.1)
    assert features.size(0) == kaldi_frames(8000, 8000, shift_ms=20.0)
    assert abs(features.size(0) - 50) <= 2


def test_fbank_equals_kaldi_on_int16_scaled_samples():
    torch.manual_seed(0)
    waveform = torch.randn(12000) * 0.05
    config = FeatureConfig(sample_rate=16000, num_mel_bins=40)
    expected = kaldi.fbank(
        (waveform * 32768.0).unsqueeze(0), num_mel_bins=40, sample_frequency=16000, frame_length=25.0,
        frame_shift=10.0, dither=0.0,
    )
    assert torch.allclose(FeatureExtractor(config)(waveform), expected, atol=1e-4)


@pytest.mark.parametrize("rate,mels,length_ms,shift_ms", [(16000, 80, 25.0, 10.0), (8000, 40, 25.0, 5.0),
                                                          (22050, 64, 20.0, 10.0), (16000, 23, 32.0, 12.5)])
def test_batched_fbank_matches_kaldi_for_every_utterance(rate, mels, length_ms, shift_ms):
    torch.manual_seed(1)
    config = FeatureConfig(sample_rate=rate, num_mel_bins=mels, frame_length_ms=length_ms, frame_shift_ms=shift_ms)
    # Speech-like levels, silence (exact zeros hit the log floor) and a DC offset.
    levels = ((0.41, 0.05), (1.3, 0.3), (0.9, 0.001))
    waveforms = [torch.randn(int(rate * seconds)) * level for seconds, level in levels]
    waveforms += [torch.zeros(int(rate * 0.5)), torch.randn(int(rate * 0.7)) * 0.05 + 0.2]
    batched = FeatureExtractor(config).batch(waveforms)
    for waveform, features in zip(waveforms, batched, strict=True):
        expected = kaldi.fbank((waveform * 32768.0).unsqueeze(0), num_mel_bins=mels, sample_frequency=rate,
                               frame_length=length_ms, frame_shift=shift_ms, dither=0.0)
        assert features.shape == expected.shape
        assert torch.allclose(features, expected, atol=2e-3, rtol=1e-4), (features - expected).abs().max()


def test_batch_equals_one_utterance_at_a_time_whatever_the_neighbours():
    # Utterances are laid end to end in one signal; frames straddling two of them must be dropped,
    # and a clip shorter than one window (padded to one frame) must not shift the ones after it.
    torch.manual_seed(2)
    extractor = FeatureExtractor(SMALL)
    waveforms = [torch.randn(n) * 0.1 + 0.3 * (i % 2) for i, n in enumerate((8001, 40, 200, 199, 161, 5000))]
    batched = extractor.batch(waveforms)
    for waveform, features in zip(waveforms, batched, strict=True):
        alone = extractor.batch([waveform])[0]
        assert features.shape == alone.shape == (max(kaldi_frames(waveform.numel(), 8000), 1), 23)
        assert torch.allclose(features, alone, atol=1e-4)


def test_chunked_groups_consecutive_items_up_to_the_limit():
    assert features_module.chunked([3.0, 3.0, 3.0, 1.0, 9.0, 0.5], 5.0) == [[0, 1], [2, 3, 4], [5]]
    assert features_module.chunked([], 5.0) == []


def test_louder_audio_has_higher_log_energy_by_the_gain():
    # log-mel energies move by 2*log(gain) when the waveform is scaled, a property of log power.
    torch.manual_seed(0)
    waveform = torch.randn(8000) * 0.05
    extractor = FeatureExtractor(SMALL)
    quiet, loud = extractor(waveform), extractor(waveform * 4)
    assert torch.allclose(loud - quiet, torch.full_like(quiet, 2 * torch.log(torch.tensor(4.0)).item()), atol=1e-2)


def test_audio_shorter_than_one_window_gives_one_frame():
    features = FeatureExtractor(SMALL)(torch.randn(40) * 0.1)  # 5 ms at 8 kHz
    assert features.shape == (1, 23)
    assert torch.isfinite(features).all()


# --- speed perturbation ------------------------------------------------------------------------
# Factors 0.8 and 1.25 resample by 4:5 and 5:4, cheap whatever the implementation; 0.9 and 1.1 are
# what recipes use, see test_speed_perturb_uses_a_small_resampling_ratio.


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_speed_perturb_changes_the_length_by_one_over_factor(factor):
    waveform = torch.randn(16000)
    perturbed = speed_perturb(waveform, 16000, factor)
    assert abs(perturbed.numel() - 16000 / factor) <= 2


def test_speed_perturb_by_one_is_the_identity():
    waveform = torch.randn(800)
    assert speed_perturb(waveform, 16000, 1.0) is waveform


def test_speed_perturb_raises_the_pitch():
    # Playing faster (factor > 1) at the same rate multiplies every frequency by the factor.
    rate = 8000
    time = torch.arange(rate) / rate
    waveform = torch.sin(2 * torch.pi * 500 * time)
    perturbed = speed_perturb(waveform, rate, 1.25)
    spectrum = torch.fft.rfft(perturbed).abs()
    peak_hz = spectrum.argmax().item() * rate / perturbed.numel()
    assert abs(peak_hz - 625) < 10


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturb_uses_a_small_resampling_ratio(monkeypatch, rate, factor):
    """Regression test (performance) (fixed): speed_perturb resamples from ``rate`` to ``round(rate / factor)``, e.g.
    16000 -> 17778 = 8000:8889 in lowest terms for factor 0.9. torchaudio's resample builds a
    (8889, 8000+) filter bank for that on every call: ~3 s and ~1.4 GB per utterance on CPU.
    Resampling from ``round(rate * factor)`` to ``rate`` (14400 -> 16000 = 9:10, as Kaldi and
    lhotse do) gives the same length change with a tiny filter."""
    real_resample = features_module.audio_functional.resample
    ratios = []

    def checked_resample(waveform, orig_freq, new_freq, *args, **kwargs):
        divisor = math.gcd(int(orig_freq), int(new_freq))
        ratios.append((orig_freq // divisor, new_freq // divisor))
        assert max(ratios[-1]) <= 100, f"resampling {orig_freq} -> {new_freq} is {ratios[-1]} in lowest terms"
        return real_resample(waveform, orig_freq, new_freq, *args, **kwargs)

    monkeypatch.setattr(features_module.audio_functional, "resample", checked_resample)
    waveform = torch.randn(rate)
    perturbed = speed_perturb(waveform, rate, factor)
    assert ratios
    assert abs(perturbed.numel() - rate / factor) <= 2


# --- load_features and its cache --------------------------------------------------------------


def test_load_features_matches_direct_extraction(data_dir):
    features = load_features(data_dir, "train", SMALL)
    assert len(features) == 3
    assert [utt.id for utt in features.utterances] == ["u0", "u1", "u2"]
    for i, utt in enumerate(features.utterances):
        direct = FeatureExtractor(SMALL)(load_audio(utt.audio, 8000))
        assert torch.equal(features[i], direct)
    assert features.lengths.tolist() == [kaldi_frames(int(d * 8000), 8000) for d in (0.5, 0.8, 0.3)]
    assert features.frames.shape == (int(features.lengths.sum()), 23)


@pytest.mark.parametrize("chunk_seconds", [0.5, 1.0, 100.0])
def test_extract_over_several_chunks_keeps_every_utterance_in_place(data_dir, monkeypatch, chunk_seconds):
    """Chunks of 1, 2 or all 3 utterances give the same features, in manifest order."""
    monkeypatch.setattr(features_module, "CHUNK_SECONDS", chunk_seconds)
    utterances = features_module.read_manifest(data_dir / "train.jsonl")
    features = features_module.extract(utterances, SMALL)
    extractor = FeatureExtractor(SMALL)
    for i, utt in enumerate(utterances):
        assert torch.allclose(features[i], extractor(load_audio(utt.audio, 8000)), atol=1e-4)
    assert features.lengths.tolist() == [kaldi_frames(int(d * 8000), 8000) for d in (0.5, 0.8, 0.3)]


def test_second_load_reads_the_cache(data_dir, monkeypatch):
    calls = []
    real_extract = features_module.extract

    def counting_extract(*args, **kwargs):
        calls.append(args)
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(features_module, "extract", counting_extract)
    first = load_features(data_dir, "train", SMALL)
    assert len(calls) == 1
    assert len(list((data_dir / "features").glob("train-*.pt"))) == 1

    def must_not_extract(*args, **kwargs):
        raise AssertionError("features were extracted again instead of read from the cache")

    monkeypatch.setattr(features_module, "extract", must_not_extract)
    second = load_features(data_dir, "train", SMALL)
    assert torch.equal(second.frames, first.frames)
    assert torch.equal(second.offsets, first.offsets)
    assert [u.id for u in second.utterances] == [u.id for u in first.utterances]


@pytest.mark.parametrize(
    "change", [{"num_mel_bins": 24}, {"frame_shift_ms": 20.0}, {"kind": "mfcc"}], ids=lambda c: next(iter(c))
)
def test_changing_the_feature_config_invalidates_the_cache(data_dir, monkeypatch, change):
    load_features(data_dir, "train", SMALL)
    calls = []
    real_extract = features_module.extract
    monkeypatch.setattr(features_module, "extract", lambda *a, **k: calls.append(a) or real_extract(*a, **k))
    changed = dataclasses.replace(SMALL, **change)
    features = load_features(data_dir, "train", changed)
    assert len(calls) == 1
    assert features.frames.size(1) == changed.dim()
    assert len(list((data_dir / "features").glob("train-*.pt"))) == 2


def test_changed_audio_file_invalidates_the_cache(data_dir, write_audio, monkeypatch):
    first = load_features(data_dir, "train", SMALL)
    audio = Path(first.utterances[0].audio)
    write_audio(audio, 0.6, rate=8000)  # same path, different content and size
    calls = []
    real_extract = features_module.extract
    monkeypatch.setattr(features_module, "extract", lambda *a, **k: calls.append(a) or real_extract(*a, **k))
    second = load_features(data_dir, "train", SMALL)
    assert len(calls) == 1
    assert second.lengths[0] == kaldi_frames(int(0.6 * 8000), 8000)


def test_damaged_cache_is_rebuilt(data_dir):
    first = load_features(data_dir, "train", SMALL)
    (cache,) = (data_dir / "features").glob("train-*.pt")
    cache.write_bytes(b"not a torch file")
    second = load_features(data_dir, "train", SMALL)
    assert torch.equal(second.frames, first.frames)


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_speed_perturbed_features(data_dir, factor):
    plain = load_features(data_dir, "train", SMALL)
    perturbed = load_features(data_dir, "train", SMALL, speed=factor)
    assert [u.id for u in perturbed.utterances] == [f"sp{factor:g}-u{i}" for i in range(3)]
    for utt, base in zip(perturbed.utterances, plain.utterances, strict=True):
        assert utt.duration == pytest.approx(base.duration / factor)
    for length, base_length in zip(perturbed.lengths.tolist(), plain.lengths.tolist(), strict=True):
        assert abs(length - base_length / factor) <= 2
    # The perturbed features are cached apart from the plain ones.
    assert len(list((data_dir / "features").glob("train-*.pt"))) == 2


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_speed_perturbation_of_a_segment_keeps_the_whole_segment(tmp_path, write_audio, factor):
    """Regression test (fixed): for a segment of a longer recording (``offset`` > 0), load_features divides the
    utterance duration by the speed factor *before* extraction, and extract() then reads only
    ``duration / factor`` seconds of the original audio. Above speed 1 the end of the segment is
    cut off; below 1 audio from after the segment is read. Features should be ~(segment / factor)."""
    recording = write_audio(tmp_path / "audio" / "long.wav", 3.0, rate=8000)
    segment = Utterance("seg", str(recording), duration=1.0, text="yes", offset=1.0)
    write_manifest(tmp_path / "data" / "train.jsonl", [segment])
    plain = load_features(tmp_path / "data", "train", SMALL)
    assert abs(plain.lengths[0].item() - 100) <= 3  # the segment is 1 s
    perturbed = load_features(tmp_path / "data", "train", SMALL, speed=factor)
    assert abs(perturbed.lengths[0].item() - 100 / factor) <= 3


def test_segment_offset_reads_the_right_audio(tmp_path, write_audio):
    recording = write_audio(tmp_path / "long.wav", 2.0, rate=8000)
    segment = Utterance("seg", str(recording), duration=0.5, text="yes", offset=1.0)
    write_manifest(tmp_path / "data" / "train.jsonl", [segment])
    features = load_features(tmp_path / "data", "train", SMALL)
    samples = load_audio(str(recording), 8000)[8000:12000]
    assert torch.allclose(features[0], FeatureExtractor(SMALL)(samples), atol=1e-4)


# --- FeatureSet and CMVN -----------------------------------------------------------------------


def make_feature_set(lengths: list[int], dim: int = 4) -> FeatureSet:
    pieces = [torch.full((length, dim), float(i)) for i, length in enumerate(lengths)]
    offsets = torch.cumsum(torch.tensor([0] + lengths), 0)
    utterances = [Utterance(f"u{i}", f"/a/{i}.wav", 1.0, "x") for i in range(len(lengths))]
    return FeatureSet(utterances, torch.cat(pieces), offsets)


def test_feature_set_indexing_and_lengths():
    features = make_feature_set([3, 5, 2])
    assert len(features) == 3
    assert features.lengths.tolist() == [3, 5, 2]
    assert torch.equal(features[1], torch.full((5, 4), 1.0))


def test_feature_set_subset_keeps_the_chosen_utterances_in_order():
    features = make_feature_set([3, 5, 2, 4])
    subset = features.subset([3, 1])
    assert [u.id for u in subset.utterances] == ["u3", "u1"]
    assert subset.lengths.tolist() == [4, 5]
    assert torch.equal(subset[0], features[3])
    assert torch.equal(subset[1], features[1])
    assert subset.frames.size(0) == 9
    empty = features.subset([])
    assert len(empty) == 0 and empty.frames.shape == (0, 4) and empty.offsets.tolist() == [0]


def test_global_cmvn_normalizes_to_zero_mean_unit_std():
    torch.manual_seed(0)
    frames = torch.randn(5000, 6) * torch.tensor([1.0, 2.0, 5.0, 0.5, 10.0, 3.0]) + torch.arange(6) * 7.0
    cmvn = GlobalCMVN.from_frames(frames)
    normalized = cmvn(frames)
    assert torch.allclose(normalized.mean(0), torch.zeros(6), atol=1e-4)
    assert torch.allclose(normalized.std(0), torch.ones(6), atol=1e-4)
    rebuilt = GlobalCMVN.from_dict(cmvn.to_dict())
    assert torch.equal(rebuilt(frames), normalized)


def test_global_cmvn_survives_constant_dimensions():
    frames = torch.cat([torch.randn(100, 2), torch.full((100, 1), 3.0)], dim=1)
    normalized = GlobalCMVN.from_frames(frames)(frames)
    assert torch.isfinite(normalized).all()
    assert torch.allclose(normalized[:, 2], torch.zeros(100))
