"""A decode's result, typed: what ``decode/<split>/result.json`` holds, and the one loader of it.

:func:`asrbench.decoding.decode.decode` returns a :class:`DecodeResult` and writes its
:meth:`DecodeResult.to_dict` (the keys external readers know, plus ``format``). ``compare``,
``report``, the studies and ``bench`` read results only through :func:`read_result` /
:func:`load_result`, which name the file in a one-line :class:`AsrbenchError` when it is missing
or malformed.

Older files load: a file without ``format`` is read as the first layout, and a key an older
decode did not write gets its default here — None for every figure (``wer_ci``/``cer_ci``: compare
computes them from ``hypotheses.jsonl``; ``ter``, ``search_rtfx``, ``streaming``, ``tag``: not
measured), ``units`` "char" (results older than subword and phone units), ``decoder`` None
(``report`` then assumes the best checkpoint), ``gflops_per_second`` and the ``rtfx_end_to_end``
figures None (measured since issue 30; written only when set, so an older file writes back
unchanged). Keys this module does not know are kept in
``extra`` and written back unchanged. A file of a newer format is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from asrbench import fileio
from asrbench.errors import AsrbenchError
from asrbench.runs import rundir

FORMAT = "asrbench-result-1"  # bump when a key changes meaning; older formats must still load
FILENAME = "result.json"
_FORMAT_PATTERN = re.compile(r"^asrbench-result-(\d+)$")


class _Malformed(ValueError):
    """A value of the wrong type; the loader adds the file's name."""


def _check(key: str, value, kind: str):
    """``value`` when it is of ``kind`` (or None), else :class:`_Malformed`; intervals become tuples."""
    if value is None:
        return None
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "mapping": isinstance(value, dict),
        "interval": isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value),
    }[kind]
    if not ok:
        expected = {
            "str": "a string",
            "int": "a whole number",
            "number": "a number",
            "bool": "true or false",
            "mapping": "an object",
            "interval": "[low, high]",
        }[kind]
        raise _Malformed(f"'{key}' must be {expected} or null, not {value!r}"[:200])
    return tuple(value) if kind == "interval" else value


@dataclass(frozen=True)
class Bootstrap:
    """``ci``: how ``wer_ci`` and ``cer_ci`` were computed (:func:`asrbench.scoring.metrics.confidence_intervals`)."""

    method: str | None = None
    resamples: int | None = None
    confidence: float | None = None
    seed: int | None = None

    @classmethod
    def from_dict(cls, values: dict) -> Bootstrap:
        kinds = {"method": "str", "resamples": "int", "confidence": "number", "seed": "int"}
        return cls(**{key: _check(f"ci.{key}", values.get(key), kind) for key, kind in kinds.items()})

    def to_dict(self) -> dict:
        return {"method": self.method, "resamples": self.resamples, "confidence": self.confidence, "seed": self.seed}


_DECODER_KEYS = {
    "options": "mapping",
    "tuned": "mapping",
    "batch_frames": "int",
    "checkpoint": "str",
    "threads": "int",
    "rtfx_covers": "str",
}


@dataclass(frozen=True)
class DecoderRecord:
    """``decoder``: the searcher's description (``kind`` and the values it searched with: free-form
    per searcher, :mod:`asrbench.decoding.searchers`), the options as given, where tuned values came
    from, and the conditions of the RTFx."""

    search: dict[str, Any] = field(default_factory=dict)  # the searcher's description, ``kind`` included
    options: dict[str, Any] | None = None  # DecodeOptions.to_dict() (None: decoded before options were recorded)
    tuned: dict[str, Any] | None = None  # {"file", "split", "values"} with --tuned, else None
    batch_frames: int | None = None
    checkpoint: str | None = None  # as given to decode: best, last or a file
    threads: int | None = None
    rtfx_covers: str | None = None

    @property
    def kind(self) -> str | None:
        return self.search.get("kind")

    @classmethod
    def from_dict(cls, values: dict) -> DecoderRecord:
        known = {key: _check(f"decoder.{key}", values.get(key), kind) for key, kind in _DECODER_KEYS.items()}
        _check("decoder.kind", values.get("kind"), "str")
        return cls(search={key: value for key, value in values.items() if key not in _DECODER_KEYS}, **known)

    def to_dict(self) -> dict:
        return {
            **self.search,
            "options": self.options,
            "tuned": self.tuned,
            "batch_frames": self.batch_frames,
            "checkpoint": self.checkpoint,
            "threads": self.threads,
            "rtfx_covers": self.rtfx_covers,
        }


