"""Every unit end to end on the tone corpus: train, save, decode (greedy and beam), token error rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import write_tone_corpus

from asrbench.data.tokenizer import tokenizer_from_dict
from asrbench.decoding.decode import decode
from asrbench.decoding.searchers import DecodeOptions
from asrbench.runs import rundir
from asrbench.training.trainer import train

pytestmark = pytest.mark.slow

UNITS = {
    "char": "",
    "unigram": "vocab_size: 8",
    "bpe": "vocab_size: 8",
    "phone": "lexicon: {lexicon}",
}


@pytest.fixture
def recipe(tmp_path: Path, request) -> Path:
    kind = request.param
    data_dir = write_tone_corpus(tmp_path)
    lexicon = tmp_path / "tones.dic"
    lexicon.write_text("LOW L OW\nHIGH HH AY\nHIGH(2) HH AY IY\n")
    settings = UNITS[kind].format(lexicon=lexicon)
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{spec_augment: false}}
tokenizer: {{kind: {kind}{", " + settings if settings else ""}}}
train: {{epochs: 80, batch_frames: 400, lr: 5.0e-3, warmup_steps: 5}}
models:
  gru: {{subsample_channels: 4, hidden_size: 32, num_layers: 1}}
""")
    return path


@pytest.mark.parametrize("recipe", list(UNITS), indirect=True)
def test_each_unit_trains_decodes_and_reports_its_token_error_rate(recipe: Path, tmp_path: Path):
    kind = recipe.read_text().split("kind: ")[1].split(",")[0].split("}")[0]
    run = tmp_path / "run"
    train(recipe, "gru", run, seed=0)
    saved = json.loads((run / rundir.TOKENIZER).read_text())
    assert saved["kind"] == kind
    tokenizer = tokenizer_from_dict(saved)
    (tmp_path / "tones.dic").unlink()  # the run dir and checkpoint describe themselves
    result = decode(run, "test").to_dict()
    hypotheses = [json.loads(line) for line in (run / "decode" / "test" / "hypotheses.jsonl").read_text().splitlines()]
    assert result["units"] == kind
    assert result["tokens"] == sum(len(tokenizer.encode(row["ref"])) for row in hypotheses)
    assert 0.0 <= result["ter"] <= 100.0 and result["wer"] <= 50.0  # it learned the two tones, roughly
    if kind == "char":
        assert result["wer"] == 0.0 and result["ter"] == 0.0
    beam = decode(run, "test", options=DecodeOptions(beam=4), tag="beam").to_dict()
    assert beam["units"] == kind and beam["wer"] <= 50.0
    if kind == "phone":
        assert beam["decoder"]["lexicon"] == "tokenizer"  # phones search their own lexicon ...
        rows = (run / "decode" / "test-beam" / "hypotheses.jsonl").read_text().splitlines()
        assert {word for line in rows for word in json.loads(line)["hyp"].split()} <= {"LOW", "HIGH"}  # ... only
