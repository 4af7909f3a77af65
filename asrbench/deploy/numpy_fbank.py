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


class NumpyFbank:
    """waveform (samples,) float32 at ``sample_rate`` -> features (T, mels) float32."""

    def __init__(self, sample_rate: int, frame_length_ms: float, frame_shift_ms: float, banks: np.ndarray):
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
        signal = np.asarray(waveform, dtype=np.float32) * 32768.0  # Kaldi's int16 scale
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
