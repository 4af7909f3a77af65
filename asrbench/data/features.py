"""Log-mel filterbank (or MFCC) features, cached on disk keyed by the feature config.

A split's features are stored as one tensor of all frames (N_frames, F) plus per-utterance
offsets, so reading an epoch from the cache is a single file read. The cache key hashes the
feature config, the speed-perturbation factor and every utterance's id, audio path, offset,
duration and file size, so changing any of them recomputes and nothing stale is ever served.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from asrbench import fileio
from asrbench.config import FeatureConfig
from asrbench.data.audio import load_audio
from asrbench.data.manifest import Utterance, read_manifest, split_path
from asrbench.errors import AsrbenchError
from asrbench.progress import console, progress_bar
from asrbench.torchaudio_compat import functional as audio_functional
from asrbench.torchaudio_compat import kaldi

CACHE_VERSION = 3  # 2: batched Kaldi-compatible fbank; 3: utterances laid end to end (equal within 2e-3)


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
        self.shift = int(config.sample_rate * config.frame_shift_ms / 1000)
        self.size = int(config.sample_rate * config.frame_length_ms / 1000)
        self.padded = 1 << (self.size - 1).bit_length()
        self.window = torch.hann_window(self.size, periodic=False, dtype=torch.float64).pow(0.85).float()
        if config.kind == "fbank":
            banks, _ = kaldi.get_mel_banks(config.num_mel_bins, self.padded, float(config.sample_rate), 20.0, 0.0,
                                           100.0, -500.0, 1.0)
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
            n = waveform.numel()
            span = -(-max(n, size) // shift) * shift  # whole frame shifts, at least one window
            count = 1 + (max(n, size) - size) // shift
            pieces.append(waveform.float())
            if span > n:
                pieces.append(padding[: span - n])
            sizes += [count, span // shift - count]
        pieces.append(padding[: max(size - shift, 0)])  # the last straddling frames read past the end
        signal = torch.cat(pieces).mul_(32768.0)  # Kaldi computes on int16-scaled samples
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
        return kaldi.mfcc(scaled, num_ceps=config.num_ceps, num_mel_bins=max(config.num_mel_bins, 23), **common)


def speed_perturb(waveform: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """Kaldi/sox-style speed change (tempo and pitch): resample to rate/factor, play at rate."""
    if factor == 1.0:
        return waveform
    # rate*factor -> rate gives the same length change as rate -> rate/factor with a far smaller
    # rational ratio (9:10 instead of 8000:8889 at 16 kHz), hence a short resampling filter.
    return audio_functional.resample(waveform, int(round(sample_rate * factor)), sample_rate)


@dataclass
class FeatureSet:
    """Features of one split: frames of all utterances concatenated along time."""

    utterances: list[Utterance]
    frames: torch.Tensor  # (N_frames, F) float32
    offsets: torch.Tensor  # (N_utts + 1,) int64: utterance i is frames[offsets[i]:offsets[i+1]]

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.frames[self.offsets[index] : self.offsets[index + 1]]

    def subset(self, keep: list[int]) -> FeatureSet:
        pieces = [self[i] for i in keep]
        lengths = torch.tensor([0] + [p.size(0) for p in pieces])
        frames = torch.cat(pieces) if pieces else self.frames[:0]
        return FeatureSet([self.utterances[i] for i in keep], frames, torch.cumsum(lengths, 0))


def cache_key(utterances: list[Utterance], config: FeatureConfig, speed: float) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": CACHE_VERSION, "config": asdict(config), "speed": speed}).encode())
    for utt in utterances:
        try:
            size = os.path.getsize(utt.audio)
        except OSError:
            size = -1
        digest.update(f"{utt.id}\t{utt.audio}\t{utt.offset}\t{utt.duration}\t{size}\n".encode())
    return digest.hexdigest()[:20]


CHUNK_SECONDS = 8.0  # audio per batched pass: big enough to amortize the calls, small enough for the cache


def chunked(sizes: list[float], limit: float) -> list[list[int]]:
    """Consecutive indices grouped so that each group's sizes add up to about ``limit``."""
    groups, group, total = [], [], 0.0
    for index, size in enumerate(sizes):
        group.append(index)
        total += size
        if total >= limit:
            groups.append(group)
            group, total = [], 0.0
    return groups + ([group] if group else [])


