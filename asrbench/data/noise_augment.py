"""Noise-augmented training (``augment.noise``): additive noise at a random SNR, mixed into the
waveform before its features, so that "robust training" is itself something to compare.

The sources are those of ``asrbench study noise`` (:mod:`asrbench.data.corruption`): ``white``,
``pink``, ``babble`` (a sum of other training speakers' utterances) and folders of noise
recordings. A batch's draws come from its seed alone (:func:`asrbench.data.batching.batch_seed`,
the seed SpecAugment uses, through a generator of its own so SpecAugment's draws do not change):
for each utterance whether it gets noise (``noise_prob``), which source, the SNR (uniform in
``noise_snr`` dB, measured over the speech as in the study) and the noise itself. So a resumed
run, any number of loader workers and any number of ranks see the same noisy audio.

**On the fly, not cached per epoch.** The features of a noised utterance are computed from its
audio in the loader worker that collates its batch (the clean ones still come from the store).
Every epoch draws new noise for every utterance, so a cache would hold a new copy of the
corpus's features per epoch (epochs x the store's bytes on disk) and extract each of them once
all the same: it saves nothing, and its disk grows with the epochs. On the fly costs one audio
read and one fbank per noised utterance; benchmarks/noise_augment_cost.py measures it against
a training step (docs/using.md gives the figure). Memory stays bounded whatever the corpus: the
babble pool is at most :data:`BABBLE_POOL` utterances, and a folder of recordings is read a
stretch at a time, never loaded whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch

from asrbench.data import corruption
from asrbench.data.audio import load_audio
from asrbench.data.fbank import FeatureExtractor, speed_perturb
from asrbench.data.manifest import Utterance
from asrbench.data.store import DTYPES
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import AugmentConfig, FeatureConfig, data_root

BABBLE_POOL = 64  # training utterances babble is made from (a seeded choice, loaded once per worker)
POOL_SEED = 20  # which utterances the pool holds: the same for every run of a corpus


def resolve_noise_folder(name: str) -> Path:
    """A folder named in ``augment.noise``: as given when it exists, else under $ASRBENCH_DATA_ROOT."""
    path = Path(name)
    if path.is_dir() or path.is_absolute():
        folder = path
    else:
        folder = data_root() / path
    if not folder.is_dir():
        raise AsrbenchError(
            f"augment.noise: {name}: not white, pink, babble or a folder of noise recordings (nor {folder})"
        )
    return folder


def _waveform(utt: Utterance, sample_rate: int) -> np.ndarray:
    return load_audio(utt.audio, sample_rate, utt.offset, utt.duration if utt.offset else None).numpy()


class RecordingNoise:
    """A folder of noise recordings, read a random stretch at a time (resampled to the model's
    rate, looped when a recording is shorter than the utterance): bounded memory whatever its size."""

    def __init__(self, folder: Path, sample_rate: int):
        self.sample_rate = sample_rate
        try:
            self.files = [(str(path), soundfile.info(str(path)).duration) for path in corruption.noise_files(folder)]
        except AsrbenchError as err:
            raise AsrbenchError(str(err).replace("--noise ", "augment.noise: ", 1)) from None
        except (RuntimeError, soundfile.LibsndfileError) as err:
            raise AsrbenchError(f"augment.noise: {folder}: unreadable noise recording ({err})") from None

    def sample(self, length: int, rng: np.random.Generator, speaker: str | None = None) -> np.ndarray:
        path, duration = self.files[int(rng.integers(0, len(self.files)))]
        need = length / self.sample_rate
        if duration > need:
            offset = float(rng.uniform(0.0, duration - need))
            samples = load_audio(path, self.sample_rate, offset, need).numpy()
        else:
            samples = load_audio(path, self.sample_rate).numpy()
        return corruption.fit(samples, length, rng).astype(np.float64)


class NoiseAugment:
    """``augment.noise`` for one training set: draws per batch, and the noisy features of an utterance."""

    def __init__(self, augment: AugmentConfig, features: FeatureConfig, utterances: list[Utterance]):
        self.kinds = list(augment.noise)
        self.low, self.high = float(augment.noise_snr[0]), float(augment.noise_snr[1])
        self.prob = float(augment.noise_prob)
        self.config = features
        # Each folder's file list and durations, read once here (a bad folder fails now, in one line,
        # not in a loader worker) and carried to the workers with this object.
        self.recordings = {
            kind: RecordingNoise(resolve_noise_folder(kind), features.sample_rate)
            for kind in self.kinds
            if kind not in corruption.KINDS
        }
        if "babble" in self.kinds:
            by_id = sorted(utterances, key=lambda utt: utt.id)
            order = np.random.default_rng(POOL_SEED).permutation(len(by_id))[:BABBLE_POOL]
            self.pool = [by_id[int(i)] for i in order]
            if len(self.pool) < 2:
                raise AsrbenchError("augment.noise: babble needs at least two training utterances")
        else:
            self.pool = []
        self._sources: list | None = None  # built on first use, in each worker
        self._extractor: FeatureExtractor | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_sources"], state["_extractor"] = None, None
        return state

    def _source_list(self) -> list:
        if self._sources is None:
            rate = self.config.sample_rate
            sources: list[corruption.NoiseSource | RecordingNoise] = []
            for kind in self.kinds:
                if kind == "babble":
                    pool = [(utt.speaker, _waveform(utt, rate)) for utt in self.pool]
                    sources.append(corruption.NoiseSource("babble", rate, pool=pool))
                elif kind in corruption.KINDS:
                    sources.append(corruption.NoiseSource(kind, rate))
                else:
                    sources.append(self.recordings[kind])
            self._sources = sources
        return self._sources

    def generator(self, seed: int | None) -> np.random.Generator:
        """The batch's generator: from its augmentation seed (fresh entropy without one)."""
        return corruption.generator(seed, "augment.noise") if seed is not None else np.random.default_rng()

    def draw(self, rng: np.random.Generator) -> tuple[int, float] | None:
        """One utterance's draw: (source index, SNR dB), or None for no noise."""
        if float(rng.random()) >= self.prob:
            return None
        return int(rng.integers(0, len(self.kinds))), float(rng.uniform(self.low, self.high))

    def features(
        self, utt: Utterance, speed: float, length: int, source: int, snr: float, rng: np.random.Generator
    ) -> torch.Tensor:
        """(length, F) float32: ``utt``'s features (at ``speed``) with noise from ``source`` at ``snr``
        dB, rounded to ``features.dtype`` like the store's; ``length`` is the store's frame count."""
        rate = self.config.sample_rate
        span = utt.duration * speed if utt.offset else None  # a perturbed copy's duration is already divided
        waveform = speed_perturb(load_audio(utt.audio, rate, utt.offset, span), rate, speed).numpy()
        noise = self._source_list()[source].sample(waveform.size, rng, utt.speaker)
        noisy = corruption.mix(waveform, noise, snr, rate)
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.config)
        frames = self._extractor(torch.from_numpy(noisy)).numpy()
        frames = frames.astype(DTYPES[self.config.dtype]).astype(np.float32)
        if frames.shape[0] < length:  # the same samples give the store's frame count; never fewer rows
            frames = np.concatenate([frames, np.repeat(frames[-1:], length - frames.shape[0], axis=0)])
        return torch.from_numpy(frames[:length])
