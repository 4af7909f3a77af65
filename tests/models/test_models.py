"""The model contract, checked for every registered model:
``forward(features (B, T, F), feature_lengths (B,)) -> (log_probs (B, T', V), output_lengths (B,))``
(for attention models, their CTC branch). The attention decoders have tests of their own in
test_attention_models.py.
"""

from __future__ import annotations

import pytest
import torch
from helpers import INPUT_DIM, TINY, VOCAB, make, tiny_options

from asrbench.decoding.greedy import ctc_greedy
from asrbench.decoding.search_table import dev_searcher, greedy_decode
from asrbench.errors import AsrbenchError
from asrbench.models import MODELS, build_model, count_parameters, default_options, model_config_class

# Small options keep the tests fast; a model missing here is tested at its default size.
ALL_MODELS = sorted(MODELS)


def settle(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode after a few training-mode passes, so batch-norm statistics are not the
    identity they are at initialization (as in a trained model)."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 50, INPUT_DIM) * 2 + 1, torch.tensor([50, 45, 40, 30]))
    return model.eval()


@pytest.fixture(params=ALL_MODELS)
def name(request) -> str:
    return request.param


def test_registry_entries_are_consistent():
    assert len(MODELS) >= 7
    for name, (config_class, _, _) in MODELS.items():
        assert model_config_class(name) is config_class
        assert isinstance(default_options(name), dict)


def test_tiny_options_are_valid_options():
    for name, options in TINY.items():
        assert set(options) <= set(default_options(name)), name


def test_output_shape_and_normalized_log_probs(name):
    model = make(name).eval()
    lengths = torch.tensor([80, 61, 33])
    with torch.no_grad():
        log_probs, output_lengths = model(torch.randn(3, 80, INPUT_DIM), lengths)
    assert log_probs.dim() == 3
    batch, time, vocab = log_probs.shape
    assert (batch, vocab) == (3, VOCAB)
    assert 0 < time <= 80
    assert log_probs.dtype == torch.float32
    assert torch.isfinite(log_probs).all()
    assert (log_probs <= 1e-6).all()
    assert torch.allclose(log_probs.logsumexp(-1), torch.zeros(batch, time), atol=1e-4)
    assert output_lengths.shape == (3,)
    assert output_lengths.dtype in (torch.int32, torch.int64)
    # The longest utterance fills the batch: its output covers all T' frames.
    assert int(output_lengths[0]) == time
    assert (output_lengths >= 1).all() and (output_lengths <= time).all()
    assert output_lengths[0] >= output_lengths[1] >= output_lengths[2]


def test_output_lengths_match_each_utterance_alone(name):
    """An utterance alone has no padding, so its output length must be its whole output."""
    model = make(name).eval()
    for length in (7, 8, 9, 10, 23, 40, 41, 64):
        with torch.no_grad():
            log_probs, output_lengths = model(torch.randn(1, length, INPUT_DIM), torch.tensor([length]))
        assert int(output_lengths[0]) == log_probs.size(1), f"T={length}"


def test_output_lengths_are_monotone_in_input_length(name):
    model = make(name).eval()
    lengths = torch.arange(120, 6, -3)  # 120, 117, ..., 9
    with torch.no_grad():
        log_probs, output_lengths = model(torch.randn(len(lengths), 120, INPUT_DIM), lengths)
    assert (output_lengths <= log_probs.size(1)).all()
    assert (output_lengths >= 1).all()
    # Decreasing input lengths give non-increasing output lengths, and some subsampling happens
    # at most by 8x (a model must keep enough frames for CTC).
    assert (output_lengths[:-1] >= output_lengths[1:]).all()
    assert (output_lengths.float() >= lengths.float() / 8 - 1).all()
    assert output_lengths[0] > output_lengths[-1]


def _padding_params():
    params = []
    for model_name in ALL_MODELS:
        for pad in ("zeros", "noise"):
            params.append(pytest.param(model_name, pad, id=f"{model_name}-{pad}"))
    return params


@pytest.mark.parametrize(("model_name", "pad"), _padding_params())
def test_padding_does_not_change_the_output(model_name, pad):
    """An utterance decoded alone and inside a padded batch must give the same log-probs.

    Regression (fixed): dnn, crdnn and conformer used to leak padding into the last frames of a short utterance:
    - dnn: frames are spliced across the padded region (replicate padding applies only at the
      batch's end), so the last windows of a short utterance see padding frames;
    - crdnn: the first conv block's outputs at padded positions are BatchNorm/bias values, not
      zeros, and the second conv (time kernel 11) reads them;
    - conformer: torchaudio's Conformer masks attention but not its depthwise convolution.
    Decode results therefore depend on which utterances share a batch.
    """
    model = settle(make(model_name))
    torch.manual_seed(1)
    lengths = [64, 41, 23]
    utterances = [torch.randn(length, INPUT_DIM) for length in lengths]
    batch = torch.nn.utils.rnn.pad_sequence(utterances, batch_first=True)  # zeros, as the Collator pads
    if pad == "noise":
        for i, length in enumerate(lengths):
            batch[i, length:] = 3 * torch.randn(batch.size(1) - length, INPUT_DIM)
    with torch.no_grad():
        batch_log_probs, batch_lengths = model(batch, torch.tensor(lengths))
        for i, utterance in enumerate(utterances):
            alone, alone_lengths = model(utterance.unsqueeze(0), torch.tensor([lengths[i]]))
            n = int(alone_lengths[0])
            assert int(batch_lengths[i]) == n
            difference = (batch_log_probs[i, :n] - alone[0, :n]).abs().max().item()
            assert difference < 1e-4, f"utterance {i} (T={lengths[i]}): max |difference| {difference:.3g}"


def test_a_few_ctc_steps_reduce_the_loss(name):
    torch.manual_seed(0)
    model = make(name)
    lengths = torch.tensor([60, 52, 44])
    features = torch.randn(3, 60, INPUT_DIM)
    targets = torch.randint(1, VOCAB, (9,))
    target_lengths = torch.tensor([3, 3, 3])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_value() -> torch.Tensor:
        log_probs, output_lengths = model(features, lengths)
        return torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1), targets, output_lengths, target_lengths, blank=0, zero_infinity=True
        )

    model.eval()
    with torch.no_grad():
        before = loss_value().item()
    model.train()
    for _ in range(15):
        optimizer.zero_grad()
        loss = loss_value()
        loss.backward()
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = loss_value().item()
    assert torch.isfinite(torch.tensor(before))
    assert after < 0.9 * before, f"loss {before:.3f} -> {after:.3f}"


