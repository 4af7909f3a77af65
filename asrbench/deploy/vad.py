"""Voice-activity detection: where a long recording has speech, so ``transcribe`` can decode it
piece by piece.

Two detectors score a recording frame by frame while reading it in blocks, so the memory they
need is one block plus one number per frame (100 a second: 1.4 MB per hour), whatever its length:

- ``energy`` (no dependency): the log energy of 25 ms frames every 10 ms, in dB. A frame is speech
  when it is ``energy_margin_db`` above the recording's noise floor, the 10th percentile of its
  frames' energies (recordings have pauses between sentences, so their quietest tenth is
  background). Defensible for close-talking and read speech; loud steady noise raises the floor
  and hides quiet speech.
- ``silero`` (the ``vad`` extra: ``pip install 'asrbench[vad]'``): Silero VAD, a small neural
  detector shipped inside its wheel, run on 32 ms windows at 16 kHz; speech above
  ``silero_threshold`` probability. Robust to noise and music.

Both then go through the same smoothing (:func:`speech_regions`): pauses shorter than
``min_silence`` do not split, speech shorter than ``min_speech`` is dropped, each region is padded
by ``pad`` (never past the middle of the pause to its neighbour), and a region longer than
``max_segment`` is cut until every piece fits (models are trained on
utterances of seconds, not minutes). A cut goes through the region's longest pause, so a lower
``max_segment`` with a longer ``min_silence`` splits a recording at its longest pauses first: the
ends of sentences rather than the short stops inside them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import soundfile
import torch

from asrbench.errors import AsrbenchError

DETECTORS = ("energy", "silero", "none")
FRAME_SECONDS = {"energy": 0.01, "silero": 512 / 16000}
BLOCK_SECONDS = 30.0  # audio read at once while scoring


@dataclass(frozen=True)
class VadOptions:
    kind: str = "energy"  # energy | silero | none (decode every file whole)
    max_segment: float = 20.0  # s: files up to this long are decoded whole; longer regions are cut
    min_silence: float = 0.3  # s: shorter pauses do not split speech
    min_speech: float = 0.2  # s: shorter speech regions are dropped
    pad: float = 0.6  # s of context kept on each side of a region (up to the middle of the pause; AN4 dev)
    energy_margin_db: float = 16.0  # energy: speech is this far above the noise floor (chosen on AN4 dev)
    silero_threshold: float = 0.5  # silero: speech probability

    def __post_init__(self) -> None:
        if self.kind not in DETECTORS:
            raise AsrbenchError(f"unknown --vad '{self.kind}' (valid: {', '.join(DETECTORS)})")
        if self.max_segment < 2.0:
            raise AsrbenchError(f"--max-segment must be at least 2 seconds, not {self.max_segment}")
        for name in ("min_silence", "min_speech", "pad"):
            if getattr(self, name) < 0:
                raise AsrbenchError(f"VAD {name} must not be negative, not {getattr(self, name)}")
        if not 0.0 < self.silero_threshold < 1.0:
            raise AsrbenchError(f"VAD silero_threshold must be in (0, 1), not {self.silero_threshold}")

    def to_dict(self) -> dict:
        return asdict(self)


def _open(path: str) -> soundfile.SoundFile:
    try:
        return soundfile.SoundFile(path)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise AsrbenchError(f"{path}: unreadable audio ({err})") from None


def energy_scores(path: str) -> np.ndarray:
    """Log energy (dB) of 25 ms frames every 10 ms of ``path``, read in blocks; (frames,) float32."""
    with _open(path) as handle:
        rate = handle.samplerate
        shift, size = int(round(rate * 0.01)), int(round(rate * 0.025))
        per_block = max(1, int(BLOCK_SECONDS * rate) // shift)
        scores: list[np.ndarray] = []
        carry = np.zeros(0, dtype=np.float32)
        while True:
            block = handle.read(per_block * shift, dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            samples = np.concatenate([carry, block.mean(axis=1)])
            count = max(0, (samples.size - size) // shift + 1)
            if count:
                frames = np.lib.stride_tricks.sliding_window_view(samples, size)[::shift][:count]
                frames = frames - frames.mean(axis=1, keepdims=True)
                scores.append(
                    (10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)).astype(np.float32)
                )
            carry = samples[count * shift :]
    return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)


class _Silero:
    """Silero VAD's packaged model, loaded once per process."""

    model = None

    @classmethod
    def get(cls):
        if cls.model is None:
            try:
                from silero_vad import load_silero_vad
            except ImportError:
                raise AsrbenchError("--vad silero needs the silero-vad package: pip install 'asrbench[vad]'") from None
            with warnings.catch_warnings():  # its loader's importlib and torch.jit deprecations
                warnings.simplefilter("ignore", DeprecationWarning)
                cls.model = load_silero_vad()
        return cls.model


