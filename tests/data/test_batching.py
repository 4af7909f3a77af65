"""Length-bucketed batch sampling, collation into padded batches, and SpecAugment."""

from __future__ import annotations

import random

import pytest
import torch

from asrbench.data.batching import BucketBatchSampler, Collator, spec_augment
from asrbench.data.features import FeatureSet, GlobalCMVN
from asrbench.data.manifest import Utterance
from asrbench.recipe.config import AugmentConfig


def random_lengths(count: int = 500, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(50, 1500) for _ in range(count)]


# --- BucketBatchSampler ------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_exactly_once(shuffle):
    lengths = random_lengths()
    sampler = BucketBatchSampler(lengths, batch_frames=8000, max_batch_size=16, shuffle=shuffle, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        indices = [i for batch in sampler for i in batch]
        assert sorted(indices) == list(range(len(lengths)))
        assert all(len(batch) > 0 for batch in sampler.batches())


@pytest.mark.parametrize("shuffle", [True, False])
def test_padded_frames_within_budget_and_batch_size_capped(shuffle):
    lengths = random_lengths()
    budget, max_size = 6000, 8
    for batch in BucketBatchSampler(lengths, batch_frames=budget, max_batch_size=max_size, shuffle=shuffle):
        assert len(batch) <= max_size
        assert len(batch) * max(lengths[i] for i in batch) <= budget


def test_utterance_longer_than_the_budget_gets_a_batch_of_its_own():
    lengths = [100, 5000, 120, 90, 7000, 110]
    batches = BucketBatchSampler(lengths, batch_frames=1000, max_batch_size=10, shuffle=False).batches()
    assert [1] in batches and [4] in batches
    for batch in batches:
        if len(batch) > 1:
            assert len(batch) * max(lengths[i] for i in batch) <= 1000
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))


def test_max_batch_size_binds_for_short_utterances():
    lengths = [10] * 100
    batches = BucketBatchSampler(lengths, batch_frames=10**6, max_batch_size=32, shuffle=False).batches()
    assert sorted(len(batch) for batch in batches) == [4, 32, 32, 32]


def test_batches_are_full_when_lengths_are_equal():
    # 100 frames each, budget 1000: exactly 10 per batch (greedy packing wastes nothing).
    batches = BucketBatchSampler([100] * 45, batch_frames=1000, max_batch_size=100, shuffle=False).batches()
    assert sorted(len(batch) for batch in batches) == [5, 10, 10, 10, 10]


def test_without_shuffle_batches_are_sorted_by_length():
    lengths = random_lengths(100)
    batches = BucketBatchSampler(lengths, batch_frames=5000, shuffle=False).batches()
    order = [i for batch in batches for i in batch]
    assert [lengths[i] for i in order] == sorted(lengths)
    assert batches == BucketBatchSampler(lengths, batch_frames=5000, shuffle=False).batches()


def test_deterministic_per_seed_and_epoch():
    lengths = random_lengths()

    def batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = BucketBatchSampler(lengths, batch_frames=8000, max_batch_size=16, seed=seed)
        sampler.set_epoch(epoch)
        return sampler.batches()

    assert batches(1, 2) == batches(1, 2)
    assert batches(1, 2) != batches(1, 3)
    assert batches(1, 2) != batches(2, 2)


def test_len_matches_iteration():
    sampler = BucketBatchSampler(random_lengths(), batch_frames=8000, max_batch_size=16, seed=5)
    sampler.set_epoch(4)
    assert len(sampler) == len(list(sampler))


def test_padding_fraction_is_small_on_random_lengths():
    lengths = random_lengths(2000)
    sampler = BucketBatchSampler(lengths, batch_frames=20000, max_batch_size=64, seed=0)
    padded = real = 0
    for batch in sampler:
        longest = max(lengths[i] for i in batch)
        padded += longest * len(batch)
        real += sum(lengths[i] for i in batch)
    # Unsorted batches of 16 out of U(50, 1500) would pad ~45%; bucketing keeps it a few percent.
    assert 1 - real / padded < 0.1


def test_empty_dataset_gives_no_batches():
    assert BucketBatchSampler([], batch_frames=1000).batches() == []


# --- Collator ----------------------------------------------------------------------------------


def make_features(lengths: list[int], dim: int = 5, seed: int = 0) -> FeatureSet:
    generator = torch.Generator().manual_seed(seed)
    pieces = [torch.randn(length, dim, generator=generator) * 3 + 2 for length in lengths]
    utterances = [Utterance(f"utt{i}", f"/audio/{i}.wav", length / 100, "x") for i, length in enumerate(lengths)]
    return FeatureSet.from_frames(utterances, torch.cat(pieces), torch.cumsum(torch.tensor([0] + lengths), 0))


