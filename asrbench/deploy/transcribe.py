"""Transcribe audio files with a trained run dir: ``asrbench transcribe RUN AUDIO...``.

For each file: its audio is read as mono at the model's sample rate (any format libsndfile reads;
other rates are resampled and channels downmixed, noted once per kind), a file longer than the
VAD's ``max_segment`` is split at pauses (:mod:`asrbench.deploy.vad`), and the pieces are decoded in
batches with the same features, CMVN and search as ``asrbench decode`` (so a prepared utterance
transcribes to exactly its ``decode`` hypothesis). Each hypothesis is then aligned to the model's
output frames (:mod:`asrbench.decoding.alignment`) for word times and confidences, for the formats
that print them (jsonl, srt, vtt).

Memory is bounded by the VAD's per-frame scores and one batch of pieces: a file is never held
whole unless it is short enough to be decoded whole.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from asrbench import fileio
from asrbench.data.audio import audio_extensions, audio_info, load_audio
from asrbench.data.store import DTYPES
from asrbench.decoding import streaming
from asrbench.decoding.alignment import word_spans
from asrbench.decoding.search_table import align, build_searcher
from asrbench.decoding.searchers import DecodeOptions, describe_search
from asrbench.decoding.streaming import StreamOptions
from asrbench.deploy.onnx_runtime import is_export, load_export
from asrbench.deploy.vad import VadOptions, detect
from asrbench.env import resolve_device
from asrbench.errors import AsrbenchError
from asrbench.progress import console, progress_bar
from asrbench.runs import rundir

if TYPE_CHECKING:  # imported where used: torchaudio's mel banks are not for an export
    from asrbench.data.fbank import FeatureExtractor
    from asrbench.deploy.onnx_runtime import ExportedAttention, ExportedCTC, ExportedTransducer, _NumpyExtractor

BATCH_SECONDS = 120.0  # audio decoded in one batch


def find_audio(inputs: list[str], stdin=None) -> list[Path]:
    """Files named, audio files under directories named (sorted), and with ``-`` one path per line
    of ``stdin``. A path that does not exist is kept: transcribing it reports it."""
    found: list[Path] = []
    extensions = audio_extensions()
    for item in inputs:
        if item == "-":
            found.extend(Path(line.strip()) for line in (stdin or sys.stdin) if line.strip())
        elif Path(item).is_dir():
            found.extend(
                sorted(path for path in Path(item).rglob("*") if path.is_file() and path.suffix.lower() in extensions)
            )
        else:
            found.append(Path(item))
    return found


@dataclass
class Segment:
    start: float  # seconds in the file
    end: float
    text: str
    words: list[dict] = field(default_factory=list)  # word, start, end (seconds in the file), confidence

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "text": self.text, "words": self.words}


@dataclass
class FileTranscript:
    path: str
    duration: float
    segments: list[Segment]
    error: str | None = None  # why the file could not be transcribed

    @property
    def text(self) -> str:
        return " ".join(segment.text for segment in self.segments if segment.text)

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "duration": self.duration,
            "text": self.text,
            "segments": [segment.to_dict() for segment in self.segments],
        }


@dataclass
class _Piece:
    file: int  # index of the file it belongs to
    start: float
    end: float
    waveform: torch.Tensor


class Transcriber:
    """A model with its features, CMVN, tokenizer and searcher, ready for audio: a run dir's
    (PyTorch), or an export dir's (onnxruntime and the NumPy front end; :mod:`asrbench.deploy.onnx_runtime`).
    Word times run the network a second time (``model.align``) on each batch after the search; without
    ``word_times`` (``--format text``, which prints none) segments have no words and that pass is skipped."""

    model: nn.Module | ExportedCTC | ExportedTransducer | ExportedAttention  # a run dir's, or an export's graphs
    extractor: FeatureExtractor | _NumpyExtractor

    def __init__(
        self,
        model_dir: str | Path,
        options: DecodeOptions | None = None,
        device: str = "auto",
        checkpoint: str = "best",
        explicit: set[str] | None = None,
        use_tuned: bool = False,
        vad: VadOptions | None = None,
        threads: int = 0,
        stream: StreamOptions | None = None,
        show_partials: bool = False,
        word_times: bool = True,
    ):
        if threads > 0:
            torch.set_num_threads(threads)
        options = options or DecodeOptions()
        if is_export(model_dir):  # onnxruntime and the NumPy front end; no PyTorch model
            if use_tuned:
                raise AsrbenchError(f"{model_dir}: --tuned reads a run dir's tuned.json; give the values instead")
            exported = load_export(model_dir, threads)
            self.model_name, self.features, self.data_dir = exported.name, exported.features, exported.data_dir
            self.tokenizer, self.cmvn, self.model = exported.tokenizer, exported.cmvn, exported.model
            self.extractor, self.device, tuned_from = exported.extractor, torch.device("cpu"), None
            graphs = ", ".join(exported.manifest["graphs"].values())
            checkpoint = f"{graphs} (exported from {exported.manifest['source_run']})"
        else:
            from asrbench.data.fbank import FeatureExtractor  # torchaudio's mel banks: not for an export
            from asrbench.decoding.decode import resolve_options  # decode imports the model registry
            from asrbench.runs.checkpoint import load_model  # a run dir's PyTorch model: not for an export

            run_dir = rundir.require_run_dir(model_dir)
            options, tuned_from = resolve_options(run_dir, options, explicit or set(), use_tuned)
            loaded = load_model(rundir.checkpoint_path(run_dir, checkpoint))
            self.model_name, self.features, self.data_dir = (
                loaded.config.model.name,
                loaded.config.features,
                loaded.config.data.dir,
            )
            self.tokenizer, self.cmvn = loaded.tokenizer, loaded.cmvn
            self.device = resolve_device(device)
            self.model = loaded.model.to(self.device).eval()
            self.extractor = FeatureExtractor(self.features)
        self.stream, self.show_partials, self.word_times = stream, show_partials, word_times
        if stream is not None:
            self._streaming(options, is_export(model_dir))
        self.searcher = build_searcher(self.model, self.tokenizer, options, self.data_dir)
        self.description = describe_search(self.searcher.description, checkpoint, tuned_from)
        if stream is not None:
            kind = "transducer" if isinstance(self.recognizer, streaming.StreamingTransducer) else "CTC"
            self.description = f"streaming greedy {kind}, {stream.chunk_ms:g} ms chunks ({checkpoint})"
        self.options, self.vad = options, vad or VadOptions()
        self.sample_rate = self.features.sample_rate
        self.frame_shift = self.features.frame_shift_ms / 1000
        self.notes: Counter = Counter()  # resampling and downmixing, reported once per kind

    def _streaming(self, options: DecodeOptions, exported: bool) -> None:
        """Check that this model and these options can stream, and build the streaming search."""
        if exported:
            raise AsrbenchError("--stream needs a run dir: exported models decode whole segments")
        if options.beam > 1 or options.lm or options.lexicon:
            raise AsrbenchError("--stream decodes greedily: drop --beam, --lm and --lexicon")
        model, stream = self.model, self.stream
        assert isinstance(model, nn.Module) and stream is not None  # a run dir's model (exports are refused above)
        if not streaming.streams(model):
            streaming.require_streaming(model, self.model_name)  # names the option when it cannot stream
            raise AsrbenchError(
                f"model {self.model_name}: --stream has CTC and transducer searches only; decode "
                f"this model with `asrbench decode --chunk-ms` instead"
            )
        chunk = streaming.chunk_frames(model, stream.chunk_ms, self.features.frame_shift_ms)
        self.recognizer = streaming.make_recognizer(model, chunk, stream.left_chunks)
        self.front_end = streaming.StreamingFrontEnd(self.extractor, self.cmvn, self.features.dtype)

    def describe(self) -> dict:
        return {
            "model": self.model_name,
            "units": self.tokenizer.kind,
            "decoder": self.searcher.description,
            "vad": (self.stream or self.vad).to_dict(),
        }

    def _streamed(self, path: Path, duration: float, progress=None) -> list[Segment]:
        """The file streamed chunk by chunk (:func:`asrbench.decoding.streaming.stream_file`), partial
        results shown as they grow when ``show_partials``; ``progress(seconds)`` hears each."""
        shown = {"text": ""}

        def partial(seconds: float, tokens: list[int]) -> None:
            if progress is not None:
                progress(seconds)
            text = " ".join(self.tokenizer.decode(list(tokens)).split())
            if self.show_partials and text != shown["text"]:
                console.print(f"[dim]{path.name} {seconds:7.2f}s  {text}[/dim]", soft_wrap=True, highlight=False)
            shown["text"] = text

        notes: Counter = Counter()
        assert self.stream is not None  # called with --stream only
        pieces = streaming.stream_file(
            str(path), duration, self.recognizer, self.front_end, self.stream, partial, notes
        )
        self.notes.update(notes.keys())
        segments = []
        for piece in pieces:
            words = [
                {
                    "word": word.word,
                    "start": round(piece.start + word.start, 3),
                    "end": round(piece.start + word.end, 3),
                    "confidence": word.confidence,
                }
                for word in word_spans(piece.alignment, self.tokenizer, self.frame_shift)
            ]
            text = " ".join(self.tokenizer.decode(piece.tokens).split())
            segments.append(Segment(round(piece.start, 3), round(piece.end, 3), text, words))
        return segments

    # -- pieces of audio ---------------------------------------------------------------------
    def _pieces(self, index: int, path: Path, duration: float) -> Iterator[_Piece]:
        notes: Counter = Counter()
        for start, end in detect(str(path), duration, self.vad):
            waveform = load_audio(
                str(path), self.sample_rate, start, None if (start, end) == (0.0, duration) else end - start, notes
            )
            if waveform.numel() >= self.extractor.size:
                yield _Piece(index, start, end, waveform)
        self.notes.update(notes.keys())  # once per file

    @torch.inference_mode()
    def _decode(self, pieces: list[_Piece]) -> list[Segment]:
        """One batch of pieces -> their segments (text, words with file times)."""
        features = [
            self.cmvn(torch.from_numpy(f.numpy().astype(DTYPES[self.features.dtype]).astype(np.float32)))
            for f in self.extractor.batch([piece.waveform for piece in pieces])
        ]
        lengths = torch.tensor([f.size(0) for f in features], dtype=torch.long)
        padded = torch.nn.utils.rnn.pad_sequence(features, batch_first=True).to(self.device)
        token_ids = self.searcher(padded, lengths.to(self.device))
        alignments = (
            align(self.model, padded, lengths.to(self.device), token_ids)
            if self.word_times
            else [None] * len(token_ids)
        )
        segments = []
        for piece, ids, alignment in zip(pieces, token_ids, alignments, strict=True):
            words = []
            if alignment is not None:
                words = [
                    {
                        "word": word.word,
                        "start": round(piece.start + word.start, 3),
                        "end": round(piece.start + word.end, 3),
                        "confidence": word.confidence,
                    }
                    for word in word_spans(alignment, self.tokenizer, self.frame_shift)
                ]
            text = " ".join(self.tokenizer.decode(list(ids)).split())  # no stray spaces at the ends
            segments.append(Segment(piece.start, piece.end, text, words))
        return segments

    def transcribe(self, paths: list[Path]) -> Iterator[FileTranscript]:
        """Transcripts of ``paths`` in order, each as soon as it is done; a file that cannot be
        read gives one with ``error`` (and the others go on)."""
        total = 0.0
        durations: list[float | None] = []
        for path in paths:
            try:
                duration = audio_info(str(path))[0]
                durations.append(duration)
                total += duration
            except AsrbenchError:
                durations.append(None)
        # The bar counts seconds of audio, so that one long file moves it batch by batch.
        with progress_bar("files", unit="s audio") as bar:
            task = bar.add_task("transcribing", total=round(total), files=f"0/{len(paths)}")
            done = 0.0
            for index, path in enumerate(paths):
                transcript = self._file(
                    index,
                    path,
                    durations[index],
                    lambda seconds, before=done: bar.update(task, completed=before + seconds),
                )
                done += durations[index] or 0.0
                bar.update(task, completed=done, files=f"{index + 1}/{len(paths)}")
                yield transcript

    def _file(self, index: int, path: Path, duration: float | None, progress=None) -> FileTranscript:
        """One file's transcript; ``progress(seconds)`` hears how far into the file decoding is."""
        progress = progress or (lambda seconds: None)
        if duration is None:
            try:
                duration = audio_info(str(path))[0]  # readable now, though it was not when the files were listed
            except AsrbenchError as err:
                return FileTranscript(str(path), 0.0, [], error=str(err))
        segments: list[Segment] = []
        batch: list[_Piece] = []
        try:
            if self.stream is not None:
                return FileTranscript(str(path), duration, self._streamed(path, duration, progress))
            for piece in self._pieces(index, path, duration):
                batch.append(piece)
                if sum(p.end - p.start for p in batch) >= BATCH_SECONDS:
                    segments.extend(self._decode(batch))
                    progress(batch[-1].end)
                    batch = []
            if batch:
                segments.extend(self._decode(batch))
                progress(batch[-1].end)
        except AsrbenchError as err:
            return FileTranscript(str(path), duration or 0.0, [], error=str(err))
        return FileTranscript(str(path), duration or 0.0, segments)


