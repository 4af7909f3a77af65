"""Recipe resolution: shared sections + per-model entries + --set overrides, strictly validated."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from asrbench.errors import AsrbenchError
from asrbench.models import MODELS, build_model, count_parameters, default_options
from asrbench.recipe.config import (
    SECTIONS,
    TRAIN_KEYS_SINCE_ISSUE_30,
    ModelSpec,
    RunConfig,
    TrainConfig,
    parse_override,
    recipe_features,
    resolve,
    run_config_from_dict,
    with_overrides,
)
from asrbench.recipe.schema import field_limits

RECIPES_DIR = Path(__file__).parents[2] / "asrbench" / "recipe"

RECIPE = """\
data:
  dir: data/tiny
features:
  sample_rate: 8000
  num_mel_bins: 40
train:
  epochs: 7
  lr: 2.0e-3
  batch_frames: 5000
models:
  lstm:
    hidden_size: 48
    num_layers: 1
    train:
      lr: 5.0e-4
      epochs: 3
  gru: {hidden_size: 24}
"""


def write_recipe(tmp_path: Path, text: str = RECIPE, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def recipe_with(tmp_path: Path, **sections) -> Path:
    """A recipe whose ``models`` has an lstm entry, plus the given sections."""
    values = {"models": {"lstm": {}}, **sections}
    return write_recipe(tmp_path, yaml.safe_dump(values))


# --- resolving ---------------------------------------------------------------------------------


def test_resolve_merges_shared_sections_model_options_and_model_train_overrides(tmp_path):
    config = resolve(write_recipe(tmp_path), "lstm")
    assert config.data.dir == str(Path.cwd() / "data/tiny")  # made absolute; the spelling is kept for the hash
    assert config.data.dir_as_written == "data/tiny"
    assert config.features.sample_rate == 8000
    assert config.features.num_mel_bins == 40
    assert config.features.dim() == 40
    # models.lstm.train overrides the shared train section, other shared keys are kept.
    assert config.train.lr == pytest.approx(5e-4)
    assert config.train.epochs == 3
    assert config.train.batch_frames == 5000
    # Keys nobody set keep the dataclass defaults.
    assert config.train.weight_decay == TrainConfig().weight_decay
    assert config.model.name == "lstm"
    expected = {**default_options("lstm"), "hidden_size": 48, "num_layers": 1}
    assert config.model.options == expected
    assert "train" not in config.model.options


def test_model_train_overrides_do_not_leak_into_other_models(tmp_path):
    config = resolve(write_recipe(tmp_path), "gru")
    assert config.train.lr == pytest.approx(2e-3)
    assert config.train.epochs == 7
    assert config.model.options["hidden_size"] == 24


def test_resolve_does_not_modify_the_recipe_between_calls(tmp_path):
    path = write_recipe(tmp_path)
    first = resolve(path, "lstm", ["train.lr=0.1", "model.hidden_size=8"])
    second = resolve(path, "lstm")
    assert first.train.lr == pytest.approx(0.1)
    assert second.train.lr == pytest.approx(5e-4)
    assert second.model.options["hidden_size"] == 48


def test_int_is_accepted_for_float_and_becomes_float(tmp_path):
    config = resolve(recipe_with(tmp_path, train={"lr": 1}), "lstm")
    assert config.train.lr == 1.0
    assert isinstance(config.train.lr, float)


def test_empty_recipe_sections_use_defaults(tmp_path):
    path = write_recipe(tmp_path, "data:\ntrain:\nmodels:\n  lstm:\n")
    config = resolve(path, "lstm")
    assert config.train == TrainConfig()
    assert config.model.options == default_options("lstm")


def test_yaml_exponent_float_without_dot_is_a_float(tmp_path):
    """Regression test (fixed): PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a *string*, so a recipe with
    ``lr: 1e-3`` is rejected ("expected float, got str '1e-3'") although ``--set train.lr=1e-3``
    is accepted. Both spellings should give 0.001."""
    config = resolve(write_recipe(tmp_path, "train:\n  lr: 1e-3\nmodels:\n  lstm: {}\n"), "lstm")
    assert config.train.lr == pytest.approx(1e-3)


# --- unknown keys ------------------------------------------------------------------------------


def test_unknown_top_level_key_lists_valid_sections(tmp_path):
    path = recipe_with(tmp_path, trian={"lr": 0.1})
    with pytest.raises(AsrbenchError) as err:
        resolve(path, "lstm")
    message = str(err.value)
    assert "trian" in message
    for section in list(SECTIONS) + ["models"]:
        assert section in message


def test_unknown_section_key_lists_valid_keys(tmp_path):
    path = recipe_with(tmp_path, train={"learning_rate": 0.1})
    with pytest.raises(AsrbenchError) as err:
        resolve(path, "lstm")
    message = str(err.value)
    assert "learning_rate" in message
    for name in ("lr", "epochs", "batch_frames", "schedule"):
        assert name in message


def test_unknown_model_option_lists_valid_options(tmp_path):
    path = write_recipe(tmp_path, "models:\n  lstm: {hidden: 32}\n")
    with pytest.raises(AsrbenchError) as err:
        resolve(path, "lstm")
    message = str(err.value)
    assert "hidden" in message and "models.lstm" in message
    for name in default_options("lstm"):
        assert name in message


def test_unknown_key_in_model_train_override_is_rejected(tmp_path):
    path = write_recipe(tmp_path, "models:\n  lstm:\n    train: {lrate: 0.1}\n")
    with pytest.raises(AsrbenchError, match="lrate"):
        resolve(path, "lstm")


# --- types, choices, ranges --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("train", "epochs", "ten"),  # str for int
        ("train", "epochs", True),  # bool for int
        ("train", "epochs", 2.5),  # float for int
        ("train", "lr", "fast"),  # str for float
        ("train", "lr", False),  # bool for float
        ("augment", "spec_augment", 1),  # int for bool
        ("data", "dir", ["a", "b"]),  # list for str
        ("augment", "speed_perturb", 0.9),  # number for list
    ],
)
def test_wrong_type_names_the_key(tmp_path, section, key, value):
    path = recipe_with(tmp_path, **{section: {key: value}})
    with pytest.raises(AsrbenchError) as err:
        resolve(path, "lstm")
    assert f"{section}.{key}" in str(err.value)


def test_wrong_type_in_model_option_names_the_key(tmp_path):
    path = write_recipe(tmp_path, "models:\n  lstm: {hidden_size: big}\n")
    with pytest.raises(AsrbenchError, match=r"hidden_size"):
        resolve(path, "lstm")


def test_section_that_is_not_a_mapping_is_rejected(tmp_path):
    path = write_recipe(tmp_path, "features: [1, 2]\nmodels:\n  lstm: {}\n")
    with pytest.raises(AsrbenchError, match="features"):
        resolve(path, "lstm")


@pytest.mark.parametrize(
    ("section", "key", "bad", "good"),
    [
        ("train", "schedule", "linear", "constant"),
        ("train", "schedule", "noam", "eden"),
        ("train", "optimizer", "sgd", "scaled_adam"),
        ("train", "device", "tpu", "cpu"),
        ("train", "precision", "int8", "bf16"),
        ("features", "kind", "spectrogram", "mfcc"),
        ("tokenizer", "kind", "wordpiece", "char"),
    ],
)
def test_choices_are_enforced(tmp_path, section, key, bad, good):
    with pytest.raises(AsrbenchError) as err:
        resolve(recipe_with(tmp_path, **{section: {key: bad}}), "lstm")
    assert f"{section}.{key}" in str(err.value) and bad in str(err.value)
    assert good in str(err.value)  # the valid choices are listed
    config = resolve(recipe_with(tmp_path, **{section: {key: good}}), "lstm")
    assert getattr(getattr(config, section), key) == good


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("train", "epochs"),
        ("train", "lr"),
        ("train", "batch_frames"),
        ("train", "max_batch_size"),
        ("features", "sample_rate"),
        ("features", "num_mel_bins"),
        ("features", "frame_shift_ms"),
        ("data", "max_duration"),
    ],
)
@pytest.mark.parametrize("value", [0, -1])
def test_positive_values_are_enforced(tmp_path, section, key, value):
    with pytest.raises(AsrbenchError, match=rf"{section}\.{key} must be positive"):
        resolve(recipe_with(tmp_path, **{section: {key: value}}), "lstm")


@pytest.mark.parametrize("factors", [[0.3], [0.9, 2.5], ["fast"]])
def test_speed_perturb_factors_must_be_reasonable(tmp_path, factors):
    with pytest.raises(AsrbenchError, match="speed_perturb"):
        resolve(recipe_with(tmp_path, augment={"speed_perturb": factors}), "lstm")


def test_speed_perturb_factors_in_range_are_kept(tmp_path):
    config = resolve(recipe_with(tmp_path, augment={"speed_perturb": [0.9, 1.1]}), "lstm")
    assert config.augment.speed_perturb == [0.9, 1.1]


# --- --set overrides ---------------------------------------------------------------------------


def test_parse_override_values_are_yaml():
    assert parse_override("train.lr=1e-3") == (["train", "lr"], pytest.approx(1e-3))
    assert isinstance(parse_override("train.lr=1e-3")[1], float)
    assert parse_override("model.hidden_size=32") == (["model", "hidden_size"], 32)
    assert parse_override("augment.spec_augment=false") == (["augment", "spec_augment"], False)
    assert parse_override("augment.speed_perturb=[0.9, 1.1]") == (["augment", "speed_perturb"], [0.9, 1.1])
    assert parse_override("train.device=cpu") == (["train", "device"], "cpu")
    # Only the first '=' separates key from value.
    assert parse_override("data.dir=a=b") == (["data", "dir"], "a=b")


def test_override_without_equals_sign_is_an_error():
    with pytest.raises(AsrbenchError, match="KEY=VALUE"):
        parse_override("train.lr")


def test_overrides_apply_to_shared_sections_and_the_model(tmp_path):
    path = write_recipe(tmp_path)
    config = resolve(path, "lstm", ["train.lr=1e-3", "model.hidden_size=32", "features.kind=mfcc"])
    assert config.train.lr == pytest.approx(1e-3)
    assert config.model.options["hidden_size"] == 32
    assert config.model.options["num_layers"] == 1  # from the recipe, untouched
    assert config.features.kind == "mfcc"


def test_override_beats_model_train_section(tmp_path):
    config = resolve(write_recipe(tmp_path), "lstm", ["train.epochs=11"])
    assert config.train.epochs == 11


def test_override_with_models_prefix_targets_the_chosen_model(tmp_path):
    config = resolve(write_recipe(tmp_path), "lstm", ["models.lstm.hidden_size=32"])
    assert config.model.options["hidden_size"] == 32


def test_override_of_unknown_section_lists_valid_sections(tmp_path):
    with pytest.raises(AsrbenchError) as err:
        resolve(write_recipe(tmp_path), "lstm", ["optim.lr=0.1"])
    message = str(err.value)
    assert "optim" in message
    for section in list(SECTIONS) + ["model"]:
        assert section in message


def test_override_of_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(AsrbenchError) as err:
        resolve(write_recipe(tmp_path), "lstm", ["train.lrate=0.1"])
    assert str(err.value).startswith("--set train.lrate=0.1: unknown key 'lrate' in train")
    assert "warmup_steps" in str(err.value)
    with pytest.raises(AsrbenchError, match=r"^--set model.hiden=3: unknown key 'hiden' in model .*hidden_size"):
        resolve(write_recipe(tmp_path), "lstm", ["model.hiden=3"])


def test_override_with_wrong_type_names_the_key(tmp_path):
    with pytest.raises(AsrbenchError, match=r"train\.epochs"):
        resolve(write_recipe(tmp_path), "lstm", ["train.epochs=many"])
    with pytest.raises(AsrbenchError, match=r"hidden_size"):
        resolve(write_recipe(tmp_path), "lstm", ["model.hidden_size=1.5"])


def test_override_errors_name_the_set_argument_not_the_recipe(tmp_path):
    """Regression (issue 15.8): ``--set train.lr=abc`` blamed the recipe file
    (``yesno.yaml: train.lr: expected float``); a --set value's error names the --set."""
    recipe = write_recipe(tmp_path)
    with pytest.raises(AsrbenchError, match=r"^--set train.lr=abc: expected float, got str 'abc'$"):
        resolve(recipe, "lstm", ["train.lr=abc"])
    with pytest.raises(AsrbenchError, match=r"^--set model.hidden_size=1.5: expected int"):
        resolve(recipe, "lstm", ["model.hidden_size=1.5"])
    with pytest.raises(AsrbenchError, match=r"^--set train.lr=0: train.lr must be positive, got 0"):
        resolve(recipe, "lstm", ["train.lr=0"])
    with pytest.raises(AsrbenchError, match=r"^--set train.schedule=linear: train.schedule must be one of"):
        resolve(recipe, "lstm", ["train.schedule=linear"])
    # A bad value in the recipe itself still names the recipe.
    bad = write_recipe(tmp_path, RECIPE.replace("batch_frames: 5000", "batch_frames: many"), name="bad.yaml")
    with pytest.raises(AsrbenchError, match=r"^.*bad.yaml: train.batch_frames: expected int"):
        resolve(bad, "lstm", [])


