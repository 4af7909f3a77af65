"""Kaldi-compatible features, the on-disk feature cache, speed perturbation and CMVN."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from asrbench.data import fbank as fbank_module
from asrbench.data import store as store_module
from asrbench.data.audio import load_audio
from asrbench.data.fbank import FeatureExtractor, speed_perturb
from asrbench.data.features import FeatureSet, GlobalCMVN, load_features
from asrbench.data.manifest import Utterance, write_manifest
from asrbench.data.store import ShardedFrames, bytes_per_hour
from asrbench.recipe.config import FeatureConfig
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
        (waveform * 32768.0).unsqueeze(0),
        num_mel_bins=40,
        sample_frequency=16000,
        frame_length=25.0,
        frame_shift=10.0,
        dither=0.0,
    )
    assert torch.allclose(FeatureExtractor(config)(waveform), expected, atol=1e-4)


@pytest.mark.parametrize(
    "rate,mels,length_ms,shift_ms",
    [(16000, 80, 25.0, 10.0), (8000, 40, 25.0, 5.0), (22050, 64, 20.0, 10.0), (16000, 23, 32.0, 12.5)],
)
def test_batched_fbank_matches_kaldi_for_every_utterance(rate, mels, length_ms, shift_ms):
    torch.manual_seed(1)
    config = FeatureConfig(sample_rate=rate, num_mel_bins=mels, frame_length_ms=length_ms, frame_shift_ms=shift_ms)
    # Speech-like levels, silence (exact zeros hit the log floor) and a DC offset.
    levels = ((0.41, 0.05), (1.3, 0.3), (0.9, 0.001))
    waveforms = [torch.randn(int(rate * seconds)) * level for seconds, level in levels]
    waveforms += [torch.zeros(int(rate * 0.5)), torch.randn(int(rate * 0.7)) * 0.05 + 0.2]
    batched = FeatureExtractor(config).batch(waveforms)
    for waveform, features in zip(waveforms, batched, strict=True):
        expected = kaldi.fbank(
            (waveform * 32768.0).unsqueeze(0),
            num_mel_bins=mels,
            sample_frequency=rate,
            frame_length=length_ms,
            frame_shift=shift_ms,
            dither=0.0,
        )
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
    assert store_module.chunked([3.0, 3.0, 3.0, 1.0, 9.0, 0.5], 5.0) == [[0, 1], [2, 3, 4], [5]]
    assert store_module.chunked([], 5.0) == []


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
    real_resample = fbank_module.audio_functional.resample
    ratios = []

    def checked_resample(waveform, orig_freq, new_freq, *args, **kwargs):
        divisor = math.gcd(int(orig_freq), int(new_freq))
        ratios.append((orig_freq // divisor, new_freq // divisor))
        assert max(ratios[-1]) <= 100, f"resampling {orig_freq} -> {new_freq} is {ratios[-1]} in lowest terms"
        return real_resample(waveform, orig_freq, new_freq, *args, **kwargs)

    monkeypatch.setattr(fbank_module.audio_functional, "resample", checked_resample)
    waveform = torch.randn(rate)
    perturbed = speed_perturb(waveform, rate, factor)
    assert ratios
    assert abs(perturbed.numel() - rate / factor) <= 2


# --- load_features and the feature store ---------------------------------------------------------

EXACT = dataclasses.replace(SMALL, dtype="float32")  # stored as extracted, for bit-exact comparisons


def _stores(data_dir: Path, split: str = "train") -> list[Path]:
    return sorted(path for path in (data_dir / "features").glob(f"{split}-*") if path.is_dir())


def _count_shard_extractions(monkeypatch) -> list:
    calls = []
    real = store_module._extract_shard
    monkeypatch.setattr(store_module, "_extract_shard", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    return calls


def test_load_features_matches_direct_extraction(data_dir):
    features = load_features(data_dir, "train", EXACT)
    assert len(features) == 3
    assert [utt.id for utt in features.utterances] == ["u0", "u1", "u2"]
    for i, utt in enumerate(features.utterances):
        direct = FeatureExtractor(EXACT)(load_audio(utt.audio, 8000))
        assert torch.equal(features[i], direct)
    assert features.lengths.tolist() == [kaldi_frames(int(d * 8000), 8000) for d in (0.5, 0.8, 0.3)]
    assert features.frames().shape == (int(features.lengths.sum()), 23)


def test_float16_storage_rounds_to_half_precision_and_reads_back_float32(data_dir):
    half = load_features(data_dir, "train", SMALL)  # features.dtype float16, the default
    exact = load_features(data_dir, "train", EXACT)
    for i in range(len(half)):
        assert half[i].dtype == torch.float32
        assert torch.equal(half[i], exact[i].half().float())
    (store,) = [
        path for path in _stores(data_dir) if json.loads((path / "store.json").read_text())["dtype"] == "float16"
    ]
    (shard,) = store.glob("shard-*.npy")
    frames = int(half.lengths.sum())
    assert np.load(shard, mmap_mode="r").dtype == np.float16
    assert shard.stat().st_size <= frames * 23 * 2 + 128  # 2 bytes a value, plus the .npy header
    assert bytes_per_hour(store) > 0


@pytest.mark.parametrize("chunk_seconds", [0.5, 1.0, 100.0])
def test_extraction_over_several_chunks_keeps_every_utterance_in_place(data_dir, monkeypatch, chunk_seconds):
    """Chunks of 1, 2 or all 3 utterances give the same features, in manifest order."""
    monkeypatch.setattr(store_module, "CHUNK_SECONDS", chunk_seconds)
    features = load_features(data_dir, "train", EXACT)
    extractor = FeatureExtractor(EXACT)
    for i, utt in enumerate(features.utterances):
        assert torch.allclose(features[i], extractor(load_audio(utt.audio, 8000)), atol=1e-4)
    assert features.lengths.tolist() == [kaldi_frames(int(d * 8000), 8000) for d in (0.5, 0.8, 0.3)]


def test_shards_follow_the_plan_and_memory_maps_serve_the_frames(data_dir, monkeypatch):
    monkeypatch.setattr(store_module, "SHARD_SECONDS", 0.6)  # u0 + u1 (1.3 s), then u2
    assert store_module.plan_shards([0.5, 0.8, 0.3]) == [(0, 2), (2, 3)]
    assert store_module.plan_shards([0.5, 0.8, 0.3], 10.0) == [(0, 3)] and store_module.plan_shards([]) == [(0, 0)]
    features = load_features(data_dir, "train", EXACT)
    (store,) = _stores(data_dir)
    assert sorted(path.name for path in store.iterdir()) == [
        "shard-00000.json",
        "shard-00000.npy",
        "shard-00001.json",
        "shard-00001.npy",
        "store.json",
    ]
    assert features.locations[:, 1].tolist() == [0, 0, 1]
    assert isinstance(features.sources[0], ShardedFrames)
    # The frames pickle as paths and map again: what a loader worker receives.
    clone = pickle.loads(pickle.dumps(features))
    assert len(pickle.dumps(features.sources[0])) < 1000
    assert all(torch.equal(clone[i], features[i]) for i in range(3))


def test_a_second_load_reads_the_store(data_dir, monkeypatch):
    first = load_features(data_dir, "train", EXACT)
    calls = _count_shard_extractions(monkeypatch)
    second = load_features(data_dir, "train", EXACT)
    assert calls == []
    assert torch.equal(second.frames(), first.frames())
    assert [u.id for u in second.utterances] == [u.id for u in first.utterances]
    assert len(_stores(data_dir)) == 1


@pytest.mark.parametrize(
    "change",
    [{"num_mel_bins": 24}, {"frame_shift_ms": 20.0}, {"kind": "mfcc"}, {"dtype": "float16"}],
    ids=lambda c: next(iter(c)),
)
def test_changing_the_feature_config_extracts_a_new_store(data_dir, monkeypatch, change):
    load_features(data_dir, "train", EXACT)
    calls = _count_shard_extractions(monkeypatch)
    changed = dataclasses.replace(EXACT, **change)
    features = load_features(data_dir, "train", changed)
    assert len(calls) == 1
    assert features[0].size(1) == changed.dim()
    assert len(_stores(data_dir)) == 2


def test_changed_audio_file_extracts_again(data_dir, write_audio, monkeypatch):
    first = load_features(data_dir, "train", EXACT)
    audio = Path(first.utterances[0].audio)
    write_audio(audio, 0.6, rate=8000)  # same path, different content and size
    calls = _count_shard_extractions(monkeypatch)
    second = load_features(data_dir, "train", EXACT)
    assert len(calls) == 1
    assert second.lengths[0] == kaldi_frames(int(0.6 * 8000), 8000)


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "drop the index", "drop store.json"])
def test_a_damaged_shard_is_extracted_again_never_served(data_dir, monkeypatch, damage):
    monkeypatch.setattr(store_module, "SHARD_SECONDS", 0.6)  # two shards: u0 + u1, then u2
    first = load_features(data_dir, "train", EXACT)
    (store,) = _stores(data_dir)
    array, index = store / "shard-00001.npy", store / "shard-00001.json"
    if damage == "flip a byte":
        data = bytearray(array.read_bytes())
        data[-5] ^= 0xFF
        array.write_bytes(bytes(data))
    elif damage == "truncate":
        array.write_bytes(array.read_bytes()[:-40])
    elif damage == "drop the index":
        index.unlink()
    else:
        (store / "store.json").unlink()
    calls = _count_shard_extractions(monkeypatch)
    second = load_features(data_dir, "train", EXACT)
    assert calls == ([] if damage == "drop store.json" else [1])  # only the damaged shard
    assert torch.equal(second.frames(), first.frames())


def test_a_killed_extraction_resumes_from_the_complete_shards(data_dir, monkeypatch):
    monkeypatch.setattr(store_module, "SHARD_SECONDS", 0.6)
    real = store_module._extract_shard

    def die_on_the_second(directory, shard, *args, **kwargs):
        if shard == 1:
            raise KeyboardInterrupt  # the process is killed while extracting shard 1
        return real(directory, shard, *args, **kwargs)

    monkeypatch.setattr(store_module, "_extract_shard", die_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        load_features(data_dir, "train", EXACT, jobs=1)  # in this process, where the patch is
    (store,) = _stores(data_dir)
    assert (store / "shard-00000.json").is_file() and not (store / "store.json").exists()
    assert not list(store.glob(".*"))  # no temporary file left behind
    calls = []
    monkeypatch.setattr(store_module, "_extract_shard", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    features = load_features(data_dir, "train", EXACT)
    assert calls == [1] and len(features) == 3


def test_parallel_extraction_in_worker_processes_gives_the_same_store(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "SHARD_SECONDS", 0.6)
    alone = load_features(data_dir, "train", EXACT, jobs=1)
    copy = tmp_path / "copy"
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns("features"))
    # The parent plans the shards (spawned workers never see the monkeypatched size) and sends each
    # worker its shard's utterances.
    together = load_features(copy, "train", EXACT, jobs=2)
    assert torch.equal(together.frames(), alone.frames())
    assert together.statistics["count"] == alone.statistics["count"]


def test_store_statistics_give_the_cmvn_of_the_frames(data_dir):
    features = load_features(data_dir, "train", EXACT)
    from_frames = GlobalCMVN.from_frames(features.frames())
    from_store = features.cmvn()
    assert torch.allclose(from_store.mean, from_frames.mean, atol=1e-5)
    assert torch.allclose(from_store.std, from_frames.std, atol=1e-5)
    # Leaving utterances out subtracts their frames from the sums.
    kept = GlobalCMVN.from_frames(torch.cat([features[0], features[2]]))
    left_out = features.cmvn(leave_out=[1])
    assert torch.allclose(left_out.mean, kept.mean, atol=1e-5) and torch.allclose(left_out.std, kept.std, atol=1e-5)


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_speed_perturbed_features(data_dir, factor):
    plain = load_features(data_dir, "train", SMALL)
    perturbed = load_features(data_dir, "train", SMALL, speed=factor)
    assert [u.id for u in perturbed.utterances] == [f"sp{factor:g}-u{i}" for i in range(3)]
    for utt, base in zip(perturbed.utterances, plain.utterances, strict=True):
        assert utt.duration == pytest.approx(base.duration / factor)
    for length, base_length in zip(perturbed.lengths.tolist(), plain.lengths.tolist(), strict=True):
        assert abs(length - base_length / factor) <= 2
    # The perturbed features are stored apart from the plain ones.
    assert len(_stores(data_dir)) == 2


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_speed_perturbation_of_a_segment_keeps_the_whole_segment(tmp_path, write_audio, factor):
    """Regression test (fixed): for a segment of a longer recording (``offset`` > 0), load_features divides the
    utterance duration by the speed factor *before* extraction, and extraction then read only
    ``duration / factor`` seconds of the original audio. Above speed 1 the end of the segment was
    cut off; below 1 audio from after the segment was read. Features should be ~(segment / factor)."""
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
    features = load_features(tmp_path / "data", "train", EXACT)
    samples = load_audio(str(recording), 8000)[8000:12000]
    assert torch.allclose(features[0], FeatureExtractor(EXACT)(samples), atol=1e-4)


# --- FeatureSet and CMVN -----------------------------------------------------------------------


def make_feature_set(lengths: list[int], dim: int = 4) -> FeatureSet:
    pieces = [torch.full((length, dim), float(i)) for i, length in enumerate(lengths)]
    offsets = torch.cumsum(torch.tensor([0] + lengths), 0)
    utterances = [Utterance(f"u{i}", f"/a/{i}.wav", 1.0, "x") for i in range(len(lengths))]
    return FeatureSet.from_frames(utterances, torch.cat(pieces), offsets)


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
    assert subset.frames().size(0) == 9
    assert subset.sources[0] is features.sources[0]  # a view: no frames copied
    empty = features.subset([])
    assert len(empty) == 0 and empty.lengths.tolist() == []


def test_feature_sets_concatenate_as_views_over_both():
    a, b = make_feature_set([3, 5]), make_feature_set([2])
    both = a.concat(b)
    assert both.lengths.tolist() == [3, 5, 2] and len(both.sources) == 2
    assert torch.equal(both[2], b[0]) and torch.equal(both[1], a[1])


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


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("speed", [1.0, 0.9])
def test_features_computed_on_the_fly_equal_the_stored_ones(data_dir, dtype, speed):
    """features.cache: false keeps no frames on disk (only the index: frame counts, CMVN sums) and
    computes each utterance's features when it is read: the same values as the stored path."""
    stored = load_features(data_dir, "train", dataclasses.replace(SMALL, dtype=dtype), speed=speed)
    live = load_features(data_dir, "train", dataclasses.replace(SMALL, dtype=dtype, cache=False), speed=speed)
    assert isinstance(live.sources[0], store_module.OnTheFlyFrames)
    assert torch.equal(live.lengths, stored.lengths)
    for i in range(len(live)):
        assert torch.equal(live[i], stored[i])
    (directory,) = [
        path for path in _stores(data_dir) if not json.loads((path / "store.json").read_text())["config"]["cache"]
    ]
    assert not list(directory.glob("*.npy"))
    assert torch.allclose(live.cmvn().mean, stored.cmvn().mean, atol=1e-5)
    clone = pickle.loads(pickle.dumps(live))  # a loader worker's copy computes the same
    assert torch.equal(clone[1], live[1])
