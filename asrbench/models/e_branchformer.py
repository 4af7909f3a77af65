"""E-Branchformer encoder for CTC (Kim et al. 2022, "E-Branchformer: Branchformer with Enhanced
merging for speech recognition"; ESPnet's ``e_branchformer`` encoder).

Taken from the paper and ESPnet's ``EBranchformerEncoderLayer``: each block is

- a macaron half-step feed-forward (pre-LayerNorm, residual x 0.5);
- two parallel branches over the same input, each with its own LayerNorm: a **global** one,
  multi-head self-attention, and a **local** one, the convolutional gating MLP (cgMLP: a channel
  projection up to ``cgmlp_units`` with GELU, split into halves; the second half, LayerNorm then a
  depthwise convolution over time (``cgmlp_kernel``), gates the first by multiplication; a
  projection back to ``d_model``). Like ESPnet's default, no linear layer after the gate's
  convolution and no gate activation; the gate's convolution starts with weights ~N(0, 1e-6) and
  bias 1 (ESPnet's ``espnet_initialization_fn``), so at first the gate passes its input;
- the enhanced merge: the two outputs concatenated (2 x d_model), a depthwise convolution over
  time (``merge_kernel``) added to the concatenation, a linear projection back to d_model, residual;
- the second half-step feed-forward and a final LayerNorm.

Kept the same as our Conformer (:mod:`asrbench.models.conformer`) so the two compare on equal
terms: the conv2d 4x subsampling (:class:`Conv2dSubsampling`), the absolute sinusoidal positions
added after it, ``nn.MultiheadAttention`` self-attention, torchaudio's feed-forward layout
(LayerNorm, Linear, SiLU, dropout, Linear, dropout), the default width and depth (144 x 4 layers,
4 heads, ff 576) and the padding handling (attention keys masked, padded frames zeroed before
every depthwise convolution, so an utterance's outputs do not depend on the batch's padding).

Deviations from ESPnet: relative positional self-attention (``rel_pos`` / ``rel_selfattn``, ESPnet's
default) is replaced by absolute sinusoidal positions, as the Conformer here has them (the
comparison is of the blocks, not of the position scheme); no stochastic depth (layer drop); the
cgMLP and merge kernels default to 15, the Conformer's kernel at this size (ESPnet's LibriSpeech
recipes use 31 for both at d_model 256, 12 layers). At the defaults (80 mel bins, 30 tokens) the
model has 2.48M parameters, the Conformer 2.04M: a block is 595k against the Conformer's 483k (the
cgMLP, 130k, and the merge, 46k, against the convolution module's 65k); size ``ff_dim`` or
``cgmlp_units`` down to match the Conformer's parameters (at the AN4 Conformer's 6 blocks,
``ff_dim: 384`` with ``cgmlp_units: 576`` gives 3,004,078 against its 3,002,062).

Streaming (``streaming: true``, WeNet's U2 as in the Conformer, :mod:`asrbench.models.chunked`):
chunked self-attention trained with dynamic chunks, and both depthwise convolutions of a block
made causal (``conv_context: causal``) or chunk-bounded (``conv_context: chunk``); chunk by chunk
(:meth:`EBranchformer.encode_chunk`) each block caches its attention keys and values and the last
inputs of its two convolutions, so the outputs equal one masked pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from asrbench.models.chunked import (
    ChunkedAttention,
    ChunkStream,
    attend_cached,
    causal_convolve,
    chunk_convolve,
    chunk_convolve_cached,
    chunk_mask,
    keep,
)
from asrbench.models.common import D_MODEL, Conv2dSubsampling, SinusoidalPositionalEncoding, padding_mask
from asrbench.models.ctc import CTCHead, CTCModel
from asrbench.recipe.schema import ALL_OR_COUNT, ODD, POSITIVE, PROBABILITY, Limit, choices


@dataclass
class EBranchformerConfig:
    d_model: int = 144
    num_heads: int = 4
    num_layers: int = 4
    ff_dim: int = 576  # each macaron feed-forward's hidden width
    cgmlp_units: int = 576  # the cgMLP's projection up; its gate and output halves are cgmlp_units / 2 wide
    cgmlp_kernel: int = 15  # the gate's depthwise convolution over time
    merge_kernel: int = 15  # the merge's depthwise convolution over the two branches' concatenation
    dropout: float = 0.1
    subsample_channels: int = 32
    # Streaming (U2): chunked attention, causal (or chunk-bounded) convolutions, dynamic chunk training.
    streaming: bool = False
    max_train_chunk: int = 25  # streaming: chunks of 1..this many encoder frames in half the batches
    train_left_chunks: int = -1  # streaming: left chunks seen in training; -1 = all
    conv_context: str = "causal"  # streaming: as the Conformer's (causal | chunk)

    # What target_params scales (asrbench.models.sizing): d_model; both inner widths in proportion.
    WIDTH: ClassVar[tuple] = ("d_model", "ff_dim", "cgmlp_units")
    LIMITS: ClassVar[dict] = {
        "d_model": D_MODEL,
        "num_heads": POSITIVE,
        "num_layers": POSITIVE,
        "ff_dim": POSITIVE,
        "cgmlp_units": Limit(low=0, low_open=True, multiple_of=(2,)),  # split into two halves
        "cgmlp_kernel": ODD,
        "merge_kernel": ODD,
        "dropout": PROBABILITY,
        "subsample_channels": POSITIVE,
        "max_train_chunk": POSITIVE,
        "train_left_chunks": ALL_OR_COUNT,
        "conv_context": choices("causal", "chunk"),
    }


def feed_forward(d_model: int, hidden: int, dropout: float) -> nn.Sequential:
    """torchaudio's Conformer feed-forward: (.., d_model) -> (.., d_model), pre-LayerNorm, SiLU."""
    return nn.Sequential(
        nn.LayerNorm(d_model),
        nn.Linear(d_model, hidden),
        nn.SiLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, d_model),
        nn.Dropout(dropout),
    )


