"""Studies: questions about architectures answered on the user's own data, with CIs.

``length`` (``asrbench study length RUN...``): WER by utterance duration, by reference length in
words and by speaker, per run, from the runs' decode results (``decode/<split>/hypotheses.jsonl``)
and the split's manifest (durations, speakers). Speakers are those the decode or the manifest
gives, never guessed from ids: a run without a speaker for every utterance has no speaker rows.
Every bin has its WER with a bootstrap CI over the bin's utterances (:mod:`asrbench.scoring.stats`, the
same resampling as ``compare``), so a claim such as
"recurrent models help most on long utterances" can be read with its uncertainty.

Duration bins are the same for every run: by default the pooled durations' quartiles (equal
numbers of utterances per bin, the edges rounded to 0.1 s), or the edges given (``--bins 0,2,4,8``).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asrbench import fileio
from asrbench.data.manifest import read_manifest, split_path
from asrbench.decoding.result import DecodeResult, read_result, result_path
from asrbench.errors import AsrbenchError
from asrbench.scoring import metrics, stats

AXES = ("duration", "words", "speaker")
WORD_BINS = (1, 2, 4, 8)  # reference words: 1, 2-3, 4-7, 8+
FORMATS = ("table", "markdown", "csv", "json")


def read_decode(run_dir: Path, split: str) -> tuple[DecodeResult, list[dict]]:
    """(result, hypotheses rows) of a run's decode of ``split``; a user error when missing."""
    if not run_dir.is_dir():
        raise AsrbenchError(f"{run_dir}: run dir not found")
    result = read_result(run_dir, split)
    path = result_path(run_dir, split).parent / "hypotheses.jsonl"
    rows = []
    lines = path.read_text(encoding="utf-8-sig").splitlines() if path.is_file() else []  # -sig: a BOM is no id
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            speaker = row.get("speaker")  # decode copies the manifest's, where it gives one
            rows.append(
                {
                    "id": str(row["id"]),
                    "ref": row["ref"],
                    "hyp": row["hyp"],
                    "speaker": None if speaker is None else str(speaker),
                }
            )
        except (ValueError, KeyError, TypeError):
            raise AsrbenchError(f"{path}:{number}: not a decode hypothesis (JSON with id, ref, hyp)") from None
    if not rows:
        raise AsrbenchError(f"{path}: no hypotheses (decode the split again)")
    return result, rows


def manifest_of(run_dir: Path, split: str, result: DecodeResult) -> Path:
    """The manifest a decode scored (its ``data_dir``'s split); a user error for a result without one."""
    if result.data_dir is None and result.system:
        raise AsrbenchError(
            f"{result_path(run_dir, split)}: an {result.system} system scored against references that are not a "
            f"prepared manifest, so no durations: score it again with the data dir's {split}.jsonl as REF"
        )
    if result.data_dir is None:
        raise AsrbenchError(f"{result_path(run_dir, split)}: no 'data_dir' (decode the split again)")
    return split_path(Path(result.data_dir), split)


def duration_edges(durations: list[float], bins: str = "auto") -> list[float]:
    """Bin edges in seconds: the quartiles of ``durations`` (``auto``) or the given ``0,2,4,8``."""
    if bins == "auto":
        inner = sorted({round(float(q), 1) for q in np.quantile(durations, [0.25, 0.5, 0.75])})
        return [0.0, *[edge for edge in inner if edge > 0], math.inf]
    try:
        edges = [float(value) for value in bins.split(",")]
    except ValueError:
        raise AsrbenchError(f"--bins '{bins}': give 'auto' or increasing seconds, e.g. 0,2,4,8") from None
    if len(edges) < 2 or edges != sorted(set(edges)) or edges[0] < 0:
        raise AsrbenchError(f"--bins '{bins}': give at least two increasing, non-negative edges")
    return edges if edges[-1] == math.inf else [*edges, math.inf]


def _label(low: float, high: float, unit: str) -> str:
    if high == math.inf:
        return f"≥ {low:g} {unit}"
    return f"{low:g}–{high:g} {unit}"