@torch.inference_mode()
def silero_scores(path: str) -> np.ndarray:
    """Silero's speech probability per 32 ms window of ``path`` (resampled to 16 kHz block by block)."""
    model = _Silero.get()
    model.reset_states()
    window = 512
    scores: list[float] = []
    with _open(path) as handle:
        rate = handle.samplerate
        carry = torch.zeros(0)
        while True:
            block = handle.read(int(BLOCK_SECONDS * rate), dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            samples = torch.from_numpy(np.ascontiguousarray(block.mean(axis=1)))
            if rate != 16000:
                # Only to resample: the energy detector and short files need no torchaudio.
                from asrbench.torchaudio_compat import functional

                samples = functional.resample(samples, rate, 16000)
            samples = torch.cat([carry, samples])
            count = samples.numel() // window
            for k in range(count):
                scores.append(float(model(samples[k * window : (k + 1) * window][None], 16000)))
            carry = samples[count * window :]
    return np.asarray(scores, dtype=np.float32)


def speech_frames(path: str, options: VadOptions) -> tuple[np.ndarray, np.ndarray, float]:
    """(speech flags (frames,), scores (frames,), seconds per frame) of ``path``."""
    if options.kind == "energy":
        scores = energy_scores(path)
        floor = float(np.percentile(scores, 10)) if scores.size else 0.0
        return scores > floor + options.energy_margin_db, scores, FRAME_SECONDS["energy"]
    scores = silero_scores(path)
    return scores > options.silero_threshold, scores, FRAME_SECONDS["silero"]


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame runs where ``flags`` is true."""
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def _cut(
    start: int, end: int, flags: np.ndarray, scores: np.ndarray, longest: int, margin: int
) -> list[tuple[int, int]]:
    """Split [start, end) until no piece is longer than ``longest`` frames: at its longest pause
    (a run of non-speech frames, away from both ends; the pause itself dropped), or where it has
    none, at its quietest frame."""
    if end - start <= longest:
        return [(start, end)]
    low, high = start + margin, end - margin
    if high <= low:
        low, high = start + (end - start) // 4, end - (end - start) // 4
    pauses = _runs(~flags[low:high])
    if pauses:
        first, last = max(pauses, key=lambda pause: pause[1] - pause[0])
        left_end, right_start = low + first, low + last
    else:
        left_end = right_start = low + int(np.argmin(scores[low:high]))
    return _cut(start, left_end, flags, scores, longest, margin) + _cut(
        right_start, end, flags, scores, longest, margin
    )


def speech_regions(
    flags: np.ndarray, scores: np.ndarray, frame_seconds: float, options: VadOptions, duration: float
) -> list[tuple[float, float]]:
    """Smoothed speech regions, (start, end) seconds, in order and not overlapping."""
    frames = lambda seconds: int(round(seconds / frame_seconds))  # noqa: E731
    regions: list[list[int]] = []
    for start, end in _runs(flags):
        if regions and start - regions[-1][1] < frames(options.min_silence):
            regions[-1][1] = end
        else:
            regions.append([start, end])
    regions = [region for region in regions if region[1] - region[0] >= max(1, frames(options.min_speech))]
    pieces = [
        piece
        for start, end in regions
        for piece in _cut(
            start,
            end,
            flags,
            scores,
            max(1, frames(options.max_segment - 2 * options.pad)),
            frames(min(1.0, options.max_segment / 4)),
        )
    ]
    seconds: list[tuple[float, float]] = []
    for index, (start, end) in enumerate(pieces):
        before = pieces[index - 1][1] if index else None
        after = pieces[index + 1][0] if index + 1 < len(pieces) else None
        # Pad, but never past the middle of the pause to a neighbour (cut points have none).
        begin = start * frame_seconds - options.pad
        if before is not None:
            begin = max(begin, (before + start) / 2 * frame_seconds)
        finish = end * frame_seconds + options.pad
        if after is not None:
            finish = min(finish, (end + after) / 2 * frame_seconds)
        seconds.append((round(max(0.0, begin), 3), round(min(duration, finish), 3)))
    return [(start, end) for start, end in seconds if end > start]


def detect(path: str, duration: float, options: VadOptions) -> list[tuple[float, float]]:
    """Where to decode ``path``: the whole file when it is short, else its speech regions (with
    ``kind`` none: consecutive pieces of at most ``max_segment``). A long file with no speech
    found gives no region."""
    if duration <= options.max_segment:
        return [(0.0, duration)]
    if options.kind == "none":
        return pieces_of(duration, options.max_segment)
    flags, scores, frame_seconds = speech_frames(path, options)
    return speech_regions(flags, scores, frame_seconds, options, duration)


def pieces_of(duration: float, longest: float) -> list[tuple[float, float]]:
    """``duration`` in equal consecutive pieces of at most ``longest`` seconds (``--vad none`` on a
    long file)."""
    count = max(1, math.ceil(duration / longest))
    step = duration / count
    return [(round(k * step, 3), round(min(duration, (k + 1) * step), 3)) for k in range(count)]