def extract(
    utterances: list[Utterance], config: FeatureConfig, speed: float = 1.0, description: str = "features"
) -> FeatureSet:
    extractor = FeatureExtractor(config)
    pieces: list[torch.Tensor] = []
    notes: Counter = Counter()
    with progress_bar() as progress:
        task = progress.add_task(description, total=len(utterances))
        # One chunk at a time, each op on all of torch's threads. Against chunks side by side with
        # single-threaded ops (what this did before), that is as fast with the file reading included
        # and ~1.3x faster without it (benchmarks/feature_speed.py, 2 cores).
        for chunk in chunked([u.duration for u in utterances], CHUNK_SECONDS):
            waveforms = []
            for index in chunk:
                utt = utterances[index]
                # A perturbed utterance's duration is already divided by the speed factor; read the original span.
                span = utt.duration * speed if utt.offset else None
                waveform = load_audio(utt.audio, config.sample_rate, utt.offset, span, notes)
                waveforms.append(speed_perturb(waveform, config.sample_rate, speed))
            pieces += extractor.batch(waveforms)
            progress.advance(task, len(chunk))
    for what, count in sorted(notes.items()):
        console.print(f"[yellow]note[/yellow]: {description}: {count} of {len(utterances)} files {what}")
    lengths = torch.tensor([0] + [piece.size(0) for piece in pieces])
    frames = torch.cat(pieces) if pieces else torch.zeros(0, config.dim())
    return FeatureSet(utterances, frames.contiguous(), torch.cumsum(lengths, 0))


def load_features(data_dir: str | Path, split: str, config: FeatureConfig, speed: float = 1.0) -> FeatureSet:
    """Features of a prepared split, from ``<data_dir>/features/`` when cached there."""
    utterances = read_manifest(split_path(data_dir, split))
    if speed != 1.0:
        utterances = [
            Utterance(f"sp{speed:g}-{u.id}", u.audio, u.duration / speed, u.text, u.speaker, u.offset)
            for u in utterances
        ]
    key = cache_key(utterances, config, speed)
    cache = Path(data_dir) / "features" / f"{split}-{key}.pt"
    features = _read_cache(cache, utterances)
    if features is not None:
        return features
    # Several processes (torchrun ranks, parallel bench jobs) may want the same cache at once:
    # one extracts, the others wait for it and then read it.
    with fileio.build_lock(cache.with_suffix(".lock")):
        features = _read_cache(cache, utterances)
        if features is not None:
            return features
        label = f"{split} features" + (f" (speed {speed:g})" if speed != 1.0 else "")
        features = extract(utterances, config, speed, label)
        try:
            fileio.torch_save(
                {"ids": [u.id for u in utterances], "frames": features.frames, "offsets": features.offsets}, cache
            )
        except OSError as err:
            raise AsrbenchError(f"{cache}: cannot write the feature cache ({err.strerror})") from None
    return features


def _read_cache(cache: Path, utterances: list[Utterance]) -> FeatureSet | None:
    """The cached features when ``cache`` holds these utterances' features; None otherwise."""
    if not cache.is_file():
        return None
    try:
        stored = torch.load(cache, weights_only=True)
        if stored["ids"] == [u.id for u in utterances]:
            return FeatureSet(utterances, stored["frames"], stored["offsets"])
    except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
        pass
    return None


@dataclass
class GlobalCMVN:
    """Global mean/variance normalization with statistics from the training set."""

    mean: torch.Tensor  # (F,)
    std: torch.Tensor  # (F,)

    @classmethod
    def from_frames(cls, frames: torch.Tensor) -> GlobalCMVN:
        frames = frames.double()
        return cls(frames.mean(0).float(), frames.std(0).clamp(min=1e-5).float())

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, values: dict) -> GlobalCMVN:
        return cls(values["mean"], values["std"])
