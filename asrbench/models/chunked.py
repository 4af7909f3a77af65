"""Chunked self-attention for streaming encoders (WeNet's U2), shared by the Conformer and the
Transformer with ``streaming: true``; and :class:`ChunkIndependent` for the encoders whose outputs
do not depend on the chunk (a causal CNN, a unidirectional recurrence).

- Training draws a chunk size per batch (dynamic chunk training): full context for half the
  batches, else 1..``max_train_chunk`` encoder frames, so one model decodes at any chunk size.
- A frame sees its own chunk and the chunks before it: all of them, or ``left_chunks`` of them.
- Chunk by chunk (:func:`attend_cached`), each attention layer keeps the keys and values of the
  frames the next chunk may see, so feeding an utterance chunk by chunk gives the outputs of one
  masked pass over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from asrbench.models.common import Conv2dSubsampling


def chunk_mask(length: int, chunk: int, left_chunks: int, device: torch.device) -> torch.Tensor | None:
    """(T, T) bool, True where query frame i may not look at key frame j: j in a later chunk of
    ``chunk`` frames, or more than ``left_chunks`` chunks back (when >= 0). None for full context."""
    if chunk <= 0:
        return None
    block = torch.arange(length, device=device) // chunk
    hidden = block[None, :] > block[:, None]
    if left_chunks >= 0:
        hidden |= block[None, :] < block[:, None] - left_chunks
    return hidden


@dataclass
class ChunkStream:
    """What a chunked encoder keeps between chunks of B streams fed in lockstep."""

    chunk: int  # encoder frames per chunk
    left_chunks: int  # -1: all previous chunks
    offset: int = 0  # encoder frames emitted so far (the next chunk's first position)
    keys: list = field(default_factory=list)  # per attention layer (B, H, t, D/H)
    values: list = field(default_factory=list)
    convolution: list = field(default_factory=list)  # per causal convolution (B, C, kernel - 1): last inputs


def keep(caches: list, index: int, value) -> None:
    """Set ``caches[index]`` (appending the first time round)."""
    if index < len(caches):
        caches[index] = value
    else:
        caches.append(value)


def attend_cached(attention: nn.MultiheadAttention, x: torch.Tensor, state: ChunkStream, index: int) -> torch.Tensor:
    """Self-attention of a chunk (T, B, D) over the cached keys and values and its own (layer ``index``)."""
    time, batch, width = x.shape
    heads = attention.num_heads
    qkv = nn.functional.linear(x, attention.in_proj_weight, attention.in_proj_bias)
    q, k, v = qkv.view(time, batch, 3, heads, width // heads).permute(2, 1, 3, 0, 4)  # each (B, H, T, D/H)
    if index < len(state.keys):
        k = torch.cat([state.keys[index], k], dim=2)
        v = torch.cat([state.values[index], v], dim=2)
    if state.left_chunks >= 0:  # the chunks before this one that its frames may see
        visible = state.left_chunks * state.chunk + time
        k, v = k[:, :, -visible:], v[:, :, -visible:]
    # What the next chunk may see of these: everything, or its left_chunks chunks.
    kept = k.size(2) if state.left_chunks < 0 else min(k.size(2), state.left_chunks * state.chunk)
    keep(state.keys, index, k[:, :, k.size(2) - kept :])
    keep(state.values, index, v[:, :, v.size(2) - kept :])
    out = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, H, T, D/H)
    return attention.out_proj(out.permute(2, 0, 1, 3).reshape(time, batch, width))


def causal_convolve(
    conv: nn.Conv1d, x: torch.Tensor, cache: torch.Tensor | None, context: int, right: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A convolution (built with padding 0) over (B, C, T) with ``context`` frames of left context:
    the cached last inputs of the chunk before, or zeros at a stream's start; and ``right`` zeros
    after the chunk. -> (out, new cache)."""
    left = cache if cache is not None else x.new_zeros(x.size(0), x.size(1), context)
    joined = torch.cat([left, x], dim=2)
    return conv(nn.functional.pad(joined, (0, right))), joined[:, :, joined.size(2) - context :]