def test_build_model_rejects_unknown_options(name):
    with pytest.raises(AsrbenchError) as err:
        build_model(name, {"no_such_option": 1}, INPUT_DIM, VOCAB)
    message = str(err.value)
    assert "no_such_option" in message
    for option in default_options(name):
        assert option in message


def test_build_model_rejects_wrongly_typed_options(name):
    option = next(key for key, value in default_options(name).items() if not isinstance(value, str))
    with pytest.raises(AsrbenchError, match=option):
        build_model(name, {option: "not a number"}, INPUT_DIM, VOCAB)


def test_build_model_with_unknown_name_lists_valid_names():
    with pytest.raises(AsrbenchError) as err:
        build_model("rnnt", {}, INPUT_DIM, VOCAB)
    for name in MODELS:
        assert name in str(err.value)


def test_count_parameters(name):
    model = make(name)
    total = count_parameters(model)
    assert total > 0
    assert total == sum(p.numel() for p in model.parameters())
    # More output tokens mean a bigger output layer, so more parameters.
    torch.manual_seed(0)
    bigger = build_model(name, tiny_options(name), INPUT_DIM, VOCAB + 10)
    assert count_parameters(bigger) > total


def test_default_size_builds_for_80_dim_features(name):
    model = build_model(name, default_options(name), 80, 30)
    assert count_parameters(model) > 100_000
    with torch.no_grad():
        log_probs, output_lengths = model.eval()(torch.randn(2, 50, 80), torch.tensor([50, 30]))
    assert log_probs.shape[0] == 2 and log_probs.shape[2] == 30
    assert int(output_lengths[0]) == log_probs.size(1)


