"""End to end on real recorded speech (Kaldi's yesno): prepare -> train -> decode -> compare via the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asrbench.cli import app

DATA_ROOT = Path(os.environ.get("ASRBENCH_DATA_ROOT", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
RECIPE = Path(__file__).resolve().parents[1] / "asrbench" / "recipe" / "yesno.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_yesno_prepare_train_decode_compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = DATA_ROOT / "yesno"
    assert source.is_dir(), f"yesno corpus expected at {source} (set ASRBENCH_DATA_ROOT)"
    monkeypatch.setenv("ASRBENCH_NO_PROGRESS", "1")
    data_dir = tmp_path / "data"
    invoke("data", "prepare", "yesno", str(source), "--out", str(data_dir))
    assert sum(1 for _ in open(data_dir / "test.jsonl")) == 30

    runs = []
    for model in ("conformer", "gru"):
        run_dir = tmp_path / "runs" / model
        # The recipe's 1-minute budget is a speed target; here (--max-minutes 0: no budget) the epochs decide,
        # so a loaded CI machine cannot cut training short or change the result.
        invoke(
            "train",
            str(RECIPE),
            "--model",
            model,
            "--out",
            str(run_dir),
            "--data",
            str(data_dir),
            "--seed",
            "0",
            "--max-minutes",
            "0",
        )
        for name in (
            "config.yaml",
            "tokenizer.json",
            "environment.json",
            "metrics.jsonl",
            "train_summary.json",
            "checkpoints/best.pt",
            "checkpoints/last.pt",
        ):
            assert (run_dir / name).is_file(), name
        invoke("decode", str(run_dir), "--split", "test")
        runs.append(run_dir)

    results = {run.name: json.loads((run / "decode" / "test" / "result.json").read_text()) for run in runs}
    for name, result in results.items():
        assert result["utterances"] == 30 and result["words"] == 240
        # 240 test words: <= 6 errors. (The <= 1% target is measured by benchmarks/experiments/recipe_table.py.)
        assert result["wer"] <= 2.5, f"{name}: yesno test WER {result['wer']:.2f}%"
        assert result["rtfx"] > 1
    hypotheses = [json.loads(line) for line in open(runs[0] / "decode" / "test" / "hypotheses.jsonl")]
    assert len(hypotheses) == 30 and set(hypotheses[0]) == {"id", "ref", "hyp"}

    table = json.loads(invoke("compare", *map(str, runs), "--format", "json"))
    assert [row["model"] for row in table] == ["conformer", "gru"]
    assert all({"run", "model", "params", "wer", "cer", "rtfx", "train_seconds"} <= set(row) for row in table)


def test_yesno_hybrid_attention_model_with_beam_search_lm_and_tuning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """conformer_aed (hybrid CTC/attention): train, joint beam search, then its CTC branch with a
    lexicon and an n-gram LM whose weights are tuned on dev and used on test."""
    monkeypatch.setenv("ASRBENCH_NO_PROGRESS", "1")
    data_dir = tmp_path / "data"
    invoke("data", "prepare", "yesno", str(DATA_ROOT / "yesno"), "--out", str(data_dir))
    run_dir = tmp_path / "runs" / "conformer_aed"
    invoke(
        "train",
        str(RECIPE),
        "--model",
        "conformer_aed",
        "--out",
        str(run_dir),
        "--data",
        str(data_dir),
        "--seed",
        "0",
        "--max-minutes",
        "0",
    )
    invoke("decode", str(run_dir), "--beam", "10", "--tag", "beam10")
    joint = json.loads((run_dir / "decode" / "test-beam10" / "result.json").read_text())
    assert joint["decoder"]["kind"] == "attention_beam" and joint["decoder"]["ctc_weight"] == 0.3
    assert joint["wer"] <= 2.5, f"joint CTC/attention beam search: yesno test WER {joint['wer']:.2f}%"

    lm_dir = tmp_path / "lm"
    invoke("lm", "train", str(data_dir), "--order", "2", "--out", str(lm_dir))
    invoke(
        "tune",
        str(run_dir),
        "--mode",
        "ctc",
        "--lm",
        str(lm_dir),
        "--lexicon",
        "train",
        "--beams",
        "4",
        "--lm-weights",
        "0,0.5",
        "--word-bonuses",
        "0,1",
    )
    invoke("decode", str(run_dir), "--tuned", "--tag", "tuned")
    tuned = json.loads((run_dir / "decode" / "test-tuned" / "result.json").read_text())
    assert tuned["decoder"]["kind"] == "ctc_prefix_beam" and tuned["decoder"]["tuned"]["split"] == "dev"
    assert tuned["decoder"]["lexicon"] == "train" and tuned["decoder"]["lm"] == str(lm_dir)
    assert tuned["wer"] <= 2.5, f"CTC branch + lexicon + LM: yesno test WER {tuned['wer']:.2f}%"