# --- output formats -------------------------------------------------------------------------------

FORMATS = ("text", "jsonl", "srt", "vtt")
CUE_WORDS = 12  # subtitle cues of at most this many words
CUE_SECONDS = 6.0  # and this long


def _clock(seconds: float, separator: str) -> str:
    milliseconds = int(round(seconds * 1000))
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, milliseconds = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{milliseconds:03d}"


def cues(transcript: FileTranscript) -> list[tuple[float, float, str]]:
    """Subtitle cues: each segment, cut at word boundaries into cues of at most CUE_WORDS words
    and CUE_SECONDS when it has word times."""
    result: list[tuple[float, float, str]] = []
    for segment in transcript.segments:
        if not segment.text:
            continue
        if not segment.words:
            result.append((segment.start, segment.end, segment.text))
            continue
        group: list[dict] = []
        for word in segment.words:
            if group and (len(group) >= CUE_WORDS or word["end"] - group[0]["start"] > CUE_SECONDS):
                result.append((group[0]["start"], group[-1]["end"], " ".join(w["word"] for w in group)))
                group = []
            group.append(word)
        if group:
            result.append((group[0]["start"], group[-1]["end"], " ".join(w["word"] for w in group)))
    return result


def to_subtitles(transcript: FileTranscript, kind: str) -> str:
    """The transcript as an SRT or WebVTT file."""
    lines = ["WEBVTT", ""] if kind == "vtt" else []
    separator = "." if kind == "vtt" else ","
    for number, (start, end, text) in enumerate(cues(transcript), 1):
        if kind == "srt":
            lines.append(str(number))
        lines += [f"{_clock(start, separator)} --> {_clock(max(end, start + 0.001), separator)}", text, ""]
    return "\n".join(lines)


