"""Kaldi-compatible log-mel filterbanks (and MFCCs) computed in batches, and speed perturbation."""

from __future__ import annotations

import warnings

import torch

from asrbench.recipe.config import MFCC_MIN_MEL_BINS, PRESETS, FeatureConfig
from asrbench.torchaudio_compat import functional as audio_functional
from asrbench.torchaudio_compat import kaldi


def frame_count(samples: int, shift: int, size: int, snip_edges: bool) -> int:
    """Frames of a ``samples``-long waveform (at least one): Kaldi's count for snip_edges true
    (frames that fit; a waveform shorter than a window is padded to one) and false (one frame per
    shift, rounded: frame t is centred on t * shift + shift / 2)."""
    if snip_edges:
        return 1 + (max(samples, size) - size) // shift
    return max(1, (samples + shift // 2) // shift)


def centred(waveform: torch.Tensor, shift: int, size: int) -> torch.Tensor:
    """The samples the centred frames of ``waveform`` read (snip_edges false), laid out so that
    frame t is ``[t * shift, t * shift + size)`` of the result: frame t starts at
    ``t * shift + shift // 2 - size // 2`` of the waveform, and a sample before its start or past its
    end is the waveform reflected there (index -1 reads sample 0, index n reads n - 1), as Kaldi's
    ExtractWindow reflects them."""
    n = waveform.numel()
    if n == 0:
        return torch.zeros(size)
    count = frame_count(n, shift, size, snip_edges=False)
    offset = shift // 2 - size // 2
    index = torch.arange(offset, offset + (count - 1) * shift + size).remainder(2 * n)
    return waveform[torch.where(index >= n, 2 * n - 1 - index, index)]


class FeatureExtractor:
    """waveform (samples,) at ``config.sample_rate`` -> features (T, F), Kaldi-compatible.

    Filterbanks are computed like Kaldi's ``compute-fbank-feats`` (and torchaudio's
    ``compliance.kaldi.fbank``, which they match to float tolerance, see the tests): frames that fit
    (snip edges), DC removal, pre-emphasis 0.97, Povey window, FFT padded to a power of two, power
    spectrum, triangular mel banks, log. Unlike a per-utterance ``kaldi.fbank`` call, the window and
    mel banks are built once and :meth:`batch` runs the frames of many utterances through one FFT
    and one matrix product. MFCCs go through torchaudio's ``kaldi.mfcc``.
    """

    PREEMPHASIS = 0.97

    def __init__(self, config: FeatureConfig):
        self.config = config
        self.convention = PRESETS[config.preset]
        self.snip_edges = self.convention.snip_edges  # what a streaming front end needs to know
        self.shift = int(config.sample_rate * config.frame_shift_ms / 1000)
        self.size = int(config.sample_rate * config.frame_length_ms / 1000)
        self.padded = 1 << (self.size - 1).bit_length()
        self.window = torch.hann_window(self.size, periodic=False, dtype=torch.float64).pow(0.85).float()
        if config.kind == "fbank":
            banks, _ = kaldi.get_mel_banks(
                config.num_mel_bins,
                self.padded,
                float(config.sample_rate),
                20.0,
                self.convention.high_freq,
                100.0,
                -500.0,
                1.0,
            )
            banks = torch.nn.functional.pad(banks.float(), (0, 1))  # (mels, padded/2 + 1)
            # Each FFT bin feeds at most two triangles: a sparse product is ~3x cheaper than a dense one.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                self.banks = banks.to_sparse_csr()
        self.epsilon = torch.tensor(torch.finfo(torch.float32).eps)

    def _scaled(self, waveform: torch.Tensor) -> torch.Tensor:
        # Kaldi computes on int16-scaled samples; scaling keeps our log-energies comparable to it.
        scaled = waveform.float() * 32768.0
        if scaled.numel() < self.size:
            scaled = torch.nn.functional.pad(scaled, (0, self.size - scaled.numel()))
        return scaled

    def batch(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        """Features of several utterances at once: one list entry (T_i, F) per waveform.

        The utterances are laid end to end, each padded to a whole number of frame shifts, so the
        frames of all of them are one strided view of one signal; the few frames that straddle two
        utterances are computed and dropped. The per-frame DC removal and pre-emphasis are linear,
        so they move out of the frame loop: with e[n] = x[n] - 0.97 x[n-1] over the whole signal, a
        frame's DC-free, pre-emphasized samples are e minus 0.03 times the frame mean. Kaldi
        replicates the first sample of a frame for its pre-emphasis instead of using the sample
        before it, but the Povey window is exactly 0 there, so both give the same windowed frame.
        """
        if self.config.kind != "fbank":
            return [self(waveform) for waveform in waveforms]
        size, shift, k = self.size, self.shift, self.PREEMPHASIS
        pieces, sizes = [], []  # sizes: frames of utterance 0, straddling frames, frames of utterance 1, ...
        padding = torch.zeros(size + shift)
        for waveform in waveforms:
            if not self.convention.snip_edges:  # its centred frames as frames that fit: the same code cuts them
                waveform = centred(waveform, shift, size)
            n = waveform.numel()
            span = -(-max(n, size) // shift) * shift  # whole frame shifts, at least one window
            count = 1 + (max(n, size) - size) // shift
            pieces.append(waveform.float())
            if span > n:
                pieces.append(padding[: span - n])
            sizes += [count, span // shift - count]
        pieces.append(padding[: max(size - shift, 0)])  # the last straddling frames read past the end
        signal = torch.cat(pieces).mul_(self.convention.scale)  # Kaldi computes on int16-scaled samples
        total = sum(sizes)
        emphasized = torch.empty_like(signal)
        emphasized[0] = 0.0  # under the window's zero
        torch.sub(signal[1:], signal[:-1], alpha=k, out=emphasized[1:])
        means = signal.as_strided((total, size), (shift, 1)).mean(1)
        frames = torch.empty(total, self.padded)
        frames[:, size:] = 0.0  # zero-padded to the FFT size
        windowed = frames[:, :size]
        torch.sub(emphasized.as_strided((total, size), (shift, 1)), means.mul_(1 - k).unsqueeze(1), out=windowed)
        windowed.mul_(self.window)
        squared = torch.view_as_real(torch.fft.rfft(frames)).square_()
        power = torch.empty(squared.size(1), total)  # (bins, frames): the layout the sparse product reads
        torch.add(squared[..., 0].T, squared[..., 1].T, out=power)
        features = (self.banks @ power).clamp_min_(self.epsilon).log_().T
        return list(torch.split(features, sizes))[::2]

    def __call__(self, waveform: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.kind == "fbank":
            return self.batch([waveform])[0]
        common = dict(
            sample_frequency=config.sample_rate,
            frame_length=config.frame_length_ms,
            frame_shift=config.frame_shift_ms,
            dither=0.0,
        )
        scaled = self._scaled(waveform).unsqueeze(0)
        return kaldi.mfcc(
            scaled, num_ceps=config.num_ceps, num_mel_bins=max(config.num_mel_bins, MFCC_MIN_MEL_BINS), **common
        )


def speed_perturb(waveform: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """Kaldi/sox-style speed change (tempo and pitch): resample to rate/factor, play at rate."""
    if factor == 1.0:
        return waveform
    # rate*factor -> rate gives the same length change as rate -> rate/factor with a far smaller
    # rational ratio (9:10 instead of 8000:8889 at 16 kHz), hence a short resampling filter.
    return audio_functional.resample(waveform, int(round(sample_rate * factor)), sample_rate)
