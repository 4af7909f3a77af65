"""asrbench bench: an equal-budget sweep over models and seeds, resumable, with mean ± sd."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_train import _write_corpus
from typer.testing import CliRunner

from asrbench import rundir
from asrbench.bench import bench, select_models, summarize
from asrbench.cli import app
from asrbench.errors import AsrbenchError


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    data_dir = _write_corpus(tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
train: {{epochs: 5, batch_frames: 400, lr: 3.0e-3, warmup_steps: 5}}
models:
  dnn: {{context: 3, stride: 2, hidden_size: 32, num_layers: 2, train: {{epochs: 4}}}}
  gru: {{subsample_channels: 4, hidden_size: 16, num_layers: 1}}
"""
    )
    return path


def test_sweep_trains_every_model_and_seed_under_the_same_budget(recipe: Path, tmp_path: Path):
    out = tmp_path / "sweep"
    report = bench(recipe, "all", seeds=2, out=out, epochs=2)
    assert [(run["model"], run["seed"]) for run in report["runs"]] == [("dnn", 0), ("dnn", 1), ("gru", 0), ("gru", 1)]
    for run in report["runs"]:
        run_dir = Path(run["run"])
        assert rundir.read_config(run_dir).train.epochs == 2  # the sweep's epochs beat the recipe's per-model 4
        assert rundir.read_config(run_dir).train.seed == run["seed"]
        assert run["epochs"] == 2 and run["dev_test_gap"] == pytest.approx(run["wer"] - run["dev_wer"])
        assert run["peak_memory_mb"] > 0
        assert (run_dir / "decode" / "dev" / "result.json").is_file()
    summary = {row["model"]: row for row in report["summary"]}
    dnn = [run["wer"] for run in report["runs"] if run["model"] == "dnn"]
    assert summary["dnn"]["seeds"] == 2 and summary["dnn"]["wer"] == pytest.approx(sum(dnn) / 2)
    saved = json.loads((out / "bench.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(report["summary"]))
    assert "| dnn | 2 |" in (out / "bench.md").read_text()


def test_sweep_resumes_and_skips_finished_runs(recipe: Path, tmp_path: Path):
    out = tmp_path / "sweep"
    bench(recipe, "dnn", seeds=1, out=out, epochs=2)
    run_dir = out / "dnn" / "seed0"
    finished = (run_dir / rundir.SUMMARY).stat().st_mtime
    bench(recipe, "dnn", seeds=1, out=out, epochs=2)
    assert (run_dir / rundir.SUMMARY).stat().st_mtime == finished  # skipped
    # An interrupted run (no summary yet) resumes from its last checkpoint instead of restarting.
    (run_dir / rundir.SUMMARY).unlink()
    shutil.rmtree(run_dir / "decode")
    report = bench(recipe, "dnn", seeds=1, out=out, epochs=2)
    assert len(rundir.read_metrics(run_dir)) == 2  # no epoch trained twice
    assert report["runs"][0]["epochs"] == 2


def test_model_selection_errors(recipe: Path):
    assert select_models(recipe, "gru, dnn") == ["gru", "dnn"]
    with pytest.raises(AsrbenchError, match="unknown model 'rnnt'"):
        select_models(recipe, "rnnt")
    with pytest.raises(AsrbenchError, match="no section for model 'conformer'"):
        select_models(recipe, "conformer")
    with pytest.raises(AsrbenchError, match="not both"):
        bench(recipe, "dnn", budget_minutes=1.0, epochs=2)


def test_summary_mean_and_standard_deviation():
    runs = [{"model": "a", "wer": 10.0}, {"model": "a", "wer": 14.0}, {"model": "b", "wer": 5.0}]
    rows = {row["model"]: row for row in summarize(runs)}
    assert rows["a"]["wer"] == 12.0 and rows["a"]["wer_sd"] == pytest.approx(2.8284271, rel=1e-6)
    assert rows["b"]["wer_sd"] == 0.0 and summarize(runs)[0]["model"] == "b"  # best first


def test_bench_cli(recipe: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ASRBENCH_NO_PROGRESS", "1")
    result = CliRunner().invoke(app, ["bench", str(recipe), "--models", "gru", "--seeds", "1", "--epochs", "1",
                                      "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "gru" in result.output and (tmp_path / "cli" / "bench.json").is_file()
