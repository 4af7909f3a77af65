"""E-Branchformer (asrbench/models/e_branchformer.py): what is particular to it. The registry-wide
tests (tests/models/test_models.py ...) cover its shapes, lengths and options under every head."""

from __future__ import annotations

import pytest
import torch
from helpers import INPUT_DIM, TINY, VOCAB, streamed_encoding

from asrbench.errors import AsrbenchError
from asrbench.models import build_model, count_parameters
from asrbench.models.e_branchformer import EBranchformer

STREAMING = {**TINY["e_branchformer"], "streaming": True, "max_train_chunk": 4}


def _model(seed: int = 0, **options) -> EBranchformer:
    torch.manual_seed(seed)
    model = build_model("e_branchformer", {**TINY["e_branchformer"], **options}, INPUT_DIM, VOCAB).eval()
    assert isinstance(model, EBranchformer)
    return model


def _perturb_gates(model: EBranchformer) -> None:
    """ESPnet's initialisation makes each gate ~1 (its convolution ~0): give the convolutions
    weight, so the tests see the gate's time context at work."""
    with torch.no_grad():
        for block in model.blocks:
            block.cgmlp.gate_conv.conv.weight.normal_(0.0, 0.5)


@pytest.mark.parametrize("options", [{}, STREAMING, {**STREAMING, "conv_context": "chunk"}])
def test_padding_does_not_change_the_real_frames_outputs(options: dict):
    model = _model(**options)
    _perturb_gates(model)
    features = torch.randn(1, 83, INPUT_DIM)
    padded = torch.cat([features, 100.0 * torch.randn(1, 60, INPUT_DIM)], dim=1)  # loud padding
    batch = torch.cat([padded, torch.randn(1, 143, INPUT_DIM)])
    with torch.no_grad():
        alone, length = model.encode(features, torch.tensor([83]))
        together, lengths = model.encode(batch, torch.tensor([83, 143]))
    assert int(lengths[0]) == int(length[0]) == alone.size(1)
    torch.testing.assert_close(together[:1, : alone.size(1)], alone, atol=1e-5, rtol=1e-4)


def test_the_merge_concatenates_the_branches_and_projects_back_to_d_model():
    model = _model(d_model=16, merge_kernel=7)
    block = model.blocks[0]
    assert block.merge_conv.conv.weight.shape == (32, 1, 7)  # depthwise over 2 x d_model channels
    assert block.merge_proj.in_features == 32 and block.merge_proj.out_features == 16
    global_branch, local_branch = torch.randn(3, 11, 16), torch.randn(3, 11, 16)
    merged, cache = block.merge(global_branch, local_branch)
    assert merged.shape == (3, 11, 16) and cache is None
    # By hand: concatenation plus its depthwise convolution (centred, zero borders), projected.
    joined = torch.cat([global_branch, local_branch], dim=-1)
    convolved = torch.nn.functional.conv1d(
        joined.transpose(1, 2), block.merge_conv.conv.weight, block.merge_conv.conv.bias, padding=3, groups=32
    ).transpose(1, 2)
    torch.testing.assert_close(merged, block.merge_proj(joined + convolved))
    # The cgMLP: up to cgmlp_units, half of it gates the other half, down to d_model.
    cgmlp = block.cgmlp
    assert cgmlp.up[0].out_features == 32 and cgmlp.gate_conv.conv.weight.shape == (16, 1, 5)
    assert cgmlp.down.in_features == 16 and cgmlp(torch.randn(3, 11, 16))[0].shape == (3, 11, 16)


def test_a_gradient_reaches_both_branches_and_the_merge():
    model = _model().train()
    features, lengths = torch.randn(2, 60, INPUT_DIM), torch.tensor([60, 41])
    targets, target_lengths = torch.tensor([1, 2, 3, 4, 5]), torch.tensor([3, 2])
    model.compute_loss(features, lengths, targets, target_lengths).backward()
    for index, block in enumerate(model.blocks):
        for name, parameter in [
            ("attention", block.attention.in_proj_weight),  # the global branch
            ("cgmlp up", block.cgmlp.up[0].weight),  # the local branch
            ("cgmlp gate convolution", block.cgmlp.gate_conv.conv.weight),
            ("merge convolution", block.merge_conv.conv.weight),
            ("merge projection", block.merge_proj.weight),
        ]:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"block {index}: {name}"


