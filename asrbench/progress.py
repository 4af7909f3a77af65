"""One look for every progress bar: description, bar, counts, extra fields, elapsed and ETA.

The line always fits the terminal: the counts, the fields and the ETA are never cut; the bar
takes the width that is left (and goes when fewer than 10 columns are left), then the elapsed
time goes, and only then is the description shortened. Under a time budget (``deadline``, a
``time.monotonic()`` value, set with ``progress.update(task, deadline=...)``), the ETA is the time
left in the budget whenever the budget ends the work before its last step would.
"""

from __future__ import annotations

import os
import time

from rich.console import Console
from rich.progress import Progress, ProgressBar
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)

MIN_BAR = 10  # columns: a narrower bar shows nothing useful


def _clock(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:  # None, NaN, or past
        return "-:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def remaining_text(task, now: float | None = None) -> str:
    """``ETA h:mm:ss`` from the task's speed, or ``budget h:mm:ss`` (the time left in the budget)
    when its time budget (field ``deadline``) will end it first."""
    remaining = task.time_remaining
    deadline = task.fields.get("deadline")
    if deadline is not None:
        left = max(0.0, deadline - (time.monotonic() if now is None else now))
        if remaining is None or left < remaining:
            return f"budget {_clock(left)}"
    return f"ETA {_clock(remaining)}"


class FittingProgress(Progress):
    """A rich Progress whose line is laid out to the console's width (see the module docstring)."""

    def __init__(self, *fields: str, unit: str = "", **settings) -> None:
        self.field_names, self.unit = fields, unit
        super().__init__(**settings)

    def _tail(self, task, elapsed: bool) -> str:
        counts = f"{int(task.completed)}/{int(task.total)}" if task.total is not None else f"{int(task.completed)}"
        counts += f" {self.unit}" if self.unit else ""
        fields = [f"{name} {task.fields.get(name, '-')}" for name in self.field_names]
        timing = [_clock(task.elapsed)] if elapsed else []
        return " ".join([counts, *fields, *timing, remaining_text(task)])

    def make_tasks_table(self, tasks) -> Table:
        table = Table.grid()
        if not hasattr(self, "live"):  # rich renders once while constructing, before it has a console
            return table
        width = self.console.width
        for task in tasks:
            if not task.visible:
                continue
            head = Text(task.description, style="bold", no_wrap=True, overflow="ellipsis")
            tail = self._tail(task, elapsed=True)
            room = width - head.cell_len - len(tail) - 2
            if room < MIN_BAR:
                tail = self._tail(task, elapsed=False)
                room = width - head.cell_len - len(tail) - 2
            cells: list = []
            if room >= MIN_BAR:
                cells.append(head)
                cells.append(
                    ProgressBar(
                        total=task.total,
                        completed=task.completed,
                        width=room,
                        pulse=not task.started,
                        animation_time=task.get_time(),
                    )
                )
            else:  # no bar; the description gives way to the numbers
                head.truncate(max(width - len(tail) - 1, 1), overflow="ellipsis")
                cells.append(head)
            cells.append(Text(tail, no_wrap=True))
            row = Table.grid(padding=(0, 1))
            row.add_row(*cells)
            table.add_row(row)
        return table


def progress_bar(*extra_columns: str, unit: str = "", disable: bool = False) -> Progress:
    """A progress bar on stderr; ``unit`` names what the counts count (``24/24 utterances``, ``83/600
    s audio``), and ``extra_columns`` are task field names shown after them (``audio 0.04/0.04 h``:
    a field's value carries its own unit).

    Disabled when ``ASRBENCH_NO_PROGRESS`` is set (tests, logs piped to files).
    """
    return FittingProgress(
        *extra_columns, unit=unit, console=console, disable=disable or bool(os.environ.get("ASRBENCH_NO_PROGRESS"))
    )
