"""Word and character error rates, per utterance and in total, with readable alignments (jiwer).

References and hypotheses are normalized by the same named normalizer before scoring; the
normalizer's name goes into every result. CER counts spaces as characters, as ESPnet's and
Kaldi's AN4 character counts do (2565 characters on AN4 test).

Empty references: an utterance with an empty reference has 0 reference words, and every
hypothesis word is an insertion counted in every pooled rate's numerator (the corpus, a speaker,
a bootstrap resample), as sclite counts it. A rate whose denominator is 0 (no reference word at
all) is undefined: ``None`` in results (``null`` in JSON, "n/a" in tables), never 0%; the counts
still show the insertions.

Per utterance, jiwer's alignment chunks become word-level operations: C (correct), S
(substitution), D (deletion), I (insertion). From them come sclite-like alignments
(``alignments.txt``), confusion pairs, per-speaker rates and NIST ``trn`` files (``TEXT (ID)``
lines, ids ``SPEAKER-UTTERANCE``, see :func:`trn_id`) for a cross-check with
``sclite -r ref.trn trn -h hyp.trn trn -i spu_id -o sum``. sclite minimizes weighted costs (sub
4, ins 3, del 3) rather than the number of edits, so its split into S, D and I can differ from
ours, and rarely (several substitutions against fewer-cost insertions plus deletions) its total
too; on a random 300-utterance test its total errors and WER were identical to ours.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jiwer
import numpy as np

from asrbench import fileio
from asrbench.errors import AsrbenchError
from asrbench.scoring import stats
from asrbench.text import DEFAULT_NORMALIZER, normalize


@dataclass
class ErrorRates:
    wer: float | None  # percent; None when there is no reference word (undefined)
    cer: float | None  # percent; None when there is no reference character
    substitutions: int
    deletions: int
    insertions: int
    words: int
    char_substitutions: int
    char_deletions: int
    char_insertions: int
    characters: int
    utterances: int
    sentence_errors: int
    normalizer: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class UtteranceScore:
    id: str
    ref: str  # normalized
    hyp: str  # normalized
    words: int  # reference words
    substitutions: int
    deletions: int
    insertions: int
    characters: int  # reference characters, spaces included
    char_substitutions: int
    char_deletions: int
    char_insertions: int
    # Word-level alignment: (operation, reference word, hypothesis word), operation C | S | D | I;
    # the reference word is None for an insertion, the hypothesis word None for a deletion.
    alignment: list[tuple[str, str | None, str | None]] = field(default_factory=list)

    @property
    def word_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def char_errors(self) -> int:
        return self.char_substitutions + self.char_deletions + self.char_insertions


def _percent(errors: int, total: int) -> float | None:
    """Errors per 100 reference units; None (undefined) without any reference unit."""
    return 100.0 * errors / total if total else None


def format_rate(rate: float | None, digits: int = 2) -> str:
    """A rate in percent for tables and messages; "n/a" when undefined (no reference word)."""
    return "n/a" if rate is None else f"{rate:.{digits}f}"


def format_ci(interval) -> str:
    """``low–high`` in percent, or "n/a"."""
    if not interval or any(bound is None for bound in interval):
        return "n/a"
    return f"{interval[0]:.2f}–{interval[1]:.2f}"


def undefined_rate_warning(rates: dict | ErrorRates, where: str) -> str | None:
    """The warning to print when a WER is undefined (no reference words), else None."""
    values = rates.to_dict() if isinstance(rates, ErrorRates) else rates
    if values.get("wer") is not None:
        return None
    return (
        f"{where}: no reference words after normalization ({values.get('normalizer')}), so the WER is undefined "
        f"(n/a); {values.get('insertions', 0)} inserted words over {values.get('utterances', 0)} utterances"
    )


def _word_operations(chunks, ref_words: list[str], hyp_words: list[str]) -> list[tuple]:
    operations: list[tuple] = []
    for chunk in chunks:
        ref = ref_words[chunk.ref_start_idx : chunk.ref_end_idx]
        hyp = hyp_words[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type == "equal":
            operations += [("C", r, h) for r, h in zip(ref, hyp, strict=True)]
        elif chunk.type == "substitute":
            operations += [("S", r, h) for r, h in zip(ref, hyp, strict=False)]
            # Levenshtein substitutions are one to one; should a chunk ever be uneven, the rest
            # is deletions or insertions, so the counts still add up to the edit distance.
            operations += [("D", r, None) for r in ref[len(hyp) :]] + [("I", None, h) for h in hyp[len(ref) :]]
        elif chunk.type == "delete":
            operations += [("D", r, None) for r in ref]
        else:
            operations += [("I", None, h) for h in hyp]
    return operations


def _char_counts(chunks) -> tuple[int, int, int]:
    substitutions = deletions = insertions = 0
    for chunk in chunks:
        if chunk.type == "substitute":
            substitutions += chunk.ref_end_idx - chunk.ref_start_idx
        elif chunk.type == "delete":
            deletions += chunk.ref_end_idx - chunk.ref_start_idx
        elif chunk.type == "insert":
            insertions += chunk.hyp_end_idx - chunk.hyp_start_idx
    return substitutions, deletions, insertions


def score_utterances(
    references: list[str], hypotheses: list[str], normalizer: str = DEFAULT_NORMALIZER, ids: list[str] | None = None
) -> list[UtteranceScore]:
    """Score aligned lists of texts utterance by utterance (ids default to "0", "1", ...)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    ids = [str(index) for index in range(len(references))] if ids is None else list(ids)
    if len(ids) != len(references):
        raise ValueError(f"{len(ids)} ids for {len(references)} utterances")
    refs = [normalize(text, normalizer) for text in references]
    hyps = [normalize(text, normalizer) for text in hypotheses]
    if not refs:
        return []
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    scores = []
    for index, utterance_id in enumerate(ids):
        operations = _word_operations(words.alignments[index], words.references[index], words.hypotheses[index])
        op_counts = Counter(operation for operation, _, _ in operations)
        char_s, char_d, char_i = _char_counts(chars.alignments[index])
        scores.append(
            UtteranceScore(
                id=utterance_id,
                ref=refs[index],
                hyp=hyps[index],
                words=len(words.references[index]),
                substitutions=op_counts["S"],
                deletions=op_counts["D"],
                insertions=op_counts["I"],
                characters=len(chars.references[index]),
                char_substitutions=char_s,
                char_deletions=char_d,
                char_insertions=char_i,
                alignment=operations,
            )
        )
    return scores


