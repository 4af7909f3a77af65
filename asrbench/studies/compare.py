"""Tables of decode results across runs: rich in the terminal, or Markdown, CSV, JSON."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from asrbench.decoding.result import DecodeResult, read_result
from asrbench.errors import AsrbenchError
from asrbench.runs import rundir
from asrbench.scoring import metrics, stats

FORMATS = ("table", "markdown", "csv", "json")
COLUMNS = (
    "run",
    "model",
    "units",
    "params",
    "gflops_per_second",
    "wer",
    "wer_ci",
    "vs_best",
    "cer",
    "rtfx",
    "rtfx_end_to_end",
    "train_seconds",
    "train_audio_hours_per_hour",
    "peak_memory_mb",
    "epochs",
    "split",
)
# Shown when a row was decoded in chunks (decode --chunk-ms): its latency and its full-context WER.
STREAM_COLUMNS = ("chunk_ms", "full_context_wer", "algorithmic_latency_ms", "final_latency_ms_p90")
HYPOTHESES = "hypotheses.jsonl"
# vs_best: the run with the lowest WER among runs decoded on the same utterances, and whether each
# other run is significantly worse than it (stats.compare_systems' matched-pairs test at alpha).
BEST, NOT_WORSE, WORSE = "best", "not significantly worse", "significantly worse"
# A row's test set: a short hash of its sorted utterance ids with their (normalized) references, and
# the utterance count. Rows of different sets are never ranked against each other.
TEST_SET_COLUMN = "test_set"


def is_run_dir(path: Path) -> bool:
    """A folder `asrbench train` made (config.yaml), or one holding decode results."""
    return path.is_dir() and (
        (path / rundir.CONFIG).is_file() or (path / "decode").is_dir() or (path / rundir.SUMMARY).is_file()
    )


def select_runs(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(run dirs, other paths) of a shell glob such as ``runs/an4/*``, which also matches LM dirs
    and result files. With a single path nothing is set aside: :func:`collect` names it.

    The shell expands the glob, so a glob's match is told from a path the user named by what a glob
    can give: a path that exists, in the folder of another argument. A path that does not exist (a
    typo) is an error, and so is one alone in its folder that is not a run dir.
    """
    named = [Path(path) for path in paths]
    for path in named:
        if not path.exists():
            raise AsrbenchError(f"{path}: run dir not found")
    if len(named) < 2:
        return named, []
    runs = [path for path in named if is_run_dir(path)]
    if not runs:
        return named, []  # collect says what the first one is
    others = [path for path in named if not is_run_dir(path)]
    for path in others:
        if sum(other.parent == path.parent for other in named) < 2:  # no other match of a glob beside it
            raise AsrbenchError(f"{path}: not a run dir (no {rundir.CONFIG} or decode/ in it)")
    return runs, others


