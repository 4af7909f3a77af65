"""lhotse manifests as a corpus: ``asrbench data prepare lhotse SRC`` (or ``--train F --dev F --test F``).

icefall and many NeMo and ESPnet users hold their data as lhotse manifests; this reads the JSONL
files lhotse writes (``.jsonl`` or ``.jsonl.gz``) without lhotse installed:

- a **CutSet** (``*cuts*``): one cut per line (``MonoCut``: ``id``, ``start``, ``duration``,
  ``recording`` with its ``sources``, and ``supervisions`` whose ``start`` is relative to the cut);
- a **SupervisionSet** (``*supervisions*``) with the **RecordingSet** (``*recordings*``) of the same
  name: supervisions' ``start`` is relative to their recording.

Every supervision becomes one utterance: its ``id`` (the cut's id when the cut has a single
supervision), text, speaker, and the span of its recording's audio file (``offset`` = where it
starts in the file). Recordings must be audio files (``type: file``); an utterance whose recording
is a ``url``, ``command`` or ``memory`` source, or is not in the RecordingSet, has no audio, like one
whose file is missing (asrbench never downloads or runs a command from a manifest): skipped in train,
refused in dev and test unless ``--skip-missing`` (:func:`asrbench.data.prepare.prepare_corpus`).
A recording with several channels is downmixed, as every audio file is. Relative source paths are
relative to the manifest's folder (else to the working dir).

``SRC`` is a folder: each manifest's split comes from the part of its name after ``cuts_`` (or
``supervisions_``): ``train*`` parts are train, the first ``dev*``/``valid*`` part (``-clean``
first) is dev and the first ``test*`` part is test; other parts (``dev-other``) are written as
``dev_other.jsonl`` and the like, as the LibriSpeech importer does.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from asrbench.data.corpus import Candidate, PrepareReport, absolute, collapse_spaces
from asrbench.data.manifest import SPLITS, json_object
from asrbench.errors import AsrbenchError

_NAME = re.compile(r"(?:^|[_.-])(?P<kind>cuts|supervisions|recordings)_(?P<part>.+?)\.jsonl(?:\.gz)?$")


def _rows(path: Path):
    """(``file:line``, object) for every line of a JSONL(.gz) manifest."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                yield where, json_object(line, where)
    except FileNotFoundError:
        raise AsrbenchError(f"{path}: manifest not found") from None
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise AsrbenchError(f"{path}: unreadable manifest ({err})") from None


def _field(where: str, row: dict, name: str, kind=(str,)):
    if name not in row:
        raise AsrbenchError(f"{where}: missing field '{name}'")
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise AsrbenchError(f"{where}: field '{name}' has the wrong type ({type(value).__name__})")
    return value


def _audio_path(where: str, recording: dict, manifest: Path) -> str | None:
    """The recording's audio file, or None when its source is not a file (url, command, memory)."""
    sources = _field(where, recording, "sources", (list,))
    if not sources or not isinstance(sources[0], dict):
        raise AsrbenchError(f"{where}: recording '{recording.get('id')}' has no sources")
    if sources[0].get("type") != "file":
        return None
    source = Path(_field(where, sources[0], "source"))
    if not source.is_absolute() and not source.exists():
        source = manifest.parent / source
    return absolute(source)


NOT_A_FILE = "recording is not an audio file (url, command or memory source)"


def _without_audio(supervision: dict, utterance_id: str, reason: str) -> Candidate:
    """An utterance whose recording gives no audio file (``reason``); prepare_corpus decides its fate."""
    text = supervision.get("text")
    return Candidate(utterance_id, "", collapse_spaces(text) if isinstance(text, str) else "", no_audio=reason)


def _candidate(where: str, supervision: dict, audio: str, offset: float, utterance_id: str) -> Candidate:
    start = float(_field(where, supervision, "start", (int, float)))
    duration = float(_field(where, supervision, "duration", (int, float)))
    if start + offset < 0 or duration <= 0:
        raise AsrbenchError(f"{where}: supervision '{utterance_id}' needs start >= 0 and duration > 0")
    text = supervision.get("text") or ""
    if not isinstance(text, str):
        raise AsrbenchError(f"{where}: supervision '{utterance_id}': field 'text' must be a string")
    speaker = supervision.get("speaker")
    return Candidate(
        utterance_id,
        audio,
        collapse_spaces(text),
        None if speaker is None else str(speaker),
        round(offset + start, 6),
        duration,
    )