# The figures measured by streaming a CTC model or a transducer on CPU
# (:func:`asrbench.decoding.streaming.latency_summary`); absent when only the chunk was set.
_MEASURED = {
    "chunk_compute_ms_p50": "number",
    "chunk_compute_ms_p90": "number",
    "rtf": "number",
    "first_token_latency_ms_p50": "number",
    "first_token_latency_ms_p90": "number",
    "final_latency_ms_p50": "number",
    "final_latency_ms_p90": "number",
    "utterances": "int",
    "streamed_equals_chunked_pass": "int",
    "latency_reference": "str",
    "threads": "int",
}


@dataclass(frozen=True)
class StreamingFigures:
    """``streaming`` (a decode with ``--chunk-ms``): the chunk, its algorithmic latency, the measured
    latencies when they were measured (``measured``), and the split's full-context WER when decoded."""

    chunk_ms: float | None = None
    left_chunks: int | None = None
    algorithmic_latency_ms: float | None = None
    measured: bool = False  # whether the latencies below were measured (CTC or transducer on CPU)
    chunk_compute_ms_p50: float | None = None
    chunk_compute_ms_p90: float | None = None
    rtf: float | None = None  # compute / audio
    first_token_latency_ms_p50: float | None = None
    first_token_latency_ms_p90: float | None = None
    final_latency_ms_p50: float | None = None
    final_latency_ms_p90: float | None = None
    utterances: int | None = None
    streamed_equals_chunked_pass: int | None = None  # utterances whose streamed output equals the chunked pass
    latency_reference: str | None = None
    threads: int | None = None
    full_context_wer: float | None = None
    latency_not_measured: str | None = None  # why the latencies were not measured, where asrbench cannot

    @classmethod
    def from_dict(cls, values: dict) -> StreamingFigures:
        kinds = {
            "chunk_ms": "number",
            "left_chunks": "int",
            "algorithmic_latency_ms": "number",
            **_MEASURED,
            "full_context_wer": "number",
            "latency_not_measured": "str",
        }
        checked = {key: _check(f"streaming.{key}", values.get(key), kind) for key, kind in kinds.items()}
        return cls(measured=any(key in values for key in _MEASURED), **checked)

    def to_dict(self) -> dict:
        head = {
            "chunk_ms": self.chunk_ms,
            "left_chunks": self.left_chunks,
            "algorithmic_latency_ms": self.algorithmic_latency_ms,
        }
        measured = {key: getattr(self, key) for key in _MEASURED} if self.measured else {}
        reason = {"latency_not_measured": self.latency_not_measured} if self.latency_not_measured else {}
        return {**head, **measured, **reason, "full_context_wer": self.full_context_wer}


# Top-level keys in the order decode writes them, with their types ("" marks a nested object).
_KEYS = {
    "run": "str",
    "model": "str",
    "split": "str",
    "tag": "str",
    "data_dir": "str",
    # rates (asrbench.scoring.metrics.ErrorRates), percent; None: no reference word / character
    "wer": "number",
    "cer": "number",
    "substitutions": "int",
    "deletions": "int",
    "insertions": "int",
    "words": "int",
    "char_substitutions": "int",
    "char_deletions": "int",
    "char_insertions": "int",
    "characters": "int",
    "utterances": "int",
    "sentence_errors": "int",
    "normalizer": "str",
    "wer_ci": "interval",
    "cer_ci": "interval",
    "ci": "",
    "ter": "number",
    "token_errors": "int",
    "tokens": "int",
    "units": "str",
    "rtfx": "number",
    "search_rtfx": "number",
    "audio_seconds": "number",
    "decode_seconds": "number",
    "search_seconds": "number",
    "params": "int",
    "decoder": "",
    "streaming": "",
    "config_hash": "str",
    "environment": "mapping",
    # issue 30, cost beside accuracy: written by decode since; absent from older files (loaded as None)
    "gflops_per_second": "number",
    "rtfx_end_to_end": "number",
    "end_to_end_seconds": "number",
    "end_to_end_batch_size": "number",
    "end_to_end_threads": "int",
    "checkpoint_mtime": "number",  # bench: the best checkpoint's mtime the result belongs to
    # issue 33: "external" for a system scored from its transcripts (`asrbench score --name`), not trained here
    "system": "str",
}
# Keys written only when they hold a value: an older file reads and writes back unchanged.
_WRITTEN_WHEN_SET = (
    "gflops_per_second",
    "rtfx_end_to_end",
    "end_to_end_seconds",
    "end_to_end_batch_size",
    "end_to_end_threads",
    "checkpoint_mtime",
    "system",
)


