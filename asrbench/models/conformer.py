"""Conformer encoder for CTC: conv subsampling, then Conformer blocks built from torchaudio's modules.

torchaudio's ``Conformer`` is pure Python (no compiled extension) and a reference implementation
of Gulati et al. (2020): macaron feed-forward, self-attention and convolution modules. Its blocks'
parameters are used as they are (so checkpoints keep their names), but the block's forward is
ours, for three things torchaudio's does not do:

- padding invariance, so an utterance decodes the same alone or in a padded batch: padded frames
  are zeroed before each depthwise convolution, and the convolution module's BatchNorm computes
  its training statistics over real frames only (MaskedBatchNorm1d);
- streaming (``streaming: true``, WeNet's U2): self-attention restricted to chunks, each frame
  seeing its own chunk and the chunks before it (all of them, or ``left_chunks``), and a causal
  depthwise convolution; trained with a chunk size drawn per batch (dynamic chunk training), so
  one model decodes at any chunk size, full context included;
- chunk-by-chunk encoding with caches (:meth:`Conformer.init_stream`, :meth:`Conformer.encode_chunk`):
  each block keeps its attention keys and values and its convolution's last ``kernel - 1`` inputs,
  so feeding an utterance chunk by chunk gives the outputs of one masked pass over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from asrbench.models.common import (
    Conv2dSubsampling,
    MaskedBatchNorm1d,
    SinusoidalPositionalEncoding,
    padding_mask,
)
from asrbench.models.ctc import CTCHead, CTCModel
from asrbench.torchaudio_compat import torchaudio


@dataclass
class ConformerConfig:
    d_model: int = 144
    num_heads: int = 4
    num_layers: int = 4
    ff_dim: int = 576
    kernel_size: int = 15
    dropout: float = 0.1
    subsample_channels: int = 32
    # Streaming (U2): chunked attention, causal convolution, dynamic chunk training.
    streaming: bool = False
    max_train_chunk: int = 25  # streaming: chunks of 1..this many encoder frames in half the batches
    train_left_chunks: int = -1  # streaming: left chunks seen in training; -1 = all


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
class ConformerStream:
    """What a Conformer keeps between chunks of B streams fed in lockstep."""

    chunk: int  # encoder frames per chunk
    left_chunks: int  # -1: all previous chunks
    offset: int = 0  # encoder frames emitted so far (the next chunk's first position)
    keys: list = field(default_factory=list)  # per block (B, H, t, D/H): the attention keys so far
    values: list = field(default_factory=list)
    convolution: list = field(default_factory=list)  # per block (B, D, kernel - 1): last inputs


class Conformer(CTCModel):
    """CTC: conv subsampling, then Conformer blocks (self-attention + convolution modules)."""

    def __init__(self, input_dim: int, vocab_size: int, config: ConformerConfig):
        super().__init__()
        self.subsampling = Conv2dSubsampling(input_dim, config.d_model, config.subsample_channels)
        self.positions = SinusoidalPositionalEncoding(config.d_model, config.dropout)
        self.encoder = torchaudio.models.Conformer(
            input_dim=config.d_model,
            num_heads=config.num_heads,
            ffn_dim=config.ff_dim,
            num_layers=config.num_layers,
            depthwise_conv_kernel_size=config.kernel_size,
            dropout=config.dropout,
        )
        self.streaming = config.streaming
        self.kernel_size = config.kernel_size
        self.max_train_chunk = max(1, config.max_train_chunk)
        self.train_left_chunks = config.train_left_chunks
        self.decode_chunk, self.decode_left_chunks = 0, -1  # see set_chunk
        for layer in self.encoder.conformer_layers:
            conv = layer.conv_module.sequential
            conv[3] = MaskedBatchNorm1d(conv[3].num_features)
            if self.streaming:
                conv[2].padding = (0,)  # causal: the kernel - 1 frames before come from _convolve's left pad
        self.encoder_dim = config.d_model
        self.head = CTCHead(config.d_model, vocab_size)

    # -- one Conformer block -------------------------------------------------------------------
    def _convolve(self, layer: nn.Module, x: torch.Tensor, pad: torch.Tensor | None,
                  cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The convolution module with its residual: (T, B, D) -> (T, B, D), and in streaming mode
        the last ``kernel - 1`` depthwise inputs (B, D, kernel - 1) for the next chunk."""
        module = layer.conv_module
        conv = module.sequential
        y = module.layer_norm(x).permute(1, 2, 0)  # (B, D, T)
        y = conv[1](conv[0](y))
        if pad is not None:
            y = y.masked_fill(pad.unsqueeze(1), 0.0)  # padding must not reach real frames
        new_cache = None
        if self.streaming:
            left = cache if cache is not None else y.new_zeros(y.size(0), y.size(1), self.kernel_size - 1)
            y = torch.cat([left, y], dim=2)
            new_cache = y[:, :, y.size(2) - (self.kernel_size - 1):]
        y = conv[2](y)
        y = conv[3](y, None if pad is None else pad.unsqueeze(1))
        y = conv[6](conv[5](conv[4](y)))
        return x + y.permute(2, 0, 1), new_cache

    def _block(self, layer: nn.Module, x: torch.Tensor, pad: torch.Tensor | None,
               attention_mask: torch.Tensor | None) -> torch.Tensor:
        """torchaudio's ConformerLayer.forward (convolution after attention), with the attention
        mask and the padding-aware convolution. x: (T, B, D)."""
        x = x + 0.5 * layer.ffn1(x)
        normed = layer.self_attn_layer_norm(x)
        attended, _ = layer.self_attn(normed, normed, normed, key_padding_mask=pad, attn_mask=attention_mask,
                                      need_weights=False)
        x = x + layer.self_attn_dropout(attended)
        x, _ = self._convolve(layer, x, pad)
        x = x + 0.5 * layer.ffn2(x)
        return layer.final_layer_norm(x)

    # -- full utterances ----------------------------------------------------------------------
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

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoder output (B, T/4, d_model), output_lengths (B,)."""
        x, lengths = self.subsampling(features, feature_lengths)
        pad = padding_mask(lengths, x.size(1))
        mask = None
        if self.streaming:
            chunk, left = self._training_chunk(x.size(1)) if self.training else (self.decode_chunk,
                                                                                 self.decode_left_chunks)
            mask = chunk_mask(x.size(1), chunk, left, x.device)
        x = self.positions(x).transpose(0, 1)  # (T, B, D), torchaudio's layout
        for layer in self.encoder.conformer_layers:
            x = self._block(layer, x, pad, mask)
        return x.transpose(0, 1), lengths

    # -- chunk by chunk -----------------------------------------------------------------------
    chunk_window = staticmethod(Conv2dSubsampling.chunk_window)

    def init_stream(self, chunk: int, left_chunks: int = -1) -> ConformerStream:
        if not self.streaming:
            raise ValueError("streaming needs a model trained with streaming: true")
        if chunk <= 0:
            raise ValueError(f"chunk must be at least one encoder frame, not {chunk}")
        return ConformerStream(chunk, left_chunks)

    def _attend_cached(self, attention: nn.MultiheadAttention, x: torch.Tensor, state: ConformerStream,
                       index: int) -> torch.Tensor:
        """Self-attention of a chunk (T, B, D) over the cached keys and values and its own."""
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
        cached = (k[:, :, k.size(2) - kept:], v[:, :, v.size(2) - kept:])
        if index < len(state.keys):
            state.keys[index], state.values[index] = cached
        else:
            state.keys.append(cached[0])
            state.values.append(cached[1])
        out = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, H, T, D/H)
        out = out.permute(2, 0, 1, 3).reshape(time, batch, width)
        return attention.out_proj(out)

    @torch.no_grad()
    def encode_chunk(self, features: torch.Tensor, state: ConformerStream) -> tuple[torch.Tensor, ConformerStream]:
        """One chunk of B streams: the chunk's feature window (B, W, F), W = ``chunk_window(chunk)[0]``
        or fewer at a stream's end -> encoder output (B, <= chunk, D). In eval mode, the outputs
        equal those of :meth:`encode` with :meth:`set_chunk` (same chunk and left context)."""
        x = self.subsampling.stream_window(features)
        if x.size(1) == 0:
            return x, state
        x = self.positions(x, offset=state.offset).transpose(0, 1)  # (T, B, D)
        for index, layer in enumerate(self.encoder.conformer_layers):
            x = x + 0.5 * layer.ffn1(x)
            x = x + self._attend_cached(layer.self_attn, layer.self_attn_layer_norm(x), state, index)
            cache = state.convolution[index] if index < len(state.convolution) else None
            x, cache = self._convolve(layer, x, None, cache)
            if index < len(state.convolution):
                state.convolution[index] = cache
            else:
                state.convolution.append(cache)
            x = layer.final_layer_norm(x + 0.5 * layer.ffn2(x))
        state.offset += x.size(0)
        return x.transpose(0, 1), state

