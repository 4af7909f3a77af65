"""The built-in corpus: real synthesized speech, so the demo runs anywhere with no download.

Utterances are spoken digit strings ("THREE ONE FOUR") and short commands ("TURN ON THE
LIGHTS") rendered by the espeak-ng formant synthesizer with several voices, speaking rates and
pitches. The test split is spoken only by voices that never occur in train or dev, so the test
WER measures generalization to unseen speakers rather than memorized ones.

Licensing: espeak-ng is GPL-3.0. It is an optional extra (``pip install 'asrbench[synth]'``,
which pulls in the ``espeakng-loader`` wheel with ``libespeak-ng`` and its voice data); we
load that library at runtime through ``ctypes`` and ship none of it, so asrbench itself stays
permissively licensed.

Reproducibility: the same :class:`SynthConfig` gives identical manifests and identical WAV
bytes. Content comes from ``random.Random`` seeded per split (no global RNG). The audio needs
more care: espeak-ng keeps synthesis state between calls in C statics that no API resets
(pitch-flutter phase, gain control), so the same text sounds slightly different depending on
what was spoken before. Each corpus is therefore rendered by its own freshly loaded private copy
of the library, fed the same utterances in the same order.
"""

from __future__ import annotations

import _ctypes
import ctypes
import locale
import math
import random
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from asrbench import fileio
from asrbench.data.manifest import SPLITS, Utterance, write_data_dir
from asrbench.errors import AsrbenchError

DIGIT_WORDS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
COMMANDS = (
    "GO LEFT", "GO RIGHT", "GO FORWARD", "GO BACK", "STOP", "START",
    "TURN ON THE LIGHTS", "TURN OFF THE LIGHTS", "VOLUME UP", "VOLUME DOWN",
    "CALL HOME", "NEXT", "PREVIOUS", "PLAY MUSIC", "PAUSE", "OPEN THE DOOR",
    "CLOSE THE DOOR", "WHAT TIME IS IT", "WHAT'S THE WEATHER", "YES", "NO", "CANCEL",
)  # fmt: skip

# A voice is "<accent>+<variant>"; variants change formants, pitch range and voice quality.
# Train and dev share TRAIN_VOICES; the test split uses the disjoint TEST_VOICES. Breathy
# variants (f2, f3, f5, ...) are left out: their noise differs from run to run even with the C
# rand() seeded (it follows memory addresses), which would break reproducible audio.
ACCENTS = ("en-us", "en")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m6", "m8", "f1", "linda", "steph")
TEST_VARIANTS = ("m4", "m7", "f4", "aunty")
TRAIN_VOICES = tuple(f"{accent}+{variant}" for accent in ACCENTS for variant in TRAIN_VARIANTS)
TEST_VOICES = tuple(f"{accent}+{variant}" for accent in ACCENTS for variant in TEST_VARIANTS)
RATE_RANGE = (130, 200)  # words per minute (espeak-ng's default is 175)
PITCH_RANGE = (30, 70)  # espeak-ng's 0-100 scale, 50 is the voice's own pitch
PAD_RANGE = (0.05, 0.25)  # seconds of silence kept before and after the speech
MISSING_EXTRA = "the built-in corpus needs the synth extra: pip install 'asrbench[synth]'"

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report a bad data path instead of calling exit()
_RATE, _PITCH = 1, 3  # espeak_PARAMETER
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# espeak-ng is not thread-safe, and initializing it touches the process-wide locale.
_LOCK = threading.Lock()


@dataclass
class SynthConfig:
    """Size and seed of the built-in corpus; the same config always gives the same bytes."""

    seed: int = 0
    train_utterances: int = 600
    dev_utterances: int = 100
    test_utterances: int = 100
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        for split in SPLITS:
            count = getattr(self, f"{split}_utterances")
            if count < 0:
                raise AsrbenchError(f"synth: {split}_utterances must be >= 0, got {count}")
        if self.sample_rate < 8000:
            raise AsrbenchError(f"synth: sample_rate must be at least 8000, got {self.sample_rate}")


@dataclass(frozen=True)
class UtterancePlan:
    """Everything that decides one utterance's audio, drawn before any synthesis."""

    id: str
    text: str  # the transcript: uppercase words
    voice: str  # espeak-ng voice name, also the manifest's speaker
    rate: int
    pitch: int
    pad_seconds: float