class DepthwiseConv(nn.Module):
    """A depthwise convolution over time, (B, T, C) -> (B, T, C), in the modes a streaming block
    needs: centred (offline), causal (``kernel - 1`` frames before) or chunk-bounded, over a whole
    pass or one chunk after a cache of the previous inputs. Padded frames are zeroed first."""

    def __init__(self, channels: int, kernel: int, context: str):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, groups=channels)  # padding 0: added in forward
        self.context = context  # "full" (offline), "causal" or "chunk"

    def forward(
        self,
        x: torch.Tensor,
        pad: torch.Tensor | None = None,
        chunk: int = 0,
        cache: torch.Tensor | None = None,
        streamed: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C), pad (B, T) True at padding; ``chunk``: the pass's chunk (0: full context);
        ``streamed``: x is one chunk after ``cache`` (B, C, context) -> (B, T, C), the new cache."""
        if pad is not None:
            x = x.masked_fill(pad.unsqueeze(-1), 0.0)  # padding must not reach real frames
        y = x.transpose(1, 2)  # (B, C, T)
        kernel = self.conv.kernel_size[0]
        new_cache = None
        if self.context == "causal":
            y, new_cache = causal_convolve(self.conv, y, cache, kernel - 1)
        elif self.context == "chunk" and streamed:
            y, new_cache = chunk_convolve_cached(self.conv, y, cache)
        elif self.context == "chunk":
            y = chunk_convolve(self.conv, y, chunk)
        else:
            y = self.conv(nn.functional.pad(y, (kernel // 2, kernel // 2)))
        return y.transpose(1, 2), new_cache


class ConvolutionalGatingMLP(nn.Module):
    """cgMLP (Sakuma et al. 2021, Branchformer's local branch): (B, T, d_model) -> (B, T, d_model).
    Up to ``units`` with GELU; the second half, normalised and convolved over time, gates the first."""

    def __init__(self, d_model: int, units: int, kernel: int, dropout: float, context: str):
        super().__init__()
        half = units // 2
        self.up = nn.Sequential(nn.Linear(d_model, units), nn.GELU())
        self.gate_norm = nn.LayerNorm(half)
        self.gate_conv = DepthwiseConv(half, kernel, context)
        self.dropout = nn.Dropout(dropout)
        self.down = nn.Linear(half, d_model)
        # ESPnet's initialisation: the gate starts as ~1 everywhere, so the branch starts as an MLP.
        bias = self.gate_conv.conv.bias
        assert bias is not None  # nn.Conv1d's default bias=True
        nn.init.normal_(self.gate_conv.conv.weight, std=1e-6)
        nn.init.ones_(bias)

    def forward(
        self,
        x: torch.Tensor,
        pad: torch.Tensor | None = None,
        chunk: int = 0,
        cache: torch.Tensor | None = None,
        streamed: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, d_model) -> (B, T, d_model), and the gate convolution's cache (streaming)."""
        content, gate = self.up(x).chunk(2, dim=-1)  # each (B, T, units / 2)
        gate, new_cache = self.gate_conv(self.gate_norm(gate), pad, chunk, cache, streamed)
        return self.down(self.dropout(content * gate)), new_cache


class EBranchformerBlock(nn.Module):
    """One block: (T, B, d_model) -> (T, B, d_model); see the module docstring."""

    def __init__(self, config: EBranchformerConfig, context: str):
        super().__init__()
        d_model = config.d_model
        self.ffn1 = feed_forward(d_model, config.ff_dim, config.dropout)
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, config.num_heads, dropout=config.dropout)
        self.cgmlp_norm = nn.LayerNorm(d_model)
        self.cgmlp = ConvolutionalGatingMLP(d_model, config.cgmlp_units, config.cgmlp_kernel, config.dropout, context)
        self.merge_conv = DepthwiseConv(2 * d_model, config.merge_kernel, context)
        self.merge_proj = nn.Linear(2 * d_model, d_model)
        self.dropout = nn.Dropout(config.dropout)
        self.ffn2 = feed_forward(d_model, config.ff_dim, config.dropout)
        self.final_norm = nn.LayerNorm(d_model)

    def merge(
        self,
        global_branch: torch.Tensor,
        local_branch: torch.Tensor,
        pad: torch.Tensor | None = None,
        chunk: int = 0,
        cache: torch.Tensor | None = None,
        streamed: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The enhanced merge: two (B, T, d_model) -> concatenation (B, T, 2 d_model) plus its
        depthwise convolution over time -> projection (B, T, d_model); and the convolution's cache."""
        joined = torch.cat([global_branch, local_branch], dim=-1)
        convolved, new_cache = self.merge_conv(joined, pad, chunk, cache, streamed)
        return self.merge_proj(joined + convolved), new_cache

    def forward(
        self,
        x: torch.Tensor,
        pad: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        chunk: int = 0,
        stream: ChunkStream | None = None,
        index: int = 0,
    ) -> torch.Tensor:
        """x (T, B, d_model); pad (B, T) True at padding; ``attention_mask`` (T, T) True where hidden;
        ``stream``: x is one chunk of a stream whose caches for block ``index`` it reads and updates."""
        x = x + 0.5 * self.ffn1(x)
        normed = self.attention_norm(x)
        if stream is None:
            attended, _ = self.attention(
                normed, normed, normed, key_padding_mask=pad, attn_mask=attention_mask, need_weights=False
            )
        else:
            attended = attend_cached(self.attention, normed, stream, index)
        caches = stream.convolution if stream is not None else []
        streamed = stream is not None
        local, gate_cache = self.cgmlp(
            self.cgmlp_norm(x).transpose(0, 1),
            pad,
            chunk,
            caches[2 * index] if 2 * index < len(caches) else None,
            streamed,
        )
        merged, merge_cache = self.merge(
            self.dropout(attended).transpose(0, 1),
            self.dropout(local),
            pad,
            chunk,
            caches[2 * index + 1] if 2 * index + 1 < len(caches) else None,
            streamed,
        )
        if stream is not None:  # two caches per block: the gate's convolution, the merge's
            keep(caches, 2 * index, gate_cache)
            keep(caches, 2 * index + 1, merge_cache)
        x = x + self.dropout(merged.transpose(0, 1))
        x = x + 0.5 * self.ffn2(x)
        return self.final_norm(x)


class EBranchformer(ChunkedAttention, CTCModel):
    """CTC: conv subsampling, then E-Branchformer blocks (self-attention and cgMLP branches, merged)."""

    def __init__(self, input_dim: int, vocab_size: int, config: EBranchformerConfig):
        super().__init__()
        if config.d_model % config.num_heads:
            raise ValueError(f"d_model {config.d_model} must be divisible by num_heads {config.num_heads}")
        self.subsampling = Conv2dSubsampling(input_dim, config.d_model, config.subsample_channels)
        self.positions = SinusoidalPositionalEncoding(config.d_model, config.dropout)
        self._init_chunking(config)
        context = config.conv_context if self.streaming else "full"
        self.blocks = nn.ModuleList(EBranchformerBlock(config, context) for _ in range(config.num_layers))
        self.encoder_dim = config.d_model
        self.head = CTCHead(config.d_model, vocab_size)

    def encode(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F), (B,) -> encoder output (B, T/4, d_model), output_lengths (B,)."""
        x, lengths = self.subsampling(features, feature_lengths)
        pad = padding_mask(lengths, x.size(1))
        chunk, left = self.forward_chunk(x.size(1))  # one draw per pass, for the mask and the convolutions
        mask = chunk_mask(x.size(1), chunk, left, x.device)
        x = self.positions(x).transpose(0, 1)  # (T, B, D), nn.MultiheadAttention's layout
        for block in self.blocks:
            x = block(x, pad, mask, chunk)
        return x.transpose(0, 1), lengths

    @torch.no_grad()
    def encode_chunk(self, features: torch.Tensor, state: ChunkStream) -> tuple[torch.Tensor, ChunkStream]:
        """One chunk of B streams: the chunk's feature window (B, W, F), W = ``chunk_window(chunk)[0]``
        or fewer at a stream's end -> encoder output (B, <= chunk, D). In eval mode, the outputs
        equal those of :meth:`encode` with :meth:`set_chunk` (same chunk and left context)."""
        x = self.subsampling.stream_window(features)
        if x.size(1) == 0:
            return x, state
        x = self.positions(x, offset=state.offset).transpose(0, 1)  # (T, B, D)
        for index, block in enumerate(self.blocks):
            x = block(x, None, None, stream=state, index=index)
        state.offset += x.size(0)
        return x.transpose(0, 1), state
