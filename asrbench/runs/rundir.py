"""The run directory, the unit of truth: resolved config, tokenizer, checkpoints, metrics."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from asrbench import fileio
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import RunConfig, run_config_from_dict

CONFIG = "config.yaml"
TOKENIZER = "tokenizer.json"
ENVIRONMENT = "environment.json"
METRICS = "metrics.jsonl"
SUMMARY = "train_summary.json"
BEST = Path("checkpoints") / "best.pt"
LAST = Path("checkpoints") / "last.pt"
PREVIOUS = Path("checkpoints") / "last.prev.pt"  # the resumable checkpoint before LAST, kept as a fallback
NBEST = Path("checkpoints") / "nbest"  # the N best epochs on dev, averaged into BEST (train.average_best)


def nbest_checkpoint(epoch: int) -> Path:
    return NBEST / f"epoch{epoch:04d}.pt"


def checkpoint_path(run_dir: Path, checkpoint: str = "best", must_exist: bool = True) -> Path:
    """A ``--checkpoint`` value as a path: ``best`` (the final model: the n-best average under
    train.average_best), ``last`` (the resumable one), or a checkpoint file relative to the run dir
    (e.g. ``checkpoints/nbest/epoch0012.pt``) or absolute. A missing one is an error naming it."""
    path = Path(run_dir) / {"best": BEST, "last": LAST}.get(checkpoint, Path(checkpoint))
    if must_exist and not path.is_file():
        raise AsrbenchError(f"{path}: checkpoint not found")
    return path


LOCK = ".lock"


@contextmanager
def lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run dir; a second holder fails at once with a clear error.

    ``flock`` locks die with their process, so a killed training never leaves a stale lock. The
    ``.lock`` file goes when the lock is released, and so does a run dir this call created that is
    still empty then: a start that fails leaves nothing behind (issue 28.16).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    created = _first_missing(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = _acquire(run_dir / LOCK, fcntl)
    try:
        fileio.HELD_LOCKS.append(handle)
        yield
    finally:
        if handle in fileio.HELD_LOCKS:
            fileio.HELD_LOCKS.remove(handle)
        try:
            (run_dir / LOCK).unlink(missing_ok=True)  # while still held: see _acquire
        finally:
            handle.close()
        if created is not None:
            _remove_empty(run_dir, created)


def _acquire(path: Path, fcntl):
    """The open, locked ``.lock`` file; the holder's pid is written into it."""
    while True:
        handle = open(path, "a+")  # noqa: SIM115 - held until the lock is released
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise AsrbenchError(
                f"{path.parent}: another asrbench process is training here"
                f"{f' (pid {holder})' if holder else ''}; wait for it or use another --out"
            ) from None
        # A holder releasing as we opened the file has removed it: our lock is then on a file nobody else
        # sees, so open the one at the path again.
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _first_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist yet (None: ``path`` exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_empty(path: Path, top: Path) -> None:
    """Remove ``path`` and its parents up to ``top`` while they are empty."""
    for folder in (path, *path.parents):
        try:
            folder.rmdir()
        except OSError:  # not empty (the run wrote something), or gone
            return
        if folder == top:
            return


def require_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AsrbenchError(f"{run_dir}: run dir not found")
    if not (run_dir / CONFIG).is_file() or not (run_dir / BEST).is_file():
        raise AsrbenchError(f"{run_dir}: not a run dir (needs {CONFIG} and {BEST}; run `asrbench train` first)")
    return run_dir


def data_dir(run_dir: Path, config: RunConfig) -> Path:
    """The run's prepared data dir (``data.dir`` of its config): absolute in runs trained since issue
    28.9; older runs kept it as written, relative to the directory training ran in. A dir that is gone
    is one line naming it and the config key, not a complaint about an unprepared split."""
    where = f"data.dir in {run_dir / CONFIG}"
    if not config.data.dir:
        raise AsrbenchError(f"{run_dir}: no data dir ({where} is empty); pass --data DIR")
    path = Path(config.data.dir)
    if not path.is_dir():
        hint = "" if path.is_absolute() else "; it is relative to the directory the run was trained in: run from there"
        raise AsrbenchError(f"data dir {path} not found ({where}){hint}, or pass --data DIR")
    return path


def write_config(run_dir: Path, config: RunConfig) -> None:
    fileio.write_text(run_dir / CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))


def read_config(run_dir: Path) -> RunConfig:
    path = run_dir / CONFIG
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise AsrbenchError(f"{path}{line}: unreadable run config (invalid YAML: {problem})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise AsrbenchError(f"{path}: unreadable run config ({err})") from None
    if values is not None and not isinstance(values, dict):
        raise AsrbenchError(f"{path}: not a run config (expected a mapping of sections, got {type(values).__name__})")
    return run_config_from_dict(values or {}, str(path))


def read_json(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AsrbenchError(f"{path}: not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AsrbenchError(f"{path}: unreadable JSON ({err})") from None
    if not isinstance(values, dict):  # every JSON file asrbench writes holds one object
        raise AsrbenchError(f"{path}: unreadable JSON (expected an object, got {type(values).__name__})")
    return values


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise AsrbenchError(f"{path}:{number}: malformed metrics line ({err.msg})") from None
    return rows


def audio_hours_trained(run_dir: Path) -> float | None:
    """Hours of audio the run's batch loops went through, every epoch and rank (metrics.jsonl's
    ``loop_audio_seconds``, speed-perturbed copies at their own length); None before it was recorded."""
    seconds = [row["loop_audio_seconds"] for row in read_metrics(run_dir) if row.get("loop_audio_seconds") is not None]
    return sum(seconds) / 3600 if seconds else None


def truncate_metrics(run_dir: Path, epochs: int) -> None:
    """Drop rows after ``epochs`` (written by a run killed before its checkpoint): they are redone."""
    rows = read_metrics(run_dir)
    kept = [row for row in rows if row.get("epoch", 0) <= epochs]
    if len(kept) != len(rows):
        fileio.write_jsonl(run_dir / METRICS, kept)


def append_metrics(run_dir: Path, row: dict) -> None:
    rows = read_metrics(run_dir) + [row]
    fileio.write_jsonl(run_dir / METRICS, rows)
