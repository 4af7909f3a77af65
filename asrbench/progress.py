"""One look for every progress bar: description, bar, counts, extra fields, elapsed and ETA."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def progress_bar(*extra_columns: str) -> Progress:
    """A rich Progress on stderr; ``extra_columns`` are task field names shown after the counts.

    Disabled when ``ASRBENCH_NO_PROGRESS`` is set (tests, logs piped to files).
    """
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(f"{name} {{task.fields[{name}]}}") for name in extra_columns]
    columns += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, console=console, disable=bool(os.environ.get("ASRBENCH_NO_PROGRESS")))
