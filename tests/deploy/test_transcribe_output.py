"""Where ``transcribe`` writes (:func:`asrbench.deploy.transcribe.transcribe_files`), with a stand-in
transcriber: no model, so these run in the quick suite."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from asrbench.deploy.transcribe import FileTranscript, Segment, transcribe_files
from asrbench.errors import AsrbenchError


class ScriptedTranscriber:
    """Transcribes every file to "yes no", one segment of its first second."""

    notes: Counter = Counter()

    def transcribe(self, paths):
        for path in paths:
            yield FileTranscript(str(path), 1.0, [Segment(0.0, 1.0, "yes no")])

    def describe(self) -> dict:
        return {"model": "scripted"}


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_o_with_the_format_suffix_and_one_input_names_a_file(tmp_path: Path, write_audio, fmt):
    """Regression (issue 28.12): ``transcribe -f srt -o one.srt a.wav`` created a directory one.srt/."""
    audio = write_audio(tmp_path / "a.wav")
    out = tmp_path / f"one.{fmt}"
    transcribe_files(ScriptedTranscriber(), [str(audio)], fmt, out)
    assert out.is_file()
    assert "yes no" in out.read_text(encoding="utf-8")
    assert not (tmp_path / "a.srt").exists()


def test_o_with_the_suffix_in_upper_case_is_a_file_too(tmp_path: Path, write_audio):
    audio = write_audio(tmp_path / "a.wav")
    transcribe_files(ScriptedTranscriber(), [str(audio)], "srt", tmp_path / "ONE.SRT")
    assert (tmp_path / "ONE.SRT").is_file()


def test_o_without_the_suffix_or_with_several_inputs_names_a_directory(tmp_path: Path, write_audio):
    first, second = write_audio(tmp_path / "a.wav"), write_audio(tmp_path / "b.wav")
    transcribe_files(ScriptedTranscriber(), [str(first)], "srt", tmp_path / "subs")
    assert (tmp_path / "subs" / "a.srt").is_file()
    transcribe_files(ScriptedTranscriber(), [str(first), str(second)], "srt", tmp_path / "two.srt")
    assert sorted(path.name for path in (tmp_path / "two.srt").iterdir()) == ["a.srt", "b.srt"]
    transcribe_files(ScriptedTranscriber(), [str(first)], "vtt", tmp_path / "one.srt")  # another format's suffix
    assert (tmp_path / "one.srt" / "a.vtt").is_file()


def test_a_subtitle_file_already_there_is_refused_without_overwrite(tmp_path: Path, write_audio):
    audio = write_audio(tmp_path / "a.wav")
    out = tmp_path / "one.srt"
    out.write_text("keep me", encoding="utf-8")
    with pytest.raises(AsrbenchError, match=r"one.srt: already exists \(pass --overwrite"):
        transcribe_files(ScriptedTranscriber(), [str(audio)], "srt", out, overwrite=False)
    assert out.read_text(encoding="utf-8") == "keep me"
    transcribe_files(ScriptedTranscriber(), [str(audio)], "srt", out, overwrite=True)
    assert "yes no" in out.read_text(encoding="utf-8")