def test_masked_batch_norm_ignores_padded_frames():
    """Training statistics come from real frames only; padding values cannot change the output."""
    from asrbench.models.common import MaskedBatchNorm1d, padding_mask

    lengths = torch.tensor([5, 3])
    mask = padding_mask(lengths, 5).unsqueeze(1)  # (B, 1, T)
    norm = MaskedBatchNorm1d(4, lambda: mask)
    x = torch.randn(2, 4, 5)
    y = torch.randn(2, 4, 5)
    y[0], y[1, :, :3] = x[0], x[1, :, :3]  # same real frames, different padding
    out_x, out_y = norm(x), norm(y)
    assert torch.allclose(out_x[0], out_y[0], atol=1e-6)
    assert torch.allclose(out_x[1, :, :3], out_y[1, :, :3], atol=1e-6)
    real = torch.cat([x[0], x[1, :, :3]], dim=1)  # (C, 8 real frames)
    expected = (real - real.mean(1, keepdim=True)) / torch.sqrt(real.var(1, unbiased=False, keepdim=True) + 1e-5)
    assert torch.allclose(out_x[0], expected[:, :5], atol=1e-5)


# --- fast dropout on CPU -----------------------------------------------------------------------


def test_fast_dropout_drops_p_and_keeps_the_expectation():
    from asrbench.models.common import FastDropout

    torch.manual_seed(0)
    layer = FastDropout(0.3)
    x = torch.ones(400, 1000, requires_grad=True)
    y = layer(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.3) < 4 * (0.3 * 0.7 / x.numel()) ** 0.5  # within 4 sigma of p
    assert y.mean().item() == pytest.approx(1.0, abs=0.005)
    values = torch.unique(y).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(65536 / (65536 - round(0.3 * 65536)))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient: the same mask and scale
    torch.manual_seed(0)
    assert torch.equal(layer(torch.ones(400, 1000)), y.detach())  # the global generator: reproducible
    layer.eval()
    assert torch.equal(layer(x), x)


def test_every_dropout_of_a_model_is_the_fast_one():
    from asrbench.models.common import FastDropout, FastMultiheadAttention

    for name in ("transformer", "conformer", "transformer_aed", "dnn"):
        model = make(name)
        kinds = {type(module) for module in model.modules()}
        assert torch.nn.Dropout not in kinds and torch.nn.MultiheadAttention not in kinds
        assert FastDropout in kinds
        if name != "dnn":
            assert FastMultiheadAttention in kinds


@pytest.mark.parametrize("batch_first", [True, False])
def test_fast_attention_computes_what_torch_attention_does(batch_first, monkeypatch):
    from asrbench.models import common

    torch.manual_seed(0)
    reference = torch.nn.MultiheadAttention(16, 4, dropout=0.2, batch_first=batch_first)
    fast = torch.nn.MultiheadAttention(16, 4, dropout=0.2, batch_first=batch_first)
    fast.load_state_dict(reference.state_dict())
    fast.__class__ = common.FastMultiheadAttention
    monkeypatch.setattr(common, "fast_dropout", lambda x, p: x)  # the dropout itself is tested above
    reference.dropout = 0.0  # torch's path without dropout is the expected value
    x = torch.randn(3, 7, 16) if batch_first else torch.randn(7, 3, 16)
    padding = torch.tensor([[False] * 7, [False] * 5 + [True] * 2, [False] * 3 + [True] * 4])
    window = (torch.arange(7)[None, :] - torch.arange(7)[:, None]).abs() > 2
    expected, _ = reference(x, x, x, key_padding_mask=padding, attn_mask=window, need_weights=False)
    got, _ = fast(x, x, x, key_padding_mask=padding, attn_mask=window, need_weights=False)
    assert torch.allclose(got, expected, atol=1e-5)
    got.sum().backward()
    assert fast.in_proj_weight.grad is not None