def test_the_documented_default_size():
    """The module docstring's numbers: 80 mel bins, 30 tokens, 144 x 4 blocks."""
    model = build_model("e_branchformer", {}, 80, 30)
    assert count_parameters(model) == 2_480_494
    assert count_parameters(model.blocks[0]) == 594_720
    assert count_parameters(build_model("conformer", {}, 80, 30)) == 2_035_246
    # ESPnet's initialisation: each gate starts as ~1 (weights ~N(0, 1e-6), bias 1).
    gate = model.blocks[0].cgmlp.gate_conv.conv
    assert gate.weight.abs().max() < 1e-4 and torch.equal(gate.bias, torch.ones_like(gate.bias))


@pytest.mark.parametrize("conv_context", ["causal", "chunk"])
@pytest.mark.parametrize("chunk,left", [(1, -1), (2, -1), (4, -1), (4, 0), (3, 1), (5, 2)])
def test_chunk_by_chunk_encoding_equals_the_masked_pass(conv_context: str, chunk: int, left: int):
    model = _model(**{**STREAMING, "conv_context": conv_context})
    _perturb_gates(model)
    features = torch.randn(1, 131, INPUT_DIM)
    model.set_chunk(chunk, left)
    with torch.no_grad():
        masked, lengths = model.encode(features, torch.tensor([131]))
    streamed = streamed_encoding(model, features, chunk, left)
    assert streamed.shape == masked.shape and int(lengths[0]) == masked.size(1)
    torch.testing.assert_close(streamed, masked, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("conv_context", ["causal", "chunk"])
def test_a_chunk_sees_no_future(conv_context: str):
    model = _model(**{**STREAMING, "conv_context": conv_context})
    _perturb_gates(model)
    model.set_chunk(2)
    features = torch.randn(1, 81, INPUT_DIM)
    changed = features.clone()
    changed[:, 4 * 8 + 3 :] += torch.randn_like(changed[:, 4 * 8 + 3 :])  # after chunk 3 (frames 0..7)'s window
    with torch.no_grad():
        before, _ = model.encode(features, torch.tensor([81]))
        after, _ = model.encode(changed, torch.tensor([81]))
    torch.testing.assert_close(before[:, :8], after[:, :8])
    assert not torch.allclose(before[:, 8:], after[:, 8:])
    assert model.chunk_streaming


def test_chunked_convolution_at_full_context_is_the_offline_model_and_offline_refuses_chunks():
    chunked = _model(**{**STREAMING, "conv_context": "chunk"})
    offline = _model(**{**STREAMING, "streaming": False})
    offline.load_state_dict(chunked.state_dict())  # streaming changes no weights
    _perturb_gates(chunked)
    offline.load_state_dict(chunked.state_dict())
    features, lengths = torch.randn(2, 77, INPUT_DIM), torch.tensor([77, 50])
    with torch.no_grad():
        torch.testing.assert_close(chunked.encode(features, lengths)[0], offline.encode(features, lengths)[0])
    with pytest.raises(ValueError, match="streaming: true"):
        offline.set_chunk(2)


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("cgmlp_units", 33, "model.cgmlp_units must be divisible by 2, got 33"),
        ("merge_kernel", 4, "model.merge_kernel must be odd, got 4"),
        ("cgmlp_kernel", 0, "model.cgmlp_kernel must be at least 1"),
        ("d_model", 15, "model.d_model must be divisible by"),
    ],
)
def test_option_limits_are_one_clear_error(option: str, value: int, message: str):
    with pytest.raises(AsrbenchError, match=message):
        build_model("e_branchformer", {**TINY["e_branchformer"], option: value}, INPUT_DIM, VOCAB)
