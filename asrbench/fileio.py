"""Atomic file writes: a temporary file in the same directory, fsync, then rename.

A crash or Ctrl-C at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from asrbench.errors import AsrbenchError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files only the owner can read; results should get the usual permissions.
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp_name, _FILE_MODE)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_texts_together(files: dict[Path, str]) -> None:
    """Write several files all or nothing: every temporary file is complete before any rename.

    A failure while writing (disk full, permission) leaves every target as it was.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp_name, path))
            os.chmod(tmp_name, _FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        for tmp_name, path in staged:
            os.replace(tmp_name, path)
        for directory in {path.parent for _, path in staged}:
            fsync_dir(directory)
    except BaseException:
        for tmp_name, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        raise


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_open(path, "wb") as handle:
        torch.save(obj, handle)


@contextlib.contextmanager
def build_lock(path: str | os.PathLike) -> Iterator[None]:
    """Wait for, then hold, an exclusive lock on ``path`` (created if missing).

    For work that several processes may start at once (the ranks of a torchrun job building one
    feature cache): the first builds while the others wait, then find the result and only read
    it. ``flock`` locks die with their process, so a killed builder never blocks the others.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def refuse_to_replace(paths, overwrite: bool) -> None:
    """The one overwrite rule of the command line: an output that is already there (a file, or a
    folder with something in it) is refused, naming it, unless ``overwrite``."""
    if overwrite:
        return
    for path in map(Path, [paths] if isinstance(paths, (str, os.PathLike)) else paths):
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            raise AsrbenchError(f"{path}: already exists (pass --overwrite to replace it)")


HELD_LOCKS: list = []  # this process's open lock files (a run dir's, see asrbench.runs.rundir.lock)


def close_inherited_locks() -> None:
    """In a forked child (a data-loader worker): drop the copies of the parent's lock files.

    A ``flock`` lock lives as long as any copy of its file descriptor, so a worker outliving a
    killed trainer would otherwise keep the run dir locked.
    """
    for handle in HELD_LOCKS:
        handle.close()
    HELD_LOCKS.clear()
