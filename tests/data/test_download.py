"""Tests for asrbench.data.download against a real HTTP server on 127.0.0.1 (with Range support)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from asrbench.data import download
from asrbench.errors import AsrbenchError

PAYLOAD = random.Random(0).randbytes(200_000)  # incompressible, so the archive is big enough to split


class _ServerState:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.ignore_range = False
        self.truncate_once: set[str] = set()  # send half of the body for these, then hang up


class _Handler(BaseHTTPRequestHandler):
    """Serves ``state.files`` by name; honours ``Range: bytes=N-`` unless told to ignore it."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state: _ServerState = self.server.state
        name = self.path.lstrip("/")
        range_header = self.headers.get("Range")
        record = {"path": self.path, "range": range_header, "status": None}
        state.requests.append(record)
        body = state.files.get(name)
        if body is None:
            record["status"] = 404
            self.send_error(404)
            return
        start = 0
        if range_header and not state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(body):
                record["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            record["status"] = 206
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            record["status"] = 200
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if name in state.truncate_once:
            state.truncate_once.discard(name)
            payload = payload[: len(payload) // 2]
        self.wfile.write(payload)

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = _ServerState()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    httpd.state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/mirror"
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_mirror_env(monkeypatch):
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)


def _tar_gz(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    return buffer.getvalue()


def _serve(server: _ServerState, monkeypatch, corpus: str, archive: bytes, algorithm: str | None = "sha256"):
    """Put ``archive`` on the server under the corpus' archive name and pin its checksum."""
    entry = download.CORPORA[corpus]
    checksum = hashlib.new(algorithm, archive).hexdigest() if algorithm else None
    monkeypatch.setitem(download.CORPORA, corpus, dataclasses.replace(entry, checksum=checksum, algorithm=algorithm))
    server.files[f"mirror/{entry.archive_name}"] = archive
    return archive


def _yesno_archive() -> bytes:
    return _tar_gz({"waves_yesno/README": b"yes/no\n", "waves_yesno/0_1_0_1_0_1_0_1.wav": PAYLOAD})


def test_download_verifies_and_extracts(server, monkeypatch, tmp_path):
    _serve(server, monkeypatch, "yesno", _yesno_archive())
    folder = download.download_corpus("yesno", tmp_path, base_url=server.base_url, progress=True)
    assert folder == tmp_path / "waves_yesno"
    assert (folder / "0_1_0_1_0_1_0_1.wav").read_bytes() == PAYLOAD
    assert (folder / "README").read_text() == "yes/no\n"
    marker = json.loads((folder / download.MARKER_NAME).read_text())
    assert marker["checksum"] == download.CORPORA["yesno"].checksum
    assert [r["path"] for r in server.requests] == ["/mirror/waves_yesno.tar.gz"]
    assert not (tmp_path / download.PARTIAL_DIR).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["waves_yesno"]  # no staging folder left


def test_second_call_is_a_noop(server, monkeypatch, tmp_path):
    _serve(server, monkeypatch, "yesno", _yesno_archive())
    first = download.download_corpus("yesno", tmp_path, base_url=server.base_url, progress=False)
    server.requests.clear()
    server.files.clear()  # would 404 if it asked
    assert download.download_corpus("yesno", tmp_path, base_url=server.base_url, progress=False) == first
    assert server.requests == []


def test_librispeech_subsets_share_one_folder(server, monkeypatch, tmp_path):
    for subset, algorithm in [("dev-clean", "sha256"), ("dev-clean-2", "md5")]:
        archive = _tar_gz({"LibriSpeech/LICENSE.TXT": b"CC BY 4.0\n", f"LibriSpeech/{subset}/1/2/1-2.trans.txt": b"x"})
        _serve(server, monkeypatch, subset, archive, algorithm)
        folder = download.download_corpus(subset, tmp_path, base_url=server.base_url, progress=False)
        assert folder == tmp_path / "LibriSpeech" / subset
        assert (folder / "1/2/1-2.trans.txt").read_bytes() == b"x"
    assert (tmp_path / "LibriSpeech/LICENSE.TXT").read_text() == "CC BY 4.0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LibriSpeech"]


def test_resume_from_partial_file_uses_range(server, monkeypatch, tmp_path):
    archive = _serve(server, monkeypatch, "yesno", _yesno_archive())
    part = tmp_path / download.PARTIAL_DIR / "waves_yesno.tar.gz.part"
    part.parent.mkdir(parents=True)
    half = len(archive) // 2
    part.write_bytes(archive[:half])
    folder = download.download_corpus("yesno", tmp_path, base_url=server.base_url, progress=False)
    assert server.requests == [{"path": "/mirror/waves_yesno.tar.gz", "range": f"bytes={half}-", "status": 206}]
    assert (folder / "0_1_0_1_0_1_0_1.wav").read_bytes() == PAYLOAD


def test_interrupted_download_resumes_on_next_call(server, monkeypatch, tmp_path):
    archive = _serve(server, monkeypatch, "yesno", _yesno_archive())
    server.truncate_once.add("mirror/waves_yesno.tar.gz")
    with pytest.raises(AsrbenchError, match="run the command again to resume"):
        download.download_corpus("yesno", tmp_path, base_url=server.base_url, progress=False)
    part = tmp_path / download.PARTIAL_DIR / "waves_yesno.tar.gz.part"
    kept = part.stat().st_size
    assert 0 < kept < len(archive)
    assert not (tmp_path / "waves_yesno").exists()

    folder = download.download_corpus("yesno", tmp_path, base_url=server.base_url, progress=False)
    assert server.requests[-1]["range"] == f"bytes={kept}-"
    assert server.requests[-1]["status"] == 206
    assert (folder / "0_1_0_1_0_1_0_1.wav").read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, monkeypatch, tmp_path):
    _serve(server, monkeypatch, "yesno", _yesno_archive())
    server.ignore_range = True
    part = tmp_path / download.PARTIAL_DIR / "waves_yesno.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that must not be kept")
    folder = download.download_corpus("yesno", tmp_path, base_url=server.base_url, progress=False)
    assert server.requests[0]["range"] is not None and server.requests[0]["status"] == 200
    assert (folder / "0_1_0_1_0_1_0_1.wav").read_bytes() == PAYLOAD


