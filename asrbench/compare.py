"""Tables of decode results across runs: rich in the terminal, or Markdown, CSV, JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.table import Table

from asrbench import rundir
from asrbench.errors import AsrbenchError

FORMATS = ("table", "markdown", "csv", "json")
COLUMNS = ("run", "model", "params", "wer", "cer", "rtfx", "train_seconds", "epochs", "split")


def collect(run_dirs: list[str | Path], split: str = "test") -> list[dict]:
    """One row per run, read from ``decode/<split>/result.json`` and ``train_summary.json``."""
    rows = []
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        result_path = run_dir / "decode" / split / "result.json"
        if not result_path.is_file():
            raise AsrbenchError(f"{run_dir}: no decode result for split '{split}' (run `asrbench decode` first)")
        result = rundir.read_json(result_path)
        summary_path = run_dir / rundir.SUMMARY
        summary = rundir.read_json(summary_path) if summary_path.is_file() else {}
        rows.append(
            {
                "run": str(run_dir),
                "model": result.get("model"),
                "params": result.get("params"),
                "wer": result.get("wer"),
                "cer": result.get("cer"),
                "rtfx": result.get("rtfx"),
                "train_seconds": summary.get("train_seconds"),
                "epochs": summary.get("epochs"),
                "split": split,
                "substitutions": result.get("substitutions"),
                "deletions": result.get("deletions"),
                "insertions": result.get("insertions"),
                "words": result.get("words"),
                "utterances": result.get("utterances"),
                "normalizer": result.get("normalizer"),
                "config_hash": result.get("config_hash"),
            }
        )
    return rows


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key in ("wer", "cer"):
        return f"{value:.2f}"
    if key == "rtfx":
        return f"{value:,.0f}"
    if key == "params":
        return f"{value / 1e6:.2f}M"
    if key == "train_seconds":
        return f"{value:.0f}"
    return str(value)


HEADERS = {"run": "run", "model": "model", "params": "params", "wer": "WER %", "cer": "CER %", "rtfx": "RTFx",
           "train_seconds": "train s", "epochs": "epochs", "split": "split"}


def rich_table(rows: list[dict], title: str | None = None) -> Table:
    table = Table(title=title)
    for key in COLUMNS:
        table.add_column(HEADERS[key], justify="left" if key in ("run", "model", "split") else "right")
    best = min((row["wer"] for row in rows if row["wer"] is not None), default=None)
    for row in rows:
        style = "bold green" if row["wer"] is not None and row["wer"] == best else None
        table.add_row(*(_cell(key, row[key]) for key in COLUMNS), style=style)
    return table


def render(rows: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(HEADERS[k] for k in COLUMNS) + " |",
                 "|" + "|".join("---" if k in ("run", "model", "split") else "---:" for k in COLUMNS) + "|"]
        lines += ["| " + " | ".join(_cell(k, row[k]) for k in COLUMNS) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    if fmt == "table":
        from rich.console import Console

        console = Console(width=140, record=True, file=io.StringIO())
        console.print(rich_table(rows))
        return console.export_text()
    raise AsrbenchError(f"unknown format '{fmt}' (valid: {', '.join(FORMATS)})")
