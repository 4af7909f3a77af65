"""The RNN-T (transducer) loss of Graves (2012) in plain PyTorch, so it runs wherever torch does.

Why our own: torchaudio 2.11's ``functional.rnnt_loss`` calls ops of its compiled extension, which
links ``libtorch_cuda``/``libc10_cuda`` and so does not load with the CPU torch wheel (through
``asrbench.torchaudio_compat`` the call fails with "no attribute 'rnnt_loss_forward'"). The
packages that ship the loss do not install against torch 2.13 (tried with ``pip install --target``):
``optimized-transducer`` 1.4 and ``fast-rnnt`` 1.3 are sdists whose CMake build downloads pybind11
from GitHub, which fails offline; ``warp-rnnt`` 0.7 is CUDA-only ("CPU version is not implemented").

The lattice recursions run over anti-diagonals ``n = t + u``: every cell of a diagonal depends only
on the previous one, so one step updates all cells of all utterances at once, and the Python loop
has ``T + U + 1`` steps, each on ``(B, U+1)`` tensors. The loops never touch the vocabulary: the
blank and label log-probabilities are gathered into ``(B, T, U+1)`` tensors first, and the
gradient is written back into a dense ``(B, T, U+1, V)`` tensor only at the end (it flows on to
the logits through ``log_softmax`` by autograd, outside this function).
"""

from __future__ import annotations

import torch

_REDUCTIONS = ("mean", "sum", "none")