def collect(
    run_dirs: Sequence[str | Path],
    split: str = "test",
    resamples: int = stats.DEFAULT_RESAMPLES,
    alpha: float = stats.DEFAULT_ALPHA,
    seed: int = 0,
    allow_mixed: bool = False,
    resample: str = "auto",
    correction: str = "holm",
    group_seeds: bool = True,
) -> list[dict]:
    """One row per run, read from ``decode/<split>/result.json`` (:func:`asrbench.decoding.result.read_result`)
    and ``train_summary.json``.

    Each row names its test set (``test_set``: a short hash of the sorted utterance ids and their
    normalized references, from ``hypotheses.jsonl``; ``test_set_utterances``: their count; None
    without hypotheses). Rows of different test sets are refused (:class:`AsrbenchError` naming
    the runs and their sets) unless ``allow_mixed``: then each set is ranked on its own.

    ``wer_ci`` comes from result.json, or is computed from ``hypotheses.jsonl`` for results
    decoded before CIs were written. Runs of one test set are compared pairwise: each row's
    ``pairs`` lists, per other run, ``p_better`` (paired bootstrap probability that this run's WER
    is lower), the sign test's and the matched-pairs test's p-values; ``vs_best`` says whether the
    run is the best of its set (a run alone on its set is), not significantly worse, or
    significantly worse (None where the WER is undefined or the set unknown).

    ``resample`` (docs/statistics.md): ``speaker`` resamples speakers (the speaker of each utterance
    in ``hypotheses.jsonl``; an error naming the file when one has none), ``utterance`` utterances,
    ``auto`` speakers where every utterance of the set has one and there are two or more, else
    utterances. With speakers, ``wer_ci`` is recomputed speaker-blocked. ``vs_best`` is corrected over
    the comparisons with the best (``correction``: holm, bh or none). Each row's ``statistics`` says
    how: the resampling, the speakers, the deciding test, the correction, its p-value against the best
    (raw and adjusted) and the test set's minimum detectable difference (``mdd``, WER points).

    ``group_seeds``: runs whose resolved configs differ only by ``train.seed``, decoded alike on the
    same test set, are one system: one row (``seeds``: how many, ``runs``: which; the WER pools their
    errors, the other figures are means) whose interval and tests resample the seeds with the test
    units (stats.compare_seeded_systems). False keeps one row per run.
    """
    if resample not in ("auto", *stats.RESAMPLING):
        raise AsrbenchError(f"unknown resampling '{resample}' (valid: auto, {', '.join(stats.RESAMPLING)})")
    if correction not in stats.CORRECTIONS:
        raise AsrbenchError(f"unknown correction '{correction}' (valid: {', '.join(stats.CORRECTIONS)})")
    rows, utterance_errors = [], []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        rows.append(_read_row(run_dir, split))
        hypotheses = run_dir / "decode" / split / HYPOTHESES
        found = read_utterance_errors(hypotheses)
        rows[-1][TEST_SET_COLUMN] = test_set_hash(found[0]) if found else None
        rows[-1]["test_set_utterances"] = len(found[0]) if found else None
        if found and resample == "speaker" and found[3] is None:
            raise AsrbenchError(
                f"{hypotheses}: an utterance without a speaker, so --resample speaker cannot block by "
                "speaker (use --resample utterance, or give the manifest speakers)"
            )
        utterance_errors.append(found)
    if not allow_mixed:
        _refuse_mixed_sets(rows, utterance_errors)
    stacked = [None if found is None else (*found[:1], found[1][None, :], *found[2:]) for found in utterance_errors]
    if group_seeds:
        rows, stacked = _group_seeds(rows, stacked, [Path(r) for r in run_dirs])
    _add_significance(rows, stacked, resamples, alpha, seed, resample, correction)
    return rows


def _read_row(run_dir: Path, split: str) -> dict:
    """One run's row from its decode of ``split`` (result.json) and train_summary.json (:func:`collect`)."""
    if not run_dir.exists():
        raise AsrbenchError(f"{run_dir}: run dir not found")
    if not is_run_dir(run_dir):
        raise AsrbenchError(f"{run_dir}: not a run dir (no {rundir.CONFIG} or decode/ in it)")
    result = read_result(run_dir, split)
    summary_path = run_dir / rundir.SUMMARY
    summary = rundir.read_json(summary_path) if summary_path.is_file() else {}
    streamed = result.streaming
    return {
        "run": str(run_dir),
        "model": result.model,
        "units": result.units,
        "params": result.params,
        "wer": result.wer,
        "wer_ci": _listed(result.wer_ci),
        "vs_best": None,
        "cer": result.cer,
        "cer_ci": _listed(result.cer_ci),
        "ter": result.ter,
        "rtfx": result.rtfx,
        "train_seconds": summary.get("train_seconds"),
        "epochs": summary.get("epochs"),
        **_cost(result, run_dir, summary),
        "split": split,
        "substitutions": result.substitutions,
        "deletions": result.deletions,
        "insertions": result.insertions,
        "words": result.words,
        "utterances": result.utterances,
        "normalizer": result.normalizer,
        "config_hash": result.config_hash,
        "decoder": result.decoder.kind if result.decoder else None,
        "environment": result.environment,
        **{key: getattr(streamed, key) if streamed else None for key in STREAM_COLUMNS},
        "streaming": streamed.to_dict() if streamed else None,
        "seeds": 1,
        "runs": [str(run_dir)],
        "pairs": [],
        "system": result.system,  # "external": scored from its transcripts (`score --name`); None: a run
    }


