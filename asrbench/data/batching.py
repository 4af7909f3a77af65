"""Length-bucketed batches sized by a padded-frames budget, collation, and SpecAugment.

Sorting by length (with a little per-epoch noise so batches differ between epochs) keeps padding
small; capping ``B * T_max`` instead of B keeps memory per step roughly constant whether the
utterances are short or long.
"""

from __future__ import annotations

import copy
import random
import signal
from dataclasses import dataclass

import torch

from asrbench import fileio
from asrbench.data.features import FeatureSet, GlobalCMVN
from asrbench.data.noise_augment import NoiseAugment
from asrbench.data.tokenizer import TokenTable
from asrbench.recipe.config import AugmentConfig


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

    def batches(self, group: int = 1) -> list[list[int]]:
        """The epoch's batches. With ``group`` > 1 (batches per optimizer step over all ranks and
        micro-batches, see asrbench.training.distributed), runs of ``group`` batches of neighbouring lengths
        stay together so the ranks of a step get similarly sized batches; the groups are shuffled,
        and ``len % group`` batches drawn at random (different ones every epoch) are left out."""
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
        if group <= 1:
            if self.shuffle:
                rng.shuffle(batches)
            return batches
        left_out = set(rng.sample(range(len(batches)), len(batches) % group))
        batches = [batch for index, batch in enumerate(batches) if index not in left_out]
        groups = [batches[start : start + group] for start in range(0, len(batches), group)]
        if self.shuffle:
            rng.shuffle(groups)
        return [batch for members in groups for batch in members]

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

    def pin_memory(self) -> Batch:
        """Page-locked copies, so that ``to(cuda, non_blocking=True)`` overlaps with compute."""
        return Batch(
            self.ids,
            self.features.pin_memory(),
            self.feature_lengths.pin_memory(),
            self.targets.pin_memory(),
            self.target_lengths.pin_memory(),
        )

    def to(self, device: torch.device) -> Batch:
        non_blocking = device.type == "cuda"
        return Batch(
            self.ids,
            self.features.to(device, non_blocking=non_blocking),
            self.feature_lengths.to(device, non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
            self.target_lengths.to(device, non_blocking=non_blocking),
        )


def _mask(spec: torch.Tensor, max_width: int, value: float, axis: int, generator: torch.Generator | None) -> None:
    """One mask of width U[0, max_width) at a uniform start, in place (torchaudio's convention)."""
    size = spec.size(axis)
    width = float(torch.rand((), generator=generator)) * max_width
    start = float(torch.rand((), generator=generator)) * (size - width)
    first = max(0, int(start))
    last = min(size, int(start) + int(width))  # fewer than max_width frames or bins, inside the axis
    if last > first:
        spec.narrow(axis, first, last - first).fill_(value)


def spec_augment(
    features: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(T, F) -> (T, F) with frequency and time masks (Park et al., 2019) filled with the mean.

    Draws come from ``generator`` (torch's global RNG without one), so a batch can be augmented
    the same way in any process and after any resume.
    """
    return spec_augment_(features.clone(), config, generator)


def spec_augment_(
    features: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """:func:`spec_augment` in place (on a view into a padded batch, say)."""
    mean = float(features.mean())
    for _ in range(config.freq_masks):
        _mask(features, config.freq_mask_width, mean, 1, generator)
    time_width = min(config.time_mask_width, int(config.time_mask_ratio * features.size(0)))
    if time_width > 0:
        for _ in range(config.time_masks):
            _mask(features, time_width, mean, 0, generator)
    return features


class Collator:
    """Pads a list of utterance indices into a :class:`Batch`; augments only when training."""

    def __init__(
        self,
        features: FeatureSet,
        token_ids: TokenTable | list[list[int]],  # per utterance: its token ids
        cmvn: GlobalCMVN,
        augment: AugmentConfig | None = None,
        noise: NoiseAugment | None = None,
    ):
        self.features = features
        self.token_ids = token_ids
        self.cmvn = cmvn
        self.augment = augment
        self.noise = noise  # augment.noise: some utterances' features from noised audio

    def __call__(self, indices: list[int], seed: int | None = None) -> Batch:
        """The padded batch; with ``seed`` its augmentation is a function of the seed alone."""
        # Pad first, then normalize and augment the batch in place: the same values as doing it
        # utterance by utterance, with one CMVN op and no copies per utterance.
        pieces = [self.features[i] for i in indices] if self.noise is None else self._noised(indices, seed)
        lengths = torch.tensor([piece.size(0) for piece in pieces])
        padded = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
        padded.sub_(self.cmvn.mean).div_(self.cmvn.std)
        padded.masked_fill_((torch.arange(padded.size(1))[None, :] >= lengths[:, None]).unsqueeze(-1), 0.0)
        if self.augment is not None and self.augment.spec_augment:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            for row, length in zip(padded, lengths.tolist(), strict=True):
                spec_augment_(row[:length], self.augment, generator)
        targets = [torch.as_tensor(self.token_ids[i], dtype=torch.long) for i in indices]
        return Batch(
            ids=[self.features.utterances[i].id for i in indices],
            features=padded,
            feature_lengths=lengths,
            targets=torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long),
            target_lengths=torch.tensor([t.numel() for t in targets]),
        )

    def _noised(self, indices: list[int], seed: int | None) -> list[torch.Tensor]:
        """The batch's features, each utterance noised or not as the batch's noise draws say."""
        noise = self.noise
        assert noise is not None  # called only with augment.noise
        rng = noise.generator(seed)
        pieces = []
        for index in indices:
            draw = noise.draw(rng)
            if draw is None:
                pieces.append(self.features[index])
            else:
                utt, length = self.features.utterances[index], int(self.features.lengths[index])
                pieces.append(noise.features(utt, self.features.speed(index), length, *draw, rng))
        return pieces


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of batch ``index`` of ``epoch``: a function of these three alone."""
    return seed * 1000003 + epoch * 10007 + index


class EpochBatches(torch.utils.data.Dataset):
    """Training batches by key ``(epoch, group, index)``, collated on demand (in loader workers).

    A worker recomputes an epoch's batches from the sampler (they depend only on its seed, the
    epoch and the step group size) and augments batch ``index`` with :func:`batch_seed`, so what a
    step sees depends on nothing but (seed, epoch, group, batch): not on the number of workers or
    ranks, and not on whether training was resumed in between. One loader with persistent workers
    serves every epoch.
    """

    def __init__(self, collate: Collator, sampler: BucketBatchSampler, seed: int):
        self.collate = collate
        self.sampler = copy.copy(sampler)
        self.seed = seed
        self._key: tuple[int, int] | None = None
        self._batches: list[list[int]] = []

    def batches(self, epoch: int, group: int = 1) -> list[list[int]]:
        if (epoch, group) != self._key:
            self.sampler.set_epoch(epoch)
            self._batches, self._key = self.sampler.batches(group), (epoch, group)
        return self._batches

    def __len__(self) -> int:
        return len(self.batches(*(self._key or (0, 1))))

    def __getitem__(self, key: tuple[int, int, int]) -> Batch:
        epoch, group, index = key
        return self.collate(self.batches(epoch, group)[index], batch_seed(self.seed, epoch, index))


class EpochKeys(torch.utils.data.Sampler):
    """The keys ``(epoch, group, index)`` for ``index`` in ``range(start, stop, stride)``; set
    before each epoch (a rank of ``world`` takes every ``world``-th batch, from ``rank`` on)."""

    def __init__(self) -> None:
        self.epoch, self.group, self.start, self.stop, self.stride = 0, 1, 0, 0, 1

    def set(self, epoch: int, start: int, stop: int, group: int = 1, stride: int = 1) -> None:
        self.epoch, self.group, self.start, self.stop, self.stride = epoch, group, start, stop, stride

    def __iter__(self):
        return iter([(self.epoch, self.group, index) for index in range(self.start, self.stop, self.stride)])

    def __len__(self) -> int:
        return len(range(self.start, self.stop, self.stride))


def _init_worker(worker_id: int) -> None:
    # Ctrl-C reaches the whole process group; the training process decides what happens (it
    # finishes the batch and saves), so its workers must keep serving batches until then.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fileio.close_inherited_locks()  # the run dir's lock must die with the trainer


def train_loader(dataset: EpochBatches, keys: EpochKeys, workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """Batches in key order, collated by ``workers`` persistent processes ahead of the training
    step (0: in the training process).

    The loader gets a private generator: creating or iterating it must not draw from the global
    RNG that dropout uses, or a resumed run would diverge from an uninterrupted one.
    """
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=keys,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=workers > 0,
        generator=torch.Generator(),
        worker_init_fn=_init_worker if workers else None,
    )
