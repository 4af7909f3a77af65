"""The feature store: a split's features on disk in shards, read back from the page cache.

A store is a folder ``<data_dir>/features/<split>-<key>/`` (the key hashes the feature config,
the speed factor and every utterance's identity, see :func:`asrbench.data.features.cache_key`):

- ``shard-KKKKK.npy``: the frames of a run of consecutive utterances, (frames, F), in
  ``features.dtype`` (float16 by default: 2 bytes a value);
- ``shard-KKKKK.json``, written after its ``.npy``: the shard's utterance ids and frame counts, its
  byte size and CRC-32, and the float64 sum and sum of squares of its (float32) frames per
  dimension, from which global CMVN statistics come without ever holding all frames;
- ``store.json``, written last: the store is complete.

The shards are planned from the manifest's durations before any audio is read (about
:data:`SHARD_SECONDS` of audio each), so a shard's utterances do not depend on how many workers
extract it, and a killed extraction resumes by skipping the shards already complete. A shard
whose ``.npy`` fails its size or CRC check, or whose ``.json`` is missing or names other
utterances, is extracted again; nothing damaged or stale is ever served.

Extraction writes one shard at a time per worker (``jobs`` worker processes, or in this process
with ``jobs`` 1), so its memory is one shard's frames whatever the corpus size. Reading copies
each utterance's bytes out of the page cache with a positioned read (:class:`ShardedFrames`
says why not memory maps): the page cache holds the data, shared by loader workers and torchrun
ranks, and a batch holds only its own frames (as float32).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import queue
import zlib
from collections import Counter, OrderedDict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from asrbench import fileio
from asrbench.data.audio import load_audio
from asrbench.data.fbank import FeatureExtractor, speed_perturb
from asrbench.data.manifest import Utterance
from asrbench.env import available_cores
from asrbench.errors import AsrbenchError
from asrbench.progress import console, progress_bar
from asrbench.recipe.config import FeatureConfig

STORE_VERSION = 1
SHARD_SECONDS = 1800.0  # audio per shard: ~29 MB of float16 80-dim fbank, 200 shards for 100 h
CHUNK_SECONDS = 8.0  # audio per batched extraction pass: big enough to amortize the calls
DTYPES = {"float16": np.float16, "float32": np.float32}
_CRC_BLOCK = 1 << 23


def plan_shards(durations: list[float], seconds: float | None = None) -> list[tuple[int, int]]:
    """Consecutive utterance ranges ``[start, stop)`` of about ``seconds`` (:data:`SHARD_SECONDS`)
    of audio each; at least one range."""
    seconds = seconds or SHARD_SECONDS
    shards, start, total = [], 0, 0.0
    for index, duration in enumerate(durations):
        total += duration
        if total >= seconds:
            shards.append((start, index + 1))
            start, total = index + 1, 0.0
    if start < len(durations) or not shards:
        shards.append((start, len(durations)))
    return shards


def chunked(sizes: list[float], limit: float) -> list[list[int]]:
    """Consecutive indices grouped so that each group's sizes add up to about ``limit``."""
    groups, group, total = [], [], 0.0
    for index, size in enumerate(sizes):
        group.append(index)
        total += size
        if total >= limit:
            groups.append(group)
            group, total = [], 0.0
    return groups + ([group] if group else [])


def _shard_paths(directory: Path, shard: int) -> tuple[Path, Path]:
    return directory / f"shard-{shard:05d}.npy", directory / f"shard-{shard:05d}.json"


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(_CRC_BLOCK):
            crc = zlib.crc32(block, crc)
    return crc


def _shard_index(directory: Path, shard: int, ids: list[str]) -> dict | None:
    """The shard's index when its files are complete, undamaged and hold these utterances; else None."""
    array_path, index_path = _shard_paths(directory, shard)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("version") != STORE_VERSION or index.get("ids") != ids:
            return None
        if not index.get("stored", True):  # features computed on the fly: an index without frames
            return index
        if array_path.stat().st_size != index["bytes"] or _crc32(array_path) != index["crc32"]:
            return None
        return index
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- extraction ------------------------------------------------------------------------------------