def test_unknown_keys_suggest_the_closest_valid_one(tmp_path):
    recipe = write_recipe(tmp_path)
    with pytest.raises(AsrbenchError, match=r"unknown key 'lrr' in train \(did you mean 'lr'\?\)"):
        resolve(recipe, "lstm", ["train.lrr=1"])
    with pytest.raises(AsrbenchError, match=r"unknown section 'trian' \(did you mean 'train'\?\)"):
        resolve(recipe, "lstm", ["trian.lr=1"])
    with pytest.raises(AsrbenchError, match=r"unknown key 'hiden_size' \(did you mean 'hidden_size'\?\)"):
        resolve(write_recipe(tmp_path, RECIPE.replace("hidden_size: 48", "hiden_size: 48"), name="a.yaml"), "lstm", [])
    with pytest.raises(AsrbenchError, match=r"unknown key 'tarin' \(did you mean 'train'\?\)"):
        resolve(write_recipe(tmp_path, "tarin: {}\n" + RECIPE, name="b.yaml"), "lstm", [])
    with pytest.raises(AsrbenchError, match=r"unknown model 'lstmm' \(did you mean 'lstm'\?\)"):
        resolve(recipe, "lstmm", [])
    with pytest.raises(AsrbenchError) as err:  # nothing close: no suggestion
        resolve(recipe, "lstm", ["train.zzzzzz=1"])
    assert "did you mean" not in str(err.value)


