"""Wall-clock time of a fresh ``make setup``, and a check that it installs no CUDA.

    python benchmarks/setup_time.py [--tmp DIR] [--python python3] [--warm-cache] [--keep] [--dry-run]

Runs ``make -C <repo> setup VENV=<tmp>/venv``: a new virtual environment outside the checkout,
built by the Makefile exactly as a user's first ``make setup`` would (pip upgrade, the pinned CPU
wheels of torch and torchaudio, then asrbench in editable mode with its extras). pip gets an empty
cache of its own (``PIP_CACHE_DIR=<tmp>/pip-cache``), so every wheel is downloaded as on a fresh
machine; ``--warm-cache`` uses the user's cache instead. Then, in the new venv,
``torch.version.cuda`` must be None and ``pip list`` must hold no ``nvidia-*`` package. pip's
configuration is recorded too: a local wheelhouse or extra index can supply the CPU wheel (and
make the "download" fast) where plain PyPI would not.

Figures: ``setup_seconds`` (target ≤ 180 s) and ``cuda_free`` (1 when torch is a CPU build and no
nvidia-* package was installed). Note: the editable install rewrites the checkout's (ignored)
asrbench.egg-info. The temporary folder is removed afterwards unless ``--keep``; ``--dry-run``
prints the commands and runs nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import ROOT, figure, record, skipped

TORCH_INFO = 'import json, torch; print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda}))'


def folder_mb(path: Path) -> float:
    """Disk size of the files under ``path`` (links not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tmp",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="Parent of the temporary folder (the venv and pip cache go there).",
    )
    parser.add_argument("--python", help="PYTHON for make (the interpreter that creates the venv).")
    parser.add_argument("--warm-cache", action="store_true", help="Use the user's pip cache, not an empty one.")
    parser.add_argument("--timeout", type=float, default=1800.0, help="Give up on make after this many seconds.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary venv.")
    parser.add_argument("--dry-run", action="store_true", help="Print the commands; run nothing.")
    args = parser.parse_args()

    work = args.tmp.resolve() / f"asrbench_setup_{os.getpid()}"
    venv, cache = work / "venv", work / "pip-cache"
    make = ["make", "-C", str(ROOT), "setup", f"VENV={venv}"] + ([f"PYTHON={args.python}"] if args.python else [])
    python = str(venv / "bin" / "python")
    checks = [
        [python, "-c", TORCH_INFO],
        [python, "-m", "pip", "list", "--format=json"],
        [python, "-m", "pip", "config", "list"],
    ]
    environment = {**os.environ, **({} if args.warm_cache else {"PIP_CACHE_DIR": str(cache)})}
    extra = {"command": shlex.join(make), "pip_cache": "the user's (warm)" if args.warm_cache else "empty"}
    if args.dry_run:
        print(f"mkdir {shlex.quote(str(work))}")
        print(("" if args.warm_cache else f"PIP_CACHE_DIR={shlex.quote(str(cache))} ") + shlex.join(make))
        for command in checks:
            print(shlex.join(command))
        print(f"rm -rf {shlex.quote(str(work))}" if not args.keep else f"# kept: {work}")
        return

    work.mkdir(parents=True)
    try:
        start = time.perf_counter()
        try:
            process = subprocess.run(
                make, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=args.timeout
            )
            returncode, output = process.returncode, process.stdout + process.stderr
        except subprocess.TimeoutExpired as err:
            returncode, output = None, f"timed out after {args.timeout:.0f} s\n{err.stdout or ''}{err.stderr or ''}"
        seconds = time.perf_counter() - start
        if returncode != 0:
            tail = "\n".join(str(output).splitlines()[-20:])
            reason = f"make setup failed (exit {returncode})"
            figures = {
                "setup_seconds": skipped(180.0, "s", reason, better="lower", returncode=returncode, tail=tail),
                "cuda_free": skipped(1.0, "1 = no CUDA installed", reason),
            }
            record("setup_time", figures, extra)
            raise SystemExit(f"make setup failed ({returncode}):\n{tail}")

        torch_info = json.loads(subprocess.run(checks[0], capture_output=True, text=True, check=True).stdout)
        packages = json.loads(subprocess.run(checks[1], capture_output=True, text=True, check=True).stdout)
        names = sorted(package["name"].lower().replace("_", "-") for package in packages)
        nvidia = [name for name in names if name.startswith("nvidia-")]
        cuda_free = torch_info["cuda"] is None and not nvidia
        # Where the wheels came from (find-links, extra indexes) decides which torch build pip picks.
        extra["pip_config"] = subprocess.run(checks[2], capture_output=True, text=True).stdout.splitlines()
        figures = {
            "setup_seconds": figure(
                seconds, 180.0, "s", better="lower", venv_mb=round(folder_mb(venv), 1), packages=len(names)
            ),
            "cuda_free": figure(
                1.0 if cuda_free else 0.0,
                1.0,
                "1 = no CUDA installed",
                torch=torch_info["torch"],
                torch_cuda=torch_info["cuda"],
                nvidia_packages=nvidia,
                triton="triton" in names,
            ),
        }
        print(
            f"make setup: {seconds:.0f} s; torch {torch_info['torch']} (CUDA {torch_info['cuda']}), "
            f"{len(nvidia)} nvidia-* packages, venv {figures['setup_seconds']['venv_mb']:.0f} MB"
        )
        record("setup_time", figures, extra)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
