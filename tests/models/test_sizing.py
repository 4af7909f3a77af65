"""Parameter-matched sizing (issue 30): ``model.target_params`` / ``--target-params`` scale an
encoder's declared width so the built model is within 5% of the target, recorded in the run dir."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml
from helpers import run_main, write_tone_corpus

from asrbench.errors import AsrbenchError
from asrbench.models import ENCODERS, MODELS, build_model, count_parameters, model_config_class
from asrbench.models.sizing import TOLERANCE, size_to, width_fields
from asrbench.recipe.config import resolve, run_config_from_dict
from asrbench.recipe.schema import limit_problems, parse_count
from asrbench.training.start import TrainValues, sized

INPUT_DIM, VOCAB = 80, 30


def count(name: str, options: dict, input_dim: int = INPUT_DIM, vocab: int = VOCAB) -> int:
    with torch.device("meta"):
        return count_parameters(build_model(name, options, input_dim, vocab))


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_is_sized_to_1m_and_3m_within_5_percent(name):
    """Every registered model (the composed aed / transducer cells included) reaches both targets by
    its width alone; the other options stay as given and the chosen ones are valid."""
    defaults = dataclasses.asdict(model_config_class(name)())
    widths = width_fields(name)
    for target in (1_000_000, 3_000_000):
        options = size_to(name, {}, target, INPUT_DIM, VOCAB)
        params = count(name, options)
        assert abs(params - target) <= TOLERANCE * target, (name, target, params)
        assert {key for key in options if options[key] != defaults[key]} <= set(widths)
        assert not limit_problems(model_config_class(name)(**options))


def test_every_encoder_declares_its_width():
    """A capability each encoder's options state (WIDTH), never guessed; composed cells inherit it."""
    for name, entry in ENCODERS.items():
        fields = {field.name for field in dataclasses.fields(entry.config)}
        declared = entry.config.WIDTH
        assert set((declared,) if isinstance(declared, str) else declared) <= fields, name


def test_followers_keep_their_ratio_and_heads_stay_valid():
    """conformer: d_model stays divisible by num_heads and by 2, the feed-forward stays 4x wide."""
    options = size_to("conformer", {"num_heads": 6}, 2_000_000, INPUT_DIM, VOCAB)
    assert options["d_model"] % 6 == 0 and options["d_model"] % 2 == 0
    assert options["ff_dim"] == 4 * options["d_model"]
    assert options["num_heads"] == 6 and options["num_layers"] == 4
    # The attention decoder of a composed cell must divide the encoder's width: dnn_aed's is searched on it.
    options = size_to("dnn_aed", {"decoder_heads": 8}, 1_500_000, INPUT_DIM, VOCAB)
    assert options["hidden_size"] % 8 == 0


def test_the_count_is_exact_at_the_run_s_vocabulary():
    """The vocabulary changes the count (the output layer): sizing at the real one meets the target."""
    small = size_to("lstm", {}, 1_000_000, INPUT_DIM, 30)
    large = size_to("lstm", {}, 1_000_000, INPUT_DIM, 5000)
    assert large["hidden_size"] < small["hidden_size"]
    assert abs(count("lstm", large, vocab=5000) - 1_000_000) <= TOLERANCE * 1_000_000


def test_an_unreachable_target_is_one_error_naming_it_and_the_nearest_counts():
    with pytest.raises(AsrbenchError) as small:
        size_to("conformer", {}, 1000, INPUT_DIM, VOCAB)
    message = str(small.value)
    assert "target_params 1k (1,000) cannot be met" in message and "nearest reachable:" in message
    assert "d_model=4" in message and "\n" not in message
    with pytest.raises(AsrbenchError, match="above what the widest gives; nearest reachable: .* hidden_size=65536"):
        size_to("dnn", {"num_layers": 1}, 10**12, INPUT_DIM, VOCAB)