def test_complete_partial_file_is_not_downloaded_again(server, monkeypatch, tmp_path):
    archive = _serve(server, monkeypatch, "yesno", _yesno_archive())
    part = tmp_path / download.PARTIAL_DIR / "waves_yesno.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(archive)
    folder = download.download_corpus("yesno", tmp_path, base_url=server.base_url, progress=False)
    assert [r["status"] for r in server.requests] == [416]
    assert (folder / "0_1_0_1_0_1_0_1.wav").read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_download(server, monkeypatch, tmp_path):
    archive = _serve(server, monkeypatch, "yesno", _yesno_archive())
    wrong = "0" * 64
    monkeypatch.setitem(download.CORPORA, "yesno", dataclasses.replace(download.CORPORA["yesno"], checksum=wrong))
    actual = hashlib.sha256(archive).hexdigest()
    with pytest.raises(AsrbenchError) as caught:
        download.download_corpus("yesno", tmp_path, base_url=server.base_url, progress=False)
    message = str(caught.value)
    assert "waves_yesno.tar.gz" in message and wrong in message and actual in message
    assert not (tmp_path / "waves_yesno").exists()
    assert list((tmp_path / download.PARTIAL_DIR).iterdir()) == []


@pytest.mark.parametrize(
    ("members", "symlinks", "culprit"),
    [
        ({"waves_yesno/a.wav": b"a", "waves_yesno/../../escape.txt": b"evil"}, None, "escape.txt"),
        ({"waves_yesno/a.wav": b"a", "/tmp/asrbench-absolute.txt": b"evil"}, None, "asrbench-absolute.txt"),
        ({"waves_yesno/a.wav": b"a"}, {"waves_yesno/link": "../../outside"}, "waves_yesno/link"),
    ],
    ids=["dotdot", "absolute", "symlink-outside"],
)
def test_unsafe_tar_member_is_refused(server, monkeypatch, tmp_path, members, symlinks, culprit):
    dest = tmp_path / "dest"
    _serve(server, monkeypatch, "yesno", _tar_gz(members, symlinks))
    with pytest.raises(AsrbenchError, match=f"refusing unsafe member .*{re.escape(culprit)}"):
        download.download_corpus("yesno", dest, base_url=server.base_url, progress=False)
    assert not (dest / "waves_yesno").exists()
    assert not (tmp_path / "escape.txt").exists()
    assert sorted(p.name for p in dest.iterdir()) == [download.PARTIAL_DIR]  # staging folder removed


