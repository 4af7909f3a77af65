"""Outside systems in the same table: ``asrbench score REF HYP --name NAME --out DIR``.

Another system's transcripts (Whisper's, a cloud API's, a colleague's) are scored against the
references and written as a decode of ``DIR`` would be: ``DIR/decode/<split>/`` holds
``hypotheses.jsonl`` (normalized, with the speakers where known), ``result.json`` (the rates,
the normalizer, the CIs, ``system: external``, no parameters or training time) and the report
files (alignments, trn, per speaker). ``compare``, ``report`` and the length study then take
``DIR`` as a row beside trained runs, with the same intervals and paired tests, and refuse it
against a different test set as they refuse runs: the set is the (id, normalized reference)
pairs of ``hypotheses.jsonl``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from asrbench import fileio
from asrbench.decoding.result import Bootstrap, DecodeResult, result_path, write_result
from asrbench.env import environment
from asrbench.errors import AsrbenchError
from asrbench.scoring import stats
from asrbench.scoring.metrics import (
    confidence_intervals,
    score_pair,
    speaker_groups,
    summarize,
    write_report,
)
from asrbench.text import DEFAULT_NORMALIZER

EXTERNAL = "external"  # result.json's ``system`` for a row scored from outside transcripts
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"


def check_name(name: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise AsrbenchError(
            f"--name {name!r}: a system name is letters, digits and . _ + - (it names the row and its files)"
        )
    return name


def _data_dir_of(reference_path: Path, split: str) -> str | None:
    """The prepared data dir whose manifest the references are (``<data dir>/<split>.jsonl``, rows
    with audio and duration), so that the length study and the report's error browser find the
    durations and the audio; None for other reference files."""
    if reference_path.name != f"{split}.jsonl":
        return None
    try:
        with open(reference_path, encoding="utf-8-sig") as handle:
            first = json.loads(next((line for line in handle if line.strip()), "{}"))
    except (OSError, ValueError):
        return None
    if isinstance(first, dict) and {"audio", "duration"} <= set(first):
        return str(reference_path.resolve().parent)
    return None


def write_external(
    reference_path: str | Path,
    hypothesis_path: str | Path,
    name: str,
    out: str | Path,
    split: str = "test",
    normalizer: str = DEFAULT_NORMALIZER,
    missing_as_empty: bool = False,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
    utt2spk: str | Path | None = None,
) -> DecodeResult:
    """Score ``hypothesis_path`` against ``reference_path`` and write ``out`` as a decode-style
    system dir (module docstring); returns the result written. The CIs resample speakers when every
    utterance has one (the references' ``speaker`` fields, the hypotheses', or ``utt2spk``), as decode's do."""
    check_name(name)
    pair = score_pair(reference_path, hypothesis_path, normalizer, missing_as_empty, utt2spk)
    decode_dir = Path(out) / "decode" / split
    rows = [
        {
            "id": score.id,
            "ref": score.ref,
            "hyp": score.hyp,
            **({"speaker": pair.speakers[score.id]} if score.id in pair.speakers else {}),
        }
        for score in pair.scores
    ]
    fileio.write_jsonl(decode_dir / "hypotheses.jsonl", rows)
    write_report(decode_dir, pair.scores, pair.speakers, normalizer)
    rates = summarize(pair.scores, normalizer).to_dict()
    intervals = confidence_intervals(
        pair.scores, resamples, seed=seed, groups=speaker_groups(pair.scores, pair.speakers)
    )
    result = DecodeResult(
        run=str(out),
        model=name,
        split=split,
        data_dir=_data_dir_of(Path(reference_path), split),
        **rates,
        wer_ci=None if intervals["wer_ci"] is None else tuple(intervals["wer_ci"]),
        cer_ci=None if intervals["cer_ci"] is None else tuple(intervals["cer_ci"]),
        ci=Bootstrap.from_dict(intervals["ci"]),
        units="unknown",
        environment=environment(),
        system=EXTERNAL,
        extra={
            "reference_file": str(pair.reference_file),
            "hypothesis_file": str(pair.hypothesis_file),
            "missing_hypotheses": pair.missing_hypotheses,
            "missing_references": pair.missing_references,
        },
    )
    write_result(result_path(out, split), result)
    return result
