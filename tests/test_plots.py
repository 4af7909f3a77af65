"""compare's figures: the Pareto front, and PNG files written for real run dirs."""

from __future__ import annotations

import json
from pathlib import Path

from asrbench.plots import pareto_front, write_plots


def test_pareto_front_keeps_points_nothing_beats():
    # (parameters, WER): fewer parameters and lower WER are both better.
    points = [(1.0, 30.0), (2.0, 20.0), (3.0, 25.0), (4.0, 10.0), (5.0, 10.0)]
    assert pareto_front(points, higher_x_is_better=False) == [0, 1, 3]
    # (RTFx, WER): faster is better.
    speed = [(100.0, 10.0), (200.0, 12.0), (300.0, 11.0), (50.0, 9.0)]
    assert pareto_front(speed, higher_x_is_better=True) == [3, 0, 2]


def test_write_plots_writes_three_pngs(tmp_path: Path):
    rows = []
    for index, (params, wer, rtfx) in enumerate([(1e5, 20.0, 900.0), (1e6, 12.0, 300.0), (3e6, 9.0, 120.0)]):
        run = tmp_path / f"run{index}"
        run.mkdir()
        metrics = [{"epoch": e, "dev_cer": 50.0 / e, "train_seconds": 30.0 * e} for e in range(1, 6)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        rows.append({"run": str(run), "model": f"m{index}", "params": params, "wer": wer, "rtfx": rtfx,
                     "wer_ci": [wer - 1, wer + 1], "split": "test"})
    written = write_plots(rows, tmp_path / "plots")
    assert [path.name for path in written] == ["wer_vs_params.png", "wer_vs_rtfx.png", "learning_curves.png"]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary files left behind


def test_compare_plot_option_writes_the_figures(tmp_path: Path):
    from typer.testing import CliRunner

    from asrbench.cli import app

    runs = []
    for name, wer in (("a", 10.0), ("b", 20.0)):
        run = tmp_path / name
        (run / "decode" / "test").mkdir(parents=True)
        result = {"model": name, "wer": wer, "cer": wer / 2, "params": 1000 * len(runs) + 500, "rtfx": 50.0 + wer}
        (run / "decode" / "test" / "result.json").write_text(json.dumps(result))
        (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "dev_cer": wer, "train_seconds": 3.0}) + "\n")
        runs.append(str(run))
    outcome = CliRunner().invoke(app, ["compare", *runs, "--format", "json", "--plot", str(tmp_path / "figures")])
    assert outcome.exit_code == 0, outcome.output
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "learning_curves.png", "wer_vs_params.png", "wer_vs_rtfx.png"]
