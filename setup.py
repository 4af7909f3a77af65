"""Only the build step that records the commit a wheel is built from; everything else is in pyproject.toml.

``asrbench --version`` (and every result's environment) names the git commit. A checkout asks git; an
installed wheel reads ``asrbench/COMMIT``, written here into the build (never into the source tree): the
commit of the checkout being built, or ``$ASRBENCH_BUILD_COMMIT`` when the build runs outside one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _commit() -> str:
    if os.environ.get("ASRBENCH_BUILD_COMMIT"):
        return os.environ["ASRBENCH_BUILD_COMMIT"].strip()
    if not (ROOT / ".git").exists():
        return ""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("-dirty" if dirty else "")


class BuildWithCommit(build_py):
    def run(self) -> None:
        super().run()
        commit = _commit()
        if commit and not getattr(self, "editable_mode", False):  # an editable install runs from the checkout
            target = Path(self.build_lib) / "asrbench" / "COMMIT"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(commit + "\n", encoding="utf-8")


setup(cmdclass={"build_py": BuildWithCommit})
