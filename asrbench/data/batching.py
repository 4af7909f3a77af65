"""Length-bucketed batches sized by a padded-frames budget, collation, and SpecAugment.

Sorting by length (with a little per-epoch noise so batches differ between epochs) keeps padding
small; capping ``B * T_max`` instead of B keeps memory per step roughly constant whether the
utterances are short or long.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from asrbench.config import AugmentConfig
from asrbench.data.features import FeatureSet, GlobalCMVN
from asrbench.torchaudio_compat import functional as audio_functional


class BucketBatchSampler:
    """Yields lists of indices; batches of similar length with ``B * T_max <= batch_frames``."""

    def __init__(
        self,
        lengths: list[int],
        batch_frames: int,
        max_batch_size: int = 128,
        shuffle: bool = True,
        seed: int = 0,
    ):
        self.lengths = lengths
        self.batch_frames = batch_frames
        self.max_batch_size = max_batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100003 + self.epoch)
        if self.shuffle:
            # Noise of +-10% reorders utterances of similar length only, so padding stays low.
            keys = [length * (1.0 + 0.2 * (rng.random() - 0.5)) for length in self.lengths]
        else:
            keys = [float(length) for length in self.lengths]
        order = sorted(range(len(self.lengths)), key=lambda i: (keys[i], i))
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for index in order:
            longest_if_added = max(longest, self.lengths[index])
            too_many = len(current) >= self.max_batch_size
            if current and (longest_if_added * (len(current) + 1) > self.batch_frames or too_many):
                batches.append(current)
                current, longest_if_added = [], self.lengths[index]
            current.append(index)
            longest = longest_if_added
        if current:
            batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


@dataclass
class Batch:
    ids: list[str]
    features: torch.Tensor  # (B, T, F), normalized
    feature_lengths: torch.Tensor  # (B,)
    targets: torch.Tensor  # (sum of target lengths,) token ids, concatenated
    target_lengths: torch.Tensor  # (B,)

    def to(self, device: torch.device) -> Batch:
        non_blocking = device.type == "cuda"
        return Batch(
            self.ids,
            self.features.to(device, non_blocking=non_blocking),
            self.feature_lengths.to(device, non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
            self.target_lengths.to(device, non_blocking=non_blocking),
        )


def spec_augment(features: torch.Tensor, config: AugmentConfig) -> torch.Tensor:
    """(T, F) -> (T, F) with frequency and time masks (Park et al., 2019), drawn from torch's RNG."""
    spec = features.t().unsqueeze(0)  # (1, F, T), torchaudio's layout
    mean = float(features.mean())
    for _ in range(config.freq_masks):
        spec = audio_functional.mask_along_axis(spec, config.freq_mask_width, mean, axis=1)
    time_width = min(config.time_mask_width, int(config.time_mask_ratio * features.size(0)))
    if time_width > 0:
        for _ in range(config.time_masks):
            spec = audio_functional.mask_along_axis(spec, time_width, mean, axis=2)
    return spec.squeeze(0).t()


class Collator:
    """Pads a list of utterance indices into a :class:`Batch`; augments only when training."""

    def __init__(
        self,
        features: FeatureSet,
        token_ids: list[list[int]],
        cmvn: GlobalCMVN,
        augment: AugmentConfig | None = None,
    ):
        self.features = features
        self.token_ids = token_ids
        self.cmvn = cmvn
        self.augment = augment

    def __call__(self, indices: list[int]) -> Batch:
        pieces = [self.cmvn(self.features[i]) for i in indices]
        if self.augment is not None and self.augment.spec_augment:
            pieces = [spec_augment(piece, self.augment) for piece in pieces]
        lengths = torch.tensor([piece.size(0) for piece in pieces])
        padded = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
        targets = [torch.tensor(self.token_ids[i], dtype=torch.long) for i in indices]
        return Batch(
            ids=[self.features.utterances[i].id for i in indices],
            features=padded,
            feature_lengths=lengths,
            targets=torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long),
            target_lengths=torch.tensor([t.numel() for t in targets]),
        )
