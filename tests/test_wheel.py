"""The wheel alone makes a working CLI (issue 28.17): built from the sources, installed into a fresh venv
outside the repository, run from an empty directory.

Offline and quick: the wheel is built with the venv's own setuptools (``--no-build-isolation``, which
``make setup`` installs), and the fresh venv gets the dependencies (torch, typer, ...) through a ``.pth``
line naming this venv's site-packages. A ``.pth`` line only adds that folder to ``sys.path``; the
``.pth`` files inside it are not run, so the editable install of this checkout (``__editable__.asrbench``
and its import finder) stays invisible, and ``import asrbench`` can only find the installed wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from asrbench.version import git_commit

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("ASRBENCH_DATA_ROOT", ROOT / ".." / "shared" / "data")).resolve()
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE")


def _run(command: list, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow  # builds, installs and trains one epoch: ~20 s
def test_a_wheel_in_a_fresh_venv_lists_recipes_and_trains_yesno(tmp_path):
    assert (DATA_ROOT / "yesno").is_dir(), f"yesno corpus expected at {DATA_ROOT / 'yesno'} (set ASRBENCH_DATA_ROOT)"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(ASRBENCH_NO_PROGRESS="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")

    # Build from a copy of the sources (the repository is left as it was: no build/ or egg-info).
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "asrbench", source / "asrbench", ignore=shutil.ignore_patterns("__pycache__", "COMMIT"))
    commit = git_commit()
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            tmp_path / "dist",
            source,
        ],
        source,
        {**env, "ASRBENCH_BUILD_COMMIT": commit or ""},
    )
    (wheel,) = (tmp_path / "dist").glob("asrbench-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    python = venv / "bin" / "python"
    site = Path(
        _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).stdout.strip()
    )
    ours = dict.fromkeys(sysconfig.get_paths()[kind] for kind in ("purelib", "platlib"))
    (site / "asrbench_test_dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    # --ignore-installed: this venv's site-packages (on sys.path now) hold the editable asrbench's
    # metadata; pip must install the wheel, not call it satisfied or touch this venv.
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", wheel], tmp_path, env)

    work = tmp_path / "work"  # an empty directory, outside the repository
    work.mkdir()
    asrbench = venv / "bin" / "asrbench"
    where = _run([python, "-c", "import asrbench; print(asrbench.__file__)"], work, env).stdout.strip()
    assert Path(where).is_relative_to(site), where
    version = _run([asrbench, "--version"], work, env).stdout
    assert version.startswith("asrbench 0.1.0") and (commit is None or f"(commit {commit})" in version), version
    listed = _run([asrbench, "recipes"], work, {**env, "COLUMNS": "200"}).stdout
    for name in ("an4", "fsdd", "librispeech100", "synth", "yesno"):
        assert f"│ {name} " in listed, listed
    assert "Kaldi's yesno corpus" in listed and str(site) in " ".join(listed.split())

    trained = _run(
        [asrbench, "train", "yesno", "--model", "cnn", "--epochs", "1"],
        work,
        {**env, "ASRBENCH_DATA_ROOT": str(DATA_ROOT)},
    )
    assert "preparing yesno" in trained.stdout + trained.stderr
    assert len((work / "data" / "yesno" / "test.jsonl").read_text().splitlines()) == 30
    assert (work / "runs" / "yesno" / "cnn" / "checkpoints" / "best.pt").is_file()
