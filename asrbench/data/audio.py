"""Audio I/O through soundfile (libsndfile: WAV, FLAC, NIST SPHERE, ...).

Returns mono float32 at the requested sample rate: multi-channel audio is downmixed and other
rates are resampled (torchaudio's pure-Python ``resample``).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter

import numpy as np
import soundfile
import torch

from asrbench.errors import AsrbenchError


def audio_extensions() -> set[str]:
    """File name endings libsndfile reads (``.wav``, ``.flac``, ``.ogg``, ``.sph`` ...)."""
    extensions = {f".{name.lower()}" for name in soundfile.available_formats()}
    return extensions | {".wav", ".flac", ".ogg", ".oga", ".opus", ".sph", ".nist", ".aiff", ".aif", ".au", ".mp3"}


def _require_file(path: str) -> None:
    # soundfile reports a missing file as a generic "System error", so check first.
    if not os.path.isfile(path):
        raise AsrbenchError(f"{path}: audio file not found")


def audio_info(path: str) -> tuple[float, int]:
    """(duration in seconds, sample rate) read from the header."""
    _require_file(path)
    try:
        info = soundfile.info(path)
    except FileNotFoundError:
        raise AsrbenchError(f"{path}: audio file not found") from None
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise AsrbenchError(f"{path}: unreadable audio ({err})") from None
    if info.frames <= 0:
        raise AsrbenchError(f"{path}: zero-length audio")
    return info.frames / info.samplerate, info.samplerate


def load_audio(
    path: str, sample_rate: int, offset: float = 0.0, duration: float | None = None, notes: Counter | None = None
) -> torch.Tensor:
    """Load ``path`` as a mono float32 tensor of shape (samples,) at ``sample_rate``.

    ``notes`` counts the conversions made (``"resampled from N Hz"``, ``"downmixed from C channels"``)
    so callers can report them once per split instead of per file.
    """
    _require_file(path)
    try:
        with soundfile.SoundFile(path) as handle:
            native_rate = handle.samplerate
            start = int(round(offset * native_rate))
            frames = -1 if duration is None else int(round(duration * native_rate))
            if start:
                handle.seek(start)
            data = handle.read(frames=frames, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise AsrbenchError(f"{path}: audio file not found") from None
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise AsrbenchError(f"{path}: unreadable audio ({err})") from None
    if data.shape[0] == 0:
        raise AsrbenchError(f"{path}: zero-length audio")
    waveform = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]))
    if notes is not None and data.shape[1] > 1:
        notes[f"downmixed from {data.shape[1]} channels to mono"] += 1
    if notes is not None and native_rate != sample_rate:
        notes[f"resampled from {native_rate} Hz to {sample_rate} Hz"] += 1
    if native_rate != sample_rate:
        # Only to resample: `data prepare` reads headers through this module and need not load torchaudio.
        from asrbench.torchaudio_compat import functional

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            waveform = functional.resample(waveform, native_rate, sample_rate)
    return waveform