def _packed(rnn: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The reference: PyTorch's packed sequences (what run_recurrent does on a GPU)."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    output, _ = rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    return pad_packed_sequence(output, batch_first=True, total_length=x.size(1))[0]


@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU])
@pytest.mark.parametrize(("layers", "bidirectional"), [(1, True), (2, True), (3, False)])
@pytest.mark.parametrize("training", [False, True])
def test_run_recurrent_computes_what_packed_sequences_do(cell, layers, bidirectional, training):
    from asrbench.models.common import run_recurrent

    torch.manual_seed(layers)
    rnn = cell(12, 8, num_layers=layers, bidirectional=bidirectional, batch_first=True).train(training)
    lengths = torch.tensor([17, 9, 17, 1])
    x = torch.randn(4, 17, 12, requires_grad=True)
    ours, reference = run_recurrent(rnn, x, lengths), _packed(rnn, x, lengths)
    assert ours.shape == reference.shape == (4, 17, 8 * (2 if bidirectional else 1))
    assert torch.allclose(ours, reference, atol=1e-6)
    assert not ours[1, 9:].any() and not ours[3, 1:].any()  # zero after each sequence's end
    weights = torch.randn_like(ours)
    parameters = [x, *rnn.parameters()]
    ours_grads = torch.autograd.grad((ours * weights).sum(), parameters)
    reference_grads = torch.autograd.grad((reference * weights).sum(), parameters)
    for a, b in zip(ours_grads, reference_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_run_recurrent_drops_between_layers_only_in_training():
    from asrbench.models.common import run_recurrent

    rnn = torch.nn.LSTM(6, 5, num_layers=2, dropout=0.5, batch_first=True)
    x, lengths = torch.randn(2, 7, 6), torch.tensor([7, 4])
    assert torch.allclose(run_recurrent(rnn.eval(), x, lengths), _packed(rnn, x, lengths), atol=1e-6)
    rnn.train()
    torch.manual_seed(0)
    first = run_recurrent(rnn, x, lengths)
    torch.manual_seed(1)
    assert not torch.allclose(first, run_recurrent(rnn, x, lengths))  # another dropout mask


def test_forget_bias_sets_the_lstm_forget_gates_only():
    model = build_model("lstm", {"hidden_size": 8, "num_layers": 2, "subsample_channels": 4, "forget_bias": 1.0}, 20, 5)
    for name, bias in model.rnn.named_parameters():
        if name.startswith("bias_"):
            assert torch.all(bias[8:16] == (1.0 if name.startswith("bias_ih") else 0.0)), name
            assert bias[:8].abs().max() > 0 and bias[16:].abs().max() > 0  # the other gates keep torch's init
    default = build_model("lstm", {"hidden_size": 8, "num_layers": 1, "subsample_channels": 4}, 20, 5)
    assert default.rnn.bias_ih_l0[8:16].abs().max() < 1 / 8**0.5 + 1e-6  # PyTorch's uniform init
    with pytest.raises(AsrbenchError, match="forget_bias"):
        build_model("gru", {"hidden_size": 8, "forget_bias": 1.0}, 20, 5)


# --- the family contracts (asrbench.models.base) --------------------------------------------------


def test_every_model_belongs_to_a_family_and_satisfies_its_protocol(name):
    from asrbench.models.base import ASRModel, Encoder

    entry = MODELS[name]
    model = make(name)
    assert isinstance(model, entry.family.base)
    assert isinstance(model, entry.family.protocol) and isinstance(model, ASRModel) and isinstance(model, Encoder)
    assert model.search_modes()[0] == entry.family.default_mode


def test_the_dev_searcher_gives_dev_decode_and_compute_loss_from_one_pass(name):
    """The trainer scores dev with ``dev_searcher``: its ids are the head's greedy search (a hybrid's
    CTC branch's best path) and its loss, from the same network outputs, is ``compute_loss``'s (one
    pass instead of two)."""
    model = settle(make(name))
    features, lengths = torch.randn(3, 70, INPUT_DIM) * 2 + 1, torch.tensor([70, 52, 31])
    generator = torch.Generator().manual_seed(0)
    target_lengths = torch.tensor([4, 3, 2])
    targets = torch.randint(1, VOCAB - 1, (int(target_lengths.sum()),), generator=generator)
    searcher = dev_searcher(model)
    with torch.no_grad():
        outputs = searcher.outputs(features, lengths)
        hybrid = model.head_kind == "attention" and model.ctc_head is not None
        expected = (
            ctc_greedy(*model.ctc_log_probs(features, lengths)) if hybrid else greedy_decode(model, features, lengths)
        )
        assert searcher.search(outputs) == expected
        assert searcher.loss is not None
        shared = searcher.loss(outputs, targets, target_lengths)
        separate = model.compute_loss(features, lengths, targets, target_lengths)
    assert torch.isfinite(shared) and float(shared) > 0
    torch.testing.assert_close(shared, separate)


def test_every_encoder_returns_encoder_dim_features_and_the_output_lengths(name):
    """``encode`` is the contract any head is built on: (B, T', encoder_dim) and (B,) lengths, the
    same lengths as the model's own output."""
    model = make(name).eval()
    features, lengths = torch.randn(3, 70, INPUT_DIM), torch.tensor([70, 52, 21])
    with torch.no_grad():
        encoded, encoded_lengths = model.encode(features, lengths)
        _, output_lengths = model(features, lengths)
    assert encoded.shape[0] == 3 and encoded.shape[2] == model.encoder_dim
    assert encoded.shape[1] == int(encoded_lengths.max())
    assert torch.equal(encoded_lengths, output_lengths)


def test_every_encoder_declares_its_true_frame_rate(name):
    """``subsampling_factor`` (feature frames per output frame) is what word times, chunk sizes
    and streaming latency read: it must be the rate the encoder's outputs really have."""
    model = make(name).eval()
    factor = model.acoustic_encoder().subsampling_factor
    frames = {}
    for length in (64, 200):
        with torch.no_grad():
            frames[length] = int(model.encode(torch.randn(1, length, INPUT_DIM), torch.tensor([length]))[1][0])
    # 136 more feature frames give 136 / factor more output frames (edges aside: within one either way).
    assert abs((frames[200] - frames[64]) * factor - 136) <= factor, f"{frames} at {factor}x"


def test_any_encoder_can_back_an_attention_decoder(name):
    """A Transformer decoder over any model's ``encode`` output (projected to its width) trains:
    the encoder contract is all a head needs."""
    from asrbench.models.attention import TransformerDecoder
    from asrbench.models.common import padding_mask

    encoder = make(name)
    decoder = TransformerDecoder(VOCAB, 16, 2, 1, 32, 0.0)
    bridge = torch.nn.Linear(encoder.encoder_dim, 16)
    parameters = list(encoder.parameters()) + list(decoder.parameters()) + list(bridge.parameters())
    optimizer = torch.optim.Adam(parameters, lr=1e-2)
    torch.manual_seed(0)
    features, lengths = torch.randn(2, 60, INPUT_DIM), torch.tensor([60, 44])
    tokens = torch.tensor([[VOCAB - 1, 2, 3, 4], [VOCAB - 1, 5, 6, 7]])
    targets = torch.tensor([[2, 3, 4, VOCAB - 1], [5, 6, 7, VOCAB - 1]])
    losses = []
    for _ in range(30):
        memory, memory_lengths = encoder.encode(features, lengths)
        logits = decoder(tokens, None, bridge(memory), padding_mask(memory_lengths, memory.size(1)))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    # Every encoder weight learned from the decoder's loss (not the CTC heads, and of an attention
    # model or a transducer only its encoder: encode runs neither its decoder nor its predictor and joiner).
    own_decoder = MODELS[name].family.default_mode != "ctc"
    assert all(
        p.grad is not None
        for key, p in encoder.named_parameters()
        if p.dim() > 1
        and not key.startswith(("head.", "ctc_head."))
        and (key.startswith("encoder.") or not own_decoder)
    )


def test_a_model_that_satisfies_no_family_is_refused_at_registration():
    from asrbench.models import family_of, register, unregister
    from asrbench.models.ctc import CTCModel

    class NotAModel(torch.nn.Module):
        pass

    class HalfCTC(CTCModel):  # a CTC model that forgot encode: the base class's raises at run time
        encode = None

    with pytest.raises(TypeError, match=r"NotAModel satisfies no model family \(CTC needs a subclass of CTCModel"):
        register("not_a_model", MODELS["dnn"].config, NotAModel)
    with pytest.raises(TypeError, match=r"HalfCTC satisfies no model family \(CTC needs encode"):
        family_of(HalfCTC)
    with pytest.raises(TypeError, match="registered twice"):
        register("dnn", MODELS["dnn"].config, MODELS["dnn"].model)
    assert "not_a_model" not in MODELS
    unregister("not_a_model")


@pytest.mark.parametrize(
    "name,options,message",
    [
        (
            "transformer_aed",
            {"label_smoothing": 1.0},
            r"model transformer_aed: model\.label_smoothing must be in \[0, 1\)",
        ),
        ("las", {"ctc_weight": 1.5}, r"model las: model\.ctc_weight must be in \[0, 1\], got 1\.5"),
        (
            "cnn_transducer",
            {"predictor": "gru"},
            r"model cnn_transducer: model\.predictor must be one of stateless, lstm",
        ),
        ("crdnn", {"rnn_type": "rnn"}, r"model crdnn: model\.rnn_type must be one of gru, lstm"),
    ],
)
def test_build_model_checks_the_options_limits_for_every_caller(name, options, message):
    """The options' LIMITS are their one statement of valid values: a library caller gets the same
    check a recipe does (the constructors no longer repeat it)."""
    with pytest.raises(AsrbenchError, match=message):
        build_model(name, options, INPUT_DIM, VOCAB)