def test_sizing_draws_nothing_from_the_seeded_random_streams():
    """The trainer sizes after seeding: the model's initial weights must not move."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    size_to("transformer", {}, 1_000_000, INPUT_DIM, VOCAB)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    ("text", "value"),
    [("5M", 5_000_000), ("3.2M", 3_200_000), ("800k", 800_000), ("1500000", 1_500_000), (1_500_000, 1_500_000)],
)
def test_parse_count(text, value):
    assert parse_count(text, "x") == value


@pytest.mark.parametrize("text", ["abc", "-1M", "0", "1.5", "M", True])
def test_parse_count_refuses_and_names_the_key(text):
    with pytest.raises(AsrbenchError, match=r"^models\.cnn\.target_params: expected a parameter count such as 5M"):
        parse_count(text, "models.cnn.target_params")


# --- the recipe, the run dir -----------------------------------------------------------------------


def write_recipe(tmp_path, entry: str = "{}") -> str:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"models:\n  conformer: {entry}\n  cnn: {{}}\n")
    return str(recipe)


def test_a_recipe_entry_and_set_give_the_target(tmp_path):
    recipe = write_recipe(tmp_path, "{target_params: 3M, num_layers: 2}")
    config = resolve(recipe, "conformer")
    assert config.model.target_params == 3_000_000 and "target_params" not in config.model.options
    assert resolve(recipe, "conformer", ["model.target_params=800k"]).model.target_params == 800_000
    assert resolve(recipe, "conformer", ["models.conformer.target_params=0"]).model.target_params == 0
    assert resolve(recipe, "cnn").model.target_params == 0
    # the hash sees the target; an unsized config keeps the hash it had before sizing existed
    assert config.hash() != resolve(recipe, "conformer", ["model.target_params=0"]).hash()
    assert run_config_from_dict(config.to_dict(), "x").model.target_params == 3_000_000
    old = resolve(recipe, "cnn").to_dict()
    del old["model"]["target_params"]
    assert run_config_from_dict(old, "old run").hash() == resolve(recipe, "cnn").hash()


def test_a_bad_or_unreachable_target_fails_at_resolve_naming_the_key(tmp_path):
    recipe = write_recipe(tmp_path, "{target_params: lots}")
    with pytest.raises(AsrbenchError, match=r"models\.conformer\.target_params: expected a parameter count"):
        resolve(recipe, "conformer")
    recipe = write_recipe(tmp_path, "{target_params: 2k}")
    with pytest.raises(AsrbenchError, match=r"models\.conformer\.target_params: model conformer: target_params 2k"):
        resolve(recipe, "conformer")
    with pytest.raises(AsrbenchError, match=r"^--set model\.target_params=1k: model cnn: target_params 1k"):
        resolve(recipe, "cnn", ["model.target_params=1k"])
    with pytest.raises(AsrbenchError, match=r"^--target-params 1000: model cnn: target_params 1k"):
        TrainValues(target_params=1000).apply(resolve(recipe, "cnn"))


def test_sized_is_the_same_config_without_a_target(tmp_path):
    """No target: the trainer's config is untouched, so training stays bit-identical."""
    config = resolve(write_recipe(tmp_path), "cnn")
    assert sized(config, VOCAB) is config
    target = TrainValues(target_params=2_000_000).apply(config)
    resized = sized(target, VOCAB)
    assert resized.model.options["channels"] != config.model.options["channels"]
    assert abs(count("cnn", resized.model.options, config.features.dim()) - 2_000_000) <= 100_000


@pytest.mark.slow
def test_a_sized_run_records_the_width_and_target_in_config_and_summary(tmp_path):
    from asrbench.training.trainer import train

    data_dir = write_tone_corpus(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{spec_augment: false}}
train: {{epochs: 1, batch_frames: 400, max_steps: 1}}
models:
  cnn: {{subsample_channels: 4, kernel_size: 5, num_blocks: 2, target_params: 20k}}
""")
    summary = train(recipe, "cnn", tmp_path / "run")
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    channels = written["model"]["options"]["channels"]
    assert written["model"]["target_params"] == 20_000 and channels != 256
    assert summary["sizing"]["width"] == {"channels": channels} and summary["sizing"]["target_params"] == 20_000
    assert abs(summary["params"] - 20_000) <= 1000 and summary["sizing"]["params"] == summary["params"]
    saved = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert saved["sizing"] == summary["sizing"]
    assert saved["config_hash"] == run_config_from_dict(written, "run").hash()


# --- bench -------------------------------------------------------------------------------------------


def test_bench_target_params_reaches_every_run(monkeypatch, capsys, tmp_path):
    """--target-params is parsed once and reaches each run's trainer as a typed value."""
    import asrbench.studies.bench as bench_module

    recipe = write_recipe(tmp_path)
    seen = []

    def fake_train(recipe, name, run_dir, *args, values=None, **kwargs):
        seen.append((name, values.target_params))
        raise SystemExit(0)  # nothing more to check of the run

    monkeypatch.setattr(bench_module, "train", fake_train)
    for name in ("conformer", "cnn"):
        with pytest.raises(SystemExit):
            bench_module._run_one(recipe, name, str(tmp_path / name), None, [], None, None, 0, 0, 5_000_000, True)
    assert seen == [("conformer", 5_000_000), ("cnn", 5_000_000)]

    captured = {}

    def fake_bench(*args, target_params=None, **kwargs):
        captured["target_params"] = target_params
        return {"summary": [], "pairs": [], "runs": []}

    monkeypatch.setattr(bench_module, "bench", fake_bench)
    code, _, err = run_main(monkeypatch, capsys, "bench", recipe, "--target-params", "3.2M", "--format", "json")
    assert code == 0, err
    assert captured["target_params"] == 3_200_000
    code, _, err = run_main(monkeypatch, capsys, "bench", recipe, "--target-params", "big")
    assert code == 2 and "--target-params: expected a parameter count" in err


def test_bench_fails_at_once_on_a_target_one_model_cannot_reach(monkeypatch, tmp_path):
    import asrbench.studies.bench as bench_module

    monkeypatch.setattr(bench_module, "train", lambda *args, **kwargs: pytest.fail("trained before the check"))
    with pytest.raises(AsrbenchError, match="^--target-params 1000: model conformer: target_params 1k"):
        bench_module.bench(write_recipe(tmp_path), target_params=1000, out=tmp_path / "sweep")


def test_train_target_params_is_a_typed_value(monkeypatch, capsys, tmp_path):
    """``asrbench train … --target-params 5M`` reaches the trainer as TrainValues.target_params."""
    import asrbench.training.trainer as train_module

    seen = {}
    monkeypatch.setattr(train_module, "train", lambda *args, **kwargs: seen.update(kwargs))
    code, _, err = run_main(
        monkeypatch, capsys, "train", "yesno", "--model", "cnn", "-o", str(tmp_path / "run"), "--target-params", "5M"
    )
    assert code == 0, err
    assert seen["values"] == TrainValues(target_params=5_000_000)
    assert TrainValues(target_params=5_000_000).given() == {"model.target_params": 5_000_000}
