"""decode's search options, tune on dev and the tuned values, end to end through the CLI on a
tiny tone corpus with a hybrid CTC/attention model and an n-gram LM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import write_tone_corpus
from typer.testing import CliRunner

from asrbench.cli import app
from asrbench.decoding.decode import decode
from asrbench.decoding.searchers import DecodeOptions
from asrbench.errors import AsrbenchError
from asrbench.training.trainer import train

runner = CliRunner()
pytestmark = pytest.mark.slow  # every test decodes the runs its module fixture trains


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("search")
    data_dir = write_tone_corpus(root)
    recipe = root / "recipe.yaml"
    recipe.write_text(
        f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{spec_augment: false}}
train: {{epochs: 8, batch_frames: 600, lr: 5.0e-3, warmup_steps: 5}}
models:
  conformer_aed: {{d_model: 32, num_heads: 2, num_layers: 1, ff_dim: 64, kernel_size: 5, subsample_channels: 4,
                  decoder_layers: 1, decoder_ff_dim: 64, ctc_weight: 0.5, dropout: 0.0}}
  gru: {{subsample_channels: 4, hidden_size: 32, num_layers: 1}}
"""
    )
    hybrid, ctc = root / "hybrid", root / "gru"
    train(recipe, "conformer_aed", hybrid, seed=0)
    train(recipe, "gru", ctc, seed=0)
    lm_dir = root / "lm"
    result = runner.invoke(app, ["lm", "train", str(data_dir), "--order", "2", "--out", str(lm_dir)])
    assert result.exit_code == 0, result.output
    return {"data": data_dir, "hybrid": hybrid, "ctc": ctc, "lm": lm_dir}


def _result(run: Path, name: str) -> dict:
    return json.loads((run / "decode" / name / "result.json").read_text())


def test_greedy_is_the_default_and_records_its_options(workspace):
    result = decode(workspace["ctc"], "test")
    assert result.decoder.kind == "ctc_greedy"
    assert result.decoder.options["beam"] == 1
    assert result.search_rtfx > 0 and result.rtfx > 0


