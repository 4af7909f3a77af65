"""augment.noise: noise-augmented training, seeded per batch, features from the noised waveform."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import soundfile
import torch
import yaml
from helpers import write_tone_corpus

import asrbench.training.trainer
from asrbench.data.batching import Collator
from asrbench.data.features import GlobalCMVN, load_features
from asrbench.data.noise_augment import BABBLE_POOL, NoiseAugment
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import AugmentConfig, FeatureConfig, resolve

FEATURES = FeatureConfig(sample_rate=8000, num_mel_bins=23)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(data dir, train features: plain then speed 1.1 copies, their CMVN)."""
    data_dir = write_tone_corpus(tmp_path_factory.mktemp("noise_augment"))
    plain = load_features(data_dir, "train", FEATURES, jobs=1)
    fast = load_features(data_dir, "train", FEATURES, speed=1.1, jobs=1, manifest=plain.utterances)
    features = plain.concat(fast)
    return data_dir, features, GlobalCMVN.from_frames(plain.frames())


def collator(features, cmvn, **noise) -> Collator:
    augment = AugmentConfig(spec_augment=False, **noise)
    plain = [utt for i, utt in enumerate(features.utterances) if features.speed(i) == 1.0]
    augmenter = NoiseAugment(augment, FEATURES, plain) if augment.noise else None
    return Collator(features, [[1]] * len(features), cmvn, augment, augmenter)


def test_speeds_follow_subsets_and_concatenation(corpus):
    _, features, _ = corpus
    half = len(features) // 2
    assert [features.speed(i) for i in (0, half - 1, half, len(features) - 1)] == [1.0, 1.0, 1.1, 1.1]
    picked = features.subset([half + 1, 0])
    assert [picked.speed(0), picked.speed(1)] == [1.1, 1.0]


def test_inaudible_noise_gives_the_stored_features_at_every_speed(corpus):
    """At 200 dB SNR the noised path must reproduce the store (same audio read, speed, fbank, rounding)."""
    _, features, _ = corpus
    raw = GlobalCMVN(torch.zeros(FEATURES.dim()), torch.ones(FEATURES.dim()))  # compare the features themselves
    indices = list(range(len(features)))
    clean = Collator(features, [[1]] * len(features), raw)(indices, seed=3)
    noised = collator(features, raw, noise=["white"], noise_snr=[200.0, 200.0], noise_prob=1.0)(indices, seed=3)
    assert torch.equal(clean.feature_lengths, noised.feature_lengths)
    # Both are rounded to float16: a sum in another thread order may land one float16 step away.
    torch.testing.assert_close(noised.features, clean.features, rtol=2 * 2.0**-10, atol=1e-3)


def test_noise_prob_zero_changes_nothing(corpus):
    _, features, cmvn = corpus
    clean = Collator(features, [[1]] * len(features), cmvn)([0, 5, 13], seed=1)
    none = collator(features, cmvn, noise=["white"], noise_prob=0.0)([0, 5, 13], seed=1)
    assert torch.equal(clean.features, none.features)


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
def test_a_batch_is_a_function_of_its_seed(corpus, kind):
    _, features, cmvn = corpus
    collate = collator(features, cmvn, noise=[kind], noise_snr=[0.0, 5.0], noise_prob=1.0)
    clean = Collator(features, [[1]] * len(features), cmvn)([0, 1, 14], seed=7)
    first, again = collate([0, 1, 14], seed=7), collate([0, 1, 14], seed=7)
    in_worker = pickle.loads(pickle.dumps(collate))([0, 1, 14], seed=7)  # a loader worker's copy
    other = collate([0, 1, 14], seed=8)
    assert torch.equal(first.features, again.features) and torch.equal(first.features, in_worker.features)
    assert not torch.equal(first.features, other.features)
    assert (first.features - clean.features).abs().mean() > 0.1  # 0-5 dB noise is audible in the features