def _register_zip_corpus(monkeypatch) -> None:
    entry = download.CorpusArchive(
        url="https://example.invalid/toy.zip", folder="toy", checksum=None, algorithm=None, description="toy"
    )
    monkeypatch.setitem(download.CORPORA, "toy", entry)


def test_zip_archive_extracts(server, monkeypatch, tmp_path):
    _register_zip_corpus(monkeypatch)
    _serve(server, monkeypatch, "toy", _zip({"toy/a.txt": b"a", "toy/sub/b.txt": b"b"}))
    folder = download.download_corpus("toy", tmp_path, base_url=server.base_url, progress=False)
    assert (folder / "sub/b.txt").read_bytes() == b"b"


def test_unsafe_zip_member_is_refused(server, monkeypatch, tmp_path):
    _register_zip_corpus(monkeypatch)
    _serve(server, monkeypatch, "toy", _zip({"toy/a.txt": b"a", "toy/../../escape.txt": b"evil"}))
    with pytest.raises(AsrbenchError, match="refusing unsafe member 'toy/../../escape.txt'"):
        download.download_corpus("toy", tmp_path / "dest", base_url=server.base_url, progress=False)
    assert not (tmp_path / "dest/toy").exists()
    assert not (tmp_path / "escape.txt").exists()


def test_unverified_archive_warns_and_prints_sha256(server, monkeypatch, tmp_path, capsys):
    archive = _serve(server, monkeypatch, "an4", _tar_gz({"an4/README": b"an4"}), algorithm=None)
    folder = download.download_corpus("an4", tmp_path, base_url=server.base_url, progress=False)
    assert (folder / "README").read_bytes() == b"an4"
    stderr = capsys.readouterr().err
    assert "could not be verified" in stderr
    assert hashlib.sha256(archive).hexdigest() in stderr


def test_unverified_archive_that_fails_to_extract_is_deleted(server, monkeypatch, tmp_path):
    _serve(server, monkeypatch, "an4", b"not a tar archive", algorithm=None)
    with pytest.raises(AsrbenchError, match="an4_sphere.tar.gz: cannot extract"):
        download.download_corpus("an4", tmp_path, base_url=server.base_url, progress=False)
    assert not (tmp_path / "an4").exists()
    assert list((tmp_path / download.PARTIAL_DIR).iterdir()) == []  # next call downloads afresh


def test_http_404_is_a_clean_error(server, tmp_path):
    with pytest.raises(AsrbenchError, match=r"/mirror/waves_yesno\.tar\.gz: HTTP 404") as caught:
        download.download_corpus("yesno", tmp_path, base_url=server.base_url, progress=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "waves_yesno").exists()


def test_unreachable_server_is_a_clean_error(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(AsrbenchError, match=f"http://127.0.0.1:{port}/waves_yesno.tar.gz: .*refused"):
        download.download_corpus("yesno", tmp_path, base_url=f"http://127.0.0.1:{port}", progress=False)


def test_mirror_from_environment(server, monkeypatch, tmp_path):
    _serve(server, monkeypatch, "yesno", _yesno_archive())
    monkeypatch.setenv(download.MIRROR_ENV, server.base_url + "/")
    download.download_corpus("yesno", tmp_path, progress=False)
    assert server.requests[0]["path"] == "/mirror/waves_yesno.tar.gz"


def test_unknown_corpus_lists_valid_names(tmp_path):
    with pytest.raises(AsrbenchError, match="unknown corpus 'librispeech'; choose one of: .*yesno.*dev-clean"):
        download.download_corpus("librispeech", tmp_path)


def test_existing_folder_without_marker_is_not_overwritten(tmp_path):
    (tmp_path / "waves_yesno").mkdir()
    with pytest.raises(AsrbenchError, match="not completed by 'asrbench data download'"):
        download.download_corpus("yesno", tmp_path, base_url="http://127.0.0.1:9", progress=False)


def test_registry_is_consistent():
    corpora = download.list_corpora()
    assert {"yesno", "an4", "fsdd", "dev-clean", "train-other-500", "dev-clean-2"} <= set(corpora)
    for name, entry in download.CORPORA.items():
        assert (entry.checksum is None) == (entry.algorithm is None), name
        if entry.checksum is not None:
            assert len(entry.checksum) == {"md5": 32, "sha256": 64}[entry.algorithm], name
        assert entry.archive_name in corpora[name]
        assert not Path(entry.folder).is_absolute() and ".." not in Path(entry.folder).parts
