"""docs/extending.md's worked example, run as written: the model file registers, trains and decodes."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
from helpers import write_tone_corpus
from typer.testing import CliRunner

from asrbench import models
from asrbench.cli import app
from asrbench.decoding.decode import decode
from asrbench.decoding.searchers import DecodeOptions
from asrbench.training.trainer import train

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture
def tiny_conv():
    """The documented model file as a module, and the documented registry line run against it."""
    model_file, registry_line = _python_blocks()[:2]
    assert model_file.startswith("# asrbench/models/tiny_conv.py")
    module = types.ModuleType("tiny_conv_example")
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(model_file, str(DOC), "exec"), module.__dict__)  # noqa: S102 - our own documentation
    assert registry_line.strip() == 'register_encoder("tiny_conv", TinyConvConfig, TinyConv)'
    exec(registry_line, {"register_encoder": models.register_encoder, **module.__dict__})  # noqa: S102
    yield module
    models.unregister_encoder("tiny_conv")
    del sys.modules[module.__name__]


@pytest.mark.slow
def test_the_documented_model_registers_trains_and_decodes(tiny_conv, tmp_path: Path):
    assert models.MODELS["tiny_conv"].family.name == "CTC"
    # rich lays the table out to COLUMNS, not to click's terminal width: wide enough for one line per description
    listing = CliRunner().invoke(app, ["models"], terminal_width=200, env={"COLUMNS": "200"})
    assert "tiny_conv" in listing.output and "CTC: 4x conv subsampling, then one ReLU layer." in listing.output
    data_dir = write_tone_corpus(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
train: {{epochs: 3, batch_frames: 400, lr: 3.0e-3, warmup_steps: 5}}
encoders:
  tiny_conv: {{hidden_size: 32}}
models:
  tiny_conv: {{}}
  tiny_conv_aed: {{decoder_layers: 1, decoder_ff_dim: 32, decoder_heads: 2}}
  tiny_conv_transducer: {{predictor_dim: 16, joiner_dim: 16}}
""")
    assert models.MATRIX[("tiny_conv", "transducer")] == "tiny_conv_transducer"
    for name in ("tiny_conv", "tiny_conv_aed", "tiny_conv_transducer"):
        summary = train(recipe, name, tmp_path / name, seed=0)
        assert summary["epochs"] == 3 and summary["params"] > 0
        result = decode(tmp_path / name, "test")
        assert result.model == name and result.utterances == 4 and result.wer is not None
    beam = decode(tmp_path / "tiny_conv", "test", options=DecodeOptions(beam=4, lexicon="train"), tag="lexicon")
    assert beam.decoder.kind == "ctc_prefix_beam" and beam.decoder.search["lexicon_words"] == 2


def test_a_documented_option_typo_is_refused_with_the_valid_keys(tiny_conv):
    from asrbench.errors import AsrbenchError

    with pytest.raises(AsrbenchError, match=r"unknown key 'hiden_size' \(did you mean 'hidden_size'\?\)"):
        models.build_model("tiny_conv", {"hiden_size": 8}, 23, 10)
