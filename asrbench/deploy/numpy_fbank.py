"""The filterbank front end in NumPy, for exported models (no PyTorch on that path).

Computes what :class:`asrbench.data.fbank.FeatureExtractor` computes: Kaldi-compatible log-mel
filterbanks (snip edges, DC removal, pre-emphasis 0.97, Povey window, FFT padded to a power of
two, power spectrum, the mel banks, log), frame by frame in float32. The mel banks are not
recomputed: an export writes the extractor's own (``mel_banks.npy``), so both front ends multiply
by the same matrix; ``tests/deploy/test_export.py`` checks that their features agree.
"""

from __future__ import annotations

import numpy as np

PREEMPHASIS = 0.97


def centred(waveform: np.ndarray, shift: int, size: int) -> np.ndarray:
    """The samples centred frames read (Kaldi's snip_edges false), frame t at ``[t * shift, t * shift +
    size)``: :func:`asrbench.data.fbank.centred` in NumPy (edges reflected)."""
    n = waveform.size
    if n == 0:
        return np.zeros(size, dtype=np.float32)
    count = max(1, (n + shift // 2) // shift)
    offset = shift // 2 - size // 2
    index = np.arange(offset, offset + (count - 1) * shift + size) % (2 * n)
    return waveform[np.where(index >= n, 2 * n - 1 - index, index)]


class NumpyFbank:
    """waveform (samples,) float32 at ``sample_rate`` -> features (T, mels) float32, in the
    convention of ``features.preset`` (:data:`asrbench.data.fbank.PRESETS`): ``snip_edges`` and the
    ``scale`` of the samples (the mel banks come with their upper edge)."""

    def __init__(
        self,
        sample_rate: int,
        frame_length_ms: float,
        frame_shift_ms: float,
        banks: np.ndarray,
        snip_edges: bool = True,
        scale: float = 32768.0,
    ):
        self.snip_edges, self.scale = snip_edges, scale
        self.shift = int(sample_rate * frame_shift_ms / 1000)
        self.size = int(sample_rate * frame_length_ms / 1000)
        self.padded = 1 << (self.size - 1).bit_length()
        # The Povey window: a Hann window (symmetric) to the power 0.85.
        self.window = (np.hanning(self.size) ** 0.85).astype(np.float32)
        self.banks = np.asarray(banks, dtype=np.float32)  # (mels, padded / 2 + 1)
        if self.banks.shape[1] != self.padded // 2 + 1:
            raise ValueError(
                f"mel banks have {self.banks.shape[1]} bins; a {self.padded}-point FFT gives {self.padded // 2 + 1}"
            )
        self.epsilon = np.finfo(np.float32).eps

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        signal = np.asarray(waveform, dtype=np.float32) * np.float32(self.scale)  # Kaldi's int16 scale, or 1
        if not self.snip_edges:
            signal = centred(signal, self.shift, self.size)
        if signal.size < self.size:
            signal = np.pad(signal, (0, self.size - signal.size))
        count = 1 + (signal.size - self.size) // self.shift
        frames = np.lib.stride_tricks.sliding_window_view(signal, self.size)[:: self.shift][:count]
        frames = frames - frames.mean(axis=1, keepdims=True)
        emphasized = np.empty_like(frames)
        emphasized[:, 1:] = frames[:, 1:] - PREEMPHASIS * frames[:, :-1]
        emphasized[:, 0] = frames[:, 0] * (1 - PREEMPHASIS)  # Kaldi replicates the first sample
        windowed = emphasized * self.window
        spectrum = np.fft.rfft(windowed, n=self.padded, axis=1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        return np.log(np.maximum(power @ self.banks.T, self.epsilon)).astype(np.float32)
