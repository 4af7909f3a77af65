"""The RNN-T loss against a brute-force sum over every alignment, autograd's numerical gradient,
and one-utterance-at-a-time evaluation of padded batches."""

from __future__ import annotations

import itertools

import pytest
import torch

from asrbench.models.rnnt_loss import joint_memory_bytes, rnnt_loss


def brute_force_loglik(log_probs: torch.Tensor, targets: list[int], blank: int = 0) -> torch.Tensor:
    """log P(targets) of one utterance, (T, U+1, V) -> (): logsumexp over every alignment.

    An alignment is T blanks and U labels in some order, ending with the blank at (T-1, U); each
    symbol is read from the joiner at the lattice point (t, u) reached so far. Differentiable, so
    its autograd gradient is a reference for the explicit backward.
    """
    frames, units = log_probs.size(0), len(targets)
    scores = []
    for label_slots in itertools.combinations(range(frames - 1 + units), units):
        t = u = 0
        score = log_probs.new_zeros(())
        for slot in range(frames - 1 + units):
            if slot in label_slots:
                score = score + log_probs[t, u, targets[u]]
                u += 1
            else:
                score = score + log_probs[t, u, blank]
                t += 1
        scores.append(score + log_probs[frames - 1, units, blank])
    return torch.logsumexp(torch.stack(scores), 0)


def random_batch(frames: list[int], units: list[int], vocab: int, blank: int = 0, seed: int = 0, pad: float = 0.0):
    """Log-probs (B, T, U+1, V) with ``pad`` outside each utterance, targets (B, U) padded with -1."""
    generator = torch.Generator().manual_seed(seed)
    batch, max_frames, max_units = len(frames), max(frames), max(units)
    logits = torch.randn(batch, max_frames, max_units + 1, vocab, generator=generator, dtype=torch.float64)
    log_probs = logits.log_softmax(-1)
    labels = [i for i in range(vocab) if i != blank]
    targets = torch.full((batch, max_units), -1, dtype=torch.long)
    for b in range(batch):
        log_probs[b, frames[b] :] = pad
        log_probs[b, :, units[b] + 1 :] = pad
        choice = torch.randint(len(labels), (units[b],), generator=generator)
        targets[b, : units[b]] = torch.tensor(labels)[choice]
    return log_probs, targets, torch.tensor(frames), torch.tensor(units)


@pytest.mark.parametrize(
    "frames, units, vocab, blank",
    [
        (1, 0, 2, 0),
        (1, 1, 3, 0),
        (1, 3, 4, 0),
        (2, 0, 3, 0),
        (2, 1, 2, 1),
        (3, 2, 4, 3),
        (4, 4, 4, 0),
        (4, 1, 3, 2),
    ],
)
def test_loss_and_gradient_match_every_alignment_summed(frames, units, vocab, blank):
    seed = frames * 7 + units
    log_probs, targets, frame_lengths, unit_lengths = random_batch([frames], [units], vocab, blank, seed=seed)
    log_probs.requires_grad_(True)
    loss = rnnt_loss(log_probs, targets, frame_lengths, unit_lengths, blank=blank, reduction="sum")
    (grad,) = torch.autograd.grad(loss, log_probs)

    reference_input = log_probs.detach()[0].clone().requires_grad_(True)
    reference = -brute_force_loglik(reference_input, targets[0, :units].tolist(), blank)
    (reference_grad,) = torch.autograd.grad(reference, reference_input)
    assert loss.item() == pytest.approx(reference.item(), abs=1e-5)
    assert torch.allclose(grad[0], reference_grad, atol=1e-8)


def test_brute_force_counts_every_alignment():
    """With all log-probs 0, exp(-loss) is the number of alignments, C(T-1+U, U)."""
    log_probs = torch.zeros(1, 4, 4, 3, dtype=torch.float64)
    loss = rnnt_loss(log_probs, torch.tensor([[1, 2, 1]]), torch.tensor([4]), torch.tensor([3]), reduction="none")
    assert torch.exp(-loss).item() == pytest.approx(20.0)  # C(6, 3)
    assert brute_force_loglik(log_probs[0], [1, 2, 1]).exp().item() == pytest.approx(20.0)


