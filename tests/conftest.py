"""Shared test setup: no progress bars, and a helper that writes tiny generated audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch


@pytest.fixture(autouse=True)
def _no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASRBENCH_NO_PROGRESS", "1")


@pytest.fixture(autouse=True)
def _one_torch_thread(request: pytest.FixtureRequest):
    """Unit tests use tiny tensors: extra intra-op threads only spin, and slow the tests several
    times over on a busy 2-core machine. Slow (end-to-end) tests keep torch's default."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_tone(seconds: float, rate: int, frequency: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    """A sine wave with a little deterministic noise, shape (samples,), float64 in [-1, 1]."""
    time = np.arange(int(round(seconds * rate))) / rate
    noise = np.random.default_rng(int(frequency * 1000 + rate)).normal(0.0, 0.01, time.size)
    return amplitude * np.sin(2 * np.pi * frequency * time) + noise


@pytest.fixture
def tone():
    """``tone(seconds, rate, frequency=440)``: the samples ``write_audio`` writes (before PCM-16)."""
    return make_tone


@pytest.fixture
def write_audio():
    """``write_audio(path, seconds, rate=16000, frequency=440, channels=1, format=None)`` -> path."""

    def write(
        path: Path,
        seconds: float = 0.5,
        rate: int = 16000,
        frequency: float = 440.0,
        channels: int = 1,
        format: str | None = None,
    ) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        samples = make_tone(seconds, rate, frequency)
        if channels > 1:
            samples = np.stack([samples * (c + 1) / channels for c in range(channels)], axis=1)
        soundfile.write(path, samples, rate, subtype="PCM_16", format=format)
        return path

    return write
