"""A model's forward GFLOPs per second of audio (asrbench.models.cost), checked against analytic counts."""

from __future__ import annotations

import math

import pytest
from torch import nn

from asrbench.models import build_model, default_options
from asrbench.models.cost import (
    SECONDS,
    forward_flops,
    forward_gflops_per_second,
    gflops_per_second_table,
    input_frames,
)


def test_ten_seconds_are_the_frames_the_front_end_gives():
    assert input_frames(SECONDS, 10.0, 25.0) == 998  # Kaldi framing: 1 + (10000 - 25) // 10
    assert input_frames(SECONDS, 20.0, 40.0) == 499


@pytest.mark.parametrize("options", [{}, {"hidden_size": 256, "num_layers": 2, "context": 3, "stride": 2}])
def test_dnn_flops_agree_with_twice_its_linear_weights_per_output_frame(options):
    """2 x (the weights of its linear layers, CTC projection included) x output frames per second."""
    model = build_model("dnn", {**default_options("dnn"), **options}, 40, 30)
    weights = sum(module.weight.numel() for module in model.modules() if isinstance(module, nn.Linear))
    stride = model.config.stride
    output_frames_per_second = math.ceil(input_frames(SECONDS, 10.0, 25.0) / stride) / SECONDS
    analytic = 2 * weights * output_frames_per_second / 1e9
    measured = forward_gflops_per_second(model, 40)
    assert measured == pytest.approx(analytic, rel=0.05), (measured, analytic)


def test_a_conformer_s_count_is_positive_and_grows_linearly_for_short_inputs():
    model = build_model("conformer", default_options("conformer"), 40, 30)
    one, two = forward_flops(model, 40, seconds=1.0), forward_flops(model, 40, seconds=2.0)
    assert one > 0
    assert 1.8 < two / one < 2.3, (one, two)  # self-attention's quadratic term is small at 1-2 s


@pytest.mark.parametrize("name", ["cnn_transducer", "cnn_aed"])
def test_a_head_s_steps_are_counted_on_top_of_its_encoder(name):
    """A transducer adds a predictor and joiner step per encoder frame, an attention model its decoder."""
    encoder = forward_flops(build_model("cnn", default_options("cnn"), 40, 30), 40)
    assert forward_flops(build_model(name, default_options(name), 40, 30), 40) > encoder


def test_counting_leaves_the_model_as_it_was():
    model = build_model("transformer", default_options("transformer"), 40, 30)
    model.train()
    first = forward_flops(model, 40)
    assert model.training and forward_flops(model, 40) == first  # deterministic; training mode kept


def test_the_table_measures_each_model_once_per_process(monkeypatch):
    import asrbench.models as registry

    monkeypatch.setattr(registry, "MODELS", {"dnn": registry.MODELS["dnn"]})
    first = gflops_per_second_table({}, 40, 30)
    built = []
    monkeypatch.setattr(registry, "build_model", lambda *args: built.append(args))
    assert gflops_per_second_table({}, 40, 30) == first and built == []
    assert first["dnn"] > 0


def test_kept_counts_are_not_measured_again_and_a_changed_model_source_is(monkeypatch):
    """``asrbench models`` keeps its counts on disk (``kept``): a kept count is used as it is, a new one
    is added, and the key holds the package's source, so an edited model is measured afresh."""
    import asrbench.models as registry
    import asrbench.models.cost as cost

    monkeypatch.setattr(registry, "MODELS", {"dnn": registry.MODELS["dnn"]})
    monkeypatch.setattr(cost, "_MEASURED", {})
    kept: dict[str, float] = {}
    measured = gflops_per_second_table({}, 24, 30, kept=kept)
    assert list(kept.values()) == [measured["dnn"]] and measured["dnn"] > 0
    monkeypatch.setattr(cost, "_MEASURED", {})
    built = []
    monkeypatch.setattr(registry, "build_model", lambda *args: built.append(args))
    fake = {key: 123.0 for key in kept}  # what a file says is what is shown: it was measured there
    assert gflops_per_second_table({}, 24, 30, kept=fake) == {"dnn": 123.0} and built == []
    monkeypatch.setattr(cost, "code_fingerprint", lambda: "another source")
    with pytest.raises(AttributeError):  # not kept under the new key: measured, with the stub's nothing
        gflops_per_second_table({}, 24, 30, kept=fake)
    assert len(built) == 1