def test_override_without_a_key_is_an_error(tmp_path):
    with pytest.raises(AsrbenchError, match="SECTION.KEY"):
        resolve(write_recipe(tmp_path), "lstm", ["train=1"])
    with pytest.raises(AsrbenchError, match="SECTION.KEY"):
        resolve(write_recipe(tmp_path), "lstm", ["train.lr.x=1"])


def test_override_is_validated_like_the_recipe(tmp_path):
    with pytest.raises(AsrbenchError, match="train.schedule"):
        resolve(write_recipe(tmp_path), "lstm", ["train.schedule=linear"])
    with pytest.raises(AsrbenchError, match="must be positive"):
        resolve(write_recipe(tmp_path), "lstm", ["train.lr=0"])


@pytest.mark.parametrize("folder", ["2024", "yes", "null"])
def test_override_of_a_string_field_keeps_the_text(tmp_path, folder):
    """Regression test (fixed): override values are parsed as YAML before their field's type is known, so
    ``--data 2024`` (train.py turns it into ``data.dir=2024``) fails with "expected str, got int",
    ``--data yes`` becomes True and ``--data null`` None. A str field should get the raw text."""
    config = resolve(write_recipe(tmp_path), "lstm", [f"data.dir={folder}"])
    assert config.data.dir_as_written == folder and config.data.dir == str(Path.cwd() / folder)


