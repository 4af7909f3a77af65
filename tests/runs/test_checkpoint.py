"""Self-describing checkpoints: a model rebuilt from the file alone gives the same outputs."""

from __future__ import annotations

import pytest
import torch

from asrbench.data.features import GlobalCMVN
from asrbench.data.tokenizer import CharTokenizer
from asrbench.errors import AsrbenchError
from asrbench.models import build_model, default_options
from asrbench.recipe.config import FeatureConfig, ModelSpec, RunConfig
from asrbench.runs import checkpoint

OPTIONS = {**default_options("gru"), "subsample_channels": 4, "hidden_size": 16, "num_layers": 1}


def saved(tmp_path, **extra):
    torch.manual_seed(0)
    config = RunConfig(features=FeatureConfig(num_mel_bins=20), model=ModelSpec("gru", OPTIONS))
    tokenizer = CharTokenizer.build(["YES NO"])
    cmvn = GlobalCMVN(torch.randn(20), torch.rand(20) + 0.5)
    model = build_model("gru", OPTIONS, 20, len(tokenizer))
    path = tmp_path / "checkpoints" / "best.pt"
    checkpoint.save(path, config, tokenizer, cmvn, model, epoch=3, **extra)
    return path, config, tokenizer, cmvn, model


def test_load_model_rebuilds_everything(tmp_path):
    path, config, tokenizer, cmvn, model = saved(tmp_path)
    loaded = checkpoint.load_model(path)
    assert loaded.config == config
    assert loaded.tokenizer.tokens == tokenizer.tokens
    assert torch.equal(loaded.cmvn.mean, cmvn.mean) and torch.equal(loaded.cmvn.std, cmvn.std)
    assert loaded.state["epoch"] == 3
    assert not loaded.model.training
    features, lengths = torch.randn(2, 40, 20), torch.tensor([40, 25])
    model.eval()
    with torch.no_grad():
        expected, expected_lengths = model(features, lengths)
        actual, actual_lengths = loaded.model(features, lengths)
    assert torch.equal(actual, expected) and torch.equal(actual_lengths, expected_lengths)


def test_checkpoint_loads_with_weights_only(tmp_path):
    path, *_ = saved(tmp_path)
    state = torch.load(path, weights_only=True)
    assert state["format"] == checkpoint.FORMAT


def test_missing_checkpoint(tmp_path):
    with pytest.raises(AsrbenchError, match="checkpoint not found"):
        checkpoint.load_model(tmp_path / "none.pt")


def test_garbage_and_foreign_files_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(AsrbenchError, match="unreadable checkpoint"):
        checkpoint.load_model(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(AsrbenchError, match="not an asrbench checkpoint"):
        checkpoint.load_model(foreign)


def test_weights_that_do_not_match_the_config(tmp_path):
    path, *_ = saved(tmp_path)
    state = torch.load(path, weights_only=True)
    state["config"]["model"]["options"]["hidden_size"] = 32
    torch.save(state, path)
    with pytest.raises(AsrbenchError, match="weights do not match"):
        checkpoint.load_model(path)