def summarize(scores: list[UtteranceScore], normalizer: str = DEFAULT_NORMALIZER) -> ErrorRates:
    """Corpus totals of per-utterance scores: errors and reference lengths are summed, then divided."""

    def total(name: str) -> int:
        return sum(getattr(score, name) for score in scores)

    words, characters = total("words"), total("characters")
    return ErrorRates(
        wer=_percent(total("word_errors"), words),
        cer=_percent(total("char_errors"), characters),
        substitutions=total("substitutions"),
        deletions=total("deletions"),
        insertions=total("insertions"),
        words=words,
        char_substitutions=total("char_substitutions"),
        char_deletions=total("char_deletions"),
        char_insertions=total("char_insertions"),
        characters=characters,
        utterances=len(scores),
        sentence_errors=sum(score.ref != score.hyp for score in scores),
        normalizer=normalizer,
    )


def error_rates(references: list[str], hypotheses: list[str], normalizer: str = DEFAULT_NORMALIZER) -> ErrorRates:
    """Score aligned lists of reference and hypothesis texts."""
    return summarize(score_utterances(references, hypotheses, normalizer), normalizer)


# --- confidence intervals ------------------------------------------------------------------------


def token_error_rate(references: list[list[int]], hypotheses: list[list[int]]) -> dict:
    """Edit distance between reference and hypothesis token ids (the model's own units: characters,
    subword pieces or phones, word separators included) over the reference token count, in percent
    (None without reference tokens). Reported beside WER and CER, which are always on words."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = sum(len(hyp) for ref, hyp in zip(references, hypotheses, strict=True) if not ref)
    pairs = [(ref, hyp) for ref, hyp in zip(references, hypotheses, strict=True) if ref]
    if pairs:  # jiwer aligns words: one "word" per token id
        output = jiwer.process_words(
            [" ".join(map(str, ref)) for ref, _ in pairs], [" ".join(map(str, hyp)) for _, hyp in pairs]
        )
        errors += output.substitutions + output.deletions + output.insertions
    tokens = sum(len(ref) for ref in references)
    return {"ter": _percent(errors, tokens), "token_errors": errors, "tokens": tokens}


def confidence_intervals(
    scores: list[UtteranceScore],
    resamples: int = stats.DEFAULT_RESAMPLES,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
    groups=None,
) -> dict:
    """``wer_ci`` and ``cer_ci`` ([low, high] percent, the same resamples for both): bootstrap over
    utterances, or over speakers with ``groups`` (stats.bootstrap_cis)."""
    errors = np.array([[s.word_errors for s in scores], [s.char_errors for s in scores]], dtype=np.float64)
    totals = np.array([[s.words for s in scores], [s.characters for s in scores]], dtype=np.float64)
    wer_ci, cer_ci = stats.bootstrap_cis(errors, totals, resamples, confidence, seed, groups)

    def bounds(interval) -> list[float] | None:  # None: undefined (no reference word in any resample)
        return None if np.isnan(interval).any() else [float(interval[0]), float(interval[1])]

    return {
        "wer_ci": bounds(wer_ci),
        "cer_ci": bounds(cer_ci),
        "ci": {
            "method": "percentile bootstrap over utterances"
            if groups is None
            else f"speaker-blocked bootstrap over {stats.group_codes(groups)[1]} speakers, log-t interval",
            "resamples": resamples,
            "confidence": confidence,
            "seed": seed,
        },
    }


# --- speakers, confusions, alignments --------------------------------------------------------------

# A speaker is given (a manifest's ``speaker``, a JSONL ``speaker`` field, an utt2spk file) or
# unknown; it is never read off an utterance id (yesno's ids begin with their first label).
UNKNOWN_SPEAKER = "unknown"  # the speaker part of a trn id when none is given (sclite needs one)


def known_speakers(ids: list[str], given: Mapping[str, str | None] | None = None) -> tuple[dict[str, str], str] | None:
    """Each utterance's speaker and where the speakers come from, or None when they are not known.

    Speakers are known when every utterance has one given (a manifest's ``speaker``, a JSONL
    ``speaker`` field, an utt2spk file). With some or all missing there is no per-speaker table:
    nothing is guessed from the ids.
    """
    given = given or {}
    if not ids or not all(given.get(utterance_id) for utterance_id in ids):
        return None
    return {utterance_id: str(given[utterance_id]) for utterance_id in ids}, "given"


def speaker_groups(scores: list[UtteranceScore], speakers: Mapping[str, str | None] | None) -> list[str] | None:
    """Each utterance's speaker, for the speaker-blocked bootstrap, when every utterance has one and
    there are two or more (docs/statistics.md); else None (the bootstrap resamples utterances)."""
    known = known_speakers([score.id for score in scores], speakers)
    if known is None or len(set(known[0].values())) < 2:
        return None
    return [known[0][score.id] for score in scores]


def per_speaker(scores: list[UtteranceScore], speakers: Mapping[str, str | None] | None = None) -> list[dict]:
    """Error rates per speaker, sorted by speaker; ``speakers`` maps ids to their given speakers
    (an utterance without one is counted under ``unknown``)."""
    speakers = speakers or {}
    groups: dict[str, list[UtteranceScore]] = {}
    for score in scores:
        groups.setdefault(speakers.get(score.id) or UNKNOWN_SPEAKER, []).append(score)
    rows = []
    for speaker in sorted(groups):
        rates = summarize(groups[speaker])
        rows.append(
            {
                "speaker": speaker,
                "utterances": rates.utterances,
                "words": rates.words,
                "wer": rates.wer,
                "substitutions": rates.substitutions,
                "deletions": rates.deletions,
                "insertions": rates.insertions,
                "characters": rates.characters,
                "cer": rates.cer,
                "sentence_errors": rates.sentence_errors,
            }
        )
    return rows


def confusions(scores: list[UtteranceScore], top: int | None = 20) -> dict:
    """The most frequent substitutions (ref -> hyp), deleted words and inserted words, with counts."""
    substituted: Counter[tuple[str | None, str | None]] = Counter()
    deleted: Counter[str | None] = Counter()
    inserted: Counter[str | None] = Counter()
    for score in scores:
        for operation, ref, hyp in score.alignment:
            if operation == "S":
                substituted[(ref, hyp)] += 1
            elif operation == "D":
                deleted[ref] += 1
            elif operation == "I":
                inserted[hyp] += 1

    def most_common(counter: Counter) -> list:
        return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:top]

    return {
        "substitutions": [{"ref": ref, "hyp": hyp, "count": count} for (ref, hyp), count in most_common(substituted)],
        "deletions": [{"word": word, "count": count} for word, count in most_common(deleted)],
        "insertions": [{"word": word, "count": count} for word, count in most_common(inserted)],
    }


def format_alignment(score: UtteranceScore, utterance_id: str | None = None) -> str:
    """sclite-style REF/HYP/Eval lines; ``***`` (as wide as the other word) stands for a missing word."""
    ref_cells, hyp_cells, eval_cells = [], [], []
    for operation, ref, hyp in score.alignment:
        if ref is None:
            assert hyp is not None  # a step has a word on one side at least
            ref = "*" * max(3, len(hyp))
        elif hyp is None:
            hyp = "*" * max(3, len(ref))
        width = max(len(ref), len(hyp))
        ref_cells.append(ref.ljust(width))
        hyp_cells.append(hyp.ljust(width))
        eval_cells.append(("" if operation == "C" else operation).ljust(width))
    correct = sum(operation == "C" for operation, _, _ in score.alignment)
    lines = [
        f"id: ({utterance_id or score.id})",
        f"Scores: (#C #S #D #I) {correct} {score.substitutions} {score.deletions} {score.insertions}",
        "REF:  " + " ".join(ref_cells),
        "HYP:  " + " ".join(hyp_cells),
        "Eval: " + " ".join(eval_cells),
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


# --- NIST trn files -------------------------------------------------------------------------------

_TRN_UNSAFE = re.compile(r"[\s()]")
_TRN_LINE = re.compile(r"^(?P<text>.*?)\s*\((?P<id>[^()\s]+)\)\s*$")


def trn_id(utterance_id: str, speaker: str | None = None) -> str:
    """``SPEAKER-UTTERANCE``: sclite's ``-i spu_id`` takes the speaker from before the first '-'.

    (Only without any '-' does sclite split at the first '_', so '-' is the separator that holds
    for every utterance id.) Without a given speaker the speaker part is ``unknown``, never a piece
    of the id. A '-' inside the speaker becomes '_'; whitespace and parentheses, which would end
    the id, become '_' in both parts.
    """
    speaker = _TRN_UNSAFE.sub("_", speaker or UNKNOWN_SPEAKER).replace("-", "_")
    return f"{speaker}-{_TRN_UNSAFE.sub('_', utterance_id)}"


def trn_line(text: str, identifier: str) -> str:
    return f"{text} ({identifier})" if text else f"({identifier})"


def read_trn(path: str | Path) -> list[tuple[str, str]]:
    """(id, text) per line of a trn file, in file order."""
    return [(utterance_id, text) for _, utterance_id, text in _trn_rows(Path(path), _read_lines(Path(path)))]


def _trn_rows(path: Path, lines: list[str]) -> list[tuple[int, str, str]]:
    """(line number, id, text) of each non-blank trn line; a line without ``(ID)`` is an error."""
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        match = _TRN_LINE.match(line)
        if match is None:
            raise AsrbenchError(f"{path}:{number}: not a trn line 'TEXT (ID)'")
        rows.append((number, match["id"], match["text"].strip()))
    return rows


def _is_trn(path: Path, lines: list[str]) -> bool:
    """A trn file: named ``*.trn``, or every non-blank line ends in ``(ID)``."""
    if path.suffix.lower() == ".trn":
        return True
    filled = [line for line in lines if line.strip()]
    return bool(filled) and all(_TRN_LINE.match(line) for line in filled)


REPORT_FILES = ("alignments.txt", "ref.trn", "hyp.trn", "report.json")


def write_report(
    out_dir: str | Path,
    scores: list[UtteranceScore],
    speakers: Mapping[str, str | None] | None = None,
    normalizer: str = DEFAULT_NORMALIZER,
    top: int = 50,
) -> None:
    """Write ``alignments.txt``, ``ref.trn``, ``hyp.trn`` and ``report.json`` (per speaker, confusions)."""
    out_dir = Path(out_dir)
    speakers = speakers or {}
    ids = [trn_id(score.id, speakers.get(score.id)) for score in scores]
    rates = summarize(scores, normalizer)
    header = (
        f"# normalizer {normalizer}; WER {format_rate(rates.wer)}% ({rates.substitutions} S, "
        f"{rates.deletions} D, "
        f"{rates.insertions} I over {rates.words} words); Eval: S substitution, D deletion, I insertion\n\n"
    )
    fileio.write_text(
        out_dir / "alignments.txt",
        header + "\n".join(format_alignment(score, i) for score, i in zip(scores, ids, strict=True)),
    )
    fileio.write_text(out_dir / "ref.trn", "".join(trn_line(s.ref, i) + "\n" for s, i in zip(scores, ids, strict=True)))
    fileio.write_text(out_dir / "hyp.trn", "".join(trn_line(s.hyp, i) + "\n" for s, i in zip(scores, ids, strict=True)))
    fileio.write_json(
        out_dir / "report.json",
        {
            "normalizer": normalizer,
            "sclite": "sclite -r ref.trn trn -h hyp.trn trn -i spu_id -o sum pra",
            **speaker_report(scores, speakers),
            "confusions": confusions(scores, top),
        },
    )


def speaker_report(scores: list[UtteranceScore], speakers: Mapping[str, str | None] | None = None) -> dict:
    """``per_speaker`` rows (None when speakers are unknown, see :func:`known_speakers`) and
    ``speakers``, where they come from."""
    known = known_speakers([score.id for score in scores], speakers)
    if known is None:
        return {"per_speaker": None, "speakers": None}
    return {"per_speaker": per_speaker(scores, known[0]), "speakers": known[1]}


# --- scoring transcript files ------------------------------------------------------------------------


@dataclass
class Transcripts:
    path: Path
    texts: dict[str, str]  # id -> text, in file order
    speakers: dict[str, str]  # id -> speaker, where the file names one


def _read_lines(path: Path) -> list[str]:
    """A UTF-8 text file's lines (a leading byte-order mark dropped, so it is not read into the
    first id); a missing or unreadable file is a one-line error naming it."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise AsrbenchError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise AsrbenchError(f"{path}: cannot read ({err})") from None


