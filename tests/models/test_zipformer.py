"""The Zipformer encoder (asrbench.models.zipformer): its lengths and frame rates, padding, BiasNorm
and the Swoosh activations, the attention weights a block shares, and its default size."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import INPUT_DIM, make

from asrbench.errors import AsrbenchError
from asrbench.models import build_model, count_parameters, default_options
from asrbench.models.zipformer import BiasNorm, Downsample, ZipformerBlock, swoosh_l, swoosh_r


def settled(name: str = "zipformer") -> torch.nn.Module:
    """Eval mode, with the bypass scales and downsampling weights moved off their initial values
    (so that every path carries a different share than at initialization)."""
    model = make(name)
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.endswith(("bypass.scale", "bypass_mid.scale", ".weights")):
                parameter.uniform_(0.3, 0.9)
    return model.eval()


def test_output_lengths_are_four_x_after_a_two_x_embed():
    model = settled()
    for length in (7, 9, 10, 11, 23, 40, 64, 101):
        with torch.no_grad():
            encoded, lengths = model.encode(torch.randn(1, length, INPUT_DIM), torch.tensor([length]))
        expected = max(1, ((length - 7) // 2 + 1) // 2)
        assert int(lengths[0]) == encoded.size(1) == expected, f"T={length}"


def test_the_stacks_run_at_their_frame_rates():
    """Each stack's layers see ceil(T'/factor) frames (T' the embed's output), and the stack hands
    back T' frames; the encoder's output is the max stack width."""
    model = settled()
    seen: dict[int, int] = {}
    hooks = [
        layer.register_forward_hook(lambda module, args, out, index=index: seen.__setitem__(index, args[0].size(1)))
        for index, stack in enumerate(model.stacks)
        for layer in stack.layers
    ]
    length = 101
    embed_frames = (length - 7) // 2  # 47
    with torch.no_grad():
        stacked, _ = model.embed_and_stacks(torch.randn(2, length, INPUT_DIM), torch.tensor([length, 60]))
        encoded, _ = model.encode(torch.randn(2, length, INPUT_DIM), torch.tensor([length, 60]))
    for hook in hooks:
        hook.remove()
    factors = [stack.factor for stack in model.stacks]
    assert factors == [1, 2, 4, 2]  # the TINY configuration
    assert seen == {i: math.ceil(embed_frames / f) for i, f in enumerate(factors)}
    assert stacked.shape == (2, embed_frames, 24)
    assert encoded.shape == (2, math.ceil(embed_frames / 2), 24) and model.encoder_dim == 24


@pytest.mark.parametrize("name", ["zipformer", "zipformer_transducer"])
def test_padding_does_not_change_real_frames(name):
    """Alone or in a batch padded with noise, an utterance's encoder frames are the same (every
    downsample pads a sequence with its own last frame, never with the batch's padding)."""
    model = settled(name)
    torch.manual_seed(0)
    lengths = [101, 64, 37, 12]
    batch = 3 * torch.randn(len(lengths), max(lengths), INPUT_DIM)  # noise in the padding
    with torch.no_grad():
        encoded, encoded_lengths = model.encode(batch, torch.tensor(lengths))
        for i, length in enumerate(lengths):
            alone, alone_lengths = model.encode(batch[i : i + 1, :length], torch.tensor([length]))
            n = int(alone_lengths[0])
            assert int(encoded_lengths[i]) == n == alone.size(1)
            torch.testing.assert_close(encoded[i, :n], alone[0], atol=2e-5, rtol=1e-4)


def test_swoosh_values():
    x = torch.tensor([-3.0, 0.0, 1.0, 4.0, 10.0])
    expected_l = torch.log1p(torch.exp(x - 4)) - 0.08 * x - 0.035
    expected_r = torch.log1p(torch.exp(x - 1)) - 0.08 * x - 0.313261687
    torch.testing.assert_close(swoosh_l(x), expected_l)
    torch.testing.assert_close(swoosh_r(x), expected_r)
    assert abs(float(swoosh_r(torch.tensor(0.0)))) < 1e-6  # SwooshR passes through zero
    assert float(swoosh_l(torch.tensor(4.0))) == pytest.approx(math.log(2) - 0.32 - 0.035)


def test_bias_norm_divides_by_the_rms_around_its_bias():
    norm = BiasNorm(4)
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([1.0, 0.0, -1.0, 2.0]))
        norm.log_scale.fill_(0.5)
    x = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.5, 0.5, 0.5, 0.5]])
    rms = ((x - norm.bias) ** 2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(norm(x), x / rms * math.exp(0.5))
    # Unlike LayerNorm it keeps the mean: a constant frame is not mapped to zero.
    assert norm(x)[1].abs().min() > 0
    assert torch.isfinite(BiasNorm(4)(torch.zeros(2, 4))).all()  # a zero (padded) frame stays finite


def test_downsample_averages_groups_with_softmax_weights_and_repeats_each_last_frame():
    down = Downsample(2)
    with torch.no_grad():
        down.weights.copy_(torch.tensor([0.0, math.log(3.0)]))  # softmax: 1/4, 3/4
    x = torch.arange(5.0).view(1, 5, 1).repeat(2, 1, 1)
    y, lengths = down(x, torch.tensor([5, 3]))
    assert lengths.tolist() == [3, 2]
    assert y[0, :, 0].tolist() == pytest.approx([0.75, 2.75, 4.0])  # frame 4 paired with itself
    assert y[1, :2, 0].tolist() == pytest.approx([0.75, 2.0])  # frame 2 paired with itself, not frame 3


def test_a_block_computes_attention_weights_once_and_both_attentions_and_the_nla_use_them():
    model = settled()
    block = model.stacks[0].layers[0]
    assert isinstance(block, ZipformerBlock)
    computed, used = [], {}
    hooks = [block.attention_weights.register_forward_hook(lambda module, args, out: computed.append(out))]
    for name in ("attention1", "attention2", "nonlinear_attention"):
        module = getattr(block, name)
        hooks.append(module.register_forward_hook(lambda module, args, out, name=name: used.__setitem__(name, args[1])))
    with torch.no_grad():
        model.encode(torch.randn(2, 40, INPUT_DIM), torch.tensor([40, 30]))
    for hook in hooks:
        hook.remove()
    assert len(computed) == 1
    weights = computed[0]  # (B, H, T, T), rows summing to 1, nothing on padded keys
    assert used["attention1"] is weights and used["attention2"] is weights
    assert torch.equal(used["nonlinear_attention"], weights[:, :1])
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:3]))
    shorter = (30 - 7) // 2  # the second utterance's frames at the first stack's rate
    assert weights[1, :, :, shorter:].abs().max() == 0


def test_default_size_and_parameter_count():
    """The documented default: icefall's small Zipformer at half width and depth, 3.04M parameters
    with 80 features and 30 tokens (the AN4 conformer's size); output at 4x."""
    model = build_model("zipformer", default_options("zipformer"), 80, 30)
    assert count_parameters(model) == 3_036_507
    assert model.encoder_dim == 128 and model.subsampling_factor == 4
    assert [stack.factor for stack in model.stacks] == [1, 2, 4, 8, 4, 2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_heads": [4, 4]}, "num_heads has 2 values, one per stack is 6"),
        ({"kernel_sizes": [31, 31, 15, 14, 15, 31]}, "each value must be odd"),
        ({"downsampling_factors": [1, 2, 0, 8, 4, 2]}, "each value must be at least 1"),
    ],
)
def test_per_stack_options_are_checked(options, message):
    with pytest.raises(AsrbenchError, match=message):
        build_model("zipformer", options, 80, 30)
