"""Atomic writes: the old file or the new one, never half of one, and no temporary files left."""

from __future__ import annotations

import json

import pytest
import torch

from asrbench import fileio


def test_write_text_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    fileio.write_text(path, "hello\n")
    assert path.read_text(encoding="utf-8") == "hello\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_write_replaces_existing_content(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old content that is longer", encoding="utf-8")
    fileio.write_text(path, "new")
    assert path.read_text(encoding="utf-8") == "new"


def test_exception_mid_write_keeps_the_old_file_and_no_temp_files(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError, match="crash"):
        with fileio.atomic_open(path) as handle:
            handle.write("half of the new")
            handle.flush()
            raise RuntimeError("crash")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_keyboard_interrupt_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.json"
    fileio.write_json(path, {"epoch": 1})
    with pytest.raises(KeyboardInterrupt):
        with fileio.atomic_open(path) as handle:
            handle.write('{"epoch": 2')
            raise KeyboardInterrupt
    assert json.loads(path.read_text(encoding="utf-8")) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_first_write_leaves_nothing(tmp_path):
    path = tmp_path / "new.txt"
    with pytest.raises(ValueError):
        with fileio.atomic_open(path) as handle:
            handle.write("x")
            raise ValueError
    assert list(tmp_path.iterdir()) == []


def test_unserializable_json_keeps_the_old_file(tmp_path):
    path = tmp_path / "result.json"
    fileio.write_json(path, {"wer": 1.0})
    with pytest.raises(TypeError):
        fileio.write_json(path, {"wer": object()})
    assert json.loads(path.read_text(encoding="utf-8")) == {"wer": 1.0}


def test_json_and_jsonl_round_trip_unicode(tmp_path):
    fileio.write_json(tmp_path / "a.json", {"text": "caf\u00e9", "n": [1, 2]})
    assert json.loads((tmp_path / "a.json").read_text(encoding="utf-8")) == {"text": "caf\u00e9", "n": [1, 2]}
    assert "caf\u00e9" in (tmp_path / "a.json").read_text(encoding="utf-8")
    rows = [{"id": "a"}, {"id": "b", "text": "\u65e5\u672c"}]
    fileio.write_jsonl(tmp_path / "a.jsonl", rows)
    lines = (tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == rows


def test_binary_mode_and_torch_save(tmp_path):
    with fileio.atomic_open(tmp_path / "blob.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "blob.bin").read_bytes() == b"\x00\x01"
    tensors = {"w": torch.arange(6).reshape(2, 3)}
    fileio.torch_save(tensors, tmp_path / "t.pt")
    loaded = torch.load(tmp_path / "t.pt", weights_only=True)
    assert torch.equal(loaded["w"], tensors["w"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blob.bin", "t.pt"]


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    from asrbench import fileio

    mask = os.umask(0o022)
    os.umask(mask)
    fileio.write_text(tmp_path / "a.txt", "x")
    fileio.write_texts_together({tmp_path / "b.txt": "y"})
    for name in ("a.txt", "b.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask
