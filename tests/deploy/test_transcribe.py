"""`asrbench transcribe` end to end on the tone corpus: the same text as `decode`, word times,
every output format, long files split at pauses, bad files, other rates and channels, resuming."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from helpers import run_main

from asrbench.decoding.decode import decode
from asrbench.deploy.transcribe import Transcriber, find_audio, transcribe_files
from asrbench.deploy.vad import VadOptions
from asrbench.torchaudio_compat import functional

pytestmark = pytest.mark.slow


@pytest.fixture
def trained(tone_run) -> tuple[Path, Path]:
    return tone_run


def _rows(data_dir: Path, split: str = "test") -> list[dict]:
    return [json.loads(line) for line in (data_dir / f"{split}.jsonl").read_text().splitlines()]


def test_transcribing_a_prepared_utterance_gives_its_decode_hypothesis(trained):
    run, data_dir = trained
    decode(run, "test")
    hypotheses = {
        json.loads(line)["id"]: json.loads(line)["hyp"]
        for line in (run / "decode" / "test" / "hypotheses.jsonl").read_text().splitlines()
    }
    rows = _rows(data_dir)
    transcripts = list(Transcriber(run, device="cpu").transcribe([Path(row["audio"]) for row in rows]))
    assert [t.text for t in transcripts] == [hypotheses[row["id"]] for row in rows]
    assert sum(t.text == row["text"] for t, row in zip(transcripts, rows, strict=True)) >= 3  # it learned


def test_words_carry_times_inside_their_tones_and_confidences(trained):
    """Tone words are 0.3 s of tone then 0.1 s of silence: word k is spoken from 0.4 k to 0.4 k + 0.3 s."""
    run, data_dir = trained
    rows = [row for row in _rows(data_dir) if len(row["text"].split()) == 2]
    transcript = next(iter(Transcriber(run, device="cpu").transcribe([Path(rows[0]["audio"])])))
    words = transcript.segments[0].words
    assert [w["word"] for w in words] == transcript.text.split()
    for k, word in enumerate(words):
        assert 0.4 * k - 0.1 <= word["start"] <= 0.4 * k + 0.3 + 0.05 and word["end"] > word["start"]
        assert 0.0 <= word["confidence"] <= 1.0
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(words, words[1:], strict=False))


def test_without_word_times_the_text_is_the_same_and_no_alignment_runs(trained, monkeypatch, capsys):
    """`-f text` prints no word times, so the CLI skips their alignment pass (a second network run)."""
    import asrbench.deploy.transcribe as transcribe_module

    run, data_dir = trained
    files = [Path(row["audio"]) for row in _rows(data_dir)]
    seen, real = {}, transcribe_module.Transcriber

    def spy(*args, **kwargs):
        seen["word_times"] = kwargs.get("word_times", True)
        return real(*args, **kwargs)

    monkeypatch.setattr(transcribe_module, "Transcriber", spy)
    for fmt, expected in (("text", False), ("jsonl", True), ("srt", True)):
        code, _, _ = run_main(monkeypatch, capsys, "transcribe", str(run), str(files[0]), "-f", fmt)
        assert code == 0 and seen["word_times"] is expected, fmt
    with_words = list(real(run, device="cpu").transcribe(files))
    assert any(segment.words for t in with_words for segment in t.segments)

    def no_alignment(*args, **kwargs):
        raise AssertionError("aligned although no word times were asked for")

    monkeypatch.setattr(transcribe_module, "align", no_alignment)
    plain = list(real(run, device="cpu", word_times=False).transcribe(files))
    assert [t.text for t in plain] == [t.text for t in with_words]
    assert not any(segment.words for t in plain for segment in t.segments)


def _long_file(data_dir: Path, path: Path, gap: float = 0.5) -> tuple[Path, list[str]]:
    """Every test utterance end to end with ``gap`` s of near-silence between them."""
    pieces, texts = [], []
    for row in _rows(data_dir):
        samples, rate = soundfile.read(row["audio"])
        pieces += [samples, np.random.default_rng(0).normal(0, 0.003, int(gap * rate))]
        texts.append(row["text"])
    soundfile.write(path, np.concatenate(pieces), rate, subtype="PCM_16")
    return path, texts


def test_a_long_file_is_split_at_pauses_into_timed_segments(trained, tmp_path: Path):
    run, data_dir = trained
    path, _ = _long_file(data_dir, tmp_path / "long.wav")
    whole = next(iter(Transcriber(run, device="cpu", vad=VadOptions(kind="none", max_segment=60.0)).transcribe([path])))
    split = next(iter(Transcriber(run, device="cpu", vad=VadOptions(max_segment=2.0, pad=0.2)).transcribe([path])))
    assert len(whole.segments) == 1 and len(split.segments) >= 4
    starts = [s.start for s in split.segments]
    assert starts == sorted(starts) and all(s.end - s.start <= 2.0 + 1e-6 for s in split.segments)
    assert split.segments[-1].end <= split.duration + 1e-6
    # One segment per utterance, each around its own utterance's audio (0.5 s pauses between them).
    position, spans = 0.0, []
    for row in _rows(data_dir):
        spans.append((position, position + row["duration"]))
        position += row["duration"] + 0.5
    assert len(split.segments) == len(spans)
    for segment, (start, end) in zip(split.segments, spans, strict=True):
        assert start - 0.25 <= segment.start <= start + 0.05 and end - 0.15 <= segment.end <= end + 0.3
    # Batched with the others, a segment decodes as its own span does alone.
    samples, rate = soundfile.read(path)
    alone = []
    for k, segment in enumerate(split.segments):
        piece = tmp_path / f"piece{k}.wav"
        soundfile.write(piece, samples[int(round(segment.start * rate)) : int(round(segment.end * rate))], rate)
        alone.append(piece)
    assert [t.text for t in Transcriber(run, device="cpu").transcribe(alone)] == [s.text for s in split.segments]
    words = [w for s in split.segments for w in s.words]
    assert all(s.start - 1e-6 <= w["start"] <= s.end + 1e-6 for s in split.segments for w in s.words)
    assert [w["word"] for w in words] == split.text.split()


def test_every_format_and_subtitle_timing(trained, tmp_path: Path):
    run, data_dir = trained
    files = [row["audio"] for row in _rows(data_dir)[:2]]
    transcriber = Transcriber(run, device="cpu")
    text = tmp_path / "out.txt"
    transcribe_files(transcriber, files, "text", text)
    lines = text.read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == files and not (tmp_path / "out.txt.partial").exists()
    out = io.StringIO()
    transcribe_files(transcriber, files, "jsonl", stdout=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [row["path"] for row in rows] == files
    assert rows[0]["model"] == "cnn" and rows[0]["decoder"]["kind"] == "ctc_greedy" and rows[0]["segments"]
    assert [r["text"] for r in rows] == [line.split("\t")[1] for line in lines]
    subtitles = tmp_path / "subs"
    transcribe_files(transcriber, files, "srt", subtitles)
    srt = (subtitles / f"{Path(files[0]).stem}.srt").read_text()
    blocks = [block.splitlines() for block in srt.strip().split("\n\n")]
    assert blocks[0][0] == "1" and " --> " in blocks[0][1] and blocks[0][1].startswith("00:00:0")
    assert " ".join(block[2] for block in blocks) == rows[0]["text"]
    transcribe_files(transcriber, files[:1], "vtt", stdout=(vtt := io.StringIO()))
    assert vtt.getvalue().startswith("WEBVTT\n\n") and "." in vtt.getvalue().splitlines()[2]


def test_a_bad_file_is_reported_and_skipped_and_the_exit_code_says_so(trained, tmp_path, monkeypatch, capsys):
    run, data_dir = trained
    good = _rows(data_dir)[0]["audio"]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00not audio at all")
    out = tmp_path / "out.txt"
    code, _, err = run_main(
        monkeypatch, capsys, "transcribe", str(run), str(corrupt), good, str(tmp_path / "gone.wav"), "-o", str(out)
    )
    assert code == 1
    assert f"{corrupt}: unreadable audio" in err and "gone.wav: audio file not found" in err
    assert "1 of 3 files transcribed" in err and "Traceback" not in err
    assert out.read_text().splitlines()[0].startswith(good + "\t")


def test_other_rates_and_channels_are_resampled_and_downmixed_once_noted(trained, tmp_path, capsys):
    run, data_dir = trained
    row = _rows(data_dir)[0]
    samples, rate = soundfile.read(row["audio"])
    assert rate == 8000
    upsampled = functional.resample(torch.from_numpy(samples).float(), 8000, 16000).numpy()
    stereo = tmp_path / "stereo16k.flac"
    soundfile.write(stereo, np.stack([upsampled, upsampled], axis=1), 16000)
    transcriber = Transcriber(run, device="cpu")
    [original, converted] = list(transcriber.transcribe([Path(row["audio"]), stereo]))
    assert converted.text == original.text
    assert set(transcriber.notes) == {"resampled from 16000 Hz to 8000 Hz", "downmixed from 2 channels to mono"}


def test_a_killed_run_resumes_from_its_partial_output(trained, tmp_path: Path, monkeypatch):
    run, data_dir = trained
    files = [row["audio"] for row in _rows(data_dir)]
    out = tmp_path / "out.jsonl"
    (tmp_path / "out.jsonl.partial").write_text(
        json.dumps({"path": files[1], "text": "DONE BEFORE"}) + "\n" + '{"path": "cut sho'
    )  # the kill cut this line
    transcriber = Transcriber(run, device="cpu")
    seen = []
    original = transcriber._file
    monkeypatch.setattr(
        transcriber, "_file", lambda i, path, d, progress=None: seen.append(str(path)) or original(i, path, d, progress)
    )
    counts = transcribe_files(transcriber, files, "jsonl", out)
    assert counts["resumed"] == 1 and files[1] not in seen and len(seen) == len(files) - 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["path"] for row in rows] == files and rows[1]["text"] == "DONE BEFORE"
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_inputs_may_be_directories_and_a_list_on_stdin(tmp_path: Path, write_audio):
    write_audio(tmp_path / "audio" / "b.flac")
    write_audio(tmp_path / "audio" / "sub" / "a.wav")
    (tmp_path / "audio" / "notes.txt").write_text("not audio")
    audio = tmp_path / "audio"
    assert find_audio([str(audio)]) == [audio / "b.flac", audio / "sub" / "a.wav"]
    listed = find_audio(["-"], stdin=io.StringIO(f"{tmp_path}/x.wav\n\n{tmp_path}/y.wav\n"))
    assert listed == [tmp_path / "x.wav", tmp_path / "y.wav"]


def test_user_errors_are_one_line(trained, tmp_path, monkeypatch, capsys):
    run, data_dir = trained
    audio = _rows(data_dir)[0]["audio"]
    code, _, err = run_main(monkeypatch, capsys, "transcribe", str(run), audio, "--format", "docx")
    assert code == 2 and "unknown --format 'docx'" in err
    code, _, err = run_main(monkeypatch, capsys, "transcribe", str(run), audio, audio, "--format", "srt")
    assert code == 2 and "name a directory with -o" in err
    code, _, err = run_main(monkeypatch, capsys, "transcribe", str(tmp_path / "norun"), audio)
    assert code == 2 and "norun" in err and "Traceback" not in err
    code, _, err = run_main(
        monkeypatch, capsys, "transcribe", str(run), str(tmp_path / "empty_dir_missing"), "--vad", "webrtc"
    )
    assert code == 2 and "unknown --vad 'webrtc'" in err


def test_the_vad_options_reach_the_detector_and_default_to_the_dev_choice(trained, tmp_path, monkeypatch, capsys):
    run, data_dir = trained
    path, _ = _long_file(data_dir, tmp_path / "long.wav")
    out = tmp_path / "out.jsonl"
    code, _, err = run_main(
        monkeypatch,
        capsys,
        "transcribe",
        str(run),
        str(path),
        "-f",
        "jsonl",
        "-o",
        str(out),
        "--max-segment",
        "2",
        "--min-silence",
        "0.2",
        "--vad-pad",
        "0.1",
        "--energy-margin",
        "12",
    )
    assert code == 0, err
    vad = json.loads(out.read_text().splitlines()[0])["vad"]
    assert (vad["max_segment"], vad["min_silence"], vad["pad"], vad["energy_margin_db"]) == (2.0, 0.2, 0.1, 12.0)
    code, _, err = run_main(
        monkeypatch, capsys, "transcribe", str(run), str(path), "-f", "jsonl", "-o", str(out), "--overwrite"
    )
    assert code == 0, err
    assert json.loads(out.read_text().splitlines()[0])["vad"] == VadOptions().to_dict()
    code, _, err = run_main(monkeypatch, capsys, "transcribe", str(run), str(path), "--vad-pad", "-1")
    assert code == 2 and "'--vad-pad': must not be negative" in err  # checked as the option is parsed
