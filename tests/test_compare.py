"""Comparison tables built from decode results of fake run dirs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from asrbench.compare import COLUMNS, FORMATS, collect, render, rich_table
from asrbench.errors import AsrbenchError


def fake_run(root: Path, name: str, wer: float, params: int, split: str = "test", summary: bool = True,
             **extra) -> Path:
    run_dir = root / name
    result = {
        "run": str(run_dir), "model": name, "split": split, "wer": wer, "cer": wer / 3, "params": params,
        "rtfx": 1234.5, "substitutions": 3, "deletions": 2, "insertions": 1, "words": 100,
        "utterances": 10, "normalizer": "basic-1", "config_hash": f"hash-{name}", **extra,
    }
    (run_dir / "decode" / split).mkdir(parents=True)
    (run_dir / "decode" / split / "result.json").write_text(json.dumps(result), encoding="utf-8")
    if summary:
        (run_dir / "train_summary.json").write_text(
            json.dumps({"train_seconds": 61.4, "epochs": 12}), encoding="utf-8"
        )
    return run_dir


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    return [
        fake_run(tmp_path, "lstm", 12.3456, 1_500_000),
        fake_run(tmp_path, "cnn", 8.5, 520_062, summary=False),
    ]


def test_collect_reads_result_and_summary(runs):
    rows = collect(runs)
    assert [row["model"] for row in rows] == ["lstm", "cnn"]
    lstm, cnn = rows
    assert lstm["run"] == str(runs[0])
    assert lstm["wer"] == 12.3456 and lstm["cer"] == pytest.approx(12.3456 / 3)
    assert lstm["params"] == 1_500_000
    assert lstm["train_seconds"] == 61.4 and lstm["epochs"] == 12
    assert lstm["split"] == "test"
    assert (lstm["substitutions"], lstm["deletions"], lstm["insertions"], lstm["words"]) == (3, 2, 1, 100)
    assert lstm["normalizer"] == "basic-1" and lstm["config_hash"] == "hash-lstm"
    # No train_summary.json: those columns are empty, not an error.
    assert cnn["train_seconds"] is None and cnn["epochs"] is None
    assert set(COLUMNS) <= set(lstm)


def test_collect_other_split(tmp_path):
    run = fake_run(tmp_path, "gru", 20.0, 10, split="dev")
    assert collect([run], split="dev")[0]["split"] == "dev"
    with pytest.raises(AsrbenchError, match="split 'test'"):
        collect([run])


def test_missing_result_is_an_error_naming_the_run(tmp_path, runs):
    empty = tmp_path / "not-decoded"
    empty.mkdir()
    with pytest.raises(AsrbenchError) as err:
        collect(runs + [empty])
    assert str(empty) in str(err.value)
    assert "asrbench decode" in str(err.value)


def test_corrupt_result_is_an_error(tmp_path):
    run = fake_run(tmp_path, "dnn", 1.0, 1)
    (run / "decode" / "test" / "result.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(AsrbenchError, match="result.json"):
        collect([run])


def test_json_parses_back_to_the_rows(runs):
    rows = collect(runs)
    assert json.loads(render(rows, "json")) == rows


def test_csv_parses_back_to_the_rows(runs):
    rows = collect(runs)
    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert len(parsed) == 2
    assert list(parsed[0]) == list(rows[0])  # every field, in order
    for row, back in zip(rows, parsed, strict=True):
        assert back["model"] == row["model"]
        assert float(back["wer"]) == pytest.approx(row["wer"])
        assert int(back["params"]) == row["params"]
    assert parsed[1]["train_seconds"] == ""  # None is an empty cell


def test_markdown_table(runs):
    text = render(collect(runs), "markdown")
    lines = text.splitlines()
    assert len(lines) == 4  # header, alignment, one line per run
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:2] == ["run", "model"] and "WER %" in header and "CER %" in header
    assert len(header) == len(COLUMNS)
    alignment = lines[1].strip("|").split("|")
    assert len(alignment) == len(COLUMNS) and set(alignment) <= {"---", "---:"}
    lstm = dict(zip(header, (cell.strip() for cell in lines[2].strip("|").split("|")), strict=True))
    assert lstm["model"] == "lstm"
    assert lstm["WER %"] == "12.35"  # two decimals
    assert lstm["params"] == "1.50M"
    assert lstm["train s"] == "61"
    cnn = dict(zip(header, (cell.strip() for cell in lines[3].strip("|").split("|")), strict=True))
    assert cnn["train s"] == "-" and cnn["epochs"] == "-"


def test_rich_table_has_a_row_per_run(runs):
    console = Console(file=io.StringIO(), width=200)
    console.print(rich_table(collect(runs), title="test results"))
    output = console.file.getvalue()
    assert "test results" in output
    assert "12.35" in output and "8.50" in output


def test_unknown_format_lists_valid_formats(runs):
    with pytest.raises(AsrbenchError) as err:
        render(collect(runs), "xml")
    for fmt in FORMATS:
        assert fmt in str(err.value)


def test_empty_rows_render():
    assert json.loads(render([], "json")) == []
    assert list(csv.reader(io.StringIO(render([], "csv")))) == [list(COLUMNS)]
    assert len(render([], "markdown").splitlines()) == 2