# --- recipe-level errors -----------------------------------------------------------------------


def test_unknown_model_lists_valid_models(tmp_path):
    with pytest.raises(AsrbenchError) as err:
        resolve(write_recipe(tmp_path), "wav2vec")
    message = str(err.value)
    assert "wav2vec" in message
    for name in MODELS:
        assert name in message


def test_recipe_without_a_section_for_the_model(tmp_path):
    with pytest.raises(AsrbenchError) as err:
        resolve(write_recipe(tmp_path), "transformer")
    message = str(err.value)
    assert "transformer" in message
    assert "lstm" in message and "gru" in message  # what the recipe does have


def test_recipe_without_models_section(tmp_path):
    with pytest.raises(AsrbenchError, match="no section for model 'lstm'"):
        resolve(write_recipe(tmp_path, "train: {epochs: 1}\n"), "lstm")


def test_invalid_yaml_reports_file_and_line(tmp_path):
    path = write_recipe(tmp_path, "train:\n  lr: 0.1\n  epochs: [1, 2\nmodels:\n  lstm: {}\n")
    with pytest.raises(AsrbenchError) as err:
        resolve(path, "lstm")
    message = str(err.value)
    assert message.startswith(f"{path}:")
    line = int(message[len(str(path)) + 1 :].split(":")[0])
    assert 3 <= line <= 4  # the unclosed list starts on line 3; the parser notices on line 4


