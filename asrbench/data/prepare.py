"""Corpus preparers: a corpus as distributed → ``train.jsonl``, ``dev.jsonl``, ``test.jsonl``.

Each preparer only reads the corpus layout (transcripts, file names, Kaldi tables) and returns
:class:`Candidate` utterances per split. :func:`prepare_corpus` then reads every audio header
once (durations come from the header, never from decoding audio), skips bad utterances with a
count per reason, and writes all splits only after every split is built, so a failure leaves
nothing half-written.

Splits are decided from the layout *before* audio is checked: a missing file in one split never
moves an utterance from another split into its place. An utterance without usable audio is
skipped with a note in train, and fails the whole preparation in dev and test (the ids listed)
unless ``--skip-missing``: a benchmark's test set never shrinks silently. Every split is sorted
by id. Texts are kept as the corpus writes them (whitespace collapsed); the built-in corpora give
uppercase words.

Corpora (``src`` is the folder given on the command line):

- ``an4``: the ``an4`` folder (``etc/``, ``wav/``). Ids follow ESPnet ``egs2/an4/asr1/local/
  data_prep.py``: transcript source ``(an251-fash-b)`` → id ``fash-an251-b`` (speaker first).
  Train ids sorted; the first 100 are ``dev`` (ESPnet ``train_dev``), the other 848 ``train``
  (``train_nodev``); ``test`` is ``an4test_clstk`` (130).
- ``fsdd``: the ``recordings`` folder (or the one holding it). Index 0–4 of every
  speaker/digit → test (the official split), 5–9 → dev, 10–49 → train.
- ``yesno``: ``waves_yesno`` (or the one holding it). Sorted paths; odd positions ``[1::2]`` are
  test (30, exactly icefall/lhotse's test set). The even positions (30) are icefall's train; since
  the corpus has no dev set, every 5th of them (positions 4, 9, ..., 29 of that list) is held out
  as dev (6) and the remaining 24 are train.
- ``librispeech``: the ``LibriSpeech`` folder holding subsets. train = every ``train-*`` subset,
  dev = ``dev-clean``, test = ``test-clean``; ``dev-other`` and ``test-other`` go to
  ``dev_other.jsonl`` and ``test_other.jsonl``. ``src`` may instead be one subset folder: then
  only that subset's split is written (e.g. ``test-clean`` → ``test.jsonl``), for decoding only.
- ``kaldi``: a folder holding Kaldi data dirs ``train/``, ``dev/``, ``test/``, or ESPnet's
  ``train_nodev/`` (train), ``train_dev/`` (dev), ``test/``; the ESPnet names win when
  ``train_dev/`` exists, because ESPnet's ``train/`` then still contains the dev utterances.
  Each dir holds ``wav.scp`` and ``text``, optionally ``utt2spk`` and ``segments``. Commands in
  ``wav.scp`` (``... |``) and archive offsets are refused: asrbench never runs shell commands.
  Relative paths are relative to the data dir. A segment ``utt rec start end`` becomes one
  utterance with ``offset=start``; ``end`` may overshoot the audio by up to 0.5 s (clipped, as
  Kaldi's ``extract-segments --max-overshoot``), and ``end=-1`` means the end of the file.
- ``manifest``: NeMo-style JSON lines (``audio_filepath``, ``text``, optional ``offset`` with
  ``duration``, ``speaker``/``spk``). ``src`` is a folder holding one manifest per split, named
  as in :data:`MANIFEST_NAMES` (``train``, ``train_manifest``; ``dev``, ``dev_manifest``,
  ``validation``, ``validation_manifest``, ``val``, ``val_manifest``; ``test``,
  ``test_manifest``; each ``.json`` or ``.jsonl``), or the manifest files are named one by one
  (``--train F --dev F --test F``, any subset: only those splits are written). Without
  ``offset`` the whole file is one utterance and its duration comes from the header; with
  ``offset`` the manifest's ``duration`` is used.
  Ids are the audio file's stem (``<stem>-<offset in centiseconds>`` with an offset), with
  ``-2``, ``-3``, ... appended to repeats.
- ``lhotse``: lhotse CutSets, or SupervisionSets with their RecordingSets (``.jsonl[.gz]``), read
  without lhotse installed; see :mod:`asrbench.data.lhotse`.
- ``hf``: a Hugging Face dataset on disk (``save_to_disk`` folders, Parquet/Arrow shards), its audio
  bytes written once to ``out``'s FLAC store; see :mod:`asrbench.data.hf`.
- ``commonvoice``: a Common Voice language folder (``clips/*.mp3``, the TSVs); see
  :mod:`asrbench.data.commonvoice`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from asrbench.data.audio import audio_info
from asrbench.data.commonvoice import prepare_commonvoice
from asrbench.data.corpus import (
    MAX_EXAMPLES,
    Candidate,
    Preparer,
    PrepareReport,
    absolute,
    collapse_spaces,
    read_lines,
)
from asrbench.data.hf import prepare_hf, refuse_hub_name
from asrbench.data.lhotse import prepare_lhotse, read_lhotse_file
from asrbench.data.manifest import SPLITS, Utterance, json_object, write_data_dir
from asrbench.errors import AsrbenchError, did_you_mean
from asrbench.progress import progress_bar

SEGMENT_MAX_OVERSHOOT = 0.5  # seconds a segment may run past the end of its audio (Kaldi's default)


# --- AN4 -------------------------------------------------------------------------------------

AN4_SOURCES = {
    "train": ("an4_train.transcription", "an4_clstk"),
    "test": ("an4_test.transcription", "an4test_clstk"),
}
AN4_DEV_SIZE = 100
AN4_LINE = re.compile(r"^(?P<words>.*?)\s*\((?P<source>[^()\s]+)\)\s*$")


def _read_an4_transcription(path: Path, wav_dir: Path) -> list[Candidate]:
    candidates: dict[str, Candidate] = {}
    for where, line in read_lines(path):
        match = AN4_LINE.match(line)
        if match is None:
            raise AsrbenchError(f"{where}: expected 'WORDS (utterance-id)', got {line.strip()!r}")
        source = match["source"]
        parts = source.split("-")
        if len(parts) != 3:
            raise AsrbenchError(f"{where}: utterance id {source!r} is not '<utt>-<speaker>-<mic>'")
        utterance, speaker, mic = parts
        utt_id = f"{speaker}-{utterance}-{mic}"  # ESPnet: speaker first, so sorting groups speakers
        if utt_id in candidates:
            raise AsrbenchError(f"{where}: duplicate utterance id {source!r}")
        words = [word for word in match["words"].split() if word not in ("<s>", "</s>")]
        audio = absolute(wav_dir / speaker / f"{source}.sph")
        candidates[utt_id] = Candidate(utt_id, audio, " ".join(words), speaker)
    return sorted(candidates.values(), key=lambda candidate: candidate.id)


def prepare_an4(src: Path, report: PrepareReport) -> dict[str, list[Candidate]]:
    root = src / "an4" if (src / "an4" / "etc").is_dir() else src
    found = {}
    for split, (transcription, wav_folder) in AN4_SOURCES.items():
        path = root / "etc" / transcription
        if not path.is_file():
            raise AsrbenchError(f"{path}: AN4 transcription not found (src must be the an4 folder with etc/ and wav/)")
        found[split] = _read_an4_transcription(path, root / "wav" / wav_folder)
    return {
        "train": found["train"][AN4_DEV_SIZE:],
        "dev": found["train"][:AN4_DEV_SIZE],
        "test": found["test"],
    }


# --- FSDD ------------------------------------------------------------------------------------

FSDD_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>.+)_(?P<index>\d+)$")
DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")


def _fsdd_split(index: int) -> str:
    if index <= 4:
        return "test"  # the official test set (README "Usage")
    return "dev" if index <= 9 else "train"


def prepare_fsdd(src: Path, report: PrepareReport) -> dict[str, list[Candidate]]:
    folder = src / "recordings" if (src / "recordings").is_dir() else src
    paths = sorted(folder.glob("*.wav"))
    if not paths:
        raise AsrbenchError(f"{folder}: no .wav files (src must be FSDD's recordings/ folder or the one holding it)")
    splits: dict[str, list[Candidate]] = {split: [] for split in SPLITS}
    for path in paths:
        match = FSDD_NAME.match(path.stem)
        if match is None:
            report.skip("unrecognized file name", str(path))
            continue
        text = DIGIT_WORDS[int(match["digit"])]
        candidate = Candidate(path.stem, absolute(path), text, match["speaker"])
        splits[_fsdd_split(int(match["index"]))].append(candidate)
    return splits


# --- yesno -----------------------------------------------------------------------------------

YESNO_WORDS = {"0": "NO", "1": "YES"}
YESNO_DEV_EVERY = 5


def prepare_yesno(src: Path, report: PrepareReport) -> dict[str, list[Candidate]]:
    folder = src / "waves_yesno" if (src / "waves_yesno").is_dir() else src
    paths = sorted(folder.glob("*.wav"))
    if not paths:
        raise AsrbenchError(f"{folder}: no .wav files (src must be waves_yesno/ or the folder holding it)")
    named = []
    for path in paths:
        labels = path.stem.split("_")
        if not all(label in YESNO_WORDS for label in labels):
            report.skip("unrecognized file name", str(path))
            continue
        text = " ".join(YESNO_WORDS[label] for label in labels)
        named.append(Candidate(path.stem, absolute(path), text))
    icefall_train, test = named[::2], named[1::2]
    dev_positions = range(YESNO_DEV_EVERY - 1, len(icefall_train), YESNO_DEV_EVERY)
    return {
        "train": [candidate for i, candidate in enumerate(icefall_train) if i not in dev_positions],
        "dev": [icefall_train[i] for i in dev_positions],
        "test": test,
    }


# --- LibriSpeech -----------------------------------------------------------------------------

LIBRISPEECH_SUBSETS = (
    ("train-", "train"),
    ("dev-clean", "dev"),
    ("dev-other", "dev_other"),
    ("test-clean", "test"),
    ("test-other", "test_other"),
)


def _librispeech_split(subset: Path) -> str:
    for prefix, split in LIBRISPEECH_SUBSETS:
        if subset.name.startswith(prefix):
            return split
    valid = ", ".join(prefix + ("*" if prefix.endswith("-") else "") for prefix, _ in LIBRISPEECH_SUBSETS)
    raise AsrbenchError(f"{subset}: not a LibriSpeech subset name (expected {valid})")


def _is_librispeech_subset(folder: Path) -> bool:
    return next(folder.glob("*/*/*.trans.txt"), None) is not None


def _read_librispeech_subset(subset: Path) -> list[Candidate]:
    candidates = []
    for transcript in sorted(subset.glob("*/*/*.trans.txt")):
        for _, line in read_lines(transcript):
            utt_id, _, text = line.strip().partition(" ")
            audio = absolute(transcript.parent / f"{utt_id}.flac")
            candidates.append(Candidate(utt_id, audio, collapse_spaces(text), utt_id.split("-")[0]))
    return candidates


def prepare_librispeech(src: Path, report: PrepareReport) -> dict[str, list[Candidate]]:
    root = src / "LibriSpeech" if (src / "LibriSpeech").is_dir() else src
    if _is_librispeech_subset(root):
        return {_librispeech_split(root): _read_librispeech_subset(root)}
    subsets = [folder for folder in sorted(root.iterdir()) if folder.is_dir() and _is_librispeech_subset(folder)]
    splits: dict[str, list[Candidate]] = {}
    for subset in subsets:
        splits.setdefault(_librispeech_split(subset), []).extend(_read_librispeech_subset(subset))
    missing = [split for split in SPLITS if split not in splits]
    if missing:
        found = ", ".join(subset.name for subset in subsets) or "none"
        raise AsrbenchError(
            f"{root}: no LibriSpeech subset for {', '.join(missing)} (need train-*, dev-clean, test-clean; "
            f"found: {found}); or pass a single subset folder to prepare just that split"
        )
    return {split: splits.pop(split) for split in SPLITS} | splits


# --- Kaldi data dirs -------------------------------------------------------------------------

KALDI_LAYOUTS = (
    {"train": "train_nodev", "dev": "train_dev", "test": "test"},  # ESPnet recipes
    {"train": "train", "dev": "dev", "test": "test"},
)


def _read_kaldi_table(path: Path, fields: int | None = None) -> dict[str, tuple[str, list[str]]]:
    """key -> (``file:line``, remaining fields); ``fields`` counts the key too when given."""
    table: dict[str, tuple[str, list[str]]] = {}
    for where, line in read_lines(path):
        key, *rest = line.split()
        if fields is not None and len(rest) + 1 != fields:
            raise AsrbenchError(f"{where}: expected {fields} fields, got {len(rest) + 1}")
        if key in table:
            raise AsrbenchError(f"{where}: duplicate key {key!r} (first at {table[key][0]})")
        table[key] = (where, rest)
    return table


def _read_wav_scp(path: Path) -> dict[str, str]:
    recordings: dict[str, str] = {}
    for where, line in read_lines(path):
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise AsrbenchError(f"{where}: expected '<recording-id> <audio path>'")
        key, location = parts
        if location.endswith("|") or location == "-":
            raise AsrbenchError(
                f"{where}: {location!r} is a shell command; asrbench never runs commands, so convert "
                "the audio to files (WAV, FLAC, SPHERE) and list their paths in wav.scp"
            )
        if re.search(r"\.ark:\d+$", location):
            raise AsrbenchError(f"{where}: Kaldi archive offsets ({location!r}) are not supported; list audio files")
        if key in recordings:
            raise AsrbenchError(f"{where}: duplicate recording id {key!r}")
        recordings[key] = absolute(path.parent / location)
    return recordings


def _parse_segment(where: str, fields: list[str]) -> tuple[str, float, float | None]:
    recording, start_text, end_text = fields
    try:
        start, end = float(start_text), float(end_text)
    except ValueError:
        raise AsrbenchError(f"{where}: start and end times must be numbers") from None
    if end == -1:
        return recording, start, None
    if start < 0 or end <= start:
        raise AsrbenchError(f"{where}: need 0 <= start < end, got {start_text} {end_text}")
    return recording, start, end - start


def _read_kaldi_dir(data_dir: Path, report: PrepareReport) -> list[Candidate]:
    for name in ("wav.scp", "text"):
        if not (data_dir / name).is_file():
            raise AsrbenchError(f"{data_dir / name}: missing (a Kaldi data dir needs wav.scp and text)")
    recordings = _read_wav_scp(data_dir / "wav.scp")
    texts = _read_kaldi_table(data_dir / "text")
    speakers = _read_kaldi_table(data_dir / "utt2spk", 2) if (data_dir / "utt2spk").is_file() else {}
    if (data_dir / "segments").is_file():
        segments = {
            utt: _parse_segment(where, rest)
            for utt, (where, rest) in _read_kaldi_table(data_dir / "segments", 4).items()
        }
    else:
        segments = {recording: (recording, 0.0, None) for recording in recordings}
    candidates = []
    for utt_id, (_, words) in texts.items():
        if utt_id not in segments or segments[utt_id][0] not in recordings:
            candidates.append(Candidate(utt_id, "", " ".join(words), no_audio="no audio entry"))
            continue
        recording, offset, duration = segments[utt_id]
        speaker = speakers[utt_id][1][0] if utt_id in speakers else None
        candidates.append(Candidate(utt_id, recordings[recording], " ".join(words), speaker, offset, duration))
    for utt_id in sorted(segments.keys() - texts.keys()):
        report.skip("no transcript", utt_id)
    return candidates


def prepare_kaldi(src: Path, report: PrepareReport) -> dict[str, list[Candidate]]:
    if (src / "wav.scp").is_file():
        raise AsrbenchError(f"{src}: this is one Kaldi data dir; pass the folder holding train/, dev/, test/")
    layout = KALDI_LAYOUTS[0] if (src / KALDI_LAYOUTS[0]["dev"]).is_dir() else KALDI_LAYOUTS[1]
    missing = [name for name in layout.values() if not (src / name).is_dir()]
    if missing:
        raise AsrbenchError(
            f"{src}: missing Kaldi data dir(s) {', '.join(missing)} "
            "(expected train/, dev/, test/ or ESPnet's train_nodev/, train_dev/, test/)"
        )
    return {split: _read_kaldi_dir(src / name, report) for split, name in layout.items()}


# --- NeMo-style JSON manifests ---------------------------------------------------------------

# File stems of each split's manifest in a folder (NeMo's scripts write <split>_manifest.json).
MANIFEST_NAMES = {
    "train": ("train", "train_manifest"),
    "dev": ("dev", "dev_manifest", "validation", "validation_manifest", "val", "val_manifest"),
    "test": ("test", "test_manifest"),
}


def _find_manifest(src: Path, split: str) -> Path:
    names = [stem + suffix for stem in MANIFEST_NAMES[split] for suffix in (".json", ".jsonl")]
    found = [src / name for name in names if (src / name).is_file()]
    if not found:
        raise AsrbenchError(f"{src}: no {split} manifest (expected one of {', '.join(names)})")
    if len(found) > 1:
        raise AsrbenchError(f"{src}: several {split} manifests ({', '.join(path.name for path in found)}); keep one")
    return found[0]


def _number(where: str, row: dict, name: str) -> float:
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AsrbenchError(f"{where}: field '{name}' must be a number, got {value!r}")
    return float(value)


def _read_nemo_manifest(path: Path) -> list[Candidate]:
    candidates = []
    used: set[str] = set()
    for where, line in read_lines(path):
        row = json_object(line, where)
        required = ("audio_filepath", "text", "duration") if "offset" in row else ("audio_filepath", "text")
        missing = [name for name in required if name not in row]
        if missing:
            raise AsrbenchError(f"{where}: missing field(s) {', '.join(missing)}")
        for name in ("audio_filepath", "text"):
            if not isinstance(row[name], str):
                raise AsrbenchError(f"{where}: field '{name}' must be a string")
        audio = Path(row["audio_filepath"])
        utt_id, offset, duration = audio.stem, 0.0, None
        if "offset" in row:
            offset, duration = _number(where, row, "offset"), _number(where, row, "duration")
            if offset < 0 or duration <= 0:
                raise AsrbenchError(f"{where}: need offset >= 0 and duration > 0")
            utt_id = f"{audio.stem}-{round(offset * 100):07d}"
        base, repeat = utt_id, 1
        while utt_id in used:
            repeat += 1
            utt_id = f"{base}-{repeat}"
        used.add(utt_id)
        speaker = row.get("speaker", row.get("spk"))
        candidates.append(
            Candidate(
                utt_id,
                absolute(path.parent / audio),
                collapse_spaces(row["text"]),
                None if speaker is None else str(speaker),
                offset,
                duration,
            )
        )
    return candidates


def prepare_manifest(src: Path, report: PrepareReport) -> dict[str, list[Candidate]]:
    return {split: _read_nemo_manifest(_find_manifest(src, split)) for split in SPLITS}


def _prepare_hf(src: Path, report: PrepareReport, out: Path, options: Mapping[str, Any]) -> dict[str, list[Candidate]]:
    return prepare_hf(src, report, out, dict(options))


def _prepare_commonvoice(
    src: Path, report: PrepareReport, out: Path, options: Mapping[str, Any]
) -> dict[str, list[Candidate]]:
    return prepare_commonvoice(src, report, options.get("train_from") or "train")


CORPORA: dict[str, Preparer] = {
    "an4": prepare_an4,
    "fsdd": prepare_fsdd,
    "yesno": prepare_yesno,
    "librispeech": prepare_librispeech,
    "kaldi": prepare_kaldi,
    "manifest": prepare_manifest,
    "lhotse": prepare_lhotse,
}
# Corpora whose preparer also takes the output dir (hf writes audio bytes to its store) and options.
WITH_OPTIONS: dict[str, Callable[[Path, PrepareReport, Path, Mapping[str, Any]], dict[str, list[Candidate]]]] = {
    "hf": _prepare_hf,
    "commonvoice": _prepare_commonvoice,
}
# Each corpus option (a key of prepare_corpus's ``options``) and the corpus that takes it.
OPTION_CORPUS = {
    "text_column": "hf",
    "speaker_column": "hf",
    "id_column": "hf",
    "split_map": "hf",
    "train_from": "commonvoice",
}

# Corpora whose splits may also be named file by file (--train F --dev F --test F).
FILE_READERS: dict[str, Callable[[Path, PrepareReport], list[Candidate]]] = {
    "manifest": lambda path, report: _read_nemo_manifest(path),
    "lhotse": read_lhotse_file,
}


# --- audio headers, skipping, writing --------------------------------------------------------


def _header_durations(paths: list[str], description: str, progress: bool) -> dict[str, float | str]:
    """path -> duration in seconds, or the reason to skip it."""
    durations: dict[str, float | str] = {}
    with progress_bar(disable=not progress) as bar:
        task = bar.add_task(description, total=len(paths))
        for path in paths:
            if not os.path.isfile(path):
                durations[path] = "missing audio"
            else:
                try:
                    durations[path] = audio_info(path)[0]
                except AsrbenchError:
                    durations[path] = "unreadable audio"
            bar.advance(task)
    return durations


def _to_utterance(candidate: Candidate, file_duration: float) -> Utterance | None:
    """The utterance, or None when its segment lies outside the audio."""
    available = file_duration - candidate.offset
    duration = available if candidate.duration is None else candidate.duration
    if duration > available + SEGMENT_MAX_OVERSHOOT:
        return None
    duration = round(min(duration, available), 6)
    if duration <= 0:
        return None
    return Utterance(candidate.id, candidate.audio, duration, candidate.text, candidate.speaker, candidate.offset)


def _refuse_missing(corpus: str, without_audio: dict[str, list[str]]) -> None:
    """One line naming, per dev/test split, the utterances that have no usable audio (issue 28.5)."""
    parts = []
    for split, utt_ids in without_audio.items():
        shown = ", ".join(utt_ids[:MAX_EXAMPLES]) + (", ..." if len(utt_ids) > MAX_EXAMPLES else "")
        parts.append(f"{split}: {len(utt_ids)} utterance{'s' if len(utt_ids) != 1 else ''} without audio ({shown})")
    raise AsrbenchError(
        f"{corpus}: {'; '.join(parts)}; an evaluation split must not shrink silently: fix the "
        "audio paths, or pass --skip-missing to leave them out; nothing written"
    )


def _build_splits(
    corpus: str,
    candidates: dict[str, list[Candidate]],
    report: PrepareReport,
    progress: bool,
    skip_missing: bool = False,
) -> dict[str, list[Utterance]]:
    for split_candidates in candidates.values():
        for candidate in split_candidates:
            if not candidate.text:
                report.skip("empty transcript", candidate.id)
    paths = sorted(
        {c.audio for split_candidates in candidates.values() for c in split_candidates if c.text and c.no_audio is None}
    )
    durations = _header_durations(paths, f"{corpus}: reading audio headers", progress)
    splits: dict[str, list[Utterance]] = {}
    without_audio: dict[str, list[str]] = {}  # dev/test split -> ids whose audio is missing or unreadable
    for split, split_candidates in candidates.items():
        utterances: dict[str, Utterance] = {}
        for candidate in split_candidates:
            if not candidate.text:
                continue
            file_duration = candidate.no_audio or durations[candidate.audio]
            if isinstance(file_duration, str):
                if split == "train" or skip_missing:
                    report.skip(file_duration, candidate.audio or candidate.id)
                else:
                    without_audio.setdefault(split, []).append(candidate.id)
                continue
            utterance = _to_utterance(candidate, file_duration)
            if utterance is None:
                report.skip("segment outside audio", candidate.id)
            elif utterance.id in utterances:
                report.skip("duplicate id", candidate.id)
            else:
                utterances[utterance.id] = utterance
        splits[split] = sorted(utterances.values(), key=lambda utterance: utterance.id)
    if without_audio:
        _refuse_missing(corpus, without_audio)
    for split, split_utterances in splits.items():
        if not split_utterances:
            skipped = "; ".join(f"{reason}: {count}" for reason, count in report.skipped.items()) or "none"
            raise AsrbenchError(
                f"{corpus}: split '{split}' has no usable utterances (skipped: {skipped}); nothing written"
            )
    return splits


def prepare_corpus(
    corpus: str,
    src: Path | None,
    out: Path,
    progress: bool = True,
    files: Mapping[str, Path | None] | None = None,
    skip_missing: bool = False,
    options: Mapping[str, Any] | None = None,
) -> PrepareReport:
    """Write ``out/<split>.jsonl`` for ``corpus`` found at ``src``; see the module docstring.

    ``files`` (corpora in :data:`FILE_READERS`) maps splits to manifest files, instead of a folder ``src``.
    An utterance without usable audio (a missing or unreadable file, no wav.scp entry or recording) is
    skipped in train with a note; in any other split it fails (its ids listed) unless ``skip_missing``:
    a benchmark's dev and test sets never shrink silently.
    """
    known = {**CORPORA, **WITH_OPTIONS}
    if corpus not in known:
        raise AsrbenchError(f"unknown corpus '{corpus}'{did_you_mean(corpus, known)} (valid: {', '.join(known)})")
    options = {key: value for key, value in (options or {}).items() if value not in (None, "")}
    for key in options:
        if key != "progress" and OPTION_CORPUS.get(key) != corpus:
            flag = "--" + key.replace("_", "-")
            raise AsrbenchError(f"{flag} is an option of `data prepare {OPTION_CORPUS.get(key)}`, not of {corpus}")
    named = {split: Path(path) for split, path in (files or {}).items() if path is not None}
    report = PrepareReport()
    if named:
        if corpus not in FILE_READERS:
            raise AsrbenchError(
                f"--train/--dev/--test name manifest files: use them with "
                f"{' or '.join(repr(name) for name in FILE_READERS)}, not '{corpus}'"
            )
        if src is not None:
            raise AsrbenchError(f"give a folder ({src}) or manifest files (--train/--dev/--test), not both")
        for split, path in named.items():
            if not path.is_file():
                raise AsrbenchError(f"--{split} {path}: manifest file not found")
        candidates = {split: FILE_READERS[corpus](Path(absolute(path)), report) for split, path in named.items()}
    else:
        if src is None:
            raise AsrbenchError(
                f"{corpus}: give the corpus folder"
                + (" or manifest files (--train F --dev F --test F)" if corpus in FILE_READERS else "")
            )
        if Path(src).is_file():
            hint = (
                f"; to prepare one manifest file, name its split: --train {src}, --dev {src} or --test {src}"
                if corpus in FILE_READERS
                else ""
            )
            raise AsrbenchError(f"{src}: a file, not a corpus folder{hint}")
        if corpus == "hf":
            refuse_hub_name(Path(src))  # a hub name with no local copy: how to get one
        if not Path(src).is_dir():
            raise AsrbenchError(f"{src}: corpus folder not found")
        if corpus in WITH_OPTIONS:
            candidates = WITH_OPTIONS[corpus](Path(absolute(src)), report, Path(out), {"progress": progress, **options})
        else:
            candidates = CORPORA[corpus](Path(absolute(src)), report)
    splits = _build_splits(corpus, candidates, report, progress, skip_missing)
    report.counts = write_data_dir(out, splits)
    return report
