"""What every corpus preparer returns and the helpers they share (asrbench.data.prepare runs them).

A preparer reads only a corpus layout and returns :class:`Candidate` utterances per split; the
audio headers, skipping, sorting and writing are shared (:func:`asrbench.data.prepare.prepare_corpus`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from asrbench.errors import AsrbenchError

MAX_EXAMPLES = 3


@dataclass
class PrepareReport:
    counts: dict[str, int] = field(default_factory=dict)  # split -> utterances written
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> utterances skipped
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> up to 3 ids or paths

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES and example not in examples:
            examples.append(example)


@dataclass(frozen=True)
class Candidate:
    """An utterance found in a corpus layout, before its audio header is read."""

    id: str
    audio: str  # absolute path
    text: str
    speaker: str | None = None
    offset: float = 0.0  # seconds into the audio file
    duration: float | None = None  # None: from ``offset`` to the end of the file
    # Why the layout names no audio file for it (no wav.scp entry, no recording, a url source); None: it does.
    no_audio: str | None = None


Preparer = Callable[[Path, PrepareReport], dict[str, list[Candidate]]]


def absolute(path: str | Path) -> str:
    """Absolute and normalized, but symlinks kept as the user laid them out."""
    return os.path.abspath(path)


def collapse_spaces(text: str) -> str:
    return " ".join(text.split())


def read_lines(path: Path) -> list[tuple[str, str]]:
    """(``file:line``, line) for every non-blank line of a UTF-8 text file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AsrbenchError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise AsrbenchError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    return [(f"{path}:{number}", line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