def test_tab_indentation_reports_the_line(tmp_path):
    path = write_recipe(tmp_path, "train:\n  lr: 0.1\n\tepochs: 2\nmodels:\n  lstm: {}\n")
    with pytest.raises(AsrbenchError, match=rf"{path}:3: invalid YAML"):
        resolve(path, "lstm")


def test_missing_recipe_file(tmp_path):
    with pytest.raises(AsrbenchError, match="recipe not found"):
        resolve(tmp_path / "nope.yaml", "lstm")


def test_recipe_that_is_not_a_mapping(tmp_path):
    with pytest.raises(AsrbenchError, match="mapping"):
        resolve(write_recipe(tmp_path, "- a\n- b\n"), "lstm")


def test_recipe_with_utf8_bom_loads(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + RECIPE.encode())
    assert resolve(path, "lstm").train.epochs == 3


# --- RunConfig ---------------------------------------------------------------------------------


def test_run_config_round_trips_through_a_dict(tmp_path):
    config = resolve(write_recipe(tmp_path), "lstm", ["augment.speed_perturb=[0.9, 1.1]", "train.seed=3"])
    values = json.loads(json.dumps(config.to_dict()))  # as saved in a run dir or checkpoint
    rebuilt = run_config_from_dict(values, "saved")
    assert rebuilt == config
    assert rebuilt.hash() == config.hash()
    # ... and through YAML, the run dir's format.
    assert run_config_from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())), "saved") == config


def test_run_config_from_dict_rejects_unknown_keys_and_models():
    values = RunConfig(model=ModelSpec("lstm", default_options("lstm"))).to_dict()
    values["train"]["lrate"] = 1.0
    with pytest.raises(AsrbenchError, match="lrate"):
        run_config_from_dict(values, "saved")
    values = RunConfig(model=ModelSpec("nosuch", {})).to_dict()
    with pytest.raises(AsrbenchError, match="nosuch"):
        run_config_from_dict(values, "saved")


def test_hash_is_stable_and_sensitive_to_every_change(tmp_path):
    config = resolve(write_recipe(tmp_path), "lstm")
    assert config.hash() == resolve(write_recipe(tmp_path), "lstm").hash()
    assert len(config.hash()) == 12
    changed = {
        "lr": resolve(write_recipe(tmp_path), "lstm", ["train.lr=0.01"]),
        "seed": resolve(write_recipe(tmp_path), "lstm", ["train.seed=1"]),
        "model option": resolve(write_recipe(tmp_path), "lstm", ["model.hidden_size=8"]),
        "features": resolve(write_recipe(tmp_path), "lstm", ["features.num_mel_bins=41"]),
        "model": resolve(write_recipe(tmp_path), "gru", ["train.lr=5e-4", "train.epochs=3"]),
    }
    hashes = {name: other.hash() for name, other in changed.items()}
    for name, value in hashes.items():
        assert value != config.hash(), name
    assert len(set(hashes.values())) == len(hashes)


def test_hash_is_the_same_in_another_process():
    config = RunConfig(model=ModelSpec("lstm", {"hidden_size": 8, "num_layers": 1}))
    code = (
        "from asrbench.recipe.config import RunConfig, ModelSpec;"
        "print(RunConfig(model=ModelSpec('lstm', {'num_layers': 1, 'hidden_size': 8})).hash())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == config.hash()


def test_dataclass_defaults_pass_validation(tmp_path):
    # A recipe that sets nothing but the model must resolve to the documented defaults.
    config = resolve(write_recipe(tmp_path, "models:\n  lstm:\n"), "lstm")
    for name, cls in SECTIONS.items():
        assert getattr(config, name) == cls(), name
    assert dataclasses.asdict(config)["model"]["name"] == "lstm"


# --- the real recipes --------------------------------------------------------------------------


def _recipe_models() -> list:
    params = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        try:
            models = (yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}).get("models") or {}
        except Exception:  # noqa: BLE001 - resolve() then reports the broken recipe as a failure
            models = {"<unreadable recipe>": None}
        if not isinstance(models, dict) or not models:
            models = {"<no models>": None}
        params += [pytest.param(path, name, id=f"{path.stem}-{name}") for name in models]
    return params


