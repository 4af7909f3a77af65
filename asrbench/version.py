"""asrbench's version and the commit it comes from: ``asrbench --version``, and every result's environment.

From a checkout (the package folder sits in a git work tree) the commit is asked of git, ``-dirty``
when tracked files changed. A wheel carries the commit it was built from in ``asrbench/COMMIT``
(written by ``setup.py``'s build step); without one (an sdist build, no git) only the version is known.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import asrbench

COMMIT_FILE = "COMMIT"


def _checkout_commit(root: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() + ("-dirty" if dirty else "")


def git_commit() -> str | None:
    """The checkout's commit, else the commit the installed wheel was built from, else None."""
    package = Path(asrbench.__file__).resolve().parent
    if (package.parent / ".git").exists():  # a checkout (an editable install runs from one too)
        return _checkout_commit(package.parent)
    try:
        return (package / COMMIT_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def version_line() -> str:
    """``asrbench 0.1.0 (commit 1a2b...)``, or without the commit when it is not known."""
    commit = git_commit()
    return f"asrbench {asrbench.__version__}" + (f" (commit {commit})" if commit else "")