def rnnt_loss(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative log-likelihood of each target sequence summed over all transducer alignments.

    ``log_probs`` (B, T, U+1, V): log-softmax outputs of the joiner, float32 or float64 (other
    float dtypes run the lattice in float32); ``targets`` (B, U) integer, padded with anything;
    ``logit_lengths`` (B,) in ``[1, T]`` and ``target_lengths`` (B,) in ``[0, U]``. Frames
    ``t >= logit_lengths[b]`` and target positions ``u > target_lengths[b]`` are ignored: they get
    no gradient and may hold any value, even NaN.

    ``reduction``: ``"none"`` gives the (B,) per-utterance losses, ``"sum"`` their sum, ``"mean"``
    their mean over the batch (not divided by target lengths, as in torchaudio; equal to the
    repo's CTC loss, summed then divided by B). A utterance whose every alignment has probability
    zero (only with ``-inf`` log-probs) has loss ``inf`` and zero gradient.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, not {reduction!r}")
    _check_inputs(log_probs, targets, logit_lengths, target_lengths, blank)
    losses = _RNNTLoss.apply(log_probs, targets, logit_lengths, target_lengths, blank)
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


def joint_memory_bytes(
    batch_size: int, frames: int, target_length: int, vocab_size: int, dtype: torch.dtype = torch.float32
) -> int:
    """Bytes of one (B, T, U+1, V) joiner tensor; training holds about three of them (logits,
    log-probs, their gradient), which is what limits the batch size of a transducer, not the loss."""
    element = torch.empty((), dtype=dtype).element_size()
    return batch_size * frames * (target_length + 1) * vocab_size * element


def _check_inputs(log_probs, targets, logit_lengths, target_lengths, blank: int) -> None:
    if log_probs.dim() != 4 or not log_probs.is_floating_point():
        raise ValueError(
            f"log_probs must be a float (B, T, U+1, V) tensor, not {tuple(log_probs.shape)} {log_probs.dtype}"
        )
    batch, frames, positions, vocab = log_probs.shape
    if targets.shape != (batch, positions - 1) or targets.is_floating_point():
        raise ValueError(
            f"targets must be an integer (B, U) = ({batch}, {positions - 1}) tensor, "
            f"not {tuple(targets.shape)} {targets.dtype}"
        )
    for name, lengths in (("logit_lengths", logit_lengths), ("target_lengths", target_lengths)):
        if lengths.shape != (batch,) or lengths.is_floating_point():
            raise ValueError(f"{name} must be an integer ({batch},) tensor, not {tuple(lengths.shape)} {lengths.dtype}")
    if not 0 <= blank < vocab:
        raise ValueError(f"blank must be in [0, {vocab}), not {blank}")
    if batch == 0:
        return
    if int(logit_lengths.min()) < 1 or int(logit_lengths.max()) > frames:
        raise ValueError(f"logit_lengths must be in [1, T={frames}]: a transducer emits nothing without a frame")
    if int(target_lengths.min()) < 0 or int(target_lengths.max()) > positions - 1:
        raise ValueError(f"target_lengths must be in [0, U={positions - 1}]")
    valid = torch.arange(positions - 1, device=targets.device) < target_lengths[:, None].to(targets.device)
    used = targets[valid]
    if used.numel() and (int(used.min()) < 0 or int(used.max()) >= vocab):
        raise ValueError(f"targets within target_lengths must be in [0, V={vocab})")


class _RNNTLoss(torch.autograd.Function):
    """Per-utterance losses (B,); forward keeps alpha, backward computes beta and the gradient.

    Both recursions work on a skewed lattice: ``x_skew[b, n, u] = x[b, n - u, u]``, shape
    (B, N, U+1) with ``N = T + U + 1`` diagonals, ``-inf`` where ``n - u`` is outside ``[0, T]``.
    The lattice has one extra row ``t = T`` that only blanks reach, so that the loss is a lattice
    value like any other: ``loglik[b] = alpha(T_b, U_b)`` (the final blank included), and the
    backward pass starts from ``beta(T_b, U_b) = 0``.
    """

    @staticmethod
    def forward(ctx, log_probs, targets, logit_lengths, target_lengths, blank):
        batch, frames, positions, _ = log_probs.shape
        compute_dtype = log_probs.dtype if log_probs.dtype in (torch.float32, torch.float64) else torch.float32
        device = log_probs.device
        logit_lengths = logit_lengths.to(device=device, dtype=torch.long)
        target_lengths = target_lengths.to(device=device, dtype=torch.long)
        # Padded target positions may hold anything (-1, V): point them at the blank, then mask.
        label_positions = torch.arange(positions - 1, device=device)
        labels = torch.where(
            label_positions < target_lengths[:, None], targets.to(device=device, dtype=torch.long), blank
        )

        blank_lp, label_lp = _gather_emissions(log_probs.detach().to(compute_dtype), labels, blank)
        blank_lp, label_lp = _mask_padding(blank_lp, label_lp, logit_lengths, target_lengths)
        blank_skew, label_skew = _skew(blank_lp), _skew(label_lp)

        alpha = torch.full_like(blank_skew, float("-inf"))  # (B, N, U+1)
        alpha[:, 0, 0] = 0.0
        for n in range(1, alpha.size(1)):
            previous = alpha[:, n - 1]  # (B, U+1): cells (n-1-u, u)
            alpha[:, n] = previous + blank_skew[:, n - 1]  # a blank moves t -> t+1, same u
            alpha[:, n, 1:] = torch.logaddexp(alpha[:, n, 1:], previous[:, :-1] + label_skew[:, n - 1, :-1])

        batch_index = torch.arange(batch, device=device)
        end = logit_lengths + target_lengths  # the diagonal of (T_b, U_b)
        loglik = alpha[batch_index, end, target_lengths]
        ctx.save_for_backward(blank_skew, label_skew, alpha, loglik, labels, logit_lengths, target_lengths)
        ctx.blank = blank
        ctx.input_shape, ctx.input_dtype = log_probs.shape, log_probs.dtype
        return (-loglik).to(log_probs.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        blank_skew, label_skew, alpha, loglik, labels, logit_lengths, target_lengths = ctx.saved_tensors
        batch, frames, positions, vocab = ctx.input_shape
        diagonals = alpha.size(1)
        device = alpha.device
        negative_infinity = float("-inf")

        # beta has one more diagonal (all -inf) so beta(t+1, u) exists for every alpha cell.
        beta = torch.full((batch, diagonals + 1, positions), negative_infinity, dtype=alpha.dtype, device=device)
        batch_index = torch.arange(batch, device=device)
        beta[batch_index, logit_lengths + target_lengths, target_lengths] = 0.0
        for n in range(diagonals - 1, -1, -1):
            following = beta[:, n + 1]  # (B, U+1): cells (n+1-u, u)
            from_blank = blank_skew[:, n] + following
            from_label = label_skew[:, n, :-1] + following[:, 1:]
            # logaddexp with beta's own value keeps the start cell (T_b, U_b) at 0.
            beta[:, n] = torch.logaddexp(beta[:, n], from_blank)
            beta[:, n, :-1] = torch.logaddexp(beta[:, n, :-1], from_label)

        # Occupancy of each arc: alpha(source) + arc + beta(destination) - loglik; an utterance
        # with loglik = -inf has every arc at -inf, so 0 instead keeps its gradient 0 (not NaN).
        finite_loglik = torch.where(torch.isfinite(loglik), loglik, torch.zeros_like(loglik))[:, None, None]
        scale = grad_output.to(alpha.dtype)[:, None, None]
        grad_blank = -scale * torch.exp(alpha + blank_skew + beta[:, 1:] - finite_loglik)
        beta_after_label = torch.cat([beta[:, 1:, 1:], beta.new_full((batch, diagonals, 1), negative_infinity)], 2)
        grad_label = -scale * torch.exp(alpha + label_skew + beta_after_label - finite_loglik)

        grad = torch.zeros(ctx.input_shape, dtype=alpha.dtype, device=device)
        grad[..., ctx.blank] = _unskew(grad_blank, frames)
        grad[:, :, :-1].scatter_add_(
            3,
            labels[:, None, :, None].expand(batch, frames, positions - 1, 1),
            _unskew(grad_label, frames)[:, :, :-1, None],
        )
        return grad.to(ctx.input_dtype), None, None, None, None


def _gather_emissions(log_probs: torch.Tensor, labels: torch.Tensor, blank: int):
    """(B, T, U+1, V), labels (B, U) -> blank (B, T, U+1) and label (B, T, U+1) log-probs.

    The label at (t, u) is the (u+1)-th target, read from the joiner at (t, u); the last column
    (u = U) has no label to emit and is ``-inf``.
    """
    batch, frames, positions, _ = log_probs.shape
    blank_lp = log_probs[..., blank]
    index = labels[:, None, :, None].expand(batch, frames, positions - 1, 1)
    label_lp = log_probs[:, :, :-1].gather(3, index).squeeze(3)
    label_lp = torch.cat([label_lp, label_lp.new_full((batch, frames, 1), float("-inf"))], 2)
    return blank_lp, label_lp


def _mask_padding(blank_lp, label_lp, logit_lengths, target_lengths):
    """Add the row t = T and set every arc outside an utterance's lattice to ``-inf``: (B, T+1, U+1).

    Blanks exist at ``t < T_b, u <= U_b`` and labels at ``t < T_b, u < U_b``; masking (rather
    than trusting the recursion to never read padding) keeps NaN or inf padding out of the sums.
    """
    batch, frames, positions = blank_lp.shape
    t = torch.arange(frames + 1, device=blank_lp.device)[None, :, None]
    u = torch.arange(positions, device=blank_lp.device)[None, None, :]
    in_time = t < logit_lengths[:, None, None]
    blank_ok = in_time & (u <= target_lengths[:, None, None])
    label_ok = in_time & (u < target_lengths[:, None, None])
    row = blank_lp.new_full((batch, 1, positions), float("-inf"))
    blank_lp = torch.cat([blank_lp, row], 1).masked_fill(~blank_ok, float("-inf"))
    label_lp = torch.cat([label_lp, row], 1).masked_fill(~label_ok, float("-inf"))
    return blank_lp, label_lp


def _skew(lattice: torch.Tensor) -> torch.Tensor:
    """(B, T+1, U+1) -> (B, N, U+1) with ``out[b, n, u] = lattice[b, n - u, u]``, N = T + U + 1."""
    batch, rows, positions = lattice.shape
    diagonal = torch.arange(rows + positions - 1, device=lattice.device)[:, None]
    t = diagonal - torch.arange(positions, device=lattice.device)[None, :]  # (N, U+1)
    inside = (t >= 0) & (t < rows)
    skewed = lattice.gather(1, t.clamp(0, rows - 1).expand(batch, -1, -1))
    return skewed.masked_fill(~inside, float("-inf"))


def _unskew(skewed: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, N, U+1) -> (B, T, U+1): ``out[b, t, u] = skewed[b, t + u, u]`` (the extra row T dropped)."""
    batch, _, positions = skewed.shape
    diagonal = torch.arange(frames, device=skewed.device)[:, None] + torch.arange(positions, device=skewed.device)
    return skewed.gather(1, diagonal.expand(batch, -1, -1))
