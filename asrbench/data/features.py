"""Features of a split: the feature store on disk, and the :class:`FeatureSet` view training and
decoding read utterances from.

:func:`load_features` returns a split's features from its store (``<data_dir>/features/``),
extracting what is missing first (:mod:`asrbench.data.store`). The store key hashes the feature
config, the speed-perturbation factor and every utterance's id, audio path, offset, duration and
file size, so changing any of them extracts again and nothing stale is ever served.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from asrbench import fileio
from asrbench.data.manifest import Utterance, prepared_splits, read_manifest, split_path
from asrbench.data.store import OnTheFlyFrames, ShardedFrames, build_store, bytes_per_hour, open_store
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import FeatureConfig

CACHE_VERSION = 4  # 3: one in-memory tensor per split; 4: the sharded store


@dataclass
class FeatureSet:
    """Features of one split (or of several, concatenated): utterance i is ``locations[i]`` =
    (source, shard, start, length) in one of ``sources``; ``features[i]`` is its (T_i, F) float32."""

    utterances: list[Utterance]
    sources: list[ShardedFrames | OnTheFlyFrames | torch.Tensor]  # a store's shards, audio, or frames in memory
    locations: torch.Tensor  # (N, 4) int64
    statistics: dict | None = None  # count, sum, sum_squares of the frames (a whole store's)
    speeds: list[float] | None = None  # each source's speed-perturbation factor (None: all 1.0)

    def speed(self, index: int) -> float:
        """The speed factor utterance ``index``'s frames were extracted at (its waveform's)."""
        return 1.0 if self.speeds is None else self.speeds[int(self.locations[index, 0])]

    @classmethod
    def from_frames(cls, utterances: list[Utterance], frames: torch.Tensor, offsets: torch.Tensor) -> FeatureSet:
        """Features held in memory: utterance i is ``frames[offsets[i]:offsets[i + 1]]``."""
        lengths = offsets[1:] - offsets[:-1]
        locations = torch.stack([torch.zeros_like(lengths), torch.zeros_like(lengths), offsets[:-1], lengths], 1)
        return cls(utterances, [frames], locations.to(torch.int64).reshape(-1, 4))

    @property
    def lengths(self) -> torch.Tensor:
        return self.locations[:, 3]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> torch.Tensor:
        source, shard, start, length = self.locations[index].tolist()
        frames = self.sources[source]
        if isinstance(frames, (ShardedFrames, OnTheFlyFrames)):
            return frames.slice(shard, start, length)
        return frames[start : start + length].float()

    def subset(self, keep: list[int]) -> FeatureSet:
        """The utterances ``keep`` (a view: no frames are copied)."""
        index = torch.tensor(keep, dtype=torch.int64)
        return FeatureSet(
            [self.utterances[i] for i in keep], self.sources, self.locations[index].reshape(-1, 4), speeds=self.speeds
        )

    def concat(self, other: FeatureSet) -> FeatureSet:
        """This set's utterances, then ``other``'s (a view over both sets' sources)."""
        shifted = other.locations.clone()
        shifted[:, 0] += len(self.sources)
        speeds = None
        if self.speeds is not None or other.speeds is not None:
            speeds = (self.speeds or [1.0] * len(self.sources)) + (other.speeds or [1.0] * len(other.sources))
        return FeatureSet(
            self.utterances + other.utterances,
            self.sources + other.sources,
            torch.cat([self.locations, shifted]),
            speeds=speeds,
        )

    def frame_statistics(self, indices: list[int] | None = None) -> dict:
        """Frame count and float64 per-dimension sums of frames and squares over ``indices`` (all
        utterances by default), read one utterance at a time."""
        total = squares = None
        count = 0
        for index in range(len(self)) if indices is None else indices:
            values = self[index].double()
            total = values.sum(0) if total is None else total + values.sum(0)
            squares = values.square().sum(0) if squares is None else squares + values.square().sum(0)
            count += values.size(0)
        return {"count": count, "sum": total, "sum_squares": squares}

    def cmvn(self, leave_out: Sequence[int] = ()) -> GlobalCMVN:
        """Global CMVN statistics of these utterances but ``leave_out``: from the store's sums when
        there are any (minus the utterances left out), else by reading the frames."""
        if self.statistics is None:
            keep = sorted(set(range(len(self))) - set(leave_out))
            stats = self.frame_statistics(keep)
        else:
            left = self.frame_statistics(list(leave_out)) if leave_out else None
            stats = {key: self.statistics[key] for key in ("count", "sum", "sum_squares")}
            if left is not None and left["count"]:
                stats = {
                    "count": stats["count"] - left["count"],
                    "sum": torch.as_tensor(stats["sum"], dtype=torch.float64) - left["sum"],
                    "sum_squares": torch.as_tensor(stats["sum_squares"], dtype=torch.float64) - left["sum_squares"],
                }
        return GlobalCMVN.from_statistics(stats["count"], stats["sum"], stats["sum_squares"])

    def frames(self) -> torch.Tensor:
        """Every utterance's frames concatenated, (sum T_i, F) float32: for small sets and tests only
        (it holds the whole split in memory)."""
        if not len(self):
            return torch.zeros(0, 0)
        return torch.cat([self[i] for i in range(len(self))])


def cache_key(utterances: list[Utterance], config: FeatureConfig, speed: float) -> str:
    digest = hashlib.sha256()
    values = asdict(config)
    if values["preset"] == FeatureConfig.preset:
        del values["preset"]  # the convention stores had before presets: their keys stay valid
    digest.update(json.dumps({"version": CACHE_VERSION, "config": values, "speed": speed}).encode())
    for utt in utterances:
        try:
            size = os.path.getsize(utt.audio)
        except OSError:
            size = -1
        digest.update(f"{utt.id}\t{utt.audio}\t{utt.offset}\t{utt.duration}\t{size}\n".encode())
    return digest.hexdigest()[:20]


def split_utterances(
    data_dir: str | Path, split: str, speed: float = 1.0, manifest: list[Utterance] | None = None
) -> list[Utterance]:
    """A split's utterances (``manifest``, or read from the data dir); speed-perturbed copies get
    ``sp<factor>-`` ids and scaled durations."""
    utterances = manifest if manifest is not None else read_manifest(split_path(data_dir, split))
    if speed != 1.0:
        utterances = [
            Utterance(f"sp{speed:g}-{u.id}", u.audio, u.duration / speed, u.text, u.speaker, u.offset)
            for u in utterances
        ]
    return utterances


def store_dir(
    data_dir: str | Path,
    split: str,
    config: FeatureConfig,
    speed: float = 1.0,
    utterances: list[Utterance] | None = None,
) -> Path:
    """Where the store of a split's features (for this config and speed) lives."""
    utterances = utterances if utterances is not None else split_utterances(data_dir, split, speed)
    return Path(data_dir) / "features" / f"{split}-{cache_key(utterances, config, speed)}"


def load_features(
    data_dir: str | Path,
    split: str,
    config: FeatureConfig,
    speed: float = 1.0,
    jobs: int = 0,
    manifest: list[Utterance] | None = None,
) -> FeatureSet:
    """Features of a prepared split from its store, extracting what is missing first (``jobs``
    worker processes; 0: one per core). ``manifest``: the split's utterances when the caller
    has read them already (the speed copies of train are made from them, not read again)."""
    utterances = split_utterances(data_dir, split, speed, manifest)
    directory = store_dir(data_dir, split, config, speed, utterances)
    opened = open_store(directory, utterances)
    if opened is None:
        # Several processes (torchrun ranks, parallel bench jobs) may want the same store at once:
        # one extracts, the others wait for it and then read it.
        with fileio.build_lock(directory.with_name(directory.name + ".lock")):
            opened = open_store(directory, utterances)
            if opened is None:
                label = f"{split} features" + (f" (speed {speed:g})" if speed != 1.0 else "")
                build_store(directory, utterances, config, speed, jobs, label)
                opened = open_store(directory, utterances)
    if opened is None:
        raise AsrbenchError(f"{directory}: the feature store was written but does not read back (disk full?)")
    frames, locations, statistics = opened
    sources = torch.zeros(len(utterances), 1, dtype=torch.int64)
    return FeatureSet(utterances, [frames], torch.cat([sources, locations], 1), statistics, [float(speed)])


def extract_data_dir(
    data_dir: str | Path,
    config: FeatureConfig,
    speeds: list[float] | None = None,
    splits: list[str] | None = None,
    jobs: int = 0,
) -> list[dict]:
    """Build (or check) the stores of a data dir's splits (all that are prepared by default) and of
    train's speed-perturbed copies; one row per store: split, speed, utterances, hours, bytes/hour, path."""
    rows = []
    for split in splits or prepared_splits(data_dir):
        for speed in [1.0] + [float(s) for s in (speeds or []) if float(s) != 1.0 and split == "train"]:
            features = load_features(data_dir, split, config, speed, jobs)
            directory = store_dir(data_dir, split, config, speed, features.utterances)
            hours = sum(u.duration for u in features.utterances) / 3600
            rows.append(
                {
                    "split": split,
                    "speed": speed,
                    "utterances": len(features),
                    "hours": hours,
                    "frames": int(features.lengths.sum()),
                    "bytes_per_hour": bytes_per_hour(directory),
                    "store": str(directory),
                }
            )
    return rows


@dataclass
class GlobalCMVN:
    """Global mean/variance normalization with statistics from the training set."""

    mean: torch.Tensor  # (F,)
    std: torch.Tensor  # (F,)

    @classmethod
    def from_frames(cls, frames: torch.Tensor) -> GlobalCMVN:
        frames = frames.double()
        return cls(frames.mean(0).float(), frames.std(0).clamp(min=1e-5).float())

    @classmethod
    def from_statistics(cls, count: int, total, squares) -> GlobalCMVN:
        """From a frame count and float64 per-dimension sums of the frames and of their squares (the
        feature store accumulates them while extracting): the same mean and (unbiased) deviation
        as :meth:`from_frames`, without holding the frames."""
        total, squares = torch.as_tensor(total, dtype=torch.float64), torch.as_tensor(squares, dtype=torch.float64)
        mean = total / count
        variance = ((squares - count * mean.square()) / max(count - 1, 1)).clamp(min=0.0)
        return cls(mean.float(), variance.sqrt().clamp(min=1e-5).float())

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, values: dict) -> GlobalCMVN:
        return cls(values["mean"], values["std"])