@dataclass(frozen=True)
class DecodeResult:
    """One decode of one split (``decode/<split>[-<tag>]/result.json``); rates in percent."""

    run: str | None = None
    model: str | None = None
    split: str | None = None
    tag: str | None = None
    data_dir: str | None = None
    wer: float | None = None  # None: no reference words (undefined, shown as n/a)
    cer: float | None = None
    substitutions: int | None = None
    deletions: int | None = None
    insertions: int | None = None
    words: int | None = None
    char_substitutions: int | None = None
    char_deletions: int | None = None
    char_insertions: int | None = None
    characters: int | None = None
    utterances: int | None = None
    sentence_errors: int | None = None
    normalizer: str | None = None
    wer_ci: tuple[float, float] | None = None  # bootstrap over utterances; None: undefined or not computed
    cer_ci: tuple[float, float] | None = None
    ci: Bootstrap | None = None
    ter: float | None = None  # token error rate in the model's units
    token_errors: int | None = None
    tokens: int | None = None
    units: str = "char"
    rtfx: float | None = None  # audio / (network + search), after one warm-up batch
    search_rtfx: float | None = None  # audio / search alone
    audio_seconds: float | None = None
    decode_seconds: float | None = None
    search_seconds: float | None = None
    params: int | None = None
    decoder: DecoderRecord | None = None
    streaming: StreamingFigures | None = None
    config_hash: str | None = None
    environment: dict[str, Any] | None = None  # free-form: asrbench.env.environment()
    # The model's forward GFLOPs per second of audio (asrbench.models.cost: encoder + its head, 10 s input)
    gflops_per_second: float | None = None
    # The Open ASR Leaderboard's RTFx (asrbench.decoding.speed): audio / wall seconds of features +
    # network + search, after a warm-up; at end_to_end_batch_size utterances per batch (mean) and
    # end_to_end_threads torch threads. ``rtfx`` keeps its meaning: network + search, features cached.
    rtfx_end_to_end: float | None = None
    end_to_end_seconds: float | None = None
    end_to_end_batch_size: float | None = None
    end_to_end_threads: int | None = None
    checkpoint_mtime: float | None = None  # written by bench only
    system: str | None = None  # "external": scored from another system's transcripts, not trained or decoded here
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as read
    format: str = FORMAT  # the layout the file was written in (old files: "asrbench-result-0")

    @classmethod
    def from_dict(cls, values: dict) -> DecodeResult:
        """The result of a parsed result.json; raises ValueError (without the file's name) when malformed."""
        found = values.get("format")
        if found is None:
            found = "asrbench-result-0"  # written before results carried a format
        match = _FORMAT_PATTERN.match(found) if isinstance(found, str) else None
        if match is None:
            raise _Malformed(f"unknown format {found!r}; expected {FORMAT}")
        if int(match[1]) > int(FORMAT.rsplit("-", 1)[1]):  # FORMAT's own number
            raise _Malformed(f"format {found} is newer than {FORMAT}, the newest this asrbench reads; upgrade asrbench")
        checked = {key: _check(key, values.get(key), kind or "mapping") for key, kind in _KEYS.items()}
        checked["ci"] = None if checked["ci"] is None else Bootstrap.from_dict(checked["ci"])
        checked["decoder"] = None if checked["decoder"] is None else DecoderRecord.from_dict(checked["decoder"])
        checked["streaming"] = (
            None if checked["streaming"] is None else StreamingFigures.from_dict(checked["streaming"])
        )
        if checked["units"] is None:
            checked["units"] = "char"  # results older than subword and phone units
        extra = {key: value for key, value in values.items() if key not in _KEYS and key != "format"}
        return cls(**checked, extra=extra, format=found)

    def to_dict(self) -> dict:
        """What result.json holds: ``format`` first, then the keys in the order decode has always written them."""
        values = {"format": FORMAT}
        for key in _KEYS:
            value = getattr(self, key)
            if key in _WRITTEN_WHEN_SET and value is None:
                continue  # only bench writes checkpoint_mtime; older decodes wrote no cost figures
            if key in ("wer_ci", "cer_ci") and value is not None:
                value = list(value)
            elif key in ("ci", "decoder", "streaming") and value is not None:
                value = value.to_dict()
            values[key] = value
        return {**values, **self.extra}

    @property
    def device(self) -> str | None:
        """The device it was decoded on (from the free-form ``environment``)."""
        return (self.environment or {}).get("device")

    def with_checkpoint_mtime(self, mtime: float) -> DecodeResult:
        return replace(self, checkpoint_mtime=mtime)