def test_gradcheck_through_log_softmax():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 3, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[1, 2], [2, 0]])
    frame_lengths, unit_lengths = torch.tensor([3, 2]), torch.tensor([2, 1])

    def loss(x):
        return rnnt_loss(x.log_softmax(-1), targets, frame_lengths, unit_lengths, reduction="none")

    assert torch.autograd.gradcheck(loss, (logits,))


def test_padded_batch_equals_one_utterance_at_a_time():
    frames, units = [5, 2, 4, 1], [3, 0, 4, 2]
    log_probs, targets, frame_lengths, unit_lengths = random_batch(frames, units, vocab=5, seed=3, pad=float("nan"))
    log_probs.requires_grad_(True)
    losses = rnnt_loss(log_probs, targets, frame_lengths, unit_lengths, reduction="none")
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)  # grad_output per utterance
    (grad,) = torch.autograd.grad(losses, log_probs, weights)

    assert torch.isfinite(losses).all() and torch.isfinite(grad).all()
    for b, (t, u) in enumerate(zip(frames, units, strict=True)):
        alone = log_probs.detach()[b : b + 1, :t, : u + 1].clone().requires_grad_(True)
        loss = rnnt_loss(alone, targets[b : b + 1, :u], torch.tensor([t]), torch.tensor([u]), reduction="sum")
        (alone_grad,) = torch.autograd.grad(loss, alone)
        assert losses[b].item() == pytest.approx(loss.item(), abs=1e-10)
        assert losses[b].item() == pytest.approx(
            -brute_force_loglik(alone.detach()[0], targets[b, :u].tolist()).item(), abs=1e-5
        )
        assert torch.allclose(grad[b, :t, : u + 1], weights[b] * alone_grad, atol=1e-12)
        assert (grad[b, t:] == 0).all() and (grad[b, :, u + 1 :] == 0).all()


def test_logit_gradients_are_finite_zero_in_padding_and_sum_to_zero_over_the_vocabulary():
    frames, units = [6, 3], [4, 1]
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 6, 5, 7, generator=generator, requires_grad=True)
    targets = torch.tensor([[3, 1, 6, 2], [5, 0, 0, 0]])
    loss = rnnt_loss(logits.log_softmax(-1), targets, torch.tensor(frames), torch.tensor(units))
    (grad,) = torch.autograd.grad(loss, logits)

    assert torch.isfinite(grad).all()
    for b, (t, u) in enumerate(zip(frames, units, strict=True)):
        inside = grad[b, :t, : u + 1]
        # Every lattice point is on some alignment, so each one's logits get a nonzero gradient...
        assert (inside.abs().sum(-1) > 1e-6).all()
        # ...and the softmax's shift invariance makes it sum to zero over V.
        assert inside.sum(-1).abs().max().item() < 1e-6
        assert (grad[b, t:] == 0).all() and (grad[b, :, u + 1 :] == 0).all()


def test_reductions_agree():
    log_probs, targets, frame_lengths, unit_lengths = random_batch([3, 4, 2], [2, 1, 3], vocab=4, seed=5)
    log_probs.requires_grad_(True)
    losses = {
        reduction: rnnt_loss(log_probs, targets, frame_lengths, unit_lengths, reduction=reduction)
        for reduction in ("none", "sum", "mean")
    }
    assert losses["none"].shape == (3,) and (losses["none"] > 0).all()
    assert losses["sum"].item() == pytest.approx(losses["none"].sum().item(), rel=1e-12)
    assert losses["mean"].item() == pytest.approx(losses["sum"].item() / 3, rel=1e-12)
    (sum_grad,) = torch.autograd.grad(losses["sum"], log_probs)
    (mean_grad,) = torch.autograd.grad(losses["mean"], log_probs)
    assert sum_grad.abs().max() > 0.1
    assert torch.allclose(mean_grad * 3, sum_grad, atol=1e-12)