def _word_bin(words: int) -> tuple[int, str]:
    """(rank, label) of a reference length: 1, 2-3, 4-7, 8+ words."""
    for rank, (low, high, label) in enumerate(
        ((1, 2, "1 word"), (2, 4, "2–3 words"), (4, 8, "4–7 words"), (8, math.inf, "≥ 8 words"))
    ):
        if low <= words < high:
            return rank, label
    return -1, "0 words"


def length_study(
    run_dirs: Sequence[str | Path],
    split: str = "test",
    bins: str = "auto",
    resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Per run, per axis (duration, words, speaker), per bin: utterances, words, WER and its CI.

    The speaker axis is left out for a run whose speakers are not all known (see the module doc).
    Returns ``{"split", "duration_edges", "rows": [{run, model, axis, bin, order, utterances,
    words, errors, wer, wer_ci}]}``; ``order`` sorts the bins of an axis.
    """
    decoded = []
    for run_dir in map(Path, run_dirs):
        result, rows = read_decode(run_dir, split)
        manifest = manifest_of(run_dir, split, result)
        utterances = {utt.id: utt for utt in read_manifest(manifest)}
        missing = [row["id"] for row in rows if row["id"] not in utterances]
        if missing:
            raise AsrbenchError(f"{run_dir}: utterance '{missing[0]}' of its decode is not in {manifest}")
        decoded.append((run_dir, result, rows, utterances))
    if not decoded:
        raise AsrbenchError("give at least one run dir")
    pooled = [utterances[row["id"]].duration for _, _, rows, utterances in decoded for row in rows]
    edges = duration_edges(pooled, bins)
    out = []
    for run_dir, result, rows, utterances in decoded:
        scores = metrics.score_utterances(
            [row["ref"] for row in rows], [row["hyp"] for row in rows], "none", [row["id"] for row in rows]
        )
        # axis -> per utterance (rank, bin name); a speaker may be unknown (None): then no speaker rows
        keys: dict[str, list[tuple[object, str | None]]] = {"duration": [], "words": [], "speaker": []}
        for score, row in zip(scores, rows, strict=True):
            utt = utterances[score.id]
            index = next(i for i in range(len(edges) - 1) if edges[i] <= utt.duration < edges[i + 1])
            keys["duration"].append((index, _label(edges[index], edges[index + 1], "s")))
            keys["words"].append(_word_bin(score.words))
            speaker = row["speaker"] or utt.speaker
            keys["speaker"].append((speaker, speaker))
        if not all(speaker for speaker, _ in keys["speaker"]):
            keys["speaker"] = []  # not known for every utterance: no speaker rows
        errors = np.array([s.word_errors for s in scores], float)
        words = np.array([s.words for s in scores], float)
        for axis in AXES:
            groups: dict[str | None, list[int]] = {}
            order: dict[str | None, object] = {}
            for position, (rank, name) in enumerate(keys[axis]):
                groups.setdefault(name, []).append(position)
                order[name] = rank
            for name, members in groups.items():
                total = float(words[members].sum())
                wrong = float(errors[members].sum())
                ci = list(stats.bootstrap_ci(errors[members], words[members], resamples, seed=seed)) if total else None
                out.append(
                    {
                        "run": str(run_dir),
                        "model": result.model,
                        "axis": axis,
                        "bin": name,
                        "order": order[name],
                        "utterances": len(members),
                        "words": int(total),
                        "errors": int(wrong),
                        "wer": 100.0 * wrong / total if total else None,
                        "wer_ci": ci,
                    }
                )
    out.sort(key=lambda row: (AXES.index(row["axis"]), row["run"], row["order"]))
    return {"split": split, "duration_edges": [edge if edge != math.inf else None for edge in edges], "rows": out}


def _axis_rows(study: dict, axis: str) -> list[dict]:
    return [row for row in study["rows"] if row["axis"] == axis]


def _shown_axes(study: dict) -> list[str]:
    """The axes with rows: no speaker table when no run's speakers are known."""
    return [axis for axis in AXES if _axis_rows(study, axis)]


def render(study: dict, fmt: str) -> str:
    """The study as a Markdown, CSV or JSON document, or rich's plain-text tables (``table``)."""
    if fmt == "json":
        return json.dumps(study, indent=2, ensure_ascii=False) + "\n"
    if fmt == "csv":
        import csv

        buffer = io.StringIO()
        fields = ["run", "model", "axis", "bin", "utterances", "words", "errors", "wer", "wer_ci"]
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**row, "wer_ci": json.dumps(row["wer_ci"])} for row in study["rows"])
        return buffer.getvalue()
    if fmt == "markdown":
        lines = []
        for axis in _shown_axes(study):
            lines += [
                f"### WER by {axis} ({study['split']})",
                "",
                "| run | model | bin | utterances | words | WER % | WER 95% CI |",
                "|---|---|---|---:|---:|---:|---:|",
            ]
            lines += [
                f"| {row['run']} | {row['model']} | {row['bin']} | {row['utterances']} | {row['words']} | "
                f"{metrics.format_rate(row['wer'])} | {metrics.format_ci(row['wer_ci'])} |"
                for row in _axis_rows(study, axis)
            ]
            lines.append("")
        return "\n".join(lines)
    if fmt == "table":
        from rich.console import Console

        console = Console(width=140, record=True, file=io.StringIO())
        for table in rich_tables(study):
            console.print(table)
        return console.export_text()
    raise AsrbenchError(f"unknown format '{fmt}' (valid: {', '.join(FORMATS)})")


