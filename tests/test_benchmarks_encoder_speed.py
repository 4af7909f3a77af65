"""benchmarks/encoder_speed.py (issue 30): the encoders at equal parameters side by side, on a tiny
recipe of generated tones, writes its ratios against the first model through _common.record."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from helpers import write_tone_corpus

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_encoder_speed_measures_each_model_and_divides_by_the_first(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    common = importlib.import_module("_common")
    monkeypatch.setattr(common, "environment", lambda: {"machine": "test"})
    encoder_speed = importlib.import_module("encoder_speed")
    monkeypatch.setattr(encoder_speed, "record", lambda *a, **k: common.record(*a, **k, results_dir=tmp_path))
    data_dir = write_tone_corpus(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
train: {{batch_frames: 400}}
models:
  conformer: {{d_model: 16, num_heads: 2, num_layers: 2, ff_dim: 32, subsample_channels: 4}}
  fast_conformer: {{d_model: 16, num_heads: 2, num_layers: 2, ff_dim: 32, subsample_channels: 4}}
  zipformer: {{encoder_dims: [8, 8, 8, 8, 8, 8], ff_dims: [16, 16, 16, 16, 16, 16], subsample_channels: 8}}
""")
    argv = ["encoder_speed.py", "--recipe", str(recipe), "--models", "conformer,fast_conformer,zipformer"]
    monkeypatch.setattr(sys, "argv", [*argv, "--steps", "2", "--repeat", "1"])
    from asrbench.data import pipeline

    loads = []
    real_load = pipeline.load_training_data
    monkeypatch.setattr(pipeline, "load_training_data", lambda config: loads.append(config) or real_load(config))
    encoder_speed.main()
    assert len(loads) == 1  # the three models share the recipe's data, front end and augmentation
    line = json.loads((tmp_path / "encoder_speed.jsonl").read_text().splitlines()[-1])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == line
    models = line["models"]
    assert set(line["figures"]) == {
        "fast_conformer_train_vs_conformer",
        "fast_conformer_rtfx_vs_conformer",
        "zipformer_gflops_vs_conformer",
    }
    for name, details in models.items():
        assert details["train_steps_per_second"] > 0 and details["rtfx_end_to_end"] > 0, name
        assert details["gflops_per_second"] > 0 and details["params"] > 0, name
    fast = line["figures"]["fast_conformer_rtfx_vs_conformer"]
    assert fast["value"] == pytest.approx(
        models["fast_conformer"]["rtfx_end_to_end"] / models["conformer"]["rtfx_end_to_end"]
    )
    assert fast["params_ratio"] == pytest.approx(models["fast_conformer"]["params"] / models["conformer"]["params"])
    zipformer = line["figures"]["zipformer_gflops_vs_conformer"]
    assert zipformer["better"] == "lower" and zipformer["target"] == 0.5
    assert zipformer["value"] == pytest.approx(
        models["zipformer"]["gflops_per_second"] / models["conformer"]["gflops_per_second"]
    )
    assert line["figures"]["fast_conformer_train_vs_conformer"]["target"] == 2.0
