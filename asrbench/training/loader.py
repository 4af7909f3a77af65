"""The training batches: bucketed by length, collated (augmented) in the loop or in worker processes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asrbench.data.batching import BucketBatchSampler, Collator, EpochBatches, EpochKeys, train_loader
from asrbench.data.noise_augment import NoiseAugment
from asrbench.data.pipeline import TrainingData
from asrbench.env import available_cores
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import RunConfig
from asrbench.training.distributed import Context


@dataclass
class TrainBatches:
    """The sampler (an epoch's batch list), the keys that tell the loader which part of it to
    collate, the loader and its worker count, and the optimizer steps in one epoch."""

    sampler: BucketBatchSampler
    keys: EpochKeys
    loader: torch.utils.data.DataLoader
    workers: int
    steps_per_epoch: int


def train_batches(config: RunConfig, data: TrainingData, device: torch.device, context: Context) -> TrainBatches:
    """The loader of the training set; an error when an epoch cannot feed one optimizer step
    (``context.world`` ranks x ``train.grad_accum`` batches)."""
    tc = config.train
    group = context.world * tc.grad_accum
    sampler = BucketBatchSampler(data.train.lengths.tolist(), tc.batch_frames, tc.max_batch_size, True, tc.seed)
    steps_per_epoch = len(sampler.batches(group)) // group
    if steps_per_epoch == 0:
        raise AsrbenchError(
            f"{config.data.dir}: {len(sampler.batches())} training batches cannot feed one step of "
            f"{group} batches ({context.world} ranks x train.grad_accum {tc.grad_accum})"
        )
    collate = Collator(data.train, data.train_tokens, data.cmvn, config.augment, noise_augment(config, data))
    keys = EpochKeys()
    workers = loader_workers(tc.data_workers, device)
    loader = train_loader(EpochBatches(collate, sampler, tc.seed), keys, workers, pin_memory=device.type == "cuda")
    return TrainBatches(sampler, keys, loader, workers, steps_per_epoch)


def noise_augment(config: RunConfig, data: TrainingData) -> NoiseAugment | None:
    """``augment.noise``'s augmenter for the training set (babble from its unperturbed utterances)."""
    if not config.augment.noise:
        return None
    plain = [utt for index, utt in enumerate(data.train.utterances) if data.train.speed(index) == 1.0]
    return NoiseAugment(config.augment, config.features, plain)


def loader_workers(configured: int, device: torch.device, cores: int | None = None) -> int:
    """Data-loader processes for ``train.data_workers`` (-1 = auto).

    On a GPU, collation overlaps the device's work: up to 4 workers, leaving one core to the
    trainer. On a CPU the step's own ops run on ``torch.get_num_threads()`` cores, and a worker
    that shares a core with them delays every parallel op of the step (measured on 2 cores: the
    trainer at 0.68x a bare loop with one worker, 0.98x with none; see benchmarks/trainer_bench.py),
    so workers get only the cores the compute threads leave free. ``ASRBENCH_CORES`` caps the cores
    counted (``asrbench bench --jobs J`` gives each job its share).
    """
    if configured >= 0:
        return configured
    cores = cores or available_cores()
    if device.type == "cuda":
        return min(4, max(cores - 1, 0))
    return min(4, max(cores - torch.get_num_threads(), 0))