def load_result(path: str | Path) -> DecodeResult:
    """The one loader of a result.json: ``<path>: not found`` / ``<path>: unreadable ...`` otherwise."""
    path = Path(path)
    values = rundir.read_json(path)
    try:
        return DecodeResult.from_dict(values)
    except _Malformed as err:
        raise AsrbenchError(f"{path}: unreadable decode result ({err})") from None


def write_result(path: str | Path, result: DecodeResult) -> None:
    """Write ``result`` atomically (a reader never sees half a file)."""
    fileio.write_json(path, result.to_dict())


def result_path(run_dir: str | Path, name: str) -> Path:
    """``<run>/decode/<name>/result.json``; ``name`` is a split, or a split and a tag (``test-beam10``)."""
    return Path(run_dir) / "decode" / name / FILENAME


def decoded_names(run_dir: str | Path) -> list[str]:
    """The decode dirs of a run that hold a result (``test``, ``test-beam10``, ...), sorted."""
    return sorted(path.parent.name for path in (Path(run_dir) / "decode").glob(f"*/{FILENAME}"))


def read_result(run_dir: str | Path, split: str) -> DecodeResult:
    """A run's result for ``split`` (or ``<split>-<tag>``); a missing one is a user error saying which
    ``asrbench decode`` command writes it and which results the run has."""
    path = result_path(run_dir, split)
    if not path.is_file():
        decoded = decoded_names(run_dir)
        have = f"; it has decode results for: {', '.join(decoded)}" if decoded else ""
        raise AsrbenchError(
            f"{run_dir}: no decode result for split '{split}' (run `{decode_advice(Path(run_dir), split)}` first{have})"
        )
    return load_result(path)


_CHUNK_TAG = re.compile(r"^chunk(?P<ms>\d+(?:\.\d+)?)(?:-left(?P<left>\d+))?$")


def decode_advice(run_dir: Path, name: str) -> str:
    """The ``asrbench decode`` command that writes ``decode/<name>/`` of a run.

    ``name`` is a split (``test``) or a split and a tag (``test-tuned``: ``--split test --tuned
    --tag tuned``; ``test-chunk320``: ``--chunk-ms 320``, whose tag is the default). A split's
    name may hold a '-' only when the run's data dir has that split.
    """
    split, _, tag = name.partition("-")
    if not tag or _has_split(run_dir, name):
        return f"asrbench decode {run_dir} --split {name}"
    chunked = _CHUNK_TAG.match(tag)
    if tag == "tuned":
        options = "--tuned --tag tuned"
    elif chunked:
        options = f"--chunk-ms {chunked['ms']}" + (f" --left-chunks {chunked['left']}" if chunked["left"] else "")
    else:
        options = f"--tag {tag}"
    return f"asrbench decode {run_dir} --split {split} {options}"


def _has_split(run_dir: Path, name: str) -> bool:
    try:
        return (Path(rundir.read_config(run_dir).data.dir) / f"{name}.jsonl").is_file()
    except (AsrbenchError, OSError, ValueError, TypeError, AttributeError, KeyError):  # advice only: by the name
        return False
