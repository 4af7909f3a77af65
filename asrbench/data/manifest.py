"""JSON Lines manifests: one utterance per line.

Fields: ``id``, ``audio`` (path; relative paths are relative to the manifest's folder),
``duration`` (seconds), ``text``, optional ``speaker`` and ``offset`` (seconds into the audio
file, for segmented recordings such as Kaldi ``segments``).
A prepared data dir holds ``train.jsonl``, ``dev.jsonl`` and ``test.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from asrbench import fileio
from asrbench.errors import AsrbenchError

SPLITS = ("train", "dev", "test")
REQUIRED_FIELDS = ("id", "audio", "duration", "text")


@dataclass(frozen=True, slots=True)  # slots: a million utterances stay small
class Utterance:
    id: str
    audio: str
    duration: float
    text: str
    speaker: str | None = None
    offset: float = 0.0

    def to_json(self) -> dict:
        row = asdict(self)
        if row["speaker"] is None:
            del row["speaker"]
        if not row["offset"]:
            del row["offset"]
        return row


def json_object(line: str, where: str) -> dict:
    """One JSON Lines line as an object; anything else is an error naming ``where`` (file:line)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise AsrbenchError(f"{where}: malformed JSON ({err.msg})") from None
    if not isinstance(row, dict):
        raise AsrbenchError(f"{where}: expected a JSON object, got {type(row).__name__}")
    return row


def _lines(path: Path):
    """The file's lines, read as a stream (a manifest of millions of lines is never held whole)."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            yield from handle
    except UnicodeDecodeError as err:
        raise AsrbenchError(f"{path}: not UTF-8 text ({err.reason})") from None


def _first_line(path: Path, utterance_id: str) -> int:
    """The line where ``utterance_id`` first appears (for the duplicate-id error only)."""
    for number, line in enumerate(_lines(path), start=1):
        try:
            if json.loads(line).get("id") == utterance_id:
                return number
        except (ValueError, AttributeError):
            continue
    return 0


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a manifest; any malformed line raises :class:`AsrbenchError` naming file and line.

    Streams the file; 1,000,000 lines take seconds (``benchmarks/scale_bench.py``)."""
    path = Path(path)
    if not path.is_file():
        raise AsrbenchError(f"{path}: manifest not found")
    folder = os.path.dirname(os.path.abspath(path))
    utterances: list[Utterance] = []
    seen: set[str] = set()  # a set, not id -> line: a third of the memory at a million lines
    for line_number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        row = json_object(line, where)
        missing = [name for name in REQUIRED_FIELDS if name not in row]
        if missing:
            raise AsrbenchError(f"{where}: missing field(s) {', '.join(missing)}")
        try:
            duration = float(row["duration"])
            offset = float(row.get("offset", 0.0))
        except (TypeError, ValueError):
            raise AsrbenchError(f"{where}: 'duration' and 'offset' must be numbers") from None
        if not (math.isfinite(duration) and duration > 0):
            raise AsrbenchError(f"{where}: duration must be a positive number of seconds, got {row['duration']!r}")
        if not (math.isfinite(offset) and offset >= 0):
            raise AsrbenchError(f"{where}: offset must be zero or more seconds, got {row.get('offset')!r}")
        for name in ("id", "audio", "text"):
            if not isinstance(row[name], str):
                raise AsrbenchError(f"{where}: field '{name}' must be a string")
        for name in ("id", "audio"):
            if not row[name].strip() or "\0" in row[name]:
                raise AsrbenchError(f"{where}: field '{name}' must be a non-empty string without NUL characters")
        if not row["text"].strip():
            raise AsrbenchError(f"{where}: empty text for utterance '{row['id']}'")
        if row["id"] in seen:
            raise AsrbenchError(f"{where}: duplicate id '{row['id']}' (first on line {_first_line(path, row['id'])})")
        seen.add(row["id"])
        audio = row["audio"]
        if not os.path.isabs(audio):  # relative to the manifest's folder (string ops: fast at 1M lines)
            audio = os.path.normpath(os.path.join(folder, audio))
        speaker = row.get("speaker")
        utterances.append(
            Utterance(
                id=row["id"],
                audio=audio,
                duration=duration,
                text=row["text"].strip(),
                speaker=None if speaker is None else str(speaker),
                offset=offset,
            )
        )
    return utterances


def write_manifest(path: str | Path, utterances: list[Utterance]) -> None:
    fileio.write_jsonl(path, [utt.to_json() for utt in utterances])


def write_data_dir(out_dir: str | Path, splits: dict[str, list[Utterance]]) -> dict[str, int]:
    """Write ``<split>.jsonl`` for each split, all or nothing; returns utterance counts per split."""
    out_dir = Path(out_dir)
    fileio.write_texts_together(
        {
            out_dir / f"{split}.jsonl": "".join(
                json.dumps(utt.to_json(), ensure_ascii=False) + "\n" for utt in utterances
            )
            for split, utterances in splits.items()
        }
    )
    return {split: len(utts) for split, utts in splits.items()}


def prepared_splits(data_dir: str | Path) -> list[str]:
    """The splits a data dir holds (``<split>.jsonl`` files), the usual three first."""
    data_dir = Path(data_dir)
    found = sorted(path.stem for path in data_dir.glob("*.jsonl") if path.is_file()) if data_dir.is_dir() else []
    return [split for split in SPLITS if split in found] + [split for split in found if split not in SPLITS]


def split_path(data_dir: str | Path, split: str) -> Path:
    """Path of a split's manifest, with a clear error (listing the splits there are) if it was never prepared.

    A split is a plain name: it also names cache files and decode dirs, so it may not hold a path.
    """
    if not split or split.startswith(".") or any(sep in split for sep in ("/", "\\", "\0")):
        raise AsrbenchError(f"split '{split}': give a split name such as train, dev or test, not a path")
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.is_file():
        present = prepared_splits(data_dir)
        if present:
            raise AsrbenchError(f"{data_dir}: no split '{split}' (prepared splits: {', '.join(present)})")
        raise AsrbenchError(
            f"{data_dir}: split '{split}' was never prepared: the folder holds no <split>.jsonl "
            "manifests (run `asrbench data prepare` first)"
        )
    return path


def require_prepared(
    data_dir: str | Path, splits: tuple[str, ...] = ("train", "dev"), given_by: str = "--data"
) -> Path:
    """``data_dir`` as given by the user (``--data``): it must already be a prepared data dir.

    Only a recipe's own ``data.dir`` is ever prepared on the fly; a data dir the user names is
    used as it is, so a typo fails here instead of training on whatever the recipe prepares.
    """
    path = Path(data_dir)
    if not path.is_dir():
        raise AsrbenchError(
            f"{given_by} {path}: no such data dir (prepare one with `asrbench data prepare CORPUS SRC --out {path}`)"
        )
    missing = [f"{split}.jsonl" for split in splits if not (path / f"{split}.jsonl").is_file()]
    if missing:
        present = prepared_splits(path)
        held = f"; it holds {', '.join(f'{split}.jsonl' for split in present)}" if present else ""
        raise AsrbenchError(
            f"{given_by} {path}: not a prepared data dir (missing {', '.join(missing)}{held}; "
            f"prepare one with `asrbench data prepare CORPUS SRC --out {path}`)"
        )
    return path
