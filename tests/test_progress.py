"""Progress bars: the line fits the terminal with its counts and ETA whole; a time budget shows."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
from helpers import RecordingBar
from rich.console import Console

from asrbench import progress as progress_module


def _render(monkeypatch, width: int, deadline_in: float | None, description: str = "conformer_aed") -> str:
    console = Console(width=width, file=io.StringIO(), force_terminal=False, record=True)
    monkeypatch.setattr(progress_module, "console", console)
    monkeypatch.delenv("ASRBENCH_NO_PROGRESS", raising=False)
    bar = progress_module.progress_bar("loss", "lr", "dev_cer")
    task = bar.add_task(description, total=5000, completed=1234, loss="0.123", lr="1.0e-03", dev_cer="12.34")
    bar.start_task(task)
    for _ in range(3):  # a few steps, so that rich has a speed to estimate the ETA from
        time.sleep(0.02)
        bar.update(task, advance=5, deadline=None if deadline_in is None else time.monotonic() + deadline_in)
    console.print(bar.get_renderable())
    return console.export_text()


@pytest.mark.parametrize("width", [80, 100, 160])
def test_counts_fields_and_eta_are_never_cut(monkeypatch, width):
    """Regression (issue 15.14): at 80 columns the bar's counts and ETA were cut off ("123…", "ETA -:-…")."""
    line = _render(monkeypatch, width, None).rstrip("\n")
    assert len(line) <= width and "\n" not in line
    assert "1249/5000 loss 0.123 lr 1.0e-03 dev_cer 12.34" in line
    assert re.search(r"ETA (\d:\d\d:\d\d|-:--:--)$", line), line
    assert line.startswith("conformer_aed")


def test_a_time_budget_shows_the_time_left_in_it(monkeypatch):
    """Regression (issue 15.14): under a time budget the bar showed an ETA for epochs it would never reach."""
    line = _render(monkeypatch, 80, 5.0).rstrip("\n")  # the work would need about 16 s more
    assert re.search(r"budget 0:00:0[45]$", line), line
    # A budget that outlasts the work leaves the ordinary ETA.
    assert re.search(r"ETA \d:\d\d:\d\d$", _render(monkeypatch, 80, 10 * 24 * 3600.0).rstrip("\n"))


def test_a_narrow_terminal_drops_the_bar_then_shortens_the_description(monkeypatch):
    line = _render(monkeypatch, 70, None, description="a rather long description of the task").rstrip("\n")
    assert len(line) <= 70 and "━" not in line and "…" in line
    assert line.endswith(line.split(" 1249/5000")[1][-11:]) and "1249/5000" in line


# --- issue 28.14: feedback on work that takes seconds to minutes -------------------------------------


def test_counts_say_what_they_count(monkeypatch):
    """Regression (issue 28.14): ``24/24 hours 0.04/0.04`` read as "24 hours": the counts had no unit."""
    console = Console(width=120, file=io.StringIO(), force_terminal=False, record=True)
    monkeypatch.setattr(progress_module, "console", console)
    monkeypatch.delenv("ASRBENCH_NO_PROGRESS", raising=False)
    bar = progress_module.progress_bar("audio", unit="utterances")
    task = bar.add_task("train features", total=24, completed=24, audio="0.04/0.04 h")
    assert bar._tail(bar.tasks[task], elapsed=False).startswith("24/24 utterances audio 0.04/0.04 h ETA")


def test_feature_extraction_counts_utterances_and_hours_of_audio(monkeypatch, tmp_path):
    """Regression (issue 28.14): the feature store's bar read ``24/24 hours 0.04/0.04``."""
    from helpers import write_tone_corpus

    import asrbench.data.store as store_module
    from asrbench.data.features import extract_data_dir
    from asrbench.recipe.config import FeatureConfig

    bars = []

    def recording(*fields, **settings):
        bars.append(progress_module.progress_bar(*fields, **settings))
        return bars[-1]

    monkeypatch.setattr(store_module, "progress_bar", recording)
    data_dir = write_tone_corpus(tmp_path)
    extract_data_dir(data_dir, FeatureConfig(sample_rate=8000, num_mel_bins=23), [], ["train"], 1)
    (task,) = bars[0].tasks
    assert re.match(r"12/12 utterances audio 0\.0\d/0\.0\d h ", bars[0]._tail(task, elapsed=False)), bars[0]._tail(
        task, elapsed=False
    )


def test_a_long_file_moves_the_transcribe_bar_by_seconds_of_audio(monkeypatch):
    """Regression (issue 28.14): one long file showed a bar that did not move until the file ended."""
    import asrbench.deploy.transcribe as transcribe_module
    from asrbench.deploy.transcribe import Transcriber, _Piece

    bar = RecordingBar()
    monkeypatch.setattr(transcribe_module, "progress_bar", bar)
    monkeypatch.setattr(transcribe_module, "audio_info", lambda path: (600.0, 16000))
    transcriber = object.__new__(Transcriber)  # a model is not needed: pieces and decoding are stubbed
    transcriber.stream = None
    transcriber._pieces = lambda index, path, duration: (
        _Piece(index, start, start + 30.0, None) for start in range(0, 600, 30)
    )
    decoded_at = []
    transcriber._decode = lambda pieces: decoded_at.append(bar.completed) or []
    (transcript,) = list(transcriber.transcribe([Path("long.wav")]))
    assert transcript.duration == 600.0 and bar.total == 600 and bar.unit == "s audio"
    assert bar.history[:-1] == [120.0, 240.0, 360.0, 480.0, 600.0]  # after each batch of 120 s, then the file
    assert bar.completed == 600.0 and bar.fields["files"] == "1/1"


def test_report_shows_progress_over_its_parts(monkeypatch, tmp_path):
    """Regression (issue 28.14): ``report`` was silent for ~16 s."""
    import json

    import asrbench.studies.report as report_module

    data = tmp_path / "data"
    data.mkdir()
    manifest = [{"id": f"u{i}", "audio": f"{i}.wav", "duration": 1.0 + i, "text": "YES NO"} for i in range(4)]
    (data / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in manifest))
    runs = []
    for name in ("cnn", "gru"):
        decoded = tmp_path / name / "decode" / "test"
        decoded.mkdir(parents=True)
        (decoded / "result.json").write_text(
            json.dumps(
                {
                    "model": name,
                    "data_dir": str(data),
                    "wer": 50.0,
                    "cer": 20.0,
                    "params": 1000,
                    "rtfx": 50.0,
                    "words": 8,
                }
            )
        )
        (decoded / "hypotheses.jsonl").write_text(
            "".join(
                json.dumps({"id": row["id"], "ref": row["text"], "hyp": "NO", "duration": row["duration"]}) + "\n"
                for row in manifest
            )
        )
        runs.append(tmp_path / name)
    bar = RecordingBar()
    monkeypatch.setattr(report_module, "progress_bar", bar)
    report_module.build_report(runs, worst=3)
    assert bar.total == 3 + 2 * (1 + 3)  # comparison, plots, lengths; per run: scoring and 3 worst utterances
    assert bar.completed == bar.total and len(bar.history) >= bar.total
    assert bar.history == sorted(bar.history)
