"""JSONL manifests: round trips, and every malformed line reported with file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asrbench.data.manifest import (
    Utterance,
    prepared_splits,
    read_manifest,
    split_path,
    write_data_dir,
    write_manifest,
)
from asrbench.errors import AsrbenchError


def write_lines(path: Path, lines: list[str], newline: str = "\n", bom: bool = False) -> Path:
    data = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
    return path


def row(**fields) -> str:
    values = {"id": "u1", "audio": "/audio/u1.wav", "duration": 1.5, "text": "YES NO", **fields}
    return json.dumps({k: v for k, v in values.items() if v is not ...})


def test_write_read_round_trip(tmp_path):
    utterances = [
        Utterance("a", str(tmp_path / "a.wav"), 1.25, "HELLO WORLD"),
        Utterance("b", str(tmp_path / "rec.flac"), 0.5, "YES", speaker="spk1", offset=2.0),
        Utterance("c", str(tmp_path / "c.wav"), 3.0, "caf\u00e9 \u65e5\u672c"),
    ]
    path = tmp_path / "train.jsonl"
    write_manifest(path, utterances)
    assert read_manifest(path) == utterances
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    # Optional fields are written only when set.
    assert "speaker" not in json.loads(lines[0]) and "offset" not in json.loads(lines[0])
    assert json.loads(lines[1])["speaker"] == "spk1" and json.loads(lines[1])["offset"] == 2.0
    assert "\u65e5" in lines[2]  # UTF-8, not \\u escapes


def test_write_data_dir_and_split_path(tmp_path):
    splits = {
        "train": [Utterance("a", "/x/a.wav", 1.0, "A")],
        "dev": [Utterance("b", "/x/b.wav", 1.0, "B"), Utterance("c", "/x/c.wav", 1.0, "C")],
    }
    assert write_data_dir(tmp_path / "data", splits) == {"train": 1, "dev": 2}
    assert [u.id for u in read_manifest(split_path(tmp_path / "data", "dev"))] == ["b", "c"]
    # Regression (issue 15.6): a mistyped split names the splits that exist.
    with pytest.raises(AsrbenchError, match=r"no split 'tset' \(prepared splits: train, dev\)"):
        split_path(tmp_path / "data", "tset")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsrbenchError, match="split 'test' was never prepared: the folder holds no"):
        split_path(tmp_path / "empty", "test")


def test_prepared_splits_lists_the_usual_three_first(tmp_path):
    for split in ("test_other", "test", "train", "dev"):
        (tmp_path / f"{split}.jsonl").write_text("")
    (tmp_path / "notes.txt").write_text("")
    assert prepared_splits(tmp_path) == ["train", "dev", "test", "test_other"]
    assert prepared_splits(tmp_path / "missing") == []


def test_relative_audio_paths_resolve_against_the_manifest_folder(tmp_path):
    (tmp_path / "data").mkdir()
    path = write_lines(tmp_path / "data" / "m.jsonl", [row(audio="../audio/u1.wav"), row(id="u2", audio="u2.wav")])
    first, second = read_manifest(path)
    assert first.audio == str((tmp_path / "audio" / "u1.wav").resolve())
    assert second.audio == str((tmp_path / "data" / "u2.wav").resolve())
    assert Path(first.audio).is_absolute()


def test_absolute_audio_paths_are_kept(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [row(audio="/somewhere/else.wav")])
    assert read_manifest(path)[0].audio == "/somewhere/else.wav"


def test_bom_and_crlf_and_blank_lines(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [row(), "", row(id="u2"), "   "], newline="\r\n", bom=True)
    utterances = read_manifest(path)
    assert [u.id for u in utterances] == ["u1", "u2"]
    assert utterances[0].text == "YES NO"


def test_text_is_stripped_and_speaker_becomes_a_string(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [row(text="  YES  ", speaker=7)])
    (utterance,) = read_manifest(path)
    assert utterance.text == "YES"
    assert utterance.speaker == "7"


def assert_error_at(path: Path, line: int, *fragments: str) -> None:
    with pytest.raises(AsrbenchError) as err:
        read_manifest(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}:"), message
    for fragment in fragments:
        assert fragment in message, message


def test_malformed_json_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [row(), row(id="u2"), '{"id": "u3", "audio": ', row(id="u4")])
    assert_error_at(path, 3, "malformed JSON")


def test_line_numbers_count_blank_lines(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", ["", row(), "", "not json"])
    assert_error_at(path, 4, "malformed JSON")


def test_non_object_line(tmp_path):
    assert_error_at(write_lines(tmp_path / "m.jsonl", ["[1, 2]"]), 1, "expected a JSON object")


@pytest.mark.parametrize("field", ["id", "audio", "duration", "text"])
def test_missing_field(tmp_path, field):
    path = write_lines(tmp_path / "m.jsonl", [row(), row(**{"id": "u2", field: ...})])
    assert_error_at(path, 2, "missing field", field)


@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_empty_text(tmp_path, text):
    assert_error_at(write_lines(tmp_path / "m.jsonl", [row(text=text)]), 1, "empty text", "u1")


def test_duplicate_id_names_both_lines(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [row(), row(id="u2"), row()])
    assert_error_at(path, 3, "duplicate id 'u1'", "line 1")


@pytest.mark.parametrize("duration", [0, -1.5, "nan"])
def test_non_positive_duration(tmp_path, duration):
    value = float(duration) if duration == "nan" else duration  # json writes NaN, which json reads back
    assert_error_at(write_lines(tmp_path / "m.jsonl", [row(duration=value)]), 1, "duration must be a positive number")


@pytest.mark.parametrize("field", ["duration", "offset"])
def test_non_numeric_duration_or_offset(tmp_path, field):
    assert_error_at(write_lines(tmp_path / "m.jsonl", [row(**{field: "long"})]), 1, "must be numbers")


def test_numeric_strings_are_accepted_as_durations(tmp_path):
    (utterance,) = read_manifest(write_lines(tmp_path / "m.jsonl", [row(duration="2.5", offset="1")]))
    assert utterance.duration == 2.5 and utterance.offset == 1.0


@pytest.mark.parametrize("field", ["id", "audio", "text"])
def test_non_string_fields(tmp_path, field):
    assert_error_at(write_lines(tmp_path / "m.jsonl", [row(**{field: 5})]), 1, f"'{field}' must be a string")


def test_missing_manifest(tmp_path):
    with pytest.raises(AsrbenchError, match="manifest not found"):
        read_manifest(tmp_path / "none.jsonl")


def test_non_utf8_manifest(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"id": "u1", "audio": "/a.wav", "duration": 1, "text": "caf\xe9"}\n')  # Latin-1
    with pytest.raises(AsrbenchError, match="not UTF-8"):
        read_manifest(path)


def test_empty_manifest_is_empty(tmp_path):
    assert read_manifest(write_lines(tmp_path / "m.jsonl", [""])) == []