def _done_paths(partial: Path, fmt: str) -> dict[str, str]:
    """Lines of an interrupted run's ``.partial`` output, by the path they transcribe."""
    done: dict[str, str] = {}
    if not partial.is_file():
        return done
    for line in partial.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            path = json.loads(line)["path"] if fmt == "jsonl" else line.split("\t", 1)[0]
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the kill
        done[path] = line
    return done


def subtitle_file(out: Path, inputs: int, fmt: str) -> bool:
    """Whether ``-o out`` names the subtitle file itself: one input, and ``out`` ends in the format's
    suffix (``-f srt -o talk.srt``); otherwise it is a directory of one file per input."""
    return inputs == 1 and out.suffix.lower() == f".{fmt}" and not out.is_dir()


def _subtitle_paths(paths: list[Path], out: Path, fmt: str) -> dict[Path, Path]:
    """Where each input's subtitle file goes in ``out``: its stem, numbered when stems repeat."""
    taken: Counter = Counter()
    where: dict[Path, Path] = {}
    for path in paths:
        taken[path.stem] += 1
        suffix = "" if taken[path.stem] == 1 else f"-{taken[path.stem]}"
        where[path] = out / f"{path.stem}{suffix}.{fmt}"
    return where


def transcribe_files(
    transcriber: Transcriber,
    inputs: list[str],
    fmt: str = "text",
    out: Path | None = None,
    stdout=None,
    overwrite: bool = True,
) -> dict:
    """Transcribe ``inputs`` (files, directories, ``-``) and write them in ``fmt``; returns counts.

    ``text``/``jsonl`` go to ``out`` (a file) or ``stdout``; a file is written line by line to
    ``<out>.partial`` and renamed when all are done, so a killed run keeps what it finished and
    the same command resumes it (files already in the ``.partial`` are not redone). ``srt``/``vtt``
    write one file per input into ``out`` (a directory; stdout when one file and no ``out``), or, for
    one input and an ``out`` with the format's suffix, ``out`` itself (:func:`subtitle_file`). Without
    ``overwrite``, subtitle files already in ``out`` are refused (the command line's rule).
    """
    if fmt not in FORMATS:
        raise AsrbenchError(f"unknown --format '{fmt}' (valid: {', '.join(FORMATS)})")
    paths = find_audio(inputs)
    if not paths:
        raise AsrbenchError(f"no audio found in {' '.join(inputs)}")
    stdout = stdout or sys.stdout
    subtitles = fmt in ("srt", "vtt")
    if subtitles and out is None and len(paths) > 1:
        raise AsrbenchError(
            f"--format {fmt} writes one file per input: name a directory with -o for {len(paths)} files"
        )
    if out is not None and not subtitles and out.is_dir():
        raise AsrbenchError(f"-o {out}: is a directory; --format {fmt} writes one file")
    counts = {"files": len(paths), "failed": 0, "audio_seconds": 0.0, "seconds": 0.0, "resumed": 0}
    start = time.perf_counter()
    partial = out.with_name(out.name + ".partial") if out is not None and not subtitles else None
    done = _done_paths(partial, fmt) if partial is not None else {}
    todo = [path for path in paths if str(path) not in done]
    counts["resumed"] = len(paths) - len(todo)
    if subtitles and out is not None:
        if subtitle_file(out, len(paths), fmt):
            where = {paths[0]: out}
            out.parent.mkdir(parents=True, exist_ok=True)
        else:
            where = _subtitle_paths(paths, out, fmt)
            out.mkdir(parents=True, exist_ok=True)
        fileio.refuse_to_replace(where.values(), overwrite)
    handle = None
    if partial is not None:
        partial.parent.mkdir(parents=True, exist_ok=True)
        if partial.exists():  # keep only whole lines: the kill may have cut the last one short
            fileio.write_text(partial, "".join(line + "\n" for line in done.values()))
        handle = partial.open("a", encoding="utf-8")
    try:
        for transcript in transcriber.transcribe(todo):
            if transcript.error is not None:
                counts["failed"] += 1
                console.print(f"[red]error[/red]: {transcript.error} (skipped)", soft_wrap=True, highlight=False)
                continue
            counts["audio_seconds"] += transcript.duration
            if subtitles:
                text = to_subtitles(transcript, fmt)
                if out is None:
                    stdout.write(text)
                else:
                    fileio.write_text(where[Path(transcript.path)], text)
                continue
            line = (
                json.dumps({**transcript.to_dict(), **transcriber.describe()})
                if fmt == "jsonl"
                else f"{transcript.path}\t{transcript.text}"
            )
            if handle is not None:
                handle.write(line + "\n")
                handle.flush()
            else:
                stdout.write(line + "\n")
                stdout.flush()
    finally:
        if handle is not None:
            handle.close()
    if partial is not None:
        # In input order, resumed lines included; then the finished file replaces the partial one.
        finished = _done_paths(partial, fmt)
        assert out is not None  # partial is out's sibling
        fileio.write_text(out, "".join(finished[str(path)] + "\n" for path in paths if str(path) in finished))
        os.unlink(partial)
    counts["seconds"] = time.perf_counter() - start
    for note, times in sorted(transcriber.notes.items()):
        console.print(f"[dim]note: {times} file{'s' * (times > 1)} {note}[/dim]", highlight=False)
    return counts