def chunk_convolve(conv: nn.Conv1d, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Dynamic chunk convolution (Li et al., 2023): a centred convolution (odd kernel, built with
    padding 0) over (B, C, T) whose frames see ``kernel // 2`` frames to the left, from earlier
    chunks too, and to the right only inside their own chunk of ``chunk`` frames (zeros past its
    end); ``chunk`` 0 is the ordinary convolution. Then no frame waits for a later chunk's audio."""
    half = conv.kernel_size[0] // 2
    if chunk <= 0:
        return conv(nn.functional.pad(x, (half, half)))
    batch, channels, length = x.shape
    count = -(-length // chunk)
    padded = nn.functional.pad(x, (half, count * chunk - length))  # left context of chunk 0, then whole chunks
    windows = padded.unfold(2, half + chunk, chunk)  # (B, C, chunks, half + chunk): left context + chunk
    windows = nn.functional.pad(windows, (0, half)).permute(0, 2, 1, 3).reshape(batch * count, channels, -1)
    out = conv(windows).reshape(batch, count, channels, chunk).permute(0, 2, 1, 3).reshape(batch, channels, -1)
    return out[:, :, :length]


def chunk_convolve_cached(
    conv: nn.Conv1d, x: torch.Tensor, cache: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`chunk_convolve` for one chunk (B, C, t) after the chunks whose last ``kernel // 2``
    inputs are ``cache`` (zeros at a stream's start): -> (out, new cache)."""
    half = conv.kernel_size[0] // 2
    return causal_convolve(conv, x, cache, half, right=half)


class ChunkedAttention:
    """Mixin: the chunk a streaming attention encoder uses, in training (drawn) and decoding (set)."""

    chunk_streaming = True  # declared capability (asrbench.models.base.Encoder): it has encode_chunk
    training: bool  # nn.Module's, in the encoders this mixes into

    streaming: bool = False
    max_train_chunk: int = 25
    train_left_chunks: int = -1
    decode_chunk: int = 0
    decode_left_chunks: int = -1

    chunk_window = staticmethod(Conv2dSubsampling.chunk_window)

    def _init_chunking(self, config) -> None:
        self.streaming = config.streaming
        self.max_train_chunk = max(1, config.max_train_chunk)
        self.train_left_chunks = config.train_left_chunks
        self.decode_chunk, self.decode_left_chunks = 0, -1

    def set_chunk(self, chunk: int, left_chunks: int = -1) -> None:
        """Decode (eval mode) with chunks of ``chunk`` encoder frames and ``left_chunks`` chunks
        of left context (-1: all); ``chunk`` 0 is full context. Needs ``streaming: true`` unless 0."""
        if chunk > 0 and not self.streaming:
            raise ValueError("chunked decoding needs a model trained with streaming: true")
        self.decode_chunk, self.decode_left_chunks = max(0, chunk), left_chunks

    def _training_chunk(self, length: int) -> tuple[int, int]:
        """WeNet's dynamic chunk: full context for half the batches, else 1..max_train_chunk frames."""
        drawn = int(torch.randint(1, length + 1, ()))
        if drawn > length // 2:
            return 0, -1
        return drawn % self.max_train_chunk + 1, self.train_left_chunks

    def forward_chunk(self, length: int) -> tuple[int, int]:
        """(chunk, left chunks) of this forward pass: drawn in training, set for decoding; (0, -1)
        is full context (always, when not streaming)."""
        if not self.streaming:
            return 0, -1
        return self._training_chunk(length) if self.training else (self.decode_chunk, self.decode_left_chunks)

    def attention_mask(self, length: int, device: torch.device) -> torch.Tensor | None:
        """The chunk mask of this forward pass (None: full context, or not streaming)."""
        return chunk_mask(length, *self.forward_chunk(length), device)

    def init_stream(self, chunk: int, left_chunks: int = -1) -> ChunkStream:
        if not self.streaming:
            raise ValueError("streaming needs a model trained with streaming: true")
        if chunk <= 0:
            raise ValueError(f"chunk must be at least one encoder frame, not {chunk}")
        return ChunkStream(chunk, left_chunks)


class ChunkIndependent:
    """Mixin: a streaming encoder that looks no further ahead than its subsampling whatever the
    chunk (causal convolutions, a unidirectional recurrence), so a chunk size is only checked.
    A class names the option that makes it streaming, why left chunks do not apply, and its state."""

    chunk_streaming = True  # declared capability (asrbench.models.base.Encoder): it has encode_chunk

    streaming: bool = False
    streaming_option: str = ""  # e.g. "causal: true"
    no_left_chunks: str = ""  # why left chunks do not apply
    stream_state: type = ChunkStream
    decode_chunk: int = 0
    decode_left_chunks: int = -1

    chunk_window = staticmethod(Conv2dSubsampling.chunk_window)

    def set_chunk(self, chunk: int, left_chunks: int = -1) -> None:
        """The outputs are the same whatever the chunk: only checked."""
        if chunk > 0 and not self.streaming:
            raise ValueError(f"chunked decoding needs a model trained with streaming ({self.streaming_option})")
        if chunk > 0 and left_chunks >= 0:
            raise ValueError(f"{self.no_left_chunks}: left chunks do not apply")
        self.decode_chunk, self.decode_left_chunks = max(0, chunk), left_chunks

    def init_stream(self, chunk: int, left_chunks: int = -1):
        self.set_chunk(chunk, left_chunks)
        return self.stream_state(chunk, left_chunks)