def test_ctc_beam_with_lm_and_lexicon_records_them(workspace):
    run = workspace["ctc"]
    outcome = runner.invoke(
        app,
        [
            "decode",
            str(run),
            "--beam",
            "4",
            "--lm",
            str(workspace["lm"]),
            "--lm-weight",
            "0.8",
            "--lexicon",
            "train",
            "--tag",
            "lm",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    result = _result(run, "test-lm")
    decoder = result["decoder"]
    assert decoder["kind"] == "ctc_prefix_beam" and decoder["beam"] == 4
    assert decoder["lm"] == str(workspace["lm"]) and decoder["lm_weight"] == 0.8
    assert decoder["lexicon"] == "train" and decoder["lexicon_words"] == 2  # LOW, HIGH
    assert result["split"] == "test" and result["tag"] == "lm"
    hypotheses = [
        json.loads(line)["hyp"] for line in (run / "decode" / "test-lm" / "hypotheses.jsonl").read_text().splitlines()
    ]
    assert all(word in ("LOW", "HIGH") for hyp in hypotheses for word in hyp.split())  # lexicon words only


def test_hybrid_decodes_with_attention_beam_and_with_its_ctc_branch(workspace):
    run = workspace["hybrid"]
    attention = decode(run, "test", options=DecodeOptions(beam=3), tag="att")
    assert attention.decoder.kind == "attention_beam"
    assert attention.decoder.search["ctc_weight"] == 0.5  # the training weight by default
    pure = decode(run, "test", options=DecodeOptions(beam=3, ctc_weight=0.0), tag="pure")
    assert pure.decoder.search["ctc_weight"] == 0.0
    ctc = decode(run, "test", options=DecodeOptions(beam=3, mode="ctc"), tag="ctc")
    assert ctc.decoder.kind == "ctc_prefix_beam"


def test_lm_needs_ctc_search_for_an_attention_model(workspace):
    with pytest.raises(AsrbenchError, match="--mode ctc"):
        decode(workspace["hybrid"], "test", options=DecodeOptions(beam=2, lm=str(workspace["lm"])))
    with pytest.raises(AsrbenchError, match="CTC search backend"):
        decode(workspace["hybrid"], "test", options=DecodeOptions(beam=2, backend="flashlight"))
    with pytest.raises(AsrbenchError, match="^--mode attention: this ctc model decodes with --mode ctc only$"):
        decode(workspace["ctc"], "test", options=DecodeOptions(beam=2, mode="attention"))


def test_tune_refuses_test_and_bad_lists(workspace):
    outcome = runner.invoke(app, ["tune", str(workspace["ctc"]), "--split", "test"])
    assert outcome.exit_code != 0
    assert "test" in str(outcome.exception or outcome.output)
    outcome = runner.invoke(app, ["tune", str(workspace["ctc"]), "--beams", "4,x"])
    assert outcome.exit_code == 2 and "--beams" in outcome.output


def test_tune_on_dev_saves_the_best_point_and_decode_uses_it(workspace):
    run = workspace["ctc"]
    outcome = runner.invoke(
        app,
        [
            "tune",
            str(run),
            "--lm",
            str(workspace["lm"]),
            "--beams",
            "2,4",
            "--lm-weights",
            "0,0.5",
            "--word-bonuses",
            "0,1",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    tuned = json.loads((run / "tuned.json").read_text())
    assert tuned["split"] == "dev" and len(tuned["grid"]) == 8
    best = min(tuned["grid"], key=lambda row: (row["wer"], row["cer"], row["options"]["beam"]))
    assert tuned["options"] == best["options"] and tuned["wer"] == best["wer"]
    # Regression (issue 15.3): decode with the same LM but without --tuned used to take the tuned
    # values silently. Now it uses what it was given (the default LM weight 0.5, beam 3) and says so.
    outcome = runner.invoke(app, ["decode", str(run), "--beam", "3", "--lm", str(workspace["lm"]), "--tag", "lm"])
    assert outcome.exit_code == 0, outcome.output
    decoder = _result(run, "test-lm")["decoder"]
    assert decoder["tuned"] is None and decoder["beam"] == 3 and decoder["lm_weight"] == 0.5
    assert decoder["lexicon"] is None and decoder["word_bonus"] == 0.0
    assert "add --tuned to use them" in outcome.stderr
    # The options in force are printed in one line at the start of every decode.
    started = [line for line in outcome.stderr.splitlines() if line.startswith(f"decoding {run} test: ")]
    assert len(started) == 1 and "ctc_prefix_beam (backend native, beam 3, lm " in started[0]
    assert "lm_weight 0.5, word_bonus 0.0" in started[0] and "checkpoint best" in started[0]
    # --tuned brings back every tuned value, the LM included; an explicit value wins.
    outcome = runner.invoke(app, ["decode", str(run), "--tuned", "--tag", "all"])
    assert outcome.exit_code == 0, outcome.output
    decoder = _result(run, "test-all")["decoder"]
    assert decoder["tuned"]["split"] == "dev" and decoder["lm"] == str(workspace["lm"])
    assert decoder["beam"] == tuned["options"]["beam"] and decoder["lm_weight"] == tuned["options"]["lm_weight"]
    assert "; tuned on dev: " in outcome.stderr
    outcome = runner.invoke(app, ["decode", str(run), "--tuned", "--lm-weight", "0.25", "--tag", "explicit"])
    assert outcome.exit_code == 0, outcome.output
    assert _result(run, "test-explicit")["decoder"]["lm_weight"] == 0.25


def test_tune_an_attention_model_grids_ctc_weight(workspace):
    result = runner.invoke(
        app, ["tune", str(workspace["hybrid"]), "--beams", "2", "--ctc-weights", "0,0.5", "--length-bonuses", "0"]
    )
    assert result.exit_code == 0, result.output
    tuned = json.loads((workspace["hybrid"] / "tuned.json").read_text())
    assert sorted(row["options"]["ctc_weight"] for row in tuned["grid"]) == [0.0, 0.5]


def test_bad_decode_options_are_errors(workspace, tmp_path):
    for values, needle in (
        ({"beam": 0}, "--beam"),
        ({"mode": "rnnt"}, "decoding mode"),
        ({"backend": "kenlm"}, "backend"),
        ({"ctc_weight": 2.0}, "--ctc-weight"),
    ):
        with pytest.raises(AsrbenchError, match=needle):
            DecodeOptions(**values)
    with pytest.raises(AsrbenchError, match="--tag"):
        decode(workspace["ctc"], "test", tag="a/b")
    untuned = tmp_path / "untuned"
    shutil.copytree(workspace["ctc"], untuned)
    (untuned / "tuned.json").unlink(missing_ok=True)
    outcome = runner.invoke(app, ["decode", str(untuned), "--tuned"])
    assert outcome.exit_code != 0 and "tuned.json" in str(outcome.exception)


def test_tune_summary_prints_every_chosen_value_and_says_how_a_tie_was_broken(workspace, tmp_path):
    """Regression (issue 15.4): the summary dropped a chosen weight of 0.0 (it filtered values with
    ``value not in (None, "", False)``) and did not say when several grid points tied."""
    run = tmp_path / "ctc"
    shutil.copytree(workspace["ctc"], run)
    outcome = runner.invoke(
        app,
        [
            "tune",
            str(run),
            "--lm",
            str(workspace["lm"]),
            "--beams",
            "2",
            "--lm-weights",
            "0,0.0001",
            "--word-bonuses",
            "0",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    tuned = json.loads((run / "tuned.json").read_text())
    # A negligible LM weight cannot change the search here: both points tie, and the first one wins.
    assert len(tuned["tied"]) == 2 and tuned["options"]["lm_weight"] == 0.0
    summary = " ".join(outcome.stderr.split())
    assert "with lm_weight 0.0 (fixed: beam 2, lm " in summary
    assert (
        "2 points tie at this WER and CER, picked by lowest WER, then lowest CER, then the smallest beam, "
        "then the first in grid order" in summary
    )


def test_decode_with_no_reference_words_reports_an_undefined_wer(workspace, tmp_path):
    """Regression (issue 15.2): a decode whose only reference normalised to nothing printed
    ``WER 0.00%`` with 8 insertions in result.json (``words: 0``)."""
    data = tmp_path / "data"
    shutil.copytree(workspace["data"], data)
    rows = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    (data / "test.jsonl").write_text(json.dumps({**rows[0], "text": "..."}) + "\n")  # normalizes to ""
    run = tmp_path / "run"
    shutil.copytree(workspace["ctc"], run)
    outcome = runner.invoke(app, ["decode", str(run), "--data", str(data)], terminal_width=200)
    assert outcome.exit_code == 0, outcome.output
    result = _result(run, "test")
    assert result["words"] == 0 and result["wer"] is None and result["wer_ci"] is None
    assert result["insertions"] == len(
        json.loads((run / "decode" / "test" / "hypotheses.jsonl").read_text())["hyp"].split()
    )
    assert "WER n/a%" in outcome.stderr and "the WER is undefined (n/a)" in " ".join(outcome.stderr.split())
    assert (run / "decode" / "test" / "alignments.txt").read_text().startswith("# normalizer basic-1; WER n/a%")


def test_decode_names_a_mistyped_data_dir_and_lists_the_splits(workspace, tmp_path):
    """Regression (issues 15.1 and 15.6)."""
    run = workspace["ctc"]
    outcome = runner.invoke(app, ["decode", str(run), "--data", str(tmp_path / "mykaldl")])
    assert outcome.exit_code != 0 and "no such data dir" in str(outcome.exception)
    with pytest.raises(AsrbenchError, match=r"no split 'tset' \(prepared splits: train, dev, test\)"):
        decode(run, "tset")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lm_weight": float("nan"), "lm": "lm"}, "--lm-weight must be a finite number"),
        ({"lm_weight": -0.5, "lm": "lm"}, "--lm-weight must not be negative"),
        ({"word_bonus": float("inf")}, "--word-bonus must be a finite number"),
        ({"length_bonus": float("nan")}, "--length-bonus must be a finite number"),
        ({"ctc_weight": float("nan")}, "--ctc-weight must be in [0, 1]"),
    ],
)
def test_decode_options_refuse_values_that_would_score_garbage(values, message):
    """Regression (issue 28.4): ``DecodeOptions(lm_weight=nan)`` (from the CLI, a library call or an
    edited tuned.json) decoded every utterance to nothing and wrote a 100% WER result."""
    with pytest.raises(AsrbenchError) as err:
        DecodeOptions(**values)
    assert message in str(err.value)