def test_collator_pads_normalizes_and_concatenates_targets():
    features = make_features([12, 30, 7, 19])
    cmvn = GlobalCMVN.from_frames(features.frames())
    token_ids = [[2, 3], [4], [5, 6, 7], [8, 2, 2, 3]]
    batch = Collator(features, token_ids, cmvn)([3, 0, 2])
    assert batch.ids == ["utt3", "utt0", "utt2"]
    assert batch.features.shape == (3, 19, 5)
    assert batch.feature_lengths.tolist() == [19, 12, 7]
    assert batch.targets.tolist() == [8, 2, 2, 3, 2, 3, 5, 6, 7]
    assert batch.targets.dtype == torch.long
    assert batch.target_lengths.tolist() == [4, 2, 3]
    for row, index in enumerate([3, 0, 2]):
        length = features.lengths[index]
        assert torch.allclose(batch.features[row, :length], cmvn(features[index]))
        assert (batch.features[row, length:] == 0).all()


def test_collator_without_augment_is_deterministic():
    features = make_features([10, 20])
    collate = Collator(features, [[2], [3]], GlobalCMVN.from_frames(features.frames()), augment=None)
    assert torch.equal(collate([0, 1]).features, collate([0, 1]).features)


def test_collator_with_spec_augment_disabled_does_not_mask():
    features = make_features([40, 60])
    cmvn = GlobalCMVN.from_frames(features.frames())
    plain = Collator(features, [[2], [3]], cmvn)([0, 1])
    disabled = Collator(features, [[2], [3]], cmvn, AugmentConfig(spec_augment=False))([0, 1])
    assert torch.equal(plain.features, disabled.features)


def test_collator_applies_spec_augment_when_training():
    features = make_features([200, 150])
    cmvn = GlobalCMVN.from_frames(features.frames())
    augment = AugmentConfig(freq_masks=2, freq_mask_width=3, time_masks=2, time_mask_width=20)
    torch.manual_seed(0)
    plain = Collator(features, [[2], [3]], cmvn)([0, 1])
    augmented = Collator(features, [[2], [3]], cmvn, augment)([0, 1])
    assert augmented.features.shape == plain.features.shape
    assert augmented.feature_lengths.tolist() == plain.feature_lengths.tolist()
    assert not torch.equal(augmented.features, plain.features)


def test_batch_to_device_keeps_everything():
    features = make_features([10, 20])
    batch = Collator(features, [[2], [3, 4]], GlobalCMVN.from_frames(features.frames()))([0, 1])
    moved = batch.to(torch.device("cpu"))
    assert moved.ids == batch.ids
    assert torch.equal(moved.features, batch.features) and torch.equal(moved.targets, batch.targets)


# --- spec_augment ------------------------------------------------------------------------------


def test_spec_augment_masks_bands_with_the_mean_and_keeps_shape():
    torch.manual_seed(0)
    features = torch.randn(300, 40) + 5
    config = AugmentConfig(freq_masks=2, freq_mask_width=10, time_masks=2, time_mask_width=30, time_mask_ratio=0.2)
    masked_any = False
    for _ in range(10):
        out = spec_augment(features, config)
        assert out.shape == features.shape
        changed = out != features
        if not changed.any():
            continue
        masked_any = True
        # Every changed value is the utterance mean, and changes come in whole rows or columns.
        assert torch.allclose(out[changed], torch.full_like(out[changed], features.mean().item()))
        for frame, bin_ in changed.nonzero().tolist():
            assert changed[frame].all() or changed[:, bin_].all()
        # At most freq_masks * (width - 1) bins and time_masks * (width - 1) frames are fully masked.
        assert int(changed.all(0).sum()) <= 2 * 9
        assert int(changed.all(1).sum()) <= 2 * 29
    assert masked_any


def test_spec_augment_time_masks_respect_the_ratio():
    torch.manual_seed(0)
    features = torch.randn(50, 8) + 5
    config = AugmentConfig(freq_masks=0, time_masks=1, time_mask_width=100, time_mask_ratio=0.1)
    for _ in range(20):
        masked_frames = int((spec_augment(features, config) != features).all(1).sum())
        assert masked_frames < 5  # min(100, 0.1 * 50) = 5 is the exclusive upper bound


def test_spec_augment_with_no_masks_is_the_identity():
    features = torch.randn(100, 10)
    config = AugmentConfig(freq_masks=0, time_masks=0)
    assert torch.equal(spec_augment(features, config), features)


def test_spec_augment_does_not_modify_its_input():
    features = torch.randn(100, 10)
    copy = features.clone()
    spec_augment(features, AugmentConfig())
    assert torch.equal(features, copy)


def test_batched_collation_equals_normalizing_and_augmenting_each_utterance():
    # The collator pads first and works on the batch in place; the values must be those of the
    # utterance-by-utterance recipe (CMVN, SpecAugment with the batch's generator, zero padding).
    features = make_features([30, 17, 25, 9], seed=3)
    cmvn = GlobalCMVN.from_frames(features.frames())
    augment = AugmentConfig(freq_masks=2, freq_mask_width=3, time_masks=2, time_mask_width=5)
    batch = Collator(features, [[1, 2]] * 4, cmvn, augment)([2, 0, 3], seed=11)
    generator = torch.Generator().manual_seed(11)
    for row, index in enumerate([2, 0, 3]):
        expected = spec_augment(cmvn(features[index]), augment, generator)
        length = expected.size(0)
        assert torch.equal(batch.features[row, :length], expected)
        assert not batch.features[row, length:].any()
