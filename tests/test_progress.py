"""Progress bars: the line fits the terminal with its counts and ETA whole; a time budget shows."""

from __future__ import annotations

import io
import re
import time

import pytest
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
