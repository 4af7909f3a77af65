"""Mozilla Common Voice release folders: ``asrbench data prepare commonvoice DIR --out data/x``.

``DIR`` is one language's folder of a release (``cv-corpus-*/en``): ``clips/*.mp3`` and the
tab-separated tables ``train.tsv``, ``dev.tsv``, ``test.tsv`` and ``validated.tsv``, each with a
header naming at least ``client_id`` (the speaker), ``path`` (the clip's file name under
``clips/``) and ``sentence`` (the text). The id is the clip's file name without ``.mp3``.

Splits: dev and test are the release's. Train is ``train.tsv``, or with ``--train-from
validated`` every validated clip that is in neither dev nor test and whose speaker is not a dev
or test speaker (the release's train.tsv keeps few recordings of each sentence; ESPnet and
icefall train on validated minus dev and test likewise), so no test speaker is ever trained on.

MP3 clips are read through the audio layer everything else uses, libsndfile (>= 1.1 decodes
MPEG layer III; the soundfile wheel bundles 1.2): their headers give the durations, and the clips
are decoded when features are computed. Quotes in a sentence are text, not CSV quoting.
"""

from __future__ import annotations

import csv
from pathlib import Path

from asrbench.data.corpus import Candidate, PrepareReport, collapse_spaces
from asrbench.errors import AsrbenchError

TABLES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
COLUMNS = ("client_id", "path", "sentence")
TRAIN_FROM = ("train", "validated")


def _read_table(path: Path) -> list[dict[str, str]]:
    """A Common Voice TSV's rows; a missing file or column is one line naming it."""
    if not path.is_file():
        raise AsrbenchError(f"{path}: missing (a Common Voice language folder has train.tsv, dev.tsv, test.tsv)")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [name for name in COLUMNS if name not in (reader.fieldnames or [])]
        if missing:
            raise AsrbenchError(
                f"{path}:1: no {', '.join(missing)} column (the header has {', '.join(reader.fieldnames or [])})"
            )
        return [row for row in reader if row.get("path")]


def _candidate(row: dict[str, str], clips: Path) -> Candidate:
    name = row["path"].strip()
    return Candidate(
        Path(name).stem,
        str(clips / name),
        collapse_spaces(row.get("sentence") or ""),
        (row.get("client_id") or "").strip() or None,
    )


def prepare_commonvoice(src: Path, report: PrepareReport, train_from: str = "train") -> dict[str, list[Candidate]]:
    """train/dev/test candidates of a Common Voice language folder (module docstring)."""
    if train_from not in TRAIN_FROM:
        raise AsrbenchError(f"--train-from {train_from!r}: train or validated")
    clips = src / "clips"
    if not clips.is_dir():
        raise AsrbenchError(f"{src}: no clips/ folder (give a Common Voice language folder, e.g. cv-corpus-*/en)")
    rows = {split: _read_table(src / name) for split, name in TABLES.items() if split != "train"}
    if train_from == "validated":
        held_out = {row["path"] for split in ("dev", "test") for row in rows[split]}
        speakers = {row["client_id"] for split in ("dev", "test") for row in rows[split]}
        validated = _read_table(src / "validated.tsv")
        rows["train"] = [row for row in validated if row["path"] not in held_out and row["client_id"] not in speakers]
        for row in validated:
            if row["path"] not in held_out and row["client_id"] in speakers:
                report.skip("validated clip of a dev/test speaker (not trained on)", row["path"])
    else:
        rows["train"] = _read_table(src / TABLES["train"])
    return {split: [_candidate(row, clips) for row in rows[split]] for split in ("train", "dev", "test")}