def plan_corpus(config: SynthConfig) -> dict[str, list[UtterancePlan]]:
    """Draw text, voice, rate and pitch for every utterance; a pure function of ``config``.

    Each split has its own RNG, so e.g. growing the test split leaves train unchanged.
    """
    plans: dict[str, list[UtterancePlan]] = {}
    for split in SPLITS:
        rng = random.Random(f"asrbench-synth/{config.seed}/{split}")
        voices = TEST_VOICES if split == "test" else TRAIN_VOICES
        plans[split] = [
            UtterancePlan(
                id=f"synth-{split}-{index:06d}",
                text=_draw_text(rng),
                voice=rng.choice(voices),
                rate=rng.randint(*RATE_RANGE),
                pitch=rng.randint(*PITCH_RANGE),
                pad_seconds=round(rng.uniform(*PAD_RANGE), 3),
            )
            for index in range(getattr(config, f"{split}_utterances"))
        ]
    return plans


def _draw_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return " ".join(rng.choice(DIGIT_WORDS) for _ in range(rng.randint(1, 4)))
    return rng.choice(COMMANDS)


def espeak_available() -> bool:
    """Whether the optional ``espeakng-loader`` package (and its library and data) is installed."""
    try:
        _espeak_paths()
    except AsrbenchError:
        return False
    return True