def _extract_shard(
    directory: str, shard: int, utterances: list[Utterance], config: dict, speed: float, dtype: str, progress=None
) -> dict:
    """Extract one shard's utterances and write its ``.npy`` then its ``.json``; returns the index.

    Runs in a worker process (``progress``: a queue the parent's bar reads) or in the caller's.
    """
    feature_config = FeatureConfig(**config)
    extractor = FeatureExtractor(feature_config)
    pieces: list[np.ndarray] = []
    notes: Counter = Counter()
    total = np.zeros(feature_config.dim(), dtype=np.float64)
    squares = np.zeros(feature_config.dim(), dtype=np.float64)
    for chunk in chunked([u.duration for u in utterances], CHUNK_SECONDS):
        waveforms = []
        for index in chunk:
            utt = utterances[index]
            # A perturbed utterance's duration is already divided by the speed factor; read the original span.
            span = utt.duration * speed if utt.offset else None
            waveform = load_audio(utt.audio, feature_config.sample_rate, utt.offset, span, notes)
            waveforms.append(speed_perturb(waveform, feature_config.sample_rate, speed))
        for features in extractor.batch(waveforms):
            values = features.double()
            total += values.sum(0).numpy()
            squares += values.square().sum(0).numpy()
            pieces.append(features.numpy().astype(DTYPES[dtype]))
        if progress is not None:
            progress.put((len(chunk), sum(utterances[i].duration for i in chunk)))
    frames = np.concatenate(pieces) if pieces else np.zeros((0, feature_config.dim()), DTYPES[dtype])
    array_path, index_path = _shard_paths(Path(directory), shard)
    if feature_config.cache:
        with fileio.atomic_open(array_path, "wb") as handle:
            np.save(handle, np.ascontiguousarray(frames))
    shard_meta = {
        "version": STORE_VERSION,
        "ids": [u.id for u in utterances],
        "lengths": [int(p.shape[0]) for p in pieces],
        "dtype": dtype,
        "dim": int(frames.shape[1]),
        "stored": feature_config.cache,
        "bytes": array_path.stat().st_size if feature_config.cache else 0,
        "crc32": _crc32(array_path) if feature_config.cache else 0,
        "sum": total.tolist(),
        "sum_squares": squares.tolist(),
        "frames": int(frames.shape[0]),
        "notes": dict(notes),
    }
    fileio.write_json(index_path, shard_meta)
    return shard_meta


def _init_worker(progress, threads: int) -> None:
    global _progress
    _progress = progress
    torch.set_num_threads(threads)


_progress = None


def _extract_in_worker(
    directory: str, shard: int, utterances: list[Utterance], config: dict, speed: float, dtype: str
) -> dict:
    return _extract_shard(directory, shard, utterances, config, speed, dtype, progress=_progress)


# Audio a worker process must have to extract before starting one pays off: a spawned worker
# takes ~2 s to start (it imports torch), and one process extracts an hour of AN4 in ~2 s.
HOURS_PER_WORKER = 2.0