def rich_tables(study: dict) -> list:
    from rich.table import Table

    tables = []
    for axis in _shown_axes(study):
        table = Table(
            title=f"WER by {axis} ({study['split']})", caption="WER 95% CI: bootstrap over the bin's utterances"
        )
        for name in ("run", "model", "bin", "utterances", "words", "WER %", "WER 95% CI"):
            table.add_column(name, justify="left" if name in ("run", "model", "bin") else "right")
        for row in _axis_rows(study, axis):
            table.add_row(
                row["run"],
                str(row["model"]),
                row["bin"],
                str(row["utterances"]),
                str(row["words"]),
                metrics.format_rate(row["wer"]),
                metrics.format_ci(row["wer_ci"]),
            )
        tables.append(table)
    return tables


def plot_length(study: dict, path: Path) -> Path:
    """WER by duration bin, one line per run with its CI as a band (PNG)."""
    from asrbench.studies.plots import _pyplot, _save  # matplotlib is the plot extra's: imported when plotting

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.2))
    runs = list(dict.fromkeys(row["run"] for row in _axis_rows(study, "duration")))
    labels = list(dict.fromkeys(row["bin"] for row in _axis_rows(study, "duration")))
    for run in runs:
        rows = {row["bin"]: row for row in _axis_rows(study, "duration") if row["run"] == run}
        xs = [i for i, label in enumerate(labels) if label in rows and rows[label]["wer"] is not None]
        wers = [rows[labels[i]]["wer"] for i in xs]
        low = [rows[labels[i]]["wer_ci"][0] for i in xs]
        high = [rows[labels[i]]["wer_ci"][1] for i in xs]
        name = f"{rows[labels[xs[0]]]['model']} ({Path(run).name})" if xs else run
        (line,) = axes.plot(xs, wers, marker="o", label=name)
        axes.fill_between(xs, low, high, alpha=0.15, color=line.get_color())
    axes.set_xticks(range(len(labels)), labels)
    axes.set_xlabel("utterance duration")
    axes.set_ylabel(f"WER % ({study['split']}, 95% CI band)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    _save(figure, path)
    plt.close(figure)
    return path


def write_files(study: dict, out_dir: Path, markdown: str, plot=None, plot_name: str = "") -> list[Path]:
    """Any study's ``study.json`` and ``study.md`` in ``out_dir``, and ``plot(study, path)`` as
    ``plot_name`` when given (matplotlib, the plot extra); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "study.json", out_dir / "study.md"]
    fileio.write_json(written[0], study)
    fileio.write_text(written[1], markdown)
    if plot is not None:
        written.append(plot(study, out_dir / plot_name))
    return written


def write_study(study: dict, out_dir: Path, plot: bool = True) -> list[Path]:
    """``study.json``, ``study.md`` and (with the plot extra) ``wer_by_duration.png`` in ``out_dir``."""
    return write_files(study, out_dir, render(study, "markdown"), plot_length if plot else None, "wer_by_duration.png")
