"""Audio reading: formats, resampling, downmixing, segments, and clear errors for bad files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from asrbench.data.audio import audio_info, load_audio
from asrbench.errors import AsrbenchError

PCM16_STEP = 1 / 32768


@pytest.mark.parametrize(
    ("suffix", "format"), [(".wav", None), (".flac", None), (".sph", "NIST")], ids=["wav", "flac", "sphere"]
)
def test_reads_formats_as_mono_float32(tmp_path, write_audio, tone, suffix, format):
    path = write_audio(tmp_path / f"tone{suffix}", 0.25, rate=16000, format=format)
    waveform = load_audio(str(path), 16000)
    assert waveform.dtype == torch.float32
    assert waveform.shape == (4000,)
    expected = torch.from_numpy(tone(0.25, 16000)).float()
    assert torch.allclose(waveform, expected, atol=PCM16_STEP)
    assert audio_info(str(path)) == (pytest.approx(0.25), 16000)


@pytest.mark.parametrize(("native", "target"), [(8000, 16000), (16000, 8000), (22050, 16000)])
def test_resamples_to_the_target_rate(tmp_path, write_audio, native, target):
    path = write_audio(tmp_path / "tone.wav", 1.0, rate=native, frequency=1000)
    waveform = load_audio(str(path), target)
    assert abs(waveform.numel() - target) <= 1
    # The tone stays at 1 kHz: resampling changes the rate, not the pitch.
    peak_hz = torch.fft.rfft(waveform).abs().argmax().item() * target / waveform.numel()
    assert abs(peak_hz - 1000) < 3


def test_same_rate_is_not_resampled(tmp_path, write_audio):
    path = write_audio(tmp_path / "tone.wav", 0.1, rate=8000)
    data, _ = soundfile.read(path, dtype="float32")
    assert torch.equal(load_audio(str(path), 8000), torch.from_numpy(data))


def test_stereo_is_downmixed_to_the_channel_mean(tmp_path, write_audio):
    path = write_audio(tmp_path / "stereo.wav", 0.1, rate=8000, channels=2)
    data, _ = soundfile.read(path, dtype="float32", always_2d=True)
    assert data.shape[1] == 2
    waveform = load_audio(str(path), 8000)
    assert waveform.shape == (800,)
    assert torch.allclose(waveform, torch.from_numpy(data.mean(axis=1)), atol=1e-7)


def test_offset_and_duration_read_a_segment(tmp_path, write_audio):
    path = write_audio(tmp_path / "long.wav", 2.0, rate=8000)
    whole = load_audio(str(path), 8000)
    segment = load_audio(str(path), 8000, offset=0.5, duration=0.25)
    assert segment.shape == (2000,)
    assert torch.equal(segment, whole[4000:6000])
    rest = load_audio(str(path), 8000, offset=1.5)
    assert torch.equal(rest, whole[12000:])


def test_segment_is_resampled_too(tmp_path, write_audio):
    path = write_audio(tmp_path / "long.wav", 2.0, rate=8000)
    segment = load_audio(str(path), 16000, offset=1.0, duration=0.5)
    assert abs(segment.numel() - 8000) <= 1


def test_missing_file(tmp_path):
    path = tmp_path / "missing.wav"
    with pytest.raises(AsrbenchError) as err:
        load_audio(str(path), 16000)
    assert str(path) in str(err.value)
    with pytest.raises(AsrbenchError) as err:
        audio_info(str(path))
    assert str(path) in str(err.value)


def test_missing_file_says_not_found(tmp_path):
    """Regression test (message) (fixed): soundfile >= 0.12 raises LibsndfileError("... System error."), not
    FileNotFoundError, for a missing file, so the "audio file not found" branches in
    audio_info/load_audio never run and users get "unreadable audio (Error opening ...: System
    error.)". Checking ``os.path.exists`` (or ``err.errno``/the message) first would fix it."""
    path = tmp_path / "missing.wav"
    with pytest.raises(AsrbenchError, match="audio file not found"):
        load_audio(str(path), 16000)
    with pytest.raises(AsrbenchError, match="audio file not found"):
        audio_info(str(path))


@pytest.mark.parametrize(
    "content", [b"", b"RIFF\x00\x00\x00\x00WAVEgarbage", bytes(range(256)) * 8], ids=["empty", "header", "noise"]
)
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(content)
    with pytest.raises(AsrbenchError) as err:
        load_audio(str(path), 16000)
    assert str(path) in str(err.value)
    with pytest.raises(AsrbenchError):
        audio_info(str(path))


def test_truncated_wav_reads_what_is_there_or_fails_cleanly(tmp_path, write_audio):
    path = write_audio(tmp_path / "tone.wav", 0.5, rate=8000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    try:
        waveform = load_audio(str(path), 8000)
    except AsrbenchError:
        return
    assert 0 < waveform.numel() < 4000


def test_zero_length_audio(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros(0), 8000, subtype="PCM_16")
    with pytest.raises(AsrbenchError, match="zero-length"):
        load_audio(str(path), 8000)
    with pytest.raises(AsrbenchError, match="zero-length"):
        audio_info(str(path))


def test_offset_past_the_end_is_an_error(tmp_path, write_audio):
    path = write_audio(tmp_path / "short.wav", 0.5, rate=8000)
    with pytest.raises(AsrbenchError):
        load_audio(str(path), 8000, offset=2.0, duration=0.5)
