"""Building blocks shared by several encoders."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asrbench.recipe.schema import Limit


def padding_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask, True at padded positions."""
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) >= lengths.unsqueeze(1)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU masks cost a third: 16-bit random integers, four per RNG draw.

    PyTorch draws one 32-bit Mersenne-Twister number per element for a CPU dropout mask, which
    made dropout a quarter of an AN4 Transformer training step on 2 cores (more than the
    feed-forward matmuls it follows). Here one 64-bit draw gives four 16-bit integers, and an
    element is dropped when its integer falls below ``round(p * 65536)``: the drop probability is
    that over 65536 (within 8e-6 of ``p``) and kept elements are scaled by the exact inverse of
    the keep probability, so expectations are unchanged. Same global generator (seeded, saved in
    checkpoints). On other devices, in eval mode, or with p in {0, 1} it is ``nn.Dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or not 0.0 < self.p < 1.0 or self.inplace:
            return super().forward(x)
        return fast_dropout(x, self.p)


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Training-mode dropout of a CPU tensor with :class:`FastDropout`'s masks."""
    threshold = round(p * 65536)
    words = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64)
    noise = words.view(torch.int16)[: x.numel()].view(x.shape)
    return x * (noise >= threshold - 32768) * (65536 / (65536 - threshold))


def run_recurrent(rnn: nn.LSTM | nn.GRU, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A batch-first ``nn.LSTM``/``nn.GRU`` over a padded batch (B, T, H_in), each sequence over its
    own ``lengths[b]`` frames only -> (B, T, directions * hidden), zero at padded positions.

    The result is that of packing the batch (``pack_padded_sequence``), which is what runs on a
    GPU. On a CPU, PyTorch runs an LSTM over a packed batch of unequal lengths step by step, 5-14x
    slower than over a padded batch of the same shape (oneDNN's kernel), so one shorter utterance
    made the whole step crawl. Here every layer and direction is one call of the padded kernel
    with the module's own weights: padding after a sequence's end cannot reach its frames going
    forward, and the backward direction reads each sequence reversed within its length. (A GRU
    has no oneDNN kernel on CPU; it runs as fast as packed here, a few percent faster.) Dropout
    between layers is applied as ``nn.LSTM`` applies it (training only, not after the last layer).
    """
    if x.is_cuda:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, _ = rnn(packed)
        return pad_packed_sequence(output, batch_first=True, total_length=x.size(1))[0]
    if not rnn.batch_first or bool(getattr(rnn, "proj_size", 0)):
        raise ValueError("run_recurrent needs a batch_first LSTM or GRU without projections")
    lstm = isinstance(rnn, nn.LSTM)
    directions = 2 if rnn.bidirectional else 1
    limit = lengths.to(x.device).unsqueeze(1)
    steps = torch.arange(x.size(1), device=x.device).expand(x.size(0), -1)
    # Time order with each sequence's first lengths[b] steps reversed and its padding in place (its
    # own inverse, so it turns the backward direction's input and output alike).
    order = torch.where(steps < limit, limit - 1 - steps, steps).unsqueeze(2)

    def reverse(t: torch.Tensor) -> torch.Tensor:
        return t.gather(1, order.expand_as(t))

    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if rnn.bias else [])
    for layer in range(rnn.num_layers):
        outputs = []
        for direction in range(directions):
            suffix = f"l{layer}" + ("_reverse" if direction else "")
            weights = [getattr(rnn, f"{name}_{suffix}") for name in names]
            source = reverse(x) if direction else x
            state = source.new_zeros(1, x.size(0), rnn.hidden_size)
            if lstm:
                output = torch.lstm(source, [state, state], weights, rnn.bias, 1, 0.0, rnn.training, False, True)[0]
            else:
                output = torch.gru(source, state, weights, rnn.bias, 1, 0.0, rnn.training, False, True)[0]
            outputs.append(reverse(output) if direction else output)
        x = torch.cat(outputs, dim=2) if directions == 2 else outputs[0]
        if layer < rnn.num_layers - 1 and rnn.training and 0.0 < rnn.dropout < 1.0:
            x = fast_dropout(x, rnn.dropout)
    return x.masked_fill(steps.unsqueeze(2) >= limit.unsqueeze(2), 0.0)


class FastMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose attention-weight dropout uses :func:`fast_dropout` on CPU.

    Same parameters and results in distribution. In training on a CPU with dropout, self-attention
    with packed input projections is computed here (projections, scaled scores, masks, softmax,
    dropout, weighted sum, output projection); everything else is ``nn.MultiheadAttention``.
    """

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        manual = (
            self.training
            and self.dropout > 0.0
            and query.device.type == "cpu"
            and not need_weights
            and query is key
            and key is value
            and self._qkv_same_embed_dim
            and self.in_proj_bias is not None
            and self.bias_k is None
            and not self.add_zero_attn
            and not is_causal
        )
        if not manual:
            return super().forward(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                average_attn_weights=average_attn_weights,
                is_causal=is_causal,
            )
        x = query if self.batch_first else query.transpose(0, 1)  # (B, T, E)
        batch, time, width = x.shape
        heads = self.num_heads
        qkv = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, time, 3, heads, width // heads).permute(2, 0, 3, 1, 4)  # each (B, H, T, D)
        scores = (q * (width // heads) ** -0.5) @ k.transpose(-1, -2)  # (B, H, T, T)
        hidden = None  # True where a query may not look
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                hidden = attn_mask
            else:
                scores = scores + attn_mask
        if key_padding_mask is not None:
            padded = key_padding_mask if key_padding_mask.dtype == torch.bool else key_padding_mask < 0
            padded = padded[:, None, None, :]
            hidden = padded if hidden is None else hidden | padded
        if hidden is not None:
            # A finite floor, not -inf: a query that may look nowhere (a padded frame beyond an
            # attention window) gets zeros, as in torch, instead of NaN that backward would spread.
            scores = scores.masked_fill(hidden, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        if hidden is not None:
            weights = weights.masked_fill(hidden.all(dim=-1, keepdim=True), 0.0)
        weights = fast_dropout(weights, self.dropout)
        out = (weights @ v).transpose(1, 2).reshape(batch, time, width)
        out = self.out_proj(out)
        return (out if self.batch_first else out.transpose(0, 1)), None


def use_fast_dropout(model: nn.Module) -> nn.Module:
    """Swap every plain ``nn.Dropout`` and ``nn.MultiheadAttention`` in ``model`` (torchaudio's
    blocks and torch's Transformer layers included) for the fast-dropout versions."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
            elif type(child) is nn.MultiheadAttention:
                child.__class__ = FastMultiheadAttention  # same parameters and buffers, one more code path
    return model


class Conv2dSubsampling(nn.Module):
    """Two stride-2 3x3 convolutions over (time, frequency): (B, T, F) -> (B, ~T/4, d_model).

    Subsampling time by 4 is what makes attention and recurrent encoders affordable on a CPU
    (a BiLSTM at 100 frames/s is 4x the work and barely more accurate for characters).
    """

    def __init__(self, input_dim: int, d_model: int, channels: int = 64, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, stride=2),
            nn.ReLU(),
        )
        freq = ((input_dim - 1) // 2 - 1) // 2
        self.out = nn.Linear(channels * freq, d_model)
        self.dropout = nn.Dropout(dropout)

    @staticmethod
    def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
        return ((lengths - 1) // 2 - 1) // 2

    @staticmethod
    def chunk_window(chunk: int) -> tuple[int, int]:
        """(feature frames a chunk of ``chunk`` output frames reads, feature frames it advances):
        each output frame reads 7 frames, at a stride of 4 (streaming models feed these windows)."""
        return 4 * chunk + 3, 4 * chunk

    def stream_window(self, features: torch.Tensor) -> torch.Tensor:
        """A streaming chunk's window (B, W, F) -> (B, n, d_model) with n = ``output_lengths(W)``:
        none when W < 7 (where :meth:`forward` pads to give one frame, a stream gives none)."""
        count = (((features.size(1) - 1) // 2 - 1) // 2) if features.size(1) >= 7 else 0
        if count == 0:
            return features.new_zeros(features.size(0), 0, self.out.out_features)
        lengths = torch.full((features.size(0),), features.size(1), dtype=torch.long, device=features.device)
        return self(features, lengths)[0][:, :count]

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if features.size(1) < 7:  # the two convolutions need 7 frames to give one
            features = nn.functional.pad(features, (0, 0, 0, 7 - features.size(1)))
        x = self.conv(features.unsqueeze(1))  # (B, C, T', F')
        batch, channels, time, freq = x.shape
        x = self.out(x.transpose(1, 2).reshape(batch, time, channels * freq))
        return self.dropout(x), self.output_lengths(lengths).clamp(min=1, max=time)


# d_model of the attention encoders: split into num_heads heads, and paired into sines and cosines.
D_MODEL = Limit(low=0, low_open=True, multiple_of=("num_heads", 2))


class SinusoidalPositionalEncoding(nn.Module):
    """Adds fixed sine/cosine position codes to (B, T, d_model) inputs scaled by sqrt(d_model)."""

    table: torch.Tensor  # (max_length, d_model), a buffer

    def __init__(self, d_model: int, dropout: float = 0.0, max_length: int = 10000):
        super().__init__()
        position = torch.arange(max_length).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_length, d_model)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div)
        self.register_buffer("table", table, persistent=False)
        self.scale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x (B, T, d_model) at positions offset .. offset + T - 1 (a chunk of a stream: offset > 0)."""
        if offset + x.size(1) > self.table.size(0):
            raise ValueError(
                f"sequence of {offset + x.size(1)} frames exceeds the positional table ({self.table.size(0)})"
            )
        return self.dropout(x * self.scale + self.table[offset : offset + x.size(1)])


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm over (B, C, T) whose training statistics count only real frames, not padding.

    The (B, 1, T) padding mask is passed to ``forward`` or, where the module sits inside a
    library's Sequential (the Conformer), returned by the ``padding`` callable. In eval mode the
    running statistics make it a per-frame affine map, so padding never leaks. Unlike a per-frame
    LayerNorm it does not blow silence frames up to unit scale, which matters on small corpora.
    """

    def __init__(self, num_features: int, padding=None):
        super().__init__(num_features)
        self._padding = padding

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        if pad is None and self._padding is not None:
            pad = self._padding()
        if not self.training or pad is None:
            return super().forward(x)
        valid = (~pad).to(x.dtype)  # (B, 1, T)
        count = valid.sum().clamp(min=2)
        mean = (x * valid).sum(dim=(0, 2)) / count
        var = ((x - mean[None, :, None]).pow(2) * valid).sum(dim=(0, 2)) / count
        with torch.no_grad():
            # momentum None: a cumulative average, as nn.BatchNorm1d's (statistics re-estimated
            # for averaged weights, asrbench.training.trainer.recompute_batch_norm)
            running_mean, running_var, tracked = self.running_mean, self.running_var, self.num_batches_tracked
            # None only with track_running_stats=False, which this class never sets
            assert running_mean is not None and running_var is not None and tracked is not None
            momentum = self.momentum if self.momentum is not None else 1.0 / float(tracked + 1)
            running_mean.lerp_(mean.detach().to(running_mean.dtype), momentum)
            unbiased = var.detach() * count / (count - 1)
            running_var.lerp_(unbiased.to(running_var.dtype), momentum)
            tracked += 1
        x = (x - mean[None, :, None]) * torch.rsqrt(var[None, :, None] + self.eps)
        return x * self.weight[None, :, None] + self.bias[None, :, None]