@pytest.mark.parametrize(("recipe", "model"), _recipe_models())
def test_every_real_recipe_resolves_for_every_model_it_lists(recipe, model):
    config = resolve(recipe, model)
    assert config.model.name == model
    # The options must also build a model (e.g. crdnn's rnn_type is only checked there).
    network = build_model(model, config.model.options, config.features.dim(), 30)
    assert count_parameters(network) > 0


def test_real_recipes_exist():
    assert list(RECIPES_DIR.glob("*.yaml")), "no asrbench/recipe/*.yaml found"


def test_a_model_entry_may_override_the_shared_augment_section(tmp_path):
    text = RECIPE.replace("  gru: {hidden_size: 24}", "  gru: {hidden_size: 24, augment: {speed_perturb: [0.9, 1.1]}}")
    text = text.replace("models:", "augment:\n  freq_masks: 1\nmodels:")
    path = write_recipe(tmp_path, text)
    gru, lstm = resolve(path, "gru"), resolve(path, "lstm")
    assert gru.augment.speed_perturb == [0.9, 1.1] and gru.augment.freq_masks == 1
    assert lstm.augment.speed_perturb == [] and lstm.augment.freq_masks == 1
    assert "augment" not in gru.model.options
    bad = write_recipe(tmp_path, RECIPE.replace("  gru: {hidden_size: 24}", "  gru: {augment: 3}"), "bad.yaml")
    with pytest.raises(AsrbenchError, match="models.gru.augment must be a mapping"):
        resolve(bad, "gru")


def test_data_dir_is_stored_absolute_and_the_hash_does_not_see_the_working_dir(tmp_path, monkeypatch):
    """Regression (issue 28.9): the run dir kept ``data/tiny`` as written, so a run decoded from another
    directory looked for another data dir. It is absolute now; the hash still uses the spelling the recipe
    gave (so it is the same from every working dir, and the same hash older versions recorded)."""
    recipe = write_recipe(tmp_path)
    configs = []
    for cwd in (tmp_path / "a", tmp_path / "b" / "c"):
        cwd.mkdir(parents=True)
        monkeypatch.chdir(cwd)
        configs.append(resolve(recipe, "lstm"))
    first, second = configs
    assert first.data.dir == str(tmp_path / "a" / "data" / "tiny")
    assert second.data.dir == str(tmp_path / "b" / "c" / "data" / "tiny")
    assert first.hash() == second.hash()
    # What older versions hashed: the config as written (data.dir relative), with no other key.
    old = first.to_dict()
    old["data"].pop("dir_as_written", None)
    old["data"]["dir"] = "data/tiny"
    del old["model"]["target_params"]  # model.target_params: unknown to older versions
    for key in TRAIN_KEYS_SINCE_ISSUE_30:  # train.optimizer, eden_*: unknown to older versions
        del old["train"][key]
    del old["features"]["preset"]  # features.preset (issue 32): unknown to older versions
    assert first.hash() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:12]
    # A run dir written before (data.dir relative, no dir_as_written) reads back with the hash it recorded.
    assert run_config_from_dict(old, "old run").hash() == first.hash()
    # The config survives the round trip through a run dir, and --set data.dir is made absolute too.
    assert run_config_from_dict(json.loads(json.dumps(first.to_dict())), "saved") == first
    assert resolve(recipe, "lstm", ["data.dir=other"]).data.dir == str(tmp_path / "b" / "c" / "other")
    with pytest.raises(AsrbenchError, match="data.dir_as_written"):
        resolve(recipe, "lstm", ["data.dir_as_written=x"])


# --- ranges: every number checked where it is parsed (issue 28.4) ---------------------------------


def _config_classes() -> list:
    classes = {cls.__name__: cls for cls in SECTIONS.values()}
    classes.update({entry.config.__name__: entry.config for entry in MODELS.values()})
    return [pytest.param(cls, id=name) for name, cls in classes.items()]