CSV_ID_COLUMNS = ("id", "utt_id", "utterance_id", "key")
CSV_TEXT_COLUMNS = ("text", "transcript", "transcription", "prediction", "sentence")
CSV_SPEAKER_COLUMNS = ("speaker", "spk", "speaker_id", "client_id")


def _read_csv(path: Path, lines: list[str], side: str) -> Transcripts:
    """A CSV with a header row: the id from the first of :data:`CSV_ID_COLUMNS` it has, the text from
    ``ref``/``hyp`` (by ``side``) or the first of :data:`CSV_TEXT_COLUMNS`, the speaker where a
    column of :data:`CSV_SPEAKER_COLUMNS` gives one."""
    import csv

    reader = csv.reader(lines)
    header = [name.strip() for name in next(reader, [])]
    lowered = [name.lower() for name in header]

    def find(names: tuple[str, ...]) -> int | None:
        return next((lowered.index(name) for name in names if name in lowered), None)

    def column(names: tuple[str, ...], what: str) -> int:
        found = find(names)
        if found is None:
            raise AsrbenchError(
                f"{path}:1: a CSV needs a header naming its {what} column ({', '.join(names)}); "
                f"it has {', '.join(header) or 'none'}"
            )
        return found

    id_column = column(CSV_ID_COLUMNS, "id")
    text_column = column(("ref" if side == "ref" else "hyp", *CSV_TEXT_COLUMNS), "text")
    speaker_column = find(CSV_SPEAKER_COLUMNS)
    texts: dict[str, str] = {}
    speakers: dict[str, str] = {}
    for number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise AsrbenchError(f"{path}:{number}: {len(row)} fields, the header has {len(header)}")
        utterance_id = row[id_column].strip()
        if not utterance_id or utterance_id in texts:
            raise AsrbenchError(f"{path}:{number}: {'duplicate' if utterance_id else 'empty'} id {utterance_id!r}")
        texts[utterance_id] = row[text_column]
        if speaker_column is not None and row[speaker_column].strip():
            speakers[utterance_id] = row[speaker_column].strip()
    return Transcripts(path, texts, speakers)


