"""Streaming recognition: audio in, chunk by chunk, partial results out, with measured latency.

A streaming model (a Conformer or Transformer trained with ``streaming: true``, an LSTM or GRU
with ``bidirectional: false``, a CNN with ``causal: true``; docs/models.md) encodes a chunk of
``chunk_ms`` as soon as the feature frames that chunk reads have arrived, keeping its caches
(attention keys and values, convolution inputs, recurrent state) between chunks; a greedy search then
extends the hypothesis, which only grows: CTC's best path (decided frame by frame), or a
transducer's greedy search resumed with its predictor's state (a ``conformer_transducer`` whose
encoder streams). The text at the
end of a stream equals that of one masked pass over the whole utterance with the same chunk
configuration (``decode --chunk-ms``), which is what makes the chunk-size WER honest.

Where a chunk's time goes, for an encoder frame of ``s x shift`` (``s`` the encoder's declared
``subsampling_factor``: 40 ms for the 4x subsampling at a 10 ms shift, 80 ms for FastConformer's
8x) and a chunk of ``c`` encoder frames: the 4x subsampling's chunk reads ``4c + 3`` feature
frames (``chunk_window``), so besides the chunk itself it waits for 3 more frame shifts (its
lookahead; FastConformer's reads its own ``8c``, none) and for the last frame's window to fill
(window - shift): the **algorithmic latency** is ``chunk + lookahead shifts + window - shift``
(320 + 30 + 15 = 365 ms at 320 ms chunks for the 4x). Computing it adds the chunk's
**compute time**; the latency figures (:func:`simulate`) replay a stream in real time with the
measured compute time of every chunk (a chunk waits for the one before it to finish).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np
import torch
from torch import nn

from asrbench.data.audio import load_audio
from asrbench.data.store import DTYPES
from asrbench.decoding.alignment import (
    TokenAlignment,
    ctc_viterbi,
    subsampling_of,
    transducer_alignments,
    word_spans,
)
from asrbench.decoding.search_table import align
from asrbench.decoding.transducer_search import greedy_advance, greedy_init
from asrbench.errors import AsrbenchError

if TYPE_CHECKING:  # not at run time: an export's transcribe imports this module without the model registry
    from asrbench.models.base import Encoder

BLANK = 0


class ChunkEncoder(Protocol):
    """A streaming encoder as chunked decoding drives it (:mod:`asrbench.models.chunked`): the chunk it
    decodes with, a stream's caches, one chunk's encoding."""

    decode_chunk: int
    decode_left_chunks: int
    subsampling_factor: int  # feature frames per encoder frame (asrbench.models.base.Encoder)

    def set_chunk(self, chunk: int, left_chunks: int = -1) -> None: ...
    def chunk_window(self, chunk: int) -> tuple[int, int]: ...
    def init_stream(self, chunk: int, left_chunks: int = -1) -> Any: ...
    def encode_chunk(self, features: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]: ...


def streaming_encoder(model: nn.Module) -> ChunkEncoder | None:
    """The model's encoder if it can run chunk by chunk (``streaming: true``), else None: what the
    encoder declares (``chunk_streaming``, :class:`asrbench.models.base.Encoder`)."""
    encoder = cast("Encoder", model).acoustic_encoder()
    return cast(ChunkEncoder, encoder) if encoder.chunk_streaming and encoder.streaming else None


def chunk_frames(model: nn.Module, chunk_ms: float, frame_shift_ms: float) -> int:
    """Encoder frames per chunk of ``chunk_ms``; a user error unless it is a whole number of them
    (an encoder frame: the encoder's declared subsampling times the feature shift)."""
    subsampling = subsampling_of(model)
    assert subsampling is not None  # a PyTorch model's encoder declares it
    frame_ms = subsampling * frame_shift_ms
    frames = chunk_ms / frame_ms
    if chunk_ms <= 0 or abs(frames - round(frames)) > 1e-6:
        raise AsrbenchError(
            f"--chunk-ms {chunk_ms:g}: use a positive multiple of the encoder frame, "
            f"{frame_ms:g} ms (e.g. {int(frame_ms * 4)}, {int(frame_ms * 8)}, {int(frame_ms * 16)})"
        )
    return int(round(frames))


def require_streaming(model: nn.Module, name: str) -> ChunkEncoder:
    encoder = streaming_encoder(model)
    if encoder is None:
        raise AsrbenchError(
            f"model {name} was not trained to stream: --chunk-ms and --stream need a model trained "
            "with --set model.streaming=true (conformer, transformer), model.bidirectional=false "
            "(lstm, gru) or model.causal=true (cnn)"
        )
    return encoder


def lookahead_frames(encoder: ChunkEncoder) -> int:
    """Feature frames a chunk reads past its own (the subsampling's right context): 3 for the 4x
    subsampling (a chunk of c frames reads 4c + 3), 0 for FastConformer's (it reads its 8c)."""
    window, stride = encoder.chunk_window(1)
    return window - stride


def algorithmic_latency_ms(
    chunk_ms: float, frame_shift_ms: float, frame_length_ms: float, lookahead_frames: int
) -> float:
    """The chunk, the subsampling's right context (``lookahead_frames`` frame shifts, from
    :func:`lookahead_frames`) and the last frame's window."""
    return chunk_ms + lookahead_frames * frame_shift_ms + (frame_length_ms - frame_shift_ms)


class StreamingFrontEnd:
    """Samples in, normalized feature frames out, as they become complete.

    Frame ``f`` reads samples ``[f * shift, f * shift + window)`` (Kaldi's snip-edges framing), so a
    frame is computed once its window has arrived, from the same extractor, storage rounding and
    CMVN as a whole-utterance pass: the frames equal that pass's frames.
    """

    def __init__(self, extractor, cmvn, dtype: str):
        if not extractor.snip_edges:
            raise AsrbenchError(
                "streaming reads snip-edges frames as their windows arrive; this model's front end "
                "(features.preset sherpa) centres its frames: decode it whole, or train it with preset kaldi"
            )
        self.extractor, self.cmvn, self.dtype = extractor, cmvn, DTYPES[dtype]
        self.shift, self.size = extractor.shift, extractor.size
        self.reset()

    def reset(self) -> None:
        self.buffer = torch.zeros(0)  # samples not yet in a frame's hop

    def accept(self, samples: torch.Tensor) -> torch.Tensor:
        """(n,) float samples -> (frames, F) the new frames (possibly none)."""
        self.buffer = torch.cat([self.buffer, samples.float()])
        count = 0 if self.buffer.numel() < self.size else 1 + (self.buffer.numel() - self.size) // self.shift
        if count == 0:
            return torch.zeros(0, 0)
        used = (count - 1) * self.shift + self.size
        frames = self.extractor(self.buffer[:used])[:count]
        self.buffer = self.buffer[count * self.shift :]
        return self.cmvn(torch.from_numpy(frames.numpy().astype(self.dtype).astype(np.float32)))


@dataclass
class ChunkResult:
    """What one chunk did: the feature frames it read up to, its new tokens, its compute time."""

    last_frame: int  # index of the last feature frame the chunk read (in the stream)
    tokens: list[int]
    seconds: float
    final: bool  # the chunk at the end of the stream


class ChunkRecognizer:
    """A streaming encoder's chunk loop for one stream (batch 1): feature frames in, chunks of the
    encoder run as soon as their frames are there, and the subclass's search extends the
    hypothesis, which only grows. :class:`StreamingCTC` and :class:`StreamingTransducer`."""

    model: Any  # a CTC model or a transducer of the zoo: the subclasses read its head, or its predictor and joiner

    def __init__(self, model: nn.Module, chunk: int, left_chunks: int = -1):
        self.model, self.chunk, self.left_chunks = model, chunk, left_chunks
        self.encoder = require_streaming(model, type(model).__name__)
        self.window, self.stride = self.encoder.chunk_window(chunk)
        self.device = next(model.parameters()).device  # features arrive on the CPU
        self.reset()

    def reset(self) -> None:
        self.state = self.encoder.init_stream(self.chunk, self.left_chunks)
        self.pending = torch.zeros(0, 0)  # feature frames not yet consumed by a chunk (their stream index: start)
        self.start = 0  # stream index of pending's first frame
        self.tokens: list[int] = []
        self.trailing_blanks = 0  # output frames since the last token
        self.outputs: list[torch.Tensor] = []  # per chunk (t, ...) what the search read, for alignment at the end
        self.results: list[ChunkResult] = []
        self._reset_search()

    def _reset_search(self) -> None:
        """The search's own state at a stream's start."""

    def _search(self, encoded: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """One chunk's encoder output (1, t, D) -> its new tokens and what to keep for alignment."""
        raise NotImplementedError

    @property
    def frames(self) -> int:
        return sum(piece.size(0) for piece in self.outputs)

    @torch.no_grad()
    def _run(self, window: torch.Tensor, final: bool) -> ChunkResult | None:
        """One chunk; None when its frames give no encoder frame (a stream's last few frames, fewer
        than the subsampling needs for one: 7 for the 4x, any for FastConformer's)."""
        began = time.perf_counter()
        encoded, self.state = self.encoder.encode_chunk(window.unsqueeze(0).to(self.device), self.state)
        if encoded.size(1) == 0:
            return None
        new, kept = self._search(encoded)
        result = ChunkResult(self.start + window.size(0) - 1, new, time.perf_counter() - began, final)
        self.tokens.extend(new)
        self.outputs.append(kept)
        self.results.append(result)
        return result

    def accept(self, features: torch.Tensor) -> list[ChunkResult]:
        """New feature frames (n, F) -> the chunks they completed."""
        if features.numel() == 0:
            return []
        self.pending = features if self.pending.numel() == 0 else torch.cat([self.pending, features])
        done = []
        while self.pending.size(0) >= self.window:
            result = self._run(self.pending[: self.window], final=False)
            if result is not None:  # a whole window always gives frames
                done.append(result)
            self.pending = self.pending[self.stride :]
            self.start += self.stride
        return done

    def finish(self) -> list[ChunkResult]:
        """The stream has ended: the frames left make a last, shorter chunk (if they give an output)."""
        done = []
        if self.pending.size(0) > 0:
            result = self._run(self.pending, final=True)
            if result is not None:
                done.append(result)
        self.pending = self.pending[:0]
        return done

    def alignment(self, input_frames: int) -> TokenAlignment:
        """Where the hypothesis sits on the stream's own output frames (word times)."""
        raise NotImplementedError


class StreamingCTC(ChunkRecognizer):
    """Greedy CTC over a streaming encoder: a chunk's frame-wise argmax, collapsed across chunks."""

    def _reset_search(self) -> None:
        self.previous = BLANK  # last frame's argmax, for CTC's collapse across chunks

    def _search(self, encoded: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        log_probs = self.model.head(encoded)[0]  # (t, V)
        new = []
        for token in log_probs.argmax(dim=-1).tolist():
            if token != BLANK and token != self.previous:
                new.append(token)
                self.trailing_blanks = 0
            elif token == BLANK:
                self.trailing_blanks += 1
            self.previous = token
        return new, log_probs

    def alignment(self, input_frames: int) -> TokenAlignment:
        """The CTC Viterbi alignment of the hypothesis over the stream's own outputs."""
        log_probs = torch.cat(self.outputs) if self.outputs else torch.zeros(0, 1)
        spans, probabilities = ctc_viterbi(log_probs, self.tokens) if self.tokens else ([], [])
        return TokenAlignment(
            list(self.tokens), spans, probabilities, log_probs.size(0), input_frames, self.encoder.subsampling_factor
        )


class StreamingTransducer(ChunkRecognizer):
    """Transducer greedy search over a streaming encoder: the batch search of
    :func:`asrbench.decoding.transducer_search.greedy_search`, resumed chunk after chunk with the
    predictor's state, so the stream's result equals the search over one chunked pass."""

    def _reset_search(self) -> None:
        self.search = greedy_init(self.model, 1, self.device)

    def _search(self, encoded: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        before = len(self.search.tokens[0])
        greedy_advance(
            self.model, self.search, encoded, torch.tensor([encoded.size(1)]), self.model.max_symbols_per_frame
        )
        self.trailing_blanks = int(self.search.quiet[0])
        return self.search.tokens[0][before:], encoded[0]

    def alignment(self, input_frames: int) -> TokenAlignment:
        """The transducer Viterbi alignment of the hypothesis over the stream's own encoder outputs."""
        if not self.outputs:
            return TokenAlignment(list(self.tokens), [], [], 0, input_frames, self.encoder.subsampling_factor)
        encoded = torch.cat(self.outputs).unsqueeze(0)
        frames = torch.tensor([encoded.size(1)])
        with torch.no_grad():
            return transducer_alignments(
                self.model, encoded, frames, torch.tensor([input_frames]), [list(self.tokens)]
            )[0]


def streams(model: nn.Module) -> bool:
    """Whether the streaming search here serves this model: its encoder streams, and a CTC head
    (CTC models) or a joiner (transducers) reads it. Attention encoder-decoders decode masked
    chunks (``decode --chunk-ms``) but have no streaming search."""
    return model.head_kind in ("ctc", "transducer") and streaming_encoder(model) is not None


def make_recognizer(model: nn.Module, chunk: int, left_chunks: int = -1) -> ChunkRecognizer:
    """The streaming search for this model (:func:`streams` must hold)."""
    kind = StreamingTransducer if model.head_kind == "transducer" else StreamingCTC
    return kind(model, chunk, left_chunks)


def frame_available(frame: int, shift: int, size: int, sample_rate: int) -> float:
    """Seconds into the stream at which feature frame ``frame`` has all its samples."""
    return (frame * shift + size) / sample_rate


@dataclass
class StreamTimes:
    """One replayed stream: when (seconds into the audio) each chunk was done, and its tokens."""

    done: list[float]
    tokens: list[list[int]]
    compute: list[float]


def simulate(results: list[ChunkResult], duration: float, shift: int, size: int, sample_rate: int) -> StreamTimes:
    """Replay chunks in real time: a chunk starts when its last frame has arrived (the stream's end
    for the last chunk) and the chunk before it is done, and takes its measured compute time."""
    done, clock = [], 0.0
    for result in results:
        arrived = (
            duration if result.final else min(duration, frame_available(result.last_frame, shift, size, sample_rate))
        )
        clock = max(clock, arrived) + result.seconds
        done.append(clock)
    return StreamTimes(done, [r.tokens for r in results], [r.seconds for r in results])


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def latency_summary(
    first_token: list[float],
    final: list[float],
    compute: list[float],
    audio_seconds: float,
    chunk_ms: float,
    left_chunks: int,
    algorithmic_ms: float,
    identical: int,
    utterances: int,
) -> dict:
    """The streaming figures ``result.json`` records (milliseconds; rtf = compute / audio)."""

    def ms(value):
        return None if value is None else round(1000 * value, 1)

    return {
        "chunk_ms": chunk_ms,
        "left_chunks": left_chunks,
        "algorithmic_latency_ms": round(algorithmic_ms, 1),
        "chunk_compute_ms_p50": ms(percentile(compute, 50)),
        "chunk_compute_ms_p90": ms(percentile(compute, 90)),
        "rtf": round(sum(compute) / audio_seconds, 4) if audio_seconds else None,
        "first_token_latency_ms_p50": ms(percentile(first_token, 50)),
        "first_token_latency_ms_p90": ms(percentile(first_token, 90)),
        "final_latency_ms_p50": ms(percentile(final, 50)),
        "final_latency_ms_p90": ms(percentile(final, 90)),
        "utterances": utterances,
        "streamed_equals_chunked_pass": identical,
        "latency_reference": "first token: when the first token is shown, after the end of the first reference "
        "token in the model's full-context alignment of the reference; final: when the "
        "last token is shown, after the end of the last reference word (end of speech)",
        "threads": torch.get_num_threads(),
    }


def reference_times(
    model: nn.Module, features: torch.Tensor, token_ids: list[int], tokenizer, frame_shift_seconds: float
) -> tuple[float, float] | None:
    """(end of the first reference token, end of the last reference word) in seconds, from the
    model's full-context alignment of the reference (CTC or transducer Viterbi, the model's
    ``align``); None when it does not fit."""
    encoder = streaming_encoder(model)
    assert encoder is not None  # measured: a streaming model
    saved = (encoder.decode_chunk, encoder.decode_left_chunks)
    encoder.set_chunk(0)
    try:
        with torch.no_grad():
            alignment = align(model, features.unsqueeze(0), torch.tensor([features.size(0)]), [list(token_ids)])[0]
    finally:
        encoder.set_chunk(*saved)
    if alignment is None or not token_ids or len(token_ids) > alignment.frames:
        return None
    per_frame = alignment.seconds_per_frame(frame_shift_seconds)
    words = word_spans(alignment, tokenizer, frame_shift_seconds)
    if not words:
        return None
    return (alignment.spans[0][1] + 1) * per_frame, words[-1].end


def stream_utterance(
    recognizer: ChunkRecognizer, front_end: StreamingFrontEnd, waveform: torch.Tensor, block_seconds: float
) -> list[ChunkResult]:
    """Feed a whole waveform through the front end and the recognizer in blocks of ``block_seconds``
    (the chunk size: what a live source delivers), then end the stream."""
    recognizer.reset()
    front_end.reset()
    block = max(1, int(round(block_seconds * front_end.extractor.config.sample_rate)))
    results, front_seconds = [], 0.0  # front-end time not yet charged to a chunk
    for start in range(0, waveform.numel(), block):
        began = time.perf_counter()
        frames = front_end.accept(waveform[start : start + block])
        front_seconds += time.perf_counter() - began
        done = recognizer.accept(frames)
        if done:  # the chunk that needed these frames also waited for their features
            done[0].seconds += front_seconds
            front_seconds = 0.0
        results.extend(done)
    results.extend(recognizer.finish())
    return results


def first_and_last(times: StreamTimes) -> tuple[float | None, float | None]:
    """When the first token and the last token of the final result were shown (seconds)."""
    shown = [done for done, tokens in zip(times.done, times.tokens, strict=True) if tokens]
    return (shown[0], shown[-1]) if shown else (None, None)


@torch.inference_mode()
def measure(
    model: nn.Module,
    tokenizer,
    cmvn,
    features_config,
    utterances: list,
    chunk_ms: float,
    left_chunks: int,
    chunked_ids: list[list[int]],
    references: list[list[int]],
    progress=None,
) -> dict:
    """Stream every utterance's audio (read again from its file) through the real front end and
    the streaming search at ``chunk_ms``, replay each in real time with the measured compute
    times, and summarize the latencies (:func:`latency_summary`). ``chunked_ids`` are the masked
    chunked pass's hypotheses: how many streamed results equal them is recorded. ``references``:
    the reference token ids (for the reference times of :func:`reference_times`)."""
    from asrbench.data.fbank import FeatureExtractor  # torchaudio's mel banks: a run dir's path only

    model.eval()
    extractor = FeatureExtractor(features_config)
    front_end = StreamingFrontEnd(extractor, cmvn, features_config.dtype)
    recognizer = make_recognizer(model, chunk_frames(model, chunk_ms, features_config.frame_shift_ms), left_chunks)
    rate, shift_seconds = features_config.sample_rate, features_config.frame_shift_ms / 1000
    first_token, final, compute, audio_seconds, identical = [], [], [], 0.0, 0
    for index, (utterance, ids, reference) in enumerate(zip(utterances, chunked_ids, references, strict=True)):
        waveform = load_audio(utterance.audio, rate, utterance.offset, utterance.duration if utterance.offset else None)
        if index == 0:  # warm-up: the first chunk of a process pays for allocations
            stream_utterance(recognizer, front_end, waveform, chunk_ms / 1000)
        results = stream_utterance(recognizer, front_end, waveform, chunk_ms / 1000)
        identical += recognizer.tokens == list(ids)
        duration = waveform.numel() / rate
        times = simulate(results, duration, front_end.shift, front_end.size, rate)
        compute.extend(times.compute)
        audio_seconds += duration
        shown_first, shown_last = first_and_last(times)
        features = cmvn(torch.from_numpy(extractor(waveform).numpy().astype(front_end.dtype).astype(np.float32)))
        spoken = reference_times(model, features, reference, tokenizer, shift_seconds)
        if spoken is not None and shown_first is not None and shown_last is not None:  # both or neither
            first_token.append(shown_first - spoken[0])
            final.append(shown_last - spoken[1])
        if progress is not None:
            progress()
    return latency_summary(
        first_token,
        final,
        compute,
        audio_seconds,
        chunk_ms,
        left_chunks,
        algorithmic_latency_ms(
            chunk_ms,
            features_config.frame_shift_ms,
            features_config.frame_length_ms,
            lookahead_frames(recognizer.encoder),
        ),
        identical,
        len(utterances),
    )


@dataclass(frozen=True)
class StreamOptions:
    """``transcribe --stream``: the chunk, the left context, and when a segment ends (endpointing,
    as sherpa-onnx's rules: enough blank output after a token, or a segment this long)."""

    chunk_ms: float = 320.0
    left_chunks: int = -1  # chunks of left context (-1: all in the segment)
    endpoint_silence: float = 1.2  # seconds of blank output after a token end a segment; 0: never
    max_segment: float = 20.0  # seconds: a segment ends here even mid-word; 0: never
    block_seconds: float = 10.0  # audio read from the file at a time

    def to_dict(self) -> dict:
        return {
            "kind": "stream",
            "chunk_ms": self.chunk_ms,
            "left_chunks": self.left_chunks,
            "endpoint_silence": self.endpoint_silence,
            "max_segment": self.max_segment,
        }


@dataclass
class StreamSegment:
    start: float  # seconds in the file
    end: float
    tokens: list[int]
    alignment: TokenAlignment


def stream_file(
    path: str,
    duration: float,
    recognizer: ChunkRecognizer,
    front_end: StreamingFrontEnd,
    options: StreamOptions,
    on_partial=None,
    notes=None,
) -> list[StreamSegment]:
    """Stream one file, read ``block_seconds`` at a time and fed ``chunk_ms`` at a time, into
    segments at endpoints. ``on_partial(seconds, tokens)`` sees the hypothesis each time it grows.
    Memory: one block of audio, and per segment its caches and output frames (bounded by
    ``max_segment``)."""
    rate, shift, size = front_end.extractor.config.sample_rate, front_end.shift, front_end.size
    frame_seconds = recognizer.encoder.subsampling_factor * shift / rate  # one encoder frame
    segments: list[StreamSegment] = []
    recognizer.reset()
    front_end.reset()
    base = 0  # the file's feature frame where the current segment's stream began

    def close(final: bool) -> None:
        nonlocal base
        last = recognizer.results[-1].last_frame if recognizer.results else -1
        if recognizer.tokens:
            start = base * shift / rate
            end = min(duration, (base + last) * shift / rate + size / rate)
            segments.append(StreamSegment(start, end, list(recognizer.tokens), recognizer.alignment(last + 1)))
        pending, offset = recognizer.pending, recognizer.start
        recognizer.reset()
        if not final:  # the frames not yet read by a chunk begin the next segment
            base += offset
            recognizer.pending = pending

    def endpoint() -> bool:
        seconds = recognizer.frames * frame_seconds
        silent = recognizer.trailing_blanks * frame_seconds
        return bool(
            (options.endpoint_silence > 0 and recognizer.tokens and silent >= options.endpoint_silence)
            or (options.max_segment > 0 and seconds >= options.max_segment)
        )

    piece = max(1, int(round(options.chunk_ms / 1000 * rate)))
    offset = 0.0
    while offset < duration:
        block = load_audio(path, rate, offset, min(options.block_seconds, duration - offset), notes)
        offset += options.block_seconds
        for start in range(0, block.numel(), piece):
            done = recognizer.accept(front_end.accept(block[start : start + piece]))
            if any(result.tokens for result in done) and on_partial is not None:
                on_partial((base + done[-1].last_frame) * shift / rate, recognizer.tokens)
            if done and endpoint():  # every chunk of this piece belongs to the segment that ends
                close(final=False)
    for result in recognizer.finish():
        if result.tokens and on_partial is not None:
            on_partial(duration, recognizer.tokens)
    close(final=True)
    return segments