@pytest.mark.parametrize("cls", _config_classes())
def test_every_numeric_field_has_a_range(cls):
    """Every int / float field of every config section and model options class says which values
    it takes (positive, non-negative, a fraction ...), so none is accepted unchecked."""
    hints = typing.get_type_hints(cls)
    numeric = [
        f.name
        for f in dataclasses.fields(cls)
        if hints[f.name] in (int, float) or set(typing.get_args(hints[f.name])) & {int, float}
    ]
    assert numeric or cls.__name__ == "TokenizerConfig"
    missing = [name for name in numeric if name not in field_limits(cls)]
    assert not missing, f"{cls.__name__}: no range for {missing}"


ALL_MODELS = "models:\n" + "".join(f"  {name}: {{}}\n" for name in MODELS)

# (model, --set KEY, value, what the message says)
BAD_VALUES = [
    ("lstm", "train.lr", "nan", "train.lr must be a finite number, got nan"),
    ("lstm", "train.weight_decay", "nan", "train.weight_decay must be a finite number"),
    ("lstm", "train.max_minutes", "inf", "train.max_minutes must be a finite number"),
    ("lstm", "train.grad_clip", "-1", "train.grad_clip must not be negative"),
    ("lstm", "train.seed", "-1", "train.seed must not be negative"),
    ("lstm", "train.final_lr_ratio", "1.5", "train.final_lr_ratio must be in [0, 1]"),
    ("lstm", "features.frame_shift_ms", "nan", "features.frame_shift_ms must be a finite number"),
    ("lstm", "features.num_mel_bins", "0", "features.num_mel_bins must be positive, got 0"),
    ("lstm", "augment.time_mask_ratio", "1.5", "augment.time_mask_ratio must be in [0, 1]"),
    ("lstm", "augment.noise_prob", "nan", "augment.noise_prob must be"),
    ("lstm", "data.subset_seed", "-3", "data.subset_seed must not be negative"),
    ("lstm", "data.max_duration", "inf", "data.max_duration must be a finite number"),
    ("lstm", "tokenizer.vocab_size", "-5", "tokenizer.vocab_size must not be negative"),
    ("lstm", "model.num_layers", "0", "model.num_layers must be positive"),
    ("lstm", "model.dropout", "1.0", "model.dropout must be in [0, 1)"),
    ("lstm", "model.forget_bias", "nan", "model.forget_bias must be a finite number"),
    ("conformer", "model.num_layers", "-1", "model.num_layers must be positive, got -1"),
    ("conformer", "model.d_model", "63", "model.d_model must be divisible by model.num_heads (4), got 63"),
    ("conformer", "model.num_heads", "5", "model.d_model must be divisible by model.num_heads (5), got 144"),
    ("conformer", "model.kernel_size", "14", "model.kernel_size must be odd, got 14"),
    ("conformer", "model.train_left_chunks", "-2", "model.train_left_chunks must be -1 (all) or at least 0"),
    ("conformer", "model.conv_context", "future", "model.conv_context must be one of causal, chunk"),
    ("transformer", "model.positional", "rotary", "model.positional must be one of sinusoidal, conv, none"),
    ("transformer", "model.attention_window", "-4", "model.attention_window must not be negative"),
    ("conformer_transducer", "model.ctc_weight", "1.0", "model.ctc_weight must be in [0, 1)"),
    ("conformer_transducer", "model.max_symbols_per_frame", "0", "model.max_symbols_per_frame must be positive"),
    ("lstm_transducer", "model.predictor", "gru", "model.predictor must be one of stateless, lstm"),
    ("conformer_aed", "model.decoder_layers", "0", "model.decoder_layers must be positive"),
    ("transformer_aed", "model.label_smoothing", "1", "model.label_smoothing must be in [0, 1)"),
    ("las", "model.location_kernel", "30", "model.location_kernel must be odd"),
    ("las", "model.max_length_ratio", "0", "model.max_length_ratio must be positive"),
    ("crdnn", "model.rnn_type", "rnn", "model.rnn_type must be one of gru, lstm"),
    ("crdnn", "model.dnn_layers", "-1", "model.dnn_layers must not be negative"),
    ("dnn", "model.stride", "0", "model.stride must be positive"),
    ("cnn", "model.kernel_size", "10", "model.kernel_size must be odd"),
    ("gru", "model.hidden_size", "0", "model.hidden_size must be positive"),
]