def test_one_frame_emits_several_labels():
    log_probs, targets, frame_lengths, unit_lengths = random_batch([1], [3], vocab=4, seed=6)
    log_probs.requires_grad_(True)
    loss = rnnt_loss(log_probs, targets, frame_lengths, unit_lengths)
    (grad,) = torch.autograd.grad(loss, log_probs)
    # One alignment only: three labels at t = 0, then the final blank.
    expected = -(
        log_probs[0, 0, 0, targets[0, 0]]
        + log_probs[0, 0, 1, targets[0, 1]]
        + log_probs[0, 0, 2, targets[0, 2]]
        + log_probs[0, 0, 3, 0]
    )
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    assert torch.isfinite(grad).all() and (grad != 0).sum() == 4
    assert torch.allclose(grad[grad != 0], torch.tensor(-1.0, dtype=torch.float64), atol=1e-12)


def test_float32_matches_float64_on_a_longer_lattice():
    log_probs, targets, frame_lengths, unit_lengths = random_batch([40, 25], [12, 7], vocab=10, seed=7)
    log_probs.requires_grad_(True)
    single = log_probs.detach().float().requires_grad_(True)
    double_loss = rnnt_loss(log_probs, targets, frame_lengths, unit_lengths, reduction="sum")
    single_loss = rnnt_loss(single, targets, frame_lengths, unit_lengths, reduction="sum")
    (double_grad,) = torch.autograd.grad(double_loss, log_probs)
    (single_grad,) = torch.autograd.grad(single_loss, single)
    assert single_loss.dtype == torch.float32 and single_grad.dtype == torch.float32
    assert single_loss.item() == pytest.approx(double_loss.item(), rel=1e-5)
    assert torch.allclose(single_grad.double(), double_grad, atol=1e-5)


def test_impossible_utterance_has_infinite_loss_and_zero_gradient():
    log_probs, targets, frame_lengths, unit_lengths = random_batch([2, 2], [1, 1], vocab=3, seed=8)
    log_probs[0, :, :, targets[0, 0]] = float("-inf")  # the only label can never be emitted
    log_probs.requires_grad_(True)
    losses = rnnt_loss(log_probs, targets, frame_lengths, unit_lengths, reduction="none")
    (grad,) = torch.autograd.grad(losses.sum(), log_probs)
    assert losses[0].item() == float("inf") and torch.isfinite(losses[1])
    assert (grad[0] == 0).all() and torch.isfinite(grad).all() and grad[1].abs().max() > 0.1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"logit_lengths": torch.tensor([0, 2])}, "logit_lengths"),
        ({"logit_lengths": torch.tensor([3, 4])}, "logit_lengths"),
        ({"target_lengths": torch.tensor([3, 1])}, "target_lengths"),
        ({"targets": torch.tensor([[1, 7], [1, -1]])}, "targets within"),
        ({"targets": torch.tensor([[1.0, 2.0], [1.0, 0.0]])}, "integer"),
        ({"reduction": "avg"}, "reduction"),
        ({"blank": 3}, "blank"),
    ],
)
def test_bad_inputs_are_refused(change, message):
    arguments = {
        "log_probs": torch.zeros(2, 3, 3, 3),
        "targets": torch.tensor([[1, 2], [1, -1]]),
        "logit_lengths": torch.tensor([3, 2]),
        "target_lengths": torch.tensor([2, 1]),
        **change,
    }
    with pytest.raises(ValueError, match=message):
        rnnt_loss(**arguments)


def test_joint_memory_bytes():
    assert joint_memory_bytes(32, 150, 40, 256) == 32 * 150 * 41 * 256 * 4
    assert joint_memory_bytes(1, 2, 0, 3, torch.float64) == 2 * 3 * 8