def extraction_jobs(requested: int, shards: int, hours: float) -> int:
    """Worker processes: ``requested``, or with 0 one per core but only as many as ``hours`` of
    audio to extract keep busy (:data:`HOURS_PER_WORKER`); never more than the shards to extract."""
    jobs = requested if requested > 0 else min(available_cores(), max(1, int(hours // HOURS_PER_WORKER)))
    return max(1, min(jobs, shards))


def build_store(
    directory: Path, utterances: list[Utterance], config: FeatureConfig, speed: float, jobs: int, description: str
) -> None:
    """Extract every shard that is not complete yet, then write ``store.json``."""
    dtype = config.dtype
    plan = plan_shards([u.duration for u in utterances])
    directory.mkdir(parents=True, exist_ok=True)
    todo = [
        k
        for k, (start, stop) in enumerate(plan)
        if _shard_index(directory, k, [u.id for u in utterances[start:stop]]) is None
    ]
    if todo:
        hours = sum(u.duration for k in todo for u in utterances[plan[k][0] : plan[k][1]]) / 3600
        jobs = extraction_jobs(jobs, len(todo), hours)
        done_before = len(plan) - len(todo)
        if done_before:
            console.print(f"{description}: {done_before} of {len(plan)} shards already extracted, resuming")
        notes: Counter = Counter()
        tasks = [(str(directory), k, utterances[plan[k][0] : plan[k][1]], asdict(config), speed, dtype) for k in todo]
        with progress_bar("audio", unit="utterances") as bar:  # "24/24 utterances audio 0.04/0.04 h"
            task = bar.add_task(
                f"{description} ({jobs} job{'s' * (jobs > 1)})",
                total=sum(plan[k][1] - plan[k][0] for k in todo),
                audio=f"0.00/{hours:.2f} h",
            )
            if jobs == 1:
                feed = _BarFeed(bar, task, hours)
                for arguments in tasks:
                    notes.update(_extract_shard(*arguments, progress=feed)["notes"])
            else:
                notes = _extract_in_workers(tasks, jobs, bar, task, hours)
        extracted = sum(plan[k][1] - plan[k][0] for k in todo)
        for what, count in sorted(notes.items()):
            console.print(f"[yellow]note[/yellow]: {description}: {count} of {extracted} files {what}")
    fileio.write_json(
        directory / "store.json",
        {
            "version": STORE_VERSION,
            "shards": len(plan),
            "utterances": len(utterances),
            "dtype": dtype,
            "config": asdict(config),
            "speed": speed,
        },
    )


class _BarFeed:
    """What a worker's progress queue is, for extraction in this process: each chunk moves the bar."""

    def __init__(self, bar, task, hours: float):
        self.bar, self.task, self.hours, self.seconds = bar, task, hours, 0.0

    def put(self, item: tuple[int, float]) -> None:
        count, audio = item
        self.seconds += audio
        self.bar.update(self.task, advance=count, audio=f"{self.seconds / 3600:.2f}/{self.hours:.2f} h")


def _extract_in_workers(tasks: list[tuple], jobs: int, bar, task, hours: float) -> Counter:
    """Shards in ``jobs`` spawned processes (one torch thread each when they fill the cores), one
    progress bar fed with each chunk's utterances and audio as the workers finish them."""
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    progress = context.Queue()
    threads = max(1, available_cores() // jobs)
    notes: Counter = Counter()
    feed = _BarFeed(bar, task, hours)
    with ProcessPoolExecutor(
        max_workers=jobs, mp_context=context, initializer=_init_worker, initargs=(progress, threads)
    ) as pool:
        pending = {pool.submit(_extract_in_worker, *arguments) for arguments in tasks}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in done:
                    notes.update(future.result()["notes"])  # a failed shard stops the build with its error
                while True:
                    try:
                        feed.put(progress.get_nowait())
                    except queue.Empty:
                        break
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return notes


# --- reading -----------------------------------------------------------------------------------------


MAX_OPEN_SHARDS = 64  # file descriptors a reader keeps open (least recently used closed first)


def _npy_layout(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """(byte offset of the data, shape, dtype) of an .npy file, from its header alone."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(handle)
        if fortran:
            raise AsrbenchError(f"{path}: a Fortran-ordered array is not a feature shard")
        return handle.tell(), shape, dtype


class ShardedFrames:
    """The frames of a store's shards, read with positioned reads (``os.pread``) from the page
    cache; pickles as its paths (loader workers and spawned processes open the files themselves).

    Not memory maps: the kernel maps a file's page cache in large folios (up to 2 MB) around each
    page touched, and counts what a process maps as its resident memory; batches read utterances
    from everywhere, so 50 training steps on 100 h mapped 2.4 GB (0.3 GB on 1 h), even with
    ``madvise(MADV_RANDOM)``. A positioned read copies just the utterance's bytes out of the page
    cache, which holds the data (shared by every process reading the store) whatever its size.
    """

    def __init__(self, paths: list[Path]):
        self.paths = [Path(path) for path in paths]
        self._layouts: dict[int, tuple[int, int, np.dtype]] = {}
        self._files: OrderedDict[int, int] = OrderedDict()  # shard -> open file descriptor

    def _file(self, shard: int) -> tuple[int, int, int, np.dtype]:
        if shard not in self._layouts:
            offset, shape, dtype = _npy_layout(self.paths[shard])
            self._layouts[shard] = (offset, shape[1] if len(shape) == 2 else 0, dtype)
        if shard in self._files:
            self._files.move_to_end(shard)
        else:
            if len(self._files) >= MAX_OPEN_SHARDS:
                os.close(self._files.popitem(last=False)[1])
            self._files[shard] = os.open(self.paths[shard], os.O_RDONLY)
        return (self._files[shard], *self._layouts[shard])

    def slice(self, shard: int, start: int, length: int) -> torch.Tensor:
        """Frames ``[start, start + length)`` of a shard as a float32 tensor."""
        descriptor, offset, dim, dtype = self._file(shard)
        size = dtype.itemsize * dim
        data = os.pread(descriptor, length * size, offset + start * size)
        if len(data) != length * size:
            raise AsrbenchError(f"{self.paths[shard]}: shorter than its index says (changed after it was checked?)")
        return torch.from_numpy(np.frombuffer(data, dtype=dtype).reshape(length, dim).astype(np.float32))

    def close(self) -> None:
        while self._files:
            os.close(self._files.popitem()[1])

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, AttributeError, TypeError):  # interpreter shutdown
            pass

    def __getstate__(self) -> dict:
        return {"paths": self.paths}

    def __setstate__(self, state: dict) -> None:
        type(self).__init__(self, state["paths"])


class OnTheFlyFrames:
    """Features computed from the audio when a batch asks for them (``features.cache: false``),
    for corpora whose features do not fit on disk: the same values as the stored path (rounded
    to ``features.dtype`` like them). The store then holds only the index (frame counts, CMVN
    sums), from one extraction pass that writes no frames. ``slice`` takes an utterance's index."""

    def __init__(self, utterances: list[Utterance], config: FeatureConfig, speed: float):
        self.utterances, self.config, self.speed = utterances, config, speed
        self._extractor: FeatureExtractor | None = None

    def slice(self, utterance: int, start: int, length: int) -> torch.Tensor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.config)
        utt = self.utterances[utterance]
        span = utt.duration * self.speed if utt.offset else None
        waveform = load_audio(utt.audio, self.config.sample_rate, utt.offset, span)
        features = self._extractor(speed_perturb(waveform, self.config.sample_rate, self.speed))
        rounded = features.numpy().astype(DTYPES[self.config.dtype]).astype(np.float32)
        return torch.from_numpy(rounded[start : start + length])

    def __getstate__(self) -> dict:
        return {"utterances": self.utterances, "config": self.config, "speed": self.speed}

    def __setstate__(self, state: dict) -> None:
        type(self).__init__(self, state["utterances"], state["config"], state["speed"])


def open_store(
    directory: Path, utterances: list[Utterance]
) -> tuple[ShardedFrames | OnTheFlyFrames, torch.Tensor, dict] | None:
    """(frames, locations (N, 3) int64 [shard, start, length], statistics) of a complete store
    holding exactly ``utterances``; None when it is missing, incomplete, stale or damaged. For a
    store of ``features.cache: false`` the frames are :class:`OnTheFlyFrames` and each location's
    "shard" is the utterance's index."""
    try:
        meta = json.loads((directory / "store.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    plan = plan_shards([u.duration for u in utterances])
    if meta.get("version") != STORE_VERSION or meta.get("shards") != len(plan):
        return None
    rows: list[tuple[int, int, int]] = []
    paths: list[Path] = []
    count, total, squares = 0, None, None
    for shard, (start, stop) in enumerate(plan):
        index = _shard_index(directory, shard, [u.id for u in utterances[start:stop]])
        if index is None:
            return None
        paths.append(_shard_paths(directory, shard)[0])
        offset = 0
        for length in index["lengths"]:
            rows.append((shard, offset, length))
            offset += length
        count += index["frames"]
        total = np.asarray(index["sum"]) if total is None else total + np.asarray(index["sum"])
        squares = np.asarray(index["sum_squares"]) if squares is None else squares + np.asarray(index["sum_squares"])
    statistics = {"count": count, "sum": total, "sum_squares": squares}
    locations = torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)
    if not meta["config"].get("cache", True):
        locations[:, 0], locations[:, 1] = torch.arange(len(utterances)), 0
        return OnTheFlyFrames(utterances, FeatureConfig(**meta["config"]), meta["speed"]), locations, statistics
    return ShardedFrames(paths), locations, statistics


def bytes_per_hour(directory: Path) -> float:
    """Disk bytes of a store (shards and indexes) per hour of audio; NaN for an empty store."""
    total = sum(path.stat().st_size for path in directory.iterdir() if path.is_file())
    frames = sum(json.loads(path.read_text(encoding="utf-8"))["frames"] for path in directory.glob("shard-*.json"))
    meta = json.loads((directory / "store.json").read_text(encoding="utf-8"))
    hours = frames * meta["config"]["frame_shift_ms"] / 1000 / 3600
    return total / hours if hours else math.nan
