"""Noise and reverberation for robustness studies (``asrbench study noise``): seeded, so every
model hears the same corrupted audio.

Noise sources (:class:`NoiseSource`), each giving ``n`` samples for an utterance from a generator:

- ``white``: Gaussian samples.
- ``pink``: white noise shaped to a 1/f power spectrum in the frequency domain (amplitude 1/sqrt(f)
  above 20 Hz, nothing below), the usual model of environmental noise.
- ``babble``: the sum of ``talkers`` other utterances of the same split, by speakers other than
  the utterance's own when the split has them, each looped or cut to length and scaled to equal
  power before summing, which is how babble noise is usually made.
- a directory: any of the noise recordings in it (every file libsndfile reads, searched
  recursively), a random stretch of one, looped when the recording is shorter than the utterance.

:func:`mix` adds noise at a signal-to-noise ratio measured over the speech: the signal's power is
its mean over the 25 ms frames that the energy VAD's rule calls speech (18 dB above the
utterance's 10th-percentile frame energy; all frames when none qualifies), so leading and trailing
silence do not lower the SNR a listener hears. :func:`reverberate` convolves with a synthetic room
impulse response: a direct path and an exponentially decaying Gaussian tail that falls by 60 dB
in RT60 seconds (Polack's statistical model of late reverberation), normalized to the energy of
the direct path plus tail.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asrbench.data.audio import audio_extensions
from asrbench.errors import AsrbenchError

KINDS = ("white", "pink", "babble")
SPEECH_MARGIN_DB = 18.0  # the energy VAD's first AN4-dev margin; kept (the VAD's is now 16) so SNRs stay comparable


def generator(seed: int, *keys: str) -> np.random.Generator:
    """A generator for one (condition, utterance): the same numbers in every process and for every model."""
    return np.random.default_rng([seed, *[zlib.crc32(key.encode("utf-8")) for key in keys]])


def speech_power(waveform: np.ndarray, sample_rate: int) -> float:
    """Mean power over the frames that are speech (see the module docstring)."""
    size, shift = int(0.025 * sample_rate), int(0.010 * sample_rate)
    if waveform.size < size:
        return float(np.mean(waveform.astype(np.float64) ** 2)) if waveform.size else 0.0
    frames = np.lib.stride_tricks.sliding_window_view(waveform.astype(np.float64), size)[::shift]
    power = np.mean(frames**2, axis=1)
    decibels = 10 * np.log10(power + 1e-12)
    speech = decibels >= np.percentile(decibels, 10) + SPEECH_MARGIN_DB
    return float(np.mean(power[speech] if speech.any() else power))


def mix(speech: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int) -> np.ndarray:
    """``speech`` plus ``noise`` (same length) scaled to ``snr_db`` over the speech; float32."""
    if noise.shape != speech.shape:
        raise ValueError(f"noise of {noise.shape} samples for speech of {speech.shape}")
    noise_power = float(np.mean(noise.astype(np.float64) ** 2))
    signal = speech_power(speech, sample_rate)
    if noise_power <= 0.0 or signal <= 0.0:
        return speech.astype(np.float32)
    scale = np.sqrt(signal / (noise_power * 10 ** (snr_db / 10)))
    return (speech + scale * noise).astype(np.float32)


def pink_noise(length: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length, 1.0 / sample_rate)
    shape = np.where(frequencies >= 20.0, 1.0 / np.sqrt(np.maximum(frequencies, 20.0)), 0.0)
    noise = np.fft.irfft(spectrum * shape, n=length)
    return noise / (np.std(noise) + 1e-12)


def fit(samples: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random stretch of ``length`` samples of ``samples``, looped when it is shorter."""
    if samples.size == 0:
        raise ValueError("empty noise recording")
    if samples.size < length:
        samples = np.tile(samples, -(-length // samples.size) + 1)
    start = int(rng.integers(0, samples.size - length + 1))
    return samples[start : start + length]


@dataclass
class NoiseSource:
    """``white``, ``pink``, ``babble`` (``pool``: (speaker, waveform) of the split's utterances) or
    a directory of noise recordings (``recordings``: their waveforms at the model's rate)."""

    kind: str
    sample_rate: int
    pool: list[tuple[str | None, np.ndarray]] = field(default_factory=list)
    recordings: list[np.ndarray] = field(default_factory=list)
    talkers: int = 4

    def sample(self, length: int, rng: np.random.Generator, speaker: str | None = None) -> np.ndarray:
        if self.kind == "white":
            return rng.standard_normal(length)
        if self.kind == "pink":
            return pink_noise(length, rng, self.sample_rate)
        if self.kind == "babble":
            others = [waveform for who, waveform in self.pool if who != speaker] or [w for _, w in self.pool]
            if not others:
                raise AsrbenchError("babble noise needs other utterances in the split")
            chosen = rng.choice(len(others), size=min(self.talkers, len(others)), replace=False)
            total = np.zeros(length)
            for index in chosen:
                piece = fit(others[index], length, rng).astype(np.float64)
                total += piece / (np.sqrt(np.mean(piece**2)) + 1e-12)
            return total
        recording = self.recordings[int(rng.integers(0, len(self.recordings)))]
        return fit(recording, length, rng).astype(np.float64)


def noise_files(directory: Path) -> list[Path]:
    """The audio files under ``directory`` (sorted), or a one-line error naming it."""
    if not directory.is_dir():
        raise AsrbenchError(f"--noise {directory}: not white, pink, babble or a directory of noise recordings")
    extensions = audio_extensions()
    files = sorted(path for path in directory.rglob("*") if path.is_file() and path.suffix.lower() in extensions)
    if not files:
        raise AsrbenchError(f"--noise {directory}: no audio files in it")
    return files


def room_impulse_response(rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A direct path then a Gaussian tail decaying 60 dB in ``rt60`` s (cut at that point), unit energy."""
    length = max(2, int(rt60 * sample_rate))
    time = np.arange(length) / sample_rate
    response = rng.standard_normal(length) * np.exp(-6.907755 * time / rt60)  # ln(1000): 60 dB in amplitude
    response[0] = 1.0  # the direct path
    return response / np.sqrt(np.sum(response**2))


def reverberate(speech: np.ndarray, rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``speech`` in a synthetic room of ``rt60`` seconds, cut to its own length, at its own level."""
    wet = np.convolve(speech.astype(np.float64), room_impulse_response(rt60, sample_rate, rng))[: speech.size]
    level = np.sqrt(np.mean(speech.astype(np.float64) ** 2) / (np.mean(wet**2) + 1e-20))
    return (wet * level).astype(np.float32)


class Checksum:
    """SHA-256 over the corrupted waveforms of a condition, in order (float32 bytes): the same
    number for every model and for a re-run with the same seed."""

    def __init__(self):
        self.hash = hashlib.sha256()

    def update(self, waveform: np.ndarray) -> None:
        self.hash.update(np.ascontiguousarray(waveform, dtype=np.float32).tobytes())

    def hexdigest(self) -> str:
        return self.hash.hexdigest()