def _seedless_key(run_dir: Path) -> tuple[str, int] | None:
    """(the hash of a run's resolved config with its seed set aside, the seed); None without a config."""
    if not (run_dir / rundir.CONFIG).is_file():
        return None
    config = rundir.read_config(run_dir)
    seed = config.train.seed
    config.train.seed = 0
    return config.hash(), seed


def _group_seeds(rows: list[dict], stacked: list, run_dirs: list[Path]) -> tuple[list[dict], list]:
    """Rows of runs that differ only by seed (same config otherwise, decoder, test set) merged into one."""
    groups: dict[tuple, list[int]] = {}
    seeds: dict[tuple, list[int]] = {}
    order: list[tuple] = []
    for index, (row, found, run_dir) in enumerate(zip(rows, stacked, run_dirs, strict=True)):
        seedless = _seedless_key(run_dir) if found is not None else None
        key = (seedless[0], row.get("decoder"), found[0] if found else None) if seedless else ("run", index)
        if seedless and seedless[1] in seeds.get(key, []):  # the same seed again (a copy, a re-decode): its own row
            key = ("run", index)
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append(index)
        if seedless:
            seeds.setdefault(key, []).append(seedless[1])
    merged_rows, merged_stacks = [], []
    for key in order:
        members = groups[key]
        first = rows[members[0]]
        if len(members) == 1:
            merged_rows.append(first)
            merged_stacks.append(stacked[members[0]])
            continue
        found = stacked[members[0]]
        errors = np.concatenate([stacked[i][1] for i in members])  # (m, U)
        row = {**first, "seeds": len(members), "runs": [rows[i]["run"] for i in members]}
        row["run"] = f"{first['run']} (+{len(members) - 1} seeds)"
        words = float(found[2].sum())
        row["wer"] = 100 * float(errors.sum()) / (len(members) * words) if words else None
        row["wer_ci"], row["cer_ci"] = None, None
        for field in (
            "cer",
            "ter",
            "rtfx",
            "rtfx_end_to_end",
            "train_seconds",
            "epochs",
            "gflops_per_second",
            "train_audio_hours_per_hour",
            "peak_memory_mb",
        ):
            values = [rows[i].get(field) for i in members]
            numbers = [float(v) for v in values if isinstance(v, (int, float))]
            row[field] = float(np.mean(numbers)) if numbers and len(numbers) == len(values) else None
        row["config_hash"] = ",".join(dict.fromkeys(str(rows[i].get("config_hash")) for i in members))
        merged_rows.append(row)
        merged_stacks.append((found[0], errors, *found[2:]))
    return merged_rows, merged_stacks


def _cost(result: DecodeResult, run_dir: Path, summary: dict) -> dict:
    """A row's cost beside its accuracy: the model's GFLOPs per second of audio, the end-to-end RTFx
    and its conditions (result.json); the training throughput (audio hours trained per hour of
    ``train_seconds``) and peak memory (train_summary.json; the audio from metrics.jsonl for runs
    older than ``audio_hours_trained``). None where the files do not record it."""
    hours = summary.get("audio_hours_trained")
    if hours is None and summary:
        hours = rundir.audio_hours_trained(run_dir)
    seconds = summary.get("train_seconds")
    peak = summary.get("peak_memory") or {}
    return {
        "gflops_per_second": result.gflops_per_second,
        "rtfx_end_to_end": result.rtfx_end_to_end,
        "end_to_end_batch_size": result.end_to_end_batch_size,
        "end_to_end_threads": result.end_to_end_threads,
        "train_audio_hours": hours,
        "train_audio_hours_per_hour": hours / (seconds / 3600) if hours is not None and seconds else None,
        "peak_memory_mb": peak.get("mb"),
        "peak_memory_kind": peak.get("kind"),
    }