def read_cuts(path: Path, report: PrepareReport) -> list[Candidate]:
    """The supervisions of a CutSet manifest as candidates."""
    candidates = []
    for where, cut in _rows(path):
        recording = _field(where, cut, "recording", (dict,))
        audio = _audio_path(where, recording, path)
        supervisions = _field(where, cut, "supervisions", (list,))
        cut_id = str(_field(where, cut, "id"))
        start = float(_field(where, cut, "start", (int, float))) if audio is not None else 0.0
        for supervision in supervisions:
            sup_id = cut_id if len(supervisions) == 1 else str(_field(where, supervision, "id"))
            if audio is None:
                candidates.append(_without_audio(supervision, sup_id, NOT_A_FILE))
            else:
                candidates.append(_candidate(where, supervision, audio, start, sup_id))
    return candidates


def read_supervisions(path: Path, recordings_path: Path, report: PrepareReport) -> list[Candidate]:
    """A SupervisionSet with its RecordingSet as candidates."""
    recordings = {}
    for where, recording in _rows(recordings_path):
        recordings[str(_field(where, recording, "id"))] = (_audio_path(where, recording, recordings_path), where)
    candidates = []
    for where, supervision in _rows(path):
        sup_id = str(_field(where, supervision, "id"))
        recording_id = str(_field(where, supervision, "recording_id"))
        if recording_id not in recordings:
            candidates.append(_without_audio(supervision, sup_id, "no recording in the RecordingSet"))
            continue
        audio = recordings[recording_id][0]
        if audio is None:
            candidates.append(_without_audio(supervision, sup_id, NOT_A_FILE))
            continue
        candidates.append(_candidate(where, supervision, audio, 0.0, sup_id))
    return candidates


def read_lhotse_file(path: Path, report: PrepareReport) -> list[Candidate]:
    """A CutSet, or a SupervisionSet whose RecordingSet has the same name with ``recordings``."""
    match = _NAME.search(path.name)
    kind = match["kind"] if match else "cuts"
    if kind == "recordings":
        raise AsrbenchError(f"{path}: a RecordingSet has no transcripts; give its SupervisionSet or a CutSet")
    if kind == "supervisions":
        recordings = path.with_name(path.name.replace("supervisions", "recordings", 1))
        if not recordings.is_file():
            raise AsrbenchError(f"{path}: its RecordingSet {recordings.name} is not next to it")
        return read_supervisions(path, recordings, report)
    return read_cuts(path, report)


def _split_of(part: str, taken: set[str]) -> str:
    name = part.lower()
    for split, prefixes in (("train", ("train",)), ("dev", ("dev", "valid")), ("test", ("test",))):
        if name.startswith(prefixes):
            if split == "train" or split not in taken:
                return split
            return re.sub(r"[^a-z0-9]+", "_", name)
    return re.sub(r"[^a-z0-9]+", "_", name)


def prepare_lhotse(src: Path, report: PrepareReport) -> dict[str, list[Candidate]]:
    manifests: dict[str, Path] = {}  # part -> the file to read (cuts preferred over supervisions)
    for path in sorted(src.iterdir()):
        match = _NAME.search(path.name)
        if match is None or match["kind"] == "recordings":
            continue
        if match["kind"] == "cuts" or match["part"] not in manifests:
            manifests[match["part"]] = path
    if not manifests:
        raise AsrbenchError(f"{src}: no lhotse manifest (*cuts_<part>.jsonl[.gz] or *supervisions_<part>.jsonl[.gz])")
    # -clean before -other, so that dev-clean is dev and dev-other dev_other.
    parts = sorted(manifests, key=lambda part: (("other" in part.lower()), part))
    splits: dict[str, list[Candidate]] = {}
    for part in parts:
        split = _split_of(part, set(splits))
        splits.setdefault(split, []).extend(read_lhotse_file(manifests[part], report))
    missing = [split for split in SPLITS if split not in splits]
    if missing:
        raise AsrbenchError(
            f"{src}: no lhotse manifest for {', '.join(missing)} (found parts: {', '.join(parts)}); "
            "or name the files with --train/--dev/--test"
        )
    return splits
