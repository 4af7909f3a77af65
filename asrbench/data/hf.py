"""Hugging Face datasets on disk: ``asrbench data prepare hf DIR --out data/x``.

``DIR`` is one of the layouts a dataset lives in on a machine (nothing is downloaded):

- what ``DatasetDict.save_to_disk`` writes: ``dataset_dict.json`` and a folder per split (read
  with ``datasets.load_from_disk``), or a folder holding one saved ``Dataset`` per split;
- Parquet or Arrow shards as the hub and its cache hold them: ``data/train-00000-of-00002.parquet``,
  ``default/train/0000.parquet``, ``name-train-00000-of-00001.arrow`` (the split from the shard's
  folder, else from its file name), read with pyarrow, a batch of rows at a time.

Columns: the audio column is the one whose feature type is ``Audio`` (else the one named
``audio``), holding ``{"bytes", "path"}``; the text is ``--text-column`` or the first of
:data:`TEXT_COLUMNS`; the speaker ``--speaker-column`` or the first of :data:`SPEAKER_COLUMNS`
(optional); the id ``--id-column`` or the first of :data:`ID_COLUMNS`, else the audio's file
name (without its extension) when those are unique, else ``<split>-<row>``. Splits: train, dev
and test from ``--split-map train=train,dev=validation,test=test``; by default ``dev`` is the
first of validation, dev, valid, val the dataset has.

Audio given as bytes is decoded once and written to the data dir's audio store,
``<out>/audio/<split>/<id>.flac`` (FLAC bytes are copied as they are), so training reads files
and never decodes the dataset again; audio given as a path (absolute, or relative to ``DIR``) is
used where it is. ``datasets`` and ``pyarrow`` are the ``hf`` extra.
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import soundfile

from asrbench import fileio
from asrbench.data.corpus import Candidate, PrepareReport, collapse_spaces
from asrbench.errors import AsrbenchError, excerpt
from asrbench.progress import progress_bar

TEXT_COLUMNS = ("text", "sentence", "transcription", "transcript", "normalized_text", "raw_text")
SPEAKER_COLUMNS = ("speaker_id", "client_id", "speaker")
ID_COLUMNS = ("id", "utterance_id", "segment_id", "audio_id", "key")
DEV_NAMES = ("validation", "dev", "valid", "val")
AUDIO_STORE = "audio"
SHARD_SUFFIXES = (".parquet", ".arrow")
_SHARD_NUMBER = re.compile(r"-\d{5}-of-\d{5}$")


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise AsrbenchError(
            f"data prepare hf reads datasets with the {module.split('.')[0]} package: pip install 'asrbench[hf]'"
        ) from None


def refuse_hub_name(src: Path) -> None:
    """A dataset named as on the hub (``org/name``) that is not a folder here: how to get one."""
    if not src.exists():
        raise AsrbenchError(
            f"{src}: no such folder; asrbench never downloads. Get a local copy first: "
            f"`hf download {src} --repo-type dataset --local-dir data/hf/{src.name}` (Parquet), "
            f"or in Python `datasets.load_dataset('{src}').save_to_disk('data/hf/{src.name}')`; "
            "then prepare that folder"
        )


def parse_split_map(text: str | None) -> dict[str, str]:
    """``train=train,dev=validation,test=test`` -> {"train": "train", ...}; only train, dev, test."""
    if not text:
        return {}
    mapping = {}
    for part in text.split(","):
        ours, _, theirs = part.partition("=")
        if ours.strip() not in ("train", "dev", "test") or not theirs.strip():
            raise AsrbenchError(f"--split-map {text!r}: expected train=NAME,dev=NAME,test=NAME (any of the three)")
        mapping[ours.strip()] = theirs.strip()
    return mapping


class _Split:
    """One split of the dataset: its column names, its audio column, and ``rows()``, a fresh iterator
    over its rows as dicts each time it is called (a batch of rows in memory at a time)."""

    def __init__(self, name: str, columns: list[str], audio_column: str | None, rows: Callable[[], Iterator[dict]]):
        self.name, self.columns, self.audio_column, self.rows = name, columns, audio_column, rows


def _audio_column(features: dict, columns: list[str]) -> str | None:
    typed = [
        name for name, feature in features.items() if isinstance(feature, dict) and feature.get("_type") == "Audio"
    ]
    return typed[0] if typed else ("audio" if "audio" in columns else None)


def _saved_splits(src: Path) -> dict[str, _Split]:
    """``save_to_disk`` layouts: a DatasetDict, or a folder with one saved Dataset per split."""
    datasets = _require("datasets")
    if (src / "dataset_dict.json").is_file():
        loaded = dict(datasets.load_from_disk(str(src)))
    else:
        loaded = {
            folder.name: datasets.load_from_disk(str(folder))
            for folder in sorted(src.iterdir())
            if (folder / "state.json").is_file()
        }
    splits = {}
    for name, dataset in loaded.items():
        features = dataset.features.to_dict()
        audio = _audio_column(features, list(dataset.column_names))
        if audio is not None:
            dataset = dataset.cast_column(audio, datasets.Audio(decode=False))  # bytes and path, never decoded here
        splits[name] = _Split(name, list(dataset.column_names), audio, functools.partial(iter, dataset))
    return splits


def _shard_split(shard: Path, src: Path) -> str:
    """A shard's split: its folder's name when that is not the dataset's root or ``data``, else the
    split part of its file name (``train-00000-of-00002``, ``name-train-00000-of-00001``)."""
    if shard.parent != src and shard.parent.name not in ("data",):
        return shard.parent.name
    return _SHARD_NUMBER.sub("", shard.stem).rsplit("-", 1)[-1]  # split names have no dash


def _shard_rows(shards: list[Path]) -> Iterator[dict]:
    pyarrow = _require("pyarrow")
    parquet = _require("pyarrow.parquet")
    for shard in shards:
        if shard.suffix == ".parquet":
            for batch in parquet.ParquetFile(str(shard)).iter_batches(batch_size=64):
                yield from batch.to_pylist()
            continue
        with pyarrow.memory_map(str(shard)) as source:  # an Arrow IPC stream (the cache's) or file
            try:
                reader = pyarrow.ipc.open_stream(source)
                batches = iter(reader)
            except pyarrow.ArrowInvalid:
                reader = pyarrow.ipc.open_file(source)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            for batch in batches:
                yield from batch.to_pylist()


def _shard_features(shard: Path) -> tuple[list[str], dict]:
    """(columns, the features the shard's ``huggingface`` schema metadata declares)."""
    pyarrow = _require("pyarrow")
    parquet = _require("pyarrow.parquet")
    if shard.suffix == ".parquet":
        schema = parquet.ParquetFile(str(shard)).schema_arrow
    else:
        with pyarrow.memory_map(str(shard)) as source:
            try:
                schema = pyarrow.ipc.open_stream(source).schema
            except pyarrow.ArrowInvalid:
                schema = pyarrow.ipc.open_file(source).schema
    metadata = json.loads((schema.metadata or {}).get(b"huggingface", b"{}") or b"{}")
    return list(schema.names), metadata.get("info", {}).get("features", {})


def _shard_splits(src: Path) -> dict[str, _Split]:
    shards = sorted(path for path in src.rglob("*") if path.suffix in SHARD_SUFFIXES and path.is_file())
    by_split: dict[str, list[Path]] = {}
    for shard in shards:
        by_split.setdefault(_shard_split(shard, src), []).append(shard)
    splits = {}
    for name, files in by_split.items():
        columns, features = _shard_features(files[0])
        splits[name] = _Split(name, columns, _audio_column(features, columns), functools.partial(_shard_rows, files))
    return splits


def _choose(columns: list[str], given: str | None, names: tuple[str, ...], what: str, where: str) -> str | None:
    if given:
        if given not in columns:
            raise AsrbenchError(f"{where}: no column {given!r} for the {what} (it has {', '.join(columns)})")
        return given
    return next((name for name in names if name in columns), None)


def _ids(split: _Split, id_column: str | None, ours: str) -> list[str]:
    """Each row's id (module docstring), from a first pass over the rows that keeps only strings."""
    if id_column is not None:
        return [str(row[id_column]) for row in split.rows()]
    audio = str(split.audio_column)
    stems = [Path(str((row.get(audio) or {}).get("path") or "")).stem for row in split.rows()]
    if all(stems) and len(set(stems)) == len(stems):
        return stems
    return [f"{ours}-{index:06d}" for index in range(len(stems))]


def _store(audio: dict, target: Path) -> None:
    """Audio bytes as FLAC at ``target``: FLAC bytes copied, anything else decoded and encoded."""
    data = audio["bytes"]
    if data[:4] == b"fLaC":
        with fileio.atomic_open(target, "wb") as handle:
            handle.write(data)
        return
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    with fileio.atomic_open(target, "wb") as handle:
        soundfile.write(handle, samples, rate, format="FLAC", subtype="PCM_16")


def _candidates(
    split: _Split, ours: str, src: Path, out: Path, options: dict, report: PrepareReport
) -> list[Candidate]:
    where = f"{src} (split {split.name})"
    if split.audio_column is None:
        raise AsrbenchError(f"{where}: no Audio column (columns: {', '.join(split.columns)})")
    text_column = _choose(split.columns, options.get("text_column"), TEXT_COLUMNS, "text", where)
    if text_column is None:
        raise AsrbenchError(
            f"{where}: no text column ({', '.join(TEXT_COLUMNS)}; it has {', '.join(split.columns)}): "
            "name it with --text-column"
        )
    speaker_column = _choose(split.columns, options.get("speaker_column"), SPEAKER_COLUMNS, "speaker", where)
    id_column = _choose(split.columns, options.get("id_column"), ID_COLUMNS, "id", where)
    ids = _ids(split, id_column, ours)
    candidates = []
    with progress_bar("rows", unit="rows", disable=not options.get("progress", True)) as bar:
        task = bar.add_task(f"hf {split.name}: audio", total=len(ids))
        for utterance_id, row in zip(ids, split.rows(), strict=True):
            speaker = row.get(speaker_column) if speaker_column else None
            audio, missing = _audio_of(row.get(split.audio_column) or {}, out / AUDIO_STORE / ours, utterance_id, src)
            candidates.append(
                Candidate(
                    utterance_id,
                    audio,
                    collapse_spaces(str(row.get(text_column) or "")),
                    None if speaker in (None, "") else str(speaker),
                    no_audio=missing,
                )
            )
            bar.advance(task)
    del report  # bad rows are counted by prepare_corpus (empty text, missing or unreadable audio)
    return candidates


def _audio_of(audio: dict, store: Path, utterance_id: str, src: Path) -> tuple[str, str | None]:
    """(the audio file of a row, why it has none): bytes written to the store, or the row's path."""
    if audio.get("bytes"):
        target = store / f"{_safe(utterance_id)}.flac"
        try:
            _store(audio, target)
        except (RuntimeError, soundfile.LibsndfileError, ValueError) as err:
            return "", f"undecodable audio bytes ({excerpt(err, 60)})"
        return str(target), None
    if audio.get("path"):
        path = Path(str(audio["path"]))
        return str(path if path.is_absolute() else (src / path).resolve()), None
    return "", "no audio in the row"


def _safe(utterance_id: str) -> str:
    """An id as a file name: path separators and other odd characters replaced."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", utterance_id)[:200] or "utt"


def prepare_hf(src: Path, report: PrepareReport, out: Path, options: dict) -> dict[str, list[Candidate]]:
    """train/dev/test candidates of the dataset at ``src`` (module docstring); audio bytes go to ``out``'s store."""
    refuse_hub_name(src)
    saved = (src / "dataset_dict.json").is_file() or any(
        (folder / "state.json").is_file() for folder in src.iterdir() if folder.is_dir()
    )
    splits = _saved_splits(src) if saved else _shard_splits(src)
    if not splits:
        raise AsrbenchError(
            f"{src}: no dataset found (a save_to_disk folder with dataset_dict.json, or Parquet/Arrow shards)"
        )
    mapping = {"train": "train", "test": "test", **parse_split_map(options.get("split_map"))}
    if "dev" not in mapping:
        mapping["dev"] = next((name for name in DEV_NAMES if name in splits), "validation")
    mapping = {ours: mapping[ours] for ours in ("train", "dev", "test")}
    missing = {ours: theirs for ours, theirs in mapping.items() if theirs not in splits}
    if missing:
        listed = ", ".join(f"{ours}={theirs}" for ours, theirs in missing.items())
        raise AsrbenchError(
            f"{src}: no split for {listed} (it has: {', '.join(sorted(splits))}); map them with "
            "--split-map train=NAME,dev=NAME,test=NAME"
        )
    return {ours: _candidates(splits[theirs], ours, src, out, options, report) for ours, theirs in mapping.items()}