def _listed(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else list(interval)


def test_set_hash(key: tuple) -> str:
    """8 hex digits naming a test set: its sorted (id, normalized reference) pairs."""
    digest = hashlib.sha256()
    for utterance_id, reference in key:
        digest.update(f"{utterance_id}\t{reference}\n".encode())
    return digest.hexdigest()[:8]


def test_set_label(row: dict) -> str:
    """``1a2b3c4d (30)``: the set's hash and its utterance count; ``unknown`` without hypotheses."""
    if row.get(TEST_SET_COLUMN) is None:
        return "unknown"
    return f"{row[TEST_SET_COLUMN]} ({row['test_set_utterances']})"


def _refuse_mixed_sets(rows: list[dict], utterance_errors: list) -> None:
    """A one-line error naming each test set and its runs, when the rows hold more than one."""
    sets: dict[str | None, list[str]] = {}
    for row in rows:
        sets.setdefault(row[TEST_SET_COLUMN], []).append(row["run"])
    if len(sets) < 2:
        return
    counts = {row[TEST_SET_COLUMN]: row["test_set_utterances"] for row in rows}
    parts = [
        f"test set {name} ({counts[name]} utterances): {', '.join(runs)}"
        if name is not None
        else f"unknown test set (no {HYPOTHESES}): {', '.join(runs)}"
        for name, runs in sets.items()
    ]
    id_lists = {tuple(i for i, _ in found[0]) for found in utterance_errors if found}
    known = sum(name is not None for name in sets)
    same_ids = (
        " (the same utterance ids with different reference texts: see each run's normalizer)"
        if known > 1 and len(id_lists) == 1
        else ""
    )
    raise AsrbenchError(
        "runs decoded on different test sets are not ranked against each other: "
        + "; ".join(parts)
        + same_ids
        + "; compare runs of one set, or rank within each set "
        "with `asrbench compare --allow-mixed`"
    )


def read_utterance_errors(path: Path) -> tuple[tuple, np.ndarray, np.ndarray, tuple | None] | None:
    """Per-utterance word errors of a decode's hypotheses.jsonl, sorted by id, or None without one.

    Returns (key, errors (U,), words (U,), speakers (U,) or None when an utterance has none); ``key``
    (ids and references) identifies the test set. The stored texts are already normalized, so they
    are rescored with the ``none`` normalizer.
    """
    if not path.is_file():
        return None
    refs, hyps = metrics.read_transcripts(path, "ref"), metrics.read_transcripts(path, "hyp")
    ids = sorted(refs.texts)
    if not ids:
        return None
    scores = metrics.score_utterances([refs.texts[i] for i in ids], [hyps.texts[i] for i in ids], "none", ids)
    key = tuple((i, refs.texts[i]) for i in ids)
    speakers = _speakers(path)
    known = tuple(speakers.get(i) for i in ids)
    return (
        key,
        np.array([s.word_errors for s in scores], float),
        np.array([s.words for s in scores], float),
        known if all(speaker is not None for speaker in known) else None,
    )


def _speakers(path: Path) -> dict[str, str]:
    """id -> speaker of the hypotheses.jsonl rows that name one (decode writes the manifest's)."""
    speakers = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                if isinstance(row, dict) and row.get("speaker") is not None and "id" in row:
                    speakers[str(row["id"])] = str(row["speaker"])
    return speakers


def _add_significance(
    rows: list[dict],
    utterance_errors: list,
    resamples: int,
    alpha: float,
    seed: int,
    resample: str = "auto",
    correction: str = "holm",
) -> None:
    groups: dict[tuple, list[int]] = {}
    for index, found in enumerate(utterance_errors):
        if found is None:
            continue
        key, errors, words, _ = found
        if not words.sum() > 0:
            continue  # no reference words: the WER, its CI and any test are undefined ("n/a")
        groups.setdefault(key, []).append(index)
    for members in groups.values():
        stacks = [utterance_errors[i][1] for i in members]  # (seeds, U) each
        words = utterance_errors[members[0]][2]
        known = {utterance_errors[i][3] for i in members}  # every run's speakers, or none are known
        speakers = known.pop() if len(known) == 1 else None
        blocked = speakers is not None and resample != "utterance" and len(set(speakers)) >= 2
        if resample == "speaker" and not blocked:
            raise AsrbenchError(
                f"{rows[members[0]]['run']}: --resample speaker needs two or more speakers, the same for each "
                "utterance in every run of the test set"
            )
        names = [str(index) for index in members]
        seeded = any(stack.shape[0] > 1 for stack in stacks)
        options: dict[str, Any] = {
            "alpha": alpha,
            "seed": seed,
            "groups": speakers if blocked else None,
            "correction": correction,
        }
        if seeded:  # a row of several seeds: they are resampled too
            comparison = stats.compare_seeded_systems(stacks, words, names, resamples, **options)
        else:
            comparison = stats.compare_systems(np.concatenate(stacks), words, names, resamples, **options)
        for index, system in zip(members, comparison.systems, strict=True):
            row = rows[index]
            if blocked or seeded or row["wer_ci"] is None:
                row["wer_ci"] = [float(value) for value in system.ci]
            if len(members) > 1:
                row["vs_best"] = BEST if system.best else NOT_WORSE if system.not_significantly_worse else WORSE
            else:  # alone on its test set: the best of it, with nothing to test against
                row["vs_best"] = BEST
            row["statistics"] = {
                "resample": comparison.resample,
                "speakers": comparison.speakers,
                "test": decision_name(comparison.test, comparison.resample),
                "seeds": int(stacks[members.index(index)].shape[0]),
                "correction": comparison.correction,
                "alpha": alpha,
                "p_value": system.p_value,
                "p_adjusted": system.p_adjusted,
                "mdd": comparison.mdd if len(members) > 1 else None,
                "systems": len(members),
            }
            for other in members:
                if other == index:
                    continue
                pair = comparison.pair(str(index), str(other))
                row["pairs"].append(
                    {
                        "run": rows[other]["run"],
                        "p_better": pair.p_a_better,
                        "sign_p": pair.sign_p,
                        "mp_p": pair.mp_p,
                        "speaker_p": pair.speaker_p,
                        "speaker_bootstrap_p": pair.speaker_bootstrap_p,
                    }
                )


def decision_name(test: str, resample: str) -> str:
    """The deciding test in words, as the legend gives it (stats.decision_p)."""
    if test == "seeded":
        return "hierarchical bootstrap t test (seeds and test units resampled)"
    if resample == "speaker":
        return "speaker-blocked bootstrap t test" if test == "bootstrap" else "speaker sign-flip test"
    return {"mp": "matched-pairs test", "sign": "sign test", "bootstrap": "paired bootstrap"}[test]


CORRECTION_NAMES = {"holm": "Holm-corrected", "bh": "Benjamini-Hochberg-corrected", "none": "uncorrected"}


MARKS = {BEST: "best", NOT_WORSE: "yes", WORSE: "no"}
LEGEND = (  # the utterance-resampled form; statistics_legend() words the rows' own
    "≈best: 'best' is the lowest WER among runs decoded on the same utterances; 'yes' a run not "
    "significantly worse than it (per-utterance matched-pairs test), 'no' one that is. "
    "WER 95% CI: bootstrap over utterances."
)


def statistics_legend(rows: list[dict]) -> str | None:
    """What the ≈best marks and the CIs mean for these rows: the resampling (speakers or utterances),
    the deciding test, the correction, and per test set the smallest difference it can show."""
    described = [row["statistics"] for row in rows if row.get("statistics")]
    if not described:
        return LEGEND if _has_statistics(rows) else None
    first = described[0]
    by_speaker = [d for d in described if d["resample"] == "speaker"]
    if by_speaker and len(by_speaker) == len(described):
        counts = sorted({d["speakers"] for d in by_speaker})
        unit = f"speakers ({', '.join(str(c) for c in counts)} on the test set{'s' if len(counts) > 1 else ''})"
        ci = (
            "WER 95% CI: speaker-blocked bootstrap (speakers resampled with their utterances; log-t "
            "interval, t with speakers - 1 degrees of freedom)."
        )
    elif by_speaker:
        unit = "speakers where every utterance has one, else utterances"
        ci = "WER 95% CI: speaker-blocked bootstrap where speakers are known, else bootstrap over utterances."
    else:
        unit = "utterances"
        ci = "WER 95% CI: bootstrap over utterances."
    parts = [
        "≈best: 'best' is the lowest WER among runs decoded on the same utterances; 'yes' a run not "
        f"significantly worse than it, 'no' one that is: {first['test']} over {unit} at α = {first['alpha']:g}, "
        f"{CORRECTION_NAMES[first['correction']]} over each run's comparison with the best.",
        ci,
    ]
    mdds: dict[str | None, float] = {}
    for row in rows:
        found = row.get("statistics") or {}
        if found.get("mdd") is not None and np.isfinite(found["mdd"]):
            mdds.setdefault(row.get(TEST_SET_COLUMN), found["mdd"])
    if len(mdds) == 1:
        parts.append(
            f"Differences under {next(iter(mdds.values())):.2f} WER points cannot be told apart on this test set "
            "(the paired test's 80% power at α; median over the comparisons with the best)."
        )
    elif mdds:
        listed = ", ".join(f"{name}: {value:.2f}" for name, value in mdds.items())
        parts.append(f"Smallest differences each test set can show (WER points, 80% power): {listed}.")
    return " ".join(parts)


MIXED_LEGEND = (
    "Test set: a hash of the utterance ids and references, and the utterance count; runs are ranked "
    "only within their own set (--allow-mixed)."
)


def _cell(key: str, value) -> str:
    if key in ("wer", "cer"):
        return metrics.format_rate(value)  # "n/a": no reference words, the rate is undefined
    if key == "wer_ci":
        return metrics.format_ci(value)
    if value is None:
        return "-"
    if key == "vs_best":
        return MARKS.get(value, str(value))
    if key in ("rtfx", "rtfx_end_to_end", "peak_memory_mb"):
        return f"{value:,.0f}"
    if key == "params":
        return f"{value / 1e6:.2f}M"
    if key == "gflops_per_second":
        return f"{value:.3g}"  # three significant digits: tiny models too
    if key == "train_audio_hours_per_hour":
        return f"{value:,.1f}"
    if key in ("train_seconds", "algorithmic_latency_ms", "final_latency_ms_p90", "chunk_ms"):
        return f"{value:.0f}"
    if key == "full_context_wer":
        return metrics.format_rate(value)
    return str(value)


HEADERS = {
    "run": "run",
    "model": "model",
    "units": "units",
    "params": "params",
    "wer": "WER %",
    "wer_ci": "WER 95% CI",
    "vs_best": "≈best",
    "cer": "CER %",
    "gflops_per_second": "GFLOPs/s",
    "rtfx": "RTFx",
    "rtfx_end_to_end": "RTFx e2e",
    "train_seconds": "train s",
    "train_audio_hours_per_hour": "train audio h/h",
    "peak_memory_mb": "peak MB",
    "epochs": "epochs",
    "seeds": "seeds",
    "split": "split",
    "chunk_ms": "chunk ms",
    "full_context_wer": "full-context WER %",
    "algorithmic_latency_ms": "algorithmic latency ms",
    "final_latency_ms_p90": "final latency p90 ms",
    TEST_SET_COLUMN: "test set",
}


def is_mixed(rows: list[dict]) -> bool:
    """Whether the rows come from more than one test set (possible only with --allow-mixed)."""
    return len({row.get(TEST_SET_COLUMN) for row in rows}) > 1


def columns(rows: list[dict]) -> tuple[str, ...]:
    """The table's columns: the streaming ones after RTFx when a row was decoded in chunks; the
    test set before the WER when the rows come from several sets."""
    shown: tuple[str, ...] = COLUMNS
    if any((row.get("seeds") or 1) > 1 for row in rows):  # systems of several seeds: how many
        at = shown.index("model") + 1
        shown = shown[:at] + ("seeds",) + shown[at:]
    if is_mixed(rows):
        at = shown.index("wer")
        shown = shown[:at] + (TEST_SET_COLUMN,) + shown[at:]
    if not any(row.get("chunk_ms") for row in rows):
        return shown
    at = shown.index("rtfx") + 1
    return shown[:at] + STREAM_COLUMNS + shown[at:]


EXTERNAL_LEGEND = (
    "(external): a system scored from its transcripts (`asrbench score --name`), not trained or "
    "decoded here: no parameters, cost or training time."
)


def _row_cells(row: dict, shown: tuple[str, ...]) -> list[str]:
    cells = [test_set_label(row) if key == TEST_SET_COLUMN else _cell(key, row.get(key)) for key in shown]
    if row.get("system") and "model" in shown:
        at = shown.index("model")
        cells[at] = f"{cells[at]} ({row['system']})"
    return cells


def _has_statistics(rows: list[dict]) -> bool:
    return any(row.get("wer_ci") is not None or row.get("vs_best") is not None for row in rows)


def _legend(rows: list[dict]) -> str | None:
    described = statistics_legend(rows)
    legend = [described] if described else []
    legend += [MIXED_LEGEND] if is_mixed(rows) else []
    legend += [EXTERNAL_LEGEND] if any(row.get("system") for row in rows) else []
    return " ".join(legend) or None


def rich_table(rows: list[dict], title: str | None = None) -> Table:
    table = Table(title=title, caption=_legend(rows))
    shown = columns(rows)
    for key in shown:
        table.add_column(HEADERS[key], justify="left" if key in ("run", "model", "units", "split") else "right")
    for row in rows:  # the best of each test set; a row of an unknown set is never marked
        table.add_row(*_row_cells(row, shown), style="bold green" if row.get("vs_best") == BEST else None)
    return table


def fitted_width(table: Table, least: int = 140) -> int:
    """The console width that shows every cell of ``table`` unwrapped (at least ``least``): sixteen
    columns of cost beside accuracy do not fit in 140 without cutting the run names."""
    return max(least, Console(width=1000).measure(table).maximum)


def _csv_value(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _provenance(rows: list[dict]) -> list[str]:
    """The Markdown report's second table: where each number comes from."""
    lines = [
        "| run | test set | config hash | decoder | asrbench | git commit | torch | device | CPU/GPU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        env = row.get("environment") or {}
        commit = str(env.get("git_commit") or "-")
        commit = commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")
        cells = [
            row["run"],
            test_set_label(row),
            row.get("config_hash") or "-",
            row.get("decoder") or "-",
            env.get("asrbench_version") or "-",
            commit,
            env.get("torch_version") or "-",
            env.get("device") or "-",
            env.get("gpu") or env.get("cpu") or "-",
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return lines


def render(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else list(COLUMNS))
        writer.writeheader()
        writer.writerows({key: _csv_value(value) for key, value in row.items()} for row in rows)
        return buffer.getvalue()
    if fmt == "markdown":
        shown = columns(rows)
        lines = [
            "| " + " | ".join(HEADERS[k] for k in shown) + " |",
            "|" + "|".join("---" if k in ("run", "model", "units", "split") else "---:" for k in shown) + "|",
        ]
        lines += ["| " + " | ".join(_row_cells(row, shown)) + " |" for row in rows]
        legend = _legend(rows)
        if legend:
            lines += ["", legend]
        lines += ["", *_provenance(rows)]
        return "\n".join(lines) + "\n"
    if fmt == "table":
        from rich.console import Console

        table = rich_table(rows)
        console = Console(width=fitted_width(table), record=True, file=io.StringIO())
        console.print(table)
        return console.export_text()
    raise AsrbenchError(f"unknown format '{fmt}' (valid: {', '.join(FORMATS)})")
