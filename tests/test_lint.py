"""``make lint`` is clean: ruff check, ruff format --check and mypy over asrbench/ report nothing.

Configured in pyproject.toml ``[tool.mypy]``; third-party packages without type information are
listed there by name. Cold, mypy takes ~20 s on 2 cores; its cache (.mypy_cache) makes a rerun ~1 s.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_error_in_asrbench():
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "asrbench"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"mypy asrbench:\n{report}"
    assert report.strip().startswith("Success: no issues found"), report


def test_ruff_check_and_format_leave_every_file_as_it_is():
    folders = ["asrbench", "tests", "benchmarks", "tools"]
    for command in (["check", *folders], ["format", "--check", *folders]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"ruff {' '.join(command)}:\n{done.stdout}{done.stderr}"
