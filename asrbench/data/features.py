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

CACHE_VERSION = 2  # 2: batched Kaldi-compatible fbank (equal to version 1 within 2e-3)


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

        The per-frame DC removal and pre-emphasis are linear, so they are applied to the whole
        waveform first: with e[n] = x[n] - 0.97 x[n-1], a frame's pre-emphasized, DC-free samples
        are e minus 0.03 times the frame mean (the first sample uses 0.03 x instead, Kaldi's
        "replicate" edge), and the mean comes from a cumulative sum.
        """
        if self.config.kind != "fbank":
            return [self(waveform) for waveform in waveforms]
        k = self.PREEMPHASIS
        frames, firsts, means, counts = [], [], [], []
        for waveform in waveforms:
            x = self._scaled(waveform)
            count = 1 + (x.numel() - self.size) // self.shift
            emphasized = torch.empty_like(x)
            torch.sub(x[1:], x[:-1], alpha=k, out=emphasized[1:])
            frames.append(emphasized.as_strided((count, self.size), (self.shift, 1)))
            firsts.append(x.as_strided((count,), (self.shift,)))
            sums = torch.nn.functional.pad(x.double().cumsum(0), (1, 0))
            starts = torch.arange(count) * self.shift
            means.append(((sums[starts + self.size] - sums[starts]) / self.size).float())
            counts.append(count)
        x = torch.cat(frames)
        x[:, 0] = torch.cat(firsts) * (1 - k)
        x.addr_(torch.cat(means), torch.ones(self.size), alpha=-(1 - k))  # DC removal after pre-emphasis
        x.mul_(self.window)
        spectrum = torch.fft.rfft(x, n=self.padded)
        power = spectrum.real.square_().add_(spectrum.imag.square())
        features = (self.banks @ power.T).T.clamp_min(self.epsilon).log_()
        return list(torch.split(features, counts))

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


def extract(
    utterances: list[Utterance], config: FeatureConfig, speed: float = 1.0, description: str = "features"
) -> FeatureSet:
    extractor = FeatureExtractor(config)
    pieces: list[torch.Tensor] = []
    notes: Counter = Counter()
    pending: list[torch.Tensor] = []  # waveforms waiting for one batched pass (~16 s of audio: cache-sized)
    pending_samples = 0
    with progress_bar() as progress:
        task = progress.add_task(description, total=len(utterances))
        for index, utt in enumerate(utterances):
            # A perturbed utterance's duration is already divided by the speed factor; read the original span.
            span = utt.duration * speed if utt.offset else None
            waveform = speed_perturb(load_audio(utt.audio, config.sample_rate, utt.offset, span, notes),
                                     config.sample_rate, speed)
            pending.append(waveform)
            pending_samples += waveform.numel()
            if pending_samples >= 16 * config.sample_rate or index == len(utterances) - 1:
                pieces += extractor.batch(pending)
                progress.advance(task, len(pending))
                pending, pending_samples = [], 0
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
    if cache.is_file():
        try:
            stored = torch.load(cache, weights_only=True)
            if stored["ids"] == [u.id for u in utterances]:
                return FeatureSet(utterances, stored["frames"], stored["offsets"])
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            pass
    label = f"{split} features" + (f" (speed {speed:g})" if speed != 1.0 else "")
    features = extract(utterances, config, speed, label)
    try:
        fileio.torch_save(
            {"ids": [u.id for u in utterances], "frames": features.frames, "offsets": features.offsets}, cache
        )
    except OSError as err:
        raise AsrbenchError(f"{cache}: cannot write the feature cache ({err.strerror})") from None
    return features


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