def _espeak_paths() -> tuple[Path, Path]:
    """(path of libespeak-ng, path of espeak-ng-data) from the ``espeakng-loader`` wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise AsrbenchError(MISSING_EXTRA) from None
    try:
        library, data = Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())
    except RuntimeError:  # raised when the data folder is missing
        raise AsrbenchError(MISSING_EXTRA) from None
    if not library.is_file() or not data.is_dir():
        raise AsrbenchError(MISSING_EXTRA)
    return library, data


class _Espeak:
    """One private, freshly initialized instance of libespeak-ng.

    The library is copied to a temporary folder before loading because the dynamic loader
    hands back the already-loaded instance (with its leftover synthesis state) for a path it
    has seen; a new file gives new C statics.
    """

    def __init__(self) -> None:
        library_path, data_path = _espeak_paths()
        self._folder = Path(tempfile.mkdtemp(prefix="asrbench-espeak-"))
        copy = self._folder / library_path.name
        shutil.copyfile(library_path, copy)
        try:
            lib = ctypes.CDLL(str(copy))
        except OSError as err:
            self._remove_folder()
            raise AsrbenchError(f"{library_path}: cannot load espeak-ng ({err})") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        self._lib = lib
        self._chunks: list[bytes] = []
        self._callback = _SynthCallback(self._collect)  # must outlive every call into the library
        with _LOCK:
            # espeak_Initialize switches the process-wide LC_CTYPE to C.UTF-8; put it back.
            host_ctype = locale.setlocale(locale.LC_CTYPE)
            # Synchronous mode: espeak_Synth returns only after handing every sample to the callback.
            self.sample_rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), _INITIALIZE_DONT_EXIT
            )
            locale.setlocale(locale.LC_CTYPE, host_ctype)
            if self.sample_rate <= 0:
                self._unload()
                raise AsrbenchError(f"{data_path}: espeak-ng failed to initialize from this data folder")
            lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples, sample_count: int, events) -> int:
        if samples and sample_count > 0:
            self._chunks.append(ctypes.string_at(samples, sample_count * 2))
        return 0  # 0 = keep going

    def speak(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        """int16 samples of shape (samples,) at ``self.sample_rate``."""
        encoded = text.encode("utf-8") + b"\0"
        lib = self._lib
        with _LOCK:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise RuntimeError(f"espeak-ng has no voice {voice!r}")
            lib.espeak_SetParameter(_RATE, rate, 0)
            lib.espeak_SetParameter(_PITCH, pitch, 0)
            self._chunks.clear()
            status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
            return np.frombuffer(b"".join(self._chunks), dtype=np.int16).copy()

    def close(self) -> None:
        with _LOCK:
            self._lib.espeak_Terminate()
            self._unload()

    def _unload(self) -> None:
        dlclose = getattr(_ctypes, "dlclose", None)
        if dlclose is not None:  # POSIX: unmap this copy; elsewhere it stays until exit
            dlclose(self._lib._handle)
        self._remove_folder()

    def _remove_folder(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> _Espeak:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling through the FFT: (n,) -> float64 (n * target_rate // source_rate,).

    Not torchaudio's resample: its conv1d runs on torch's thread pool, which made the whole
    corpus over 20x slower when other processes competed for the cores; numpy's FFT is
    single-threaded and takes well under a millisecond per utterance. The signal is zero-padded
    by at least 100 ms so the FFT's circular wrap-around lands in silence, and to a multiple of
    ``source_rate / gcd`` samples so the output length is exact. The top 10% of the kept band is
    faded out with a raised cosine instead of cut like a brick wall, which would ring.
    """
    common = math.gcd(source_rate, target_rate)
    blocks_needed = -(-(len(samples) + source_rate // 10) // (source_rate // common))
    blocks = 1 << (blocks_needed - 1).bit_length()  # a power of two keeps the FFT sizes fast
    input_length, output_length = blocks * source_rate // common, blocks * target_rate // common
    spectrum = np.fft.rfft(samples.astype(np.float64), input_length)
    keep = min(len(spectrum), output_length // 2 + 1)
    fade = keep - int(0.9 * keep)
    kept = np.zeros(output_length // 2 + 1, dtype=np.complex128)
    kept[:keep] = spectrum[:keep]
    kept[keep - fade : keep] *= 0.5 * (1 + np.cos(np.pi * np.arange(fade) / fade))
    resampled = np.fft.irfft(kept, output_length) * (output_length / input_length)
    return resampled[: len(samples) * target_rate // source_rate]


def _trim_and_pad(samples: np.ndarray, pad: int) -> np.ndarray:
    """Cut espeak-ng's own leading/trailing silence, then add ``pad`` zero samples each side.

    samples: int16 (samples,). Speech is whatever exceeds 1% of the peak.
    """
    magnitude = np.abs(samples.astype(np.int32))
    loud = np.flatnonzero(magnitude > 0.01 * magnitude.max()) if magnitude.size else magnitude
    speech = samples[loud[0] : loud[-1] + 1] if loud.size else samples
    return np.pad(speech, (pad, pad))


def synthesize_corpus(
    out_dir: str | Path,
    config: SynthConfig = SynthConfig(),
    progress: bool = True,
) -> dict[str, int]:
    """Write ``out_dir/audio/<split>/<id>.wav`` and ``out_dir/{train,dev,test}.jsonl``.

    Audio is 16-bit PCM mono WAV at ``config.sample_rate``; manifests hold paths relative to
    ``out_dir``, the transcript and the voice as ``speaker``. Returns utterance counts per split.
    Every file is written atomically; files of an earlier, larger corpus there are left alone.
    """
    import soundfile
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise AsrbenchError(f"{out_dir}: exists and is not a folder")
    _espeak_paths()  # fail with the install hint before drawing or writing anything
    plans = plan_corpus(config)
    total = sum(len(split_plans) for split_plans in plans.values())
    splits: dict[str, list[Utterance]] = {}
    columns = (
        TextColumn("synthesizing {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with _Espeak() as engine, Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("corpus", total=total)
        for split, split_plans in plans.items():
            bar.update(task, description=split)
            splits[split] = []
            for plan in split_plans:
                native = engine.speak(plan.text.lower(), plan.voice, plan.rate, plan.pitch)
                resampled = _resample(native, engine.sample_rate, config.sample_rate)
                samples = np.clip(np.rint(resampled), -32768, 32767).astype(np.int16)
                samples = _trim_and_pad(samples, int(round(plan.pad_seconds * config.sample_rate)))
                relative = f"audio/{split}/{plan.id}.wav"
                with fileio.atomic_open(out_dir / relative, "wb") as handle:
                    soundfile.write(handle, samples, config.sample_rate, subtype="PCM_16", format="WAV")
                splits[split].append(
                    Utterance(
                        id=plan.id,
                        audio=relative,
                        duration=len(samples) / config.sample_rate,
                        text=plan.text,
                        speaker=plan.voice,
                    )
                )
                bar.advance(task)
    return write_data_dir(out_dir, splits)