def test_noise_prob_noises_that_fraction(corpus):
    _, features, cmvn = corpus
    collate = collator(features, cmvn, noise=["white"], noise_snr=[0.0, 0.0], noise_prob=0.5)
    clean = Collator(features, [[1]] * len(features), cmvn)
    noised = total = 0
    for seed in range(12):
        batch, plain = collate(list(range(len(features))), seed=seed), clean(list(range(len(features))), seed=seed)
        changed = (batch.features - plain.features).abs().flatten(1).amax(1) > 0.05
        noised, total = noised + int(changed.sum()), total + len(features)
    assert 0.35 < noised / total < 0.65


def test_snr_controls_the_damage(corpus):
    _, features, cmvn = corpus
    clean = Collator(features, [[1]] * len(features), cmvn)([2, 3], seed=0)
    distance = {}
    for snr in (0.0, 30.0):
        batch = collator(features, cmvn, noise=["white"], noise_snr=[snr, snr], noise_prob=1.0)([2, 3], seed=0)
        distance[snr] = float((batch.features - clean.features).abs().mean())
    assert distance[0.0] > 3 * distance[30.0] > 0


def test_a_folder_of_recordings_under_the_data_root(corpus, tmp_path, monkeypatch):
    _, features, cmvn = corpus
    folder = tmp_path / "root" / "hum"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    soundfile.write(folder / "short.wav", rng.normal(0, 0.1, 400), 8000)  # shorter than any utterance: looped
    soundfile.write(folder / "long.flac", rng.normal(0, 0.1, 16000 * 5), 16000)  # resampled, read a stretch at a time
    monkeypatch.setenv("ASRBENCH_DATA_ROOT", str(tmp_path / "root"))
    collate = collator(features, cmvn, noise=["hum"], noise_snr=[0.0, 0.0], noise_prob=1.0)
    clean = Collator(features, [[1]] * len(features), cmvn)([0, 1, 2, 3], seed=0)
    batch = collate([0, 1, 2, 3], seed=0)
    assert torch.equal(batch.feature_lengths, clean.feature_lengths)
    assert (batch.features - clean.features).abs().mean() > 0.1
    assert torch.equal(batch.features, collate([0, 1, 2, 3], seed=0).features)


def test_bad_sources_fail_in_one_line_naming_the_key(corpus, tmp_path):
    _, features, _ = corpus
    with pytest.raises(AsrbenchError, match=r"augment.noise: nowhere: not white, pink, babble or a folder"):
        NoiseAugment(AugmentConfig(noise=["nowhere"]), FEATURES, features.utterances)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsrbenchError, match=r"augment.noise: .*empty: no audio files"):
        NoiseAugment(AugmentConfig(noise=[str(tmp_path / "empty")]), FEATURES, features.utterances)


def test_the_babble_pool_is_bounded(corpus):
    _, features, _ = corpus
    many = features.utterances * 20  # more utterances than the pool holds
    assert len(NoiseAugment(AugmentConfig(noise=["babble"]), FEATURES, many).pool) == BABBLE_POOL


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("noise", ["white", 3], "augment.noise must be a list of noise sources"),
        ("noise_snr", [20, 0], "low <= high"),
        ("noise_snr", [5], "augment.noise_snr must be"),
        ("noise_prob", 1.5, "augment.noise_prob must be in"),
    ],
)
def test_recipe_values_are_checked(tmp_path, key, value, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {dir: d}\nmodels:\n  cnn: {}\n")
    with pytest.raises(AsrbenchError, match=message):
        resolve(recipe, "cnn", overrides=[f"augment.{key}={json.dumps(value)}"])


@pytest.mark.slow
def test_training_with_noise_runs_and_records_it(tmp_path):
    data_dir = write_tone_corpus(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{spec_augment: false, noise: [white, babble], noise_snr: [10, 20], noise_prob: 0.5}}
train: {{epochs: 2, batch_frames: 400, lr: 5.0e-3, warmup_steps: 5, data_workers: 1}}
models:
  cnn: {{subsample_channels: 4, channels: 16, kernel_size: 5, num_blocks: 2}}
""")
    run = tmp_path / "run"
    asrbench.training.trainer.train(recipe, "cnn", run, seed=0)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["epochs"] == 2
    recorded = yaml.safe_load((run / "config.yaml").read_text())["augment"]
    assert (recorded["noise"], recorded["noise_snr"], recorded["noise_prob"]) == (["white", "babble"], [10, 20], 0.5)