@pytest.mark.parametrize(
    ("model", "key", "value", "message"),
    BAD_VALUES,
    ids=[f"{model}-{key}={value}" for model, key, value, _ in BAD_VALUES],
)
def test_bad_values_fail_at_resolution_naming_the_key(tmp_path, model, key, value, message):
    """Regression (issue 28.4): ``--set model.num_layers=-1`` trained a conformer with no blocks,
    ``model.d_model=63`` ended in a traceback, ``train.lr=nan`` was accepted."""
    with pytest.raises(AsrbenchError) as err:
        resolve(write_recipe(tmp_path, ALL_MODELS), model, [f"{key}={value}"])
    assert str(err.value).startswith(f"--set {key}={value}: "), err.value
    assert message in str(err.value)


def test_options_a_model_refuses_together_fail_at_resolution(tmp_path):
    """What one option means for another (a GRU has no forget gate) is the model's own check: it runs
    when the config is resolved (a dry build on the meta device), not after the run dir is locked."""
    with pytest.raises(
        AsrbenchError,
        match=r"^--set model.forget_bias=1.0: model gru: forget_bias applies to "
        r"LSTMs only$",
    ):
        resolve(write_recipe(tmp_path, ALL_MODELS), "gru", ["model.forget_bias=1.0"])


def test_a_bad_recipe_value_names_the_recipe_and_the_model_key(tmp_path):
    recipe = write_recipe(tmp_path, "models:\n  conformer: {d_model: 63}\n")
    with pytest.raises(
        AsrbenchError,
        match=r"recipe.yaml: models.conformer.d_model must be divisible by "
        r"models.conformer.num_heads \(4\), got 63$",
    ):
        resolve(recipe, "conformer")
    recipe = write_recipe(tmp_path, "train: {lr: .nan}\nmodels:\n  lstm: {}\n")
    with pytest.raises(AsrbenchError, match=r"recipe.yaml: train.lr must be a finite number, got nan$"):
        resolve(recipe, "lstm")


def test_mfcc_takes_at_most_as_many_cepstra_as_mel_bins(tmp_path):
    recipe = write_recipe(tmp_path, ALL_MODELS)
    with pytest.raises(
        AsrbenchError,
        match=r"^--set features.num_ceps=30: features.num_ceps must be at most "
        r"the 23 mel bins mfcc uses, got 30$",
    ):
        resolve(recipe, "lstm", ["features.kind=mfcc", "features.num_mel_bins=23", "features.num_ceps=30"])
    assert resolve(recipe, "lstm", ["features.num_mel_bins=10"]).features.num_ceps == 13  # fbank: not used


def test_a_resumed_run_checks_its_new_values(tmp_path):
    config = resolve(write_recipe(tmp_path), "lstm")
    with pytest.raises(AsrbenchError, match=r"^--set train.max_minutes=nan: train.max_minutes must be a finite"):
        with_overrides(config, ["train.max_minutes=nan"])


def test_recipe_features_without_a_model_are_checked(tmp_path):
    """``asrbench data features --recipe R --set ...`` resolves no model but still checks its values."""
    with pytest.raises(AsrbenchError, match=r"^--set features.num_mel_bins=0: features.num_mel_bins must be positive"):
        recipe_features(write_recipe(tmp_path), None, ["features.num_mel_bins=0"])
    with pytest.raises(AsrbenchError, match=r"augment.time_mask_ratio must be in \[0, 1\]"):
        recipe_features(write_recipe(tmp_path), None, ["augment.time_mask_ratio=-0.5"])


def test_valid_edge_values_are_kept(tmp_path):
    recipe = write_recipe(tmp_path, ALL_MODELS)
    config = resolve(
        recipe,
        "conformer",
        [
            "model.d_model=8",
            "model.num_heads=2",
            "model.train_left_chunks=-1",
            "train.max_minutes=0",
            "train.final_lr_ratio=1",
        ],
    )
    assert config.model.options["d_model"] == 8 and config.train.max_minutes == 0.0
    assert resolve(recipe, "lstm", ["model.forget_bias=1.0"]).model.options["forget_bias"] == 1.0
