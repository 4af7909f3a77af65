"""Download, verify and extract public corpora: ``asrbench data download CORPUS --out DIR``.

Every step survives an interruption:

- the archive is streamed into ``<dest>/.partial/<archive>.part``; a later call resumes it with an
  HTTP ``Range`` request (a server that ignores ``Range`` answers 200 and the download restarts);
- the complete file is checked against its published md5/sha256 and only then renamed to
  ``<dest>/.partial/<archive>``;
- it is extracted into ``<dest>/.partial/extract-*`` and the corpus folder is renamed into place in
  one step, with a ``.asrbench-complete`` marker inside, so a second call finds the marker and does
  nothing (no network request). The archive is deleted once extracted.

Archive members that would land outside the destination (absolute paths, ``..``, links pointing
outside, device files) are refused, not silently rewritten.

A mirror (``base_url`` or the ``ASRBENCH_MIRROR`` environment variable) must serve the files
under the archive names shown by :func:`list_corpora`: ``<base_url>/<archive>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from asrbench import __version__, fileio
from asrbench.errors import AsrbenchError

MIRROR_ENV = "ASRBENCH_MIRROR"
MARKER_NAME = ".asrbench-complete"
PARTIAL_DIR = ".partial"
TIMEOUT_S = 60.0  # per connect and per socket read, not for the whole transfer
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class CorpusArchive:
    """One downloadable archive and where its corpus folder lands under ``dest``."""

    url: str
    folder: str  # corpus folder inside the archive (POSIX, relative); also its path under dest
    checksum: str | None  # hex digest as published; None where no source publishes one
    algorithm: str | None  # "md5" or "sha256", whichever the source publishes
    description: str
    filename: str = ""  # archive name on disk and on mirrors; default: last part of the URL

    @property
    def archive_name(self) -> str:
        return self.filename or self.url.rsplit("/", 1)[-1]


_OPENSLR = "https://www.openslr.org/resources"
_FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"

# LibriSpeech sha256 sums: pytorch/audio torchaudio/datasets/librispeech.py (_CHECKSUMS).
_LIBRISPEECH_SHA256 = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}
_LIBRISPEECH_SIZES = {
    "dev-clean": "337 MB",
    "dev-other": "314 MB",
    "test-clean": "346 MB",
    "test-other": "328 MB",
    "train-clean-100": "6.3 GB",
    "train-clean-360": "23 GB",
    "train-other-500": "30 GB",
}
# Mini LibriSpeech (OpenSLR SLR31) md5 sums: PaddlePaddle/PaddleSpeech
# dataset/mini_librispeech/mini_librispeech.py (MD5_DEV_CLEAN, MD5_TRAIN_CLEAN).
_MINI_LIBRISPEECH_MD5 = {
    "dev-clean-2": "6d7ab67ac6a1d2c993d050e16d61080d",
    "train-clean-5": "5df7d4e78065366204ca6845bb08f490",
}
_MINI_LIBRISPEECH_SIZES = {"dev-clean-2": "126 MB", "train-clean-5": "332 MB"}

CORPORA: dict[str, CorpusArchive] = {
    # sha256: pytorch/audio torchaudio/datasets/yesno.py, as corrected by pytorch/audio PR #1405
    # (the earlier value 30301975... there was TED-LIUM release 1's sum, copied by mistake).
    "yesno": CorpusArchive(
        url=f"{_OPENSLR}/1/waves_yesno.tar.gz",
        folder="waves_yesno",
        checksum="c3f49e0cca421f96b75b41640749167b52118f232498667ca7a5f9416aef8e73",
        algorithm="sha256",
        description="Kaldi yes/no (OpenSLR 1): 60 utterances, one speaker, 8 kHz, 4.5 MB",
    ),
    # No published checksum found for CMU's file. The only digest seen (sha256 a0525579..., in a
    # third-party training script) is for NVIDIA's S3 copy, which is not known to be identical.
    "an4": CorpusArchive(
        url="http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz",
        folder="an4",
        checksum=None,
        algorithm=None,
        description="CMU AN4 census: 948 train / 130 test utterances, 16 kHz SPHERE, 64 MB",
    ),
    # The commit recorded in shared/data/fsdd/SOURCE.md (6 speakers, 3000 files). GitHub builds
    # the archive on request and publishes no checksum; tensorflow/datasets pins a sha256 only for
    # tag v1.0.9, an older release with fewer speakers, so this one is unverified.
    "fsdd": CorpusArchive(
        url=f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{_FSDD_COMMIT}.tar.gz",
        folder=f"free-spoken-digit-dataset-{_FSDD_COMMIT}",
        checksum=None,
        algorithm=None,
        description=f"Free Spoken Digit Dataset @ {_FSDD_COMMIT[:8]}: 3000 recordings, 6 speakers, 8 kHz",
        filename=f"free-spoken-digit-dataset-{_FSDD_COMMIT}.tar.gz",
    ),
    **{
        subset: CorpusArchive(
            url=f"{_OPENSLR}/12/{subset}.tar.gz",
            folder=f"LibriSpeech/{subset}",
            checksum=digest,
            algorithm="sha256",
            description=f"LibriSpeech {subset} (OpenSLR 12), {_LIBRISPEECH_SIZES[subset]}",
        )
        for subset, digest in _LIBRISPEECH_SHA256.items()
    },
    **{
        subset: CorpusArchive(
            url=f"{_OPENSLR}/31/{subset}.tar.gz",
            folder=f"LibriSpeech/{subset}",
            checksum=digest,
            algorithm="md5",
            description=f"Mini LibriSpeech {subset} (OpenSLR 31), {_MINI_LIBRISPEECH_SIZES[subset]}",
        )
        for subset, digest in _MINI_LIBRISPEECH_MD5.items()
    },
}


def list_corpora() -> dict[str, str]:
    """Corpus name -> one line for help text (what it is, its size, its archive name)."""
    return {name: f"{entry.description} [{entry.archive_name}]" for name, entry in CORPORA.items()}


def download_corpus(corpus: str, dest: Path, base_url: str | None = None, progress: bool = True) -> Path:
    """Download, verify and extract ``corpus`` under ``dest``; return the extracted corpus folder.

    A call whose corpus folder already carries the completion marker returns at once, without
    touching the network. ``base_url`` (else ``$ASRBENCH_MIRROR``) replaces everything before the
    archive name in the URL.
    """
    entry = CORPORA.get(corpus)
    if entry is None:
        raise AsrbenchError(f"unknown corpus {corpus!r}; choose one of: {', '.join(CORPORA)}")
    dest = Path(dest).expanduser()
    target = dest / entry.folder
    if (target / MARKER_NAME).is_file():
        return target
    if target.exists():
        raise AsrbenchError(
            f"{target} exists but was not completed by 'asrbench data download' (no {MARKER_NAME}); "
            "remove it to download again, or use that folder directly"
        )
    if dest.exists() and not dest.is_dir():
        raise AsrbenchError(f"{dest}: not a directory")

    url = _archive_url(entry, base_url)
    partial_dir = dest / PARTIAL_DIR
    partial_dir.mkdir(parents=True, exist_ok=True)
    verified = partial_dir / entry.archive_name
    console = _console()

    if not verified.is_file():
        part = partial_dir / f"{entry.archive_name}.part"
        if progress:
            console.print(f"downloading {corpus} from {url}", soft_wrap=True, highlight=False)
        _fetch(url, part, progress)
        _verify(part, entry, progress)
        os.replace(part, verified)
    else:
        _verify(verified, entry, progress)  # a crash between download and extraction left it here

    sha256 = None
    if entry.checksum is None:
        sha256 = _digest(verified, "sha256", progress)
        _warn(
            f"warning: {entry.archive_name} could not be verified: no published checksum is known. "
            f"Its sha256 is {sha256}; compare it with a trusted copy or pin it in CORPORA."
        )
    if progress:
        console.print(f"extracting {entry.archive_name}", soft_wrap=True, highlight=False)
    marker = {
        "corpus": corpus,
        "url": url,
        "archive": entry.archive_name,
        "algorithm": entry.algorithm,
        "checksum": entry.checksum,
        "unverified_sha256": sha256,
        "asrbench_version": __version__,
    }
    try:
        _extract(verified, dest, entry, marker)
    except AsrbenchError:
        if entry.checksum is None:
            verified.unlink()  # nothing vouches for this file: let the next call fetch it afresh
        raise
    verified.unlink()
    with contextlib.suppress(OSError):
        partial_dir.rmdir()  # only when empty: other corpora may be half-downloaded there
    return target


def _archive_url(entry: CorpusArchive, base_url: str | None) -> str:
    base = base_url or os.environ.get(MIRROR_ENV) or None
    if base is None:
        return entry.url
    if not re.match(r"(?i)(https?|file)://", base):
        raise AsrbenchError(f"mirror URL {base!r} must start with http://, https:// or file://")
    return f"{base.rstrip('/')}/{entry.archive_name}"


# --- download -----------------------------------------------------------------------------


def _fetch(url: str, part: Path, progress: bool) -> None:
    """Bring ``part`` to the complete file at ``url``, resuming from its current size."""
    offset = part.stat().st_size if part.exists() else 0
    response = _open(url, offset)
    if response is None:  # 416: the partial file already holds every byte
        return
    total = None
    if offset and getattr(response, "status", None) == 206:
        start, total = _content_range(response.headers.get("Content-Range", ""))
        if start != offset:  # a confused server: do not splice mismatched bytes, start over
            response.close()
            response = _open(url, 0)
    if getattr(response, "status", None) != 206:
        offset, total = 0, None  # no partial file, or the server ignored Range (200): start over
    with contextlib.closing(response):
        length = _header_int(response, "Content-Length")
        if total is None and length is not None:
            total = offset + length
        if total is not None:
            _check_free_space(part.parent, total - offset, url)
        mode = "ab" if offset else "wb"
        with (
            open(part, mode) as handle,
            _progress_bar(part.name[: -len(".part")], total, offset, progress) as advance,
        ):
            received = offset
            while True:
                try:
                    chunk = response.read(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as err:
                    raise AsrbenchError(
                        f"{url}: download interrupted after {received} bytes ({_reason(err)}); "
                        "run the command again to resume"
                    ) from None
                if not chunk:
                    break
                handle.write(chunk)
                received += len(chunk)
                advance(len(chunk))
    if total is not None and received != total:
        raise AsrbenchError(
            f"{url}: connection closed after {received} of {total} bytes; run the command again to resume"
        )


def _open(url: str, offset: int):
    """Open ``url`` (asking for bytes from ``offset`` on); None when nothing is left to fetch."""
    request = urllib.request.Request(url, headers={"User-Agent": f"asrbench/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            # Content-Range: bytes */TOTAL. Equal sizes: complete; anything else: start over.
            total = _content_range_total(err.headers.get("Content-Range", "")) if err.headers else None
            err.close()
            return None if total == offset else _open(url, 0)
        err.close()
        raise AsrbenchError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        raise AsrbenchError(f"{url}: {_reason(err)}") from None


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return f"timed out after {TIMEOUT_S:g} s without data"
    return str(reason) or type(reason).__name__


def _header_int(response, name: str) -> int | None:
    value = response.headers.get(name) if response.headers else None
    return int(value) if value and value.strip().isdigit() else None


def _content_range(value: str) -> tuple[int | None, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL); TOTAL may be ``*`` (unknown)."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value)
    if not match:
        return None, None
    return int(match.group(1)), (int(match.group(2)) if match.group(2) != "*" else None)


def _content_range_total(value: str) -> int | None:
    match = re.fullmatch(r"\s*bytes\s+\*/(\d+)\s*", value)
    return int(match.group(1)) if match else None


def _check_free_space(folder: Path, needed: int, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise AsrbenchError(f"{url}: needs {_human(needed)} more but only {_human(free)} is free in {folder}")


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


# --- verification -------------------------------------------------------------------------


def _verify(path: Path, entry: CorpusArchive, progress: bool) -> None:
    """Compare ``path`` with the published digest; a mismatch deletes the file and raises."""
    if entry.checksum is None or entry.algorithm is None:
        return
    actual = _digest(path, entry.algorithm, progress)
    if actual != entry.checksum.lower():
        path.unlink()
        raise AsrbenchError(
            f"{entry.archive_name}: {entry.algorithm} mismatch (expected {entry.checksum}, got {actual}); "
            "the corrupt download was deleted, run the command again to retry"
        )


def _digest(path: Path, algorithm: str, progress: bool) -> str:
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with (
        open(path, "rb") as handle,
        _progress_bar(f"checking {path.name.removesuffix('.part')}", path.stat().st_size, 0, progress) as advance,
    ):
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


# --- extraction ---------------------------------------------------------------------------


def _extract(archive: Path, dest: Path, entry: CorpusArchive, marker: dict) -> None:
    """Extract into a temporary folder next to the archive, then rename the corpus folder into place.

    The rename is what makes it atomic: ``dest/<folder>`` either does not exist or is complete.
    Siblings of a nested corpus folder (``LibriSpeech/LICENSE.TXT`` next to ``LibriSpeech/dev-clean``)
    are moved along when not already there, so several subsets share one ``LibriSpeech/``.
    """
    for stale in archive.parent.glob(f"extract-{archive.name}-*"):  # left by a killed earlier call
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"extract-{archive.name}-", dir=archive.parent))
    try:
        if archive.name.endswith(".zip"):
            _extract_zip(archive, staging)
        else:
            _extract_tar(archive, staging)
        folder = PurePosixPath(entry.folder)
        source = staging.joinpath(*folder.parts)
        if not source.is_dir():
            raise AsrbenchError(f"{archive.name}: has no folder {entry.folder}/; is it the right archive?")
        fileio.write_json(source / MARKER_NAME, marker)
        target = dest.joinpath(*folder.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(source, target)
        except OSError as err:
            raise AsrbenchError(f"{target}: cannot move the extracted corpus into place ({err.strerror})") from None
        if len(folder.parts) > 1:
            for sibling in source.parent.iterdir():
                if not (target.parent / sibling.name).exists():
                    os.replace(sibling, target.parent / sibling.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_tar(archive: Path, staging: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
                tar.extractall(staging, filter=_tar_filter)
            else:
                members = tar.getmembers()
                for member in members:
                    _check_tar_member(member)
                tar.extractall(staging, members=members)
    except _UnsafeMember as err:
        raise AsrbenchError(f"{archive.name}: refusing unsafe member {err.name!r} ({err.why})") from None
    except _TAR_FILTER_ERROR as err:  # anything data_filter refuses that our own checks let through
        raise AsrbenchError(f"{archive.name}: refusing unsafe member ({err})") from None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise AsrbenchError(f"{archive.name}: cannot extract ({_reason(err)}); the archive may be corrupt") from None


_TAR_FILTER_ERROR = getattr(tarfile, "FilterError", ())  # () catches nothing on older Pythons


class _UnsafeMember(Exception):
    def __init__(self, name: str, why: str):
        super().__init__(name, why)
        self.name, self.why = name, why


def _tar_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    _check_tar_member(member)
    return tarfile.data_filter(member, dest_path)


def _check_tar_member(member: tarfile.TarInfo) -> None:
    _check_member_path(member.name)
    if member.issym():
        link = os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname))
        if os.path.isabs(member.linkname) or link == ".." or link.startswith("../"):
            raise _UnsafeMember(member.name, f"symlink to {member.linkname!r} points outside the archive")
    elif member.islnk():
        _check_member_path(member.linkname)
    elif not (member.isfile() or member.isdir()):
        raise _UnsafeMember(member.name, "device, FIFO or other special file")


def _check_member_path(name: str) -> None:
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        raise _UnsafeMember(name, "absolute path")
    if ".." in re.split(r"[/\\]", name):
        raise _UnsafeMember(name, "path contains '..'")


def _extract_zip(archive: Path, staging: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            for info in zipped.infolist():
                _check_member_path(info.filename)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise _UnsafeMember(info.filename, "symlink")
            zipped.extractall(staging)
    except _UnsafeMember as err:
        raise AsrbenchError(f"{archive.name}: refusing unsafe member {err.name!r} ({err.why})") from None
    except (zipfile.BadZipFile, OSError) as err:
        raise AsrbenchError(f"{archive.name}: cannot extract ({_reason(err)}); the archive may be corrupt") from None


# --- terminal output ----------------------------------------------------------------------


def _console():
    from rich.console import Console

    return Console(file=sys.stderr)


def _warn(message: str) -> None:
    _console().print(message, style="yellow", soft_wrap=True, highlight=False, markup=False)


@contextlib.contextmanager
def _progress_bar(label: str, total: int | None, done: int, enabled: bool) -> Iterator:
    """Yield ``advance(n_bytes)``; a rich bar with size, speed and ETA when enabled."""
    if not enabled:
        yield lambda n_bytes: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console(), transient=False) as bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda n_bytes: bar.advance(task, n_bytes)