def read_transcripts(path: str | Path, side: str = "ref") -> Transcripts:
    """Read ``id text`` lines (Kaldi), JSONL, sclite trn (``TEXT (ID)``, what decode writes) or CSV.

    A file named ``*.csv`` is a CSV with a header row (:func:`_read_csv`).
    JSONL when the first non-blank line starts with '{'; else trn when the file is named ``*.trn``
    or every non-blank line ends in ``(ID)``; else Kaldi. JSONL rows need ``id`` and a text: the
    reference side reads ``ref`` else ``text``, the hypothesis side ``hyp`` else ``text`` (so
    decode's hypotheses.jsonl serves as either, and a manifest as the reference); ``speaker`` (or
    ``spk``) is used when present. In Kaldi files the text is everything after the first whitespace
    (none: an empty text). A trn id is the whole ``(ID)``: its ``SPEAKER-`` part is not read as a
    speaker (give --utt2spk with those ids). Duplicate ids and malformed lines are errors naming
    ``file:line``.
    """
    path = Path(path)
    lines = _read_lines(path)
    if path.suffix.lower() == ".csv":
        return _read_csv(path, lines, side)
    first = next((line.lstrip() for line in lines if line.strip()), "")
    jsonl = first.startswith("{")
    text_keys = ("ref" if side == "ref" else "hyp", "text")
    texts: dict[str, str] = {}
    speakers: dict[str, str] = {}
    first_line: dict[str, int] = {}
    trn = {} if jsonl or not _is_trn(path, lines) else {number: (i, t) for number, i, t in _trn_rows(path, lines)}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        speaker = None
        if trn:
            utterance_id, text = trn[number]
        elif jsonl:
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise AsrbenchError(f"{where}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), (str, int)):
                raise AsrbenchError(f"{where}: expected a JSON object with an 'id' and a '{text_keys[0]}' or 'text'")
            key = next((key for key in text_keys if key in row), None)
            if key is None or not isinstance(row[key], str):
                raise AsrbenchError(f"{where}: no string '{text_keys[0]}' or 'text' field")
            utterance_id, text = str(row["id"]), row[key]
            speaker = row.get("speaker", row.get("spk"))
        else:
            if line[0].isspace():
                raise AsrbenchError(f"{where}: starts with whitespace; expected 'utterance-id text'")
            parts = line.split(None, 1)
            utterance_id, text = parts[0], parts[1] if len(parts) > 1 else ""
        if utterance_id in texts:
            seen = first_line[utterance_id]
            raise AsrbenchError(f"{where}: duplicate utterance id '{utterance_id}' (first on line {seen})")
        texts[utterance_id] = text
        first_line[utterance_id] = number
        if speaker is not None:
            speakers[utterance_id] = str(speaker)
    return Transcripts(path, texts, speakers)


def read_utt2spk(path: str | Path) -> dict[str, str]:
    """A Kaldi ``utt2spk`` file: ``utterance-id speaker-id`` per line."""
    path = Path(path)
    lines = _read_lines(path)
    speakers: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise AsrbenchError(f"{path}:{number}: expected 'utterance-id speaker-id'")
        if parts[0] in speakers:
            raise AsrbenchError(f"{path}:{number}: duplicate utterance id '{parts[0]}'")
        speakers[parts[0]] = parts[1]
    return speakers


def _missing(ids: list[str], in_file: Path, other: Path, what: str) -> AsrbenchError:
    more = f" (and {len(ids) - 1} more)" if len(ids) > 1 else ""
    return AsrbenchError(
        f"{in_file}: no {what} for utterance '{ids[0]}' of {other}{more}; "
        f"--missing-as-empty scores missing texts as empty"
    )


@dataclass
class ScoredPair:
    """A reference file scored against a hypothesis file, utterance by utterance (:func:`score_pair`)."""

    reference_file: Path
    hypothesis_file: Path
    scores: list[UtteranceScore]  # the reference file's order, then ids only the hypotheses have
    speakers: dict[str, str]  # id -> speaker where given (utt2spk, else the files' speaker fields)
    missing_hypotheses: int
    missing_references: int


def score_pair(
    reference_path: str | Path,
    hypothesis_path: str | Path,
    normalizer: str = DEFAULT_NORMALIZER,
    missing_as_empty: bool = False,
    utt2spk: str | Path | None = None,
) -> ScoredPair:
    """Match the two files' utterances by id and score each (see :func:`score_files`)."""
    refs, hyps = read_transcripts(reference_path, "ref"), read_transcripts(hypothesis_path, "hyp")
    if not refs.texts:
        raise AsrbenchError(f"{refs.path}: no utterances")
    no_hypothesis = [utterance_id for utterance_id in refs.texts if utterance_id not in hyps.texts]
    no_reference = [utterance_id for utterance_id in hyps.texts if utterance_id not in refs.texts]
    if not missing_as_empty and no_hypothesis:
        raise _missing(no_hypothesis, hyps.path, refs.path, "hypothesis")
    if not missing_as_empty and no_reference:
        raise _missing(no_reference, refs.path, hyps.path, "reference")
    ids = list(refs.texts) + no_reference
    scores = score_utterances(
        [refs.texts.get(i, "") for i in ids], [hyps.texts.get(i, "") for i in ids], normalizer, ids
    )
    speakers = {**hyps.speakers, **refs.speakers, **(read_utt2spk(utt2spk) if utt2spk else {})}
    return ScoredPair(refs.path, hyps.path, scores, speakers, len(no_hypothesis), len(no_reference))


def score_files(
    reference_path: str | Path,
    hypothesis_path: str | Path,
    normalizer: str = DEFAULT_NORMALIZER,
    missing_as_empty: bool = False,
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
    out_dir: str | Path | None = None,
    top: int = 10,
    utt2spk: str | Path | None = None,
) -> dict:
    """Score a hypothesis file against a reference file (see :func:`read_transcripts` for formats).

    Utterances are matched by id. An id in one file but not the other is an error, unless
    ``missing_as_empty``: then the missing text is scored as empty (a missing hypothesis deletes
    every reference word; a missing reference makes every hypothesis word an insertion).
    ``out_dir`` also receives the files decode writes (alignments, trn, report.json). Speakers
    come from ``utt2spk``, else from the files' ``speaker`` fields, never from the ids; the
    per-speaker rows are None when they are not known for every utterance (:func:`known_speakers`).
    """
    pair = score_pair(reference_path, hypothesis_path, normalizer, missing_as_empty, utt2spk)
    scores, speakers = pair.scores, pair.speakers
    if out_dir is not None:
        write_report(out_dir, scores, speakers, normalizer)
    return {
        **summarize(scores, normalizer).to_dict(),
        **confidence_intervals(scores, resamples, seed=seed, groups=speaker_groups(scores, speakers)),
        "reference_file": str(pair.reference_file),
        "hypothesis_file": str(pair.hypothesis_file),
        "missing_hypotheses": pair.missing_hypotheses,
        "missing_references": pair.missing_references,
        **speaker_report(scores, speakers),
        "confusions": confusions(scores, top),
    }


def render_score(result: dict, fmt: str = "table") -> str:
    """``score_files``'s result as JSON or as a short human-readable table."""
    if fmt == "json":
        return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    if fmt != "table":
        raise AsrbenchError(f"unknown format '{fmt}' (valid: table, json)")
    from rich.console import Console
    from rich.table import Table

    title = (
        f"{result['reference_file']} (reference) vs {result['hypothesis_file']} (hypothesis), "
        f"normalizer {result['normalizer']}"
    )
    table = Table(title=title)
    for header in ("utterances", "words", "WER %", "WER 95% CI", "S", "D", "I", "CER %", "CER 95% CI"):
        table.add_column(header, justify="right")
    table.add_row(
        str(result["utterances"]),
        str(result["words"]),
        format_rate(result["wer"]),
        format_ci(result["wer_ci"]),
        str(result["substitutions"]),
        str(result["deletions"]),
        str(result["insertions"]),
        format_rate(result["cer"]),
        format_ci(result["cer_ci"]),
    )
    console = Console(width=140, record=True, file=io.StringIO())
    console.print(table)
    if result.get("per_speaker"):
        console.print(_speaker_table(result["per_speaker"], result.get("speakers")))
    pairs = result["confusions"]
    if pairs["substitutions"]:
        console.print(
            "top substitutions: "
            + ", ".join(f"{p['ref']} -> {p['hyp']} ({p['count']})" for p in pairs["substitutions"]),
            soft_wrap=True,
        )
    for kind in ("deletions", "insertions"):
        if pairs[kind]:
            console.print(
                f"top {kind}: " + ", ".join(f"{p['word']} ({p['count']})" for p in pairs[kind]), soft_wrap=True
            )
    if result["missing_hypotheses"] or result["missing_references"]:
        console.print(
            f"scored as empty: {result['missing_hypotheses']} missing hypotheses, "
            f"{result['missing_references']} missing references",
            soft_wrap=True,
        )
    return console.export_text()


SPEAKER_ROWS = 30  # the table shows the worst speakers; the JSON has them all


def _speaker_table(rows: list[dict], source: str | None):
    from rich.table import Table

    ranked = sorted(rows, key=lambda row: (row["wer"] is None, -(row["wer"] or 0.0), row["speaker"]))
    shown = ranked[:SPEAKER_ROWS]
    more = f", the {len(shown)} worst shown" if len(ranked) > len(shown) else ""
    table = Table(title=f"per speaker ({len(rows)} speakers, from {source or 'the files'}{more})")
    for header in ("speaker", "utterances", "words", "WER %", "S", "D", "I", "CER %"):
        table.add_column(header, justify="left" if header == "speaker" else "right")
    for row in shown:
        table.add_row(
            row["speaker"],
            str(row["utterances"]),
            str(row["words"]),
            format_rate(row["wer"]),
            str(row["substitutions"]),
            str(row["deletions"]),
            str(row["insertions"]),
            format_rate(row["cer"]),
        )
    return table
