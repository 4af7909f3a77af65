"""compare's figures: the Pareto front, and PNG files written for real run dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asrbench.studies.plots import pareto_front, rtfx_axis, write_plots


def test_pareto_front_keeps_points_nothing_beats():
    # (parameters, WER): fewer parameters and lower WER are both better.
    points = [(1.0, 30.0), (2.0, 20.0), (3.0, 25.0), (4.0, 10.0), (5.0, 10.0)]
    assert pareto_front(points, higher_x_is_better=False) == [0, 1, 3]
    # (RTFx, WER): faster is better.
    speed = [(100.0, 10.0), (200.0, 12.0), (300.0, 11.0), (50.0, 9.0)]
    assert pareto_front(speed, higher_x_is_better=True) == [3, 0, 2]


def test_write_plots_writes_four_pngs(tmp_path: Path):
    rows = []
    for index, (params, wer, rtfx) in enumerate([(1e5, 20.0, 900.0), (1e6, 12.0, 300.0), (3e6, 9.0, 120.0)]):
        run = tmp_path / f"run{index}"
        run.mkdir()
        metrics = [{"epoch": e, "dev_cer": 50.0 / e, "train_seconds": 30.0 * e} for e in range(1, 6)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        rows.append(
            {
                "run": str(run),
                "model": f"m{index}",
                "params": params,
                "wer": wer,
                "rtfx": rtfx,
                "gflops_per_second": params / 1e7,
                "wer_ci": [wer - 1, wer + 1],
                "split": "test",
            }
        )
    written = write_plots(rows, tmp_path / "plots")
    assert [path.name for path in written] == [
        "wer_vs_params.png",
        "wer_vs_gflops.png",
        "wer_vs_rtfx.png",
        "learning_curves.png",
    ]
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
        "learning_curves.png",
        "wer_vs_gflops.png",
        "wer_vs_params.png",
        "wer_vs_rtfx.png",
    ]


def _visible_tick_labels(axes, renderer) -> list:
    labels = axes.get_xticklabels() + axes.xaxis.get_minorticklabels()
    low, high = axes.get_xlim()
    return [
        label
        for label in labels
        if label.get_visible() and label.get_text() and min(low, high) <= label.get_position()[0] <= max(low, high)
    ]


@pytest.mark.parametrize(
    "rtfx",
    [(310.0, 420.0, 560.0), (150.0, 480.0, 900.0), (200.0, 900.0, 3000.0), (120.0, 2500.0, 90000.0), (50.0, 3e4, 4e6)],
    ids=["within-a-decade", "most-of-a-decade", "over-a-decade", "three-decades", "five-decades"],
)
def test_speed_plot_ticks_do_not_overlap_and_labels_stay_inside(rtfx):
    """Regression (issue 15.11): on a narrow log range the tick labels overlapped (matplotlib labels
    the minor ticks 2x10^2 ... 9x10^2), and labels of points at the right edge were clipped."""
    from asrbench.studies.plots import _pyplot, _scatter

    plt = _pyplot()
    rows = [
        {"run": name, "model": name, "rtfx": x, "wer": wer, "wer_ci": [wer - 1, wer + 1]}
        for name, x, wer in zip(
            ("conformer_aed_long", "transformer_aed", "crdnn_rightmost"), rtfx, (10, 12, 9), strict=True
        )
    ]
    figure = _scatter(plt, rows, "rtfx", "RTFx", True, True, "narrow")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    boxes = sorted(
        (label.get_window_extent(renderer) for label in _visible_tick_labels(axes, renderer)), key=lambda box: box.x0
    )
    assert len(boxes) >= 2, "the x axis needs at least two labelled ticks"
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert left.x1 <= right.x0, f"tick labels overlap: {left} and {right}"
    inside = axes.get_window_extent(renderer)
    for text in axes.texts:
        box = text.get_window_extent(renderer)
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, f"label '{text.get_text()}' leaves the axes"
    plt.close(figure)


def test_plots_get_the_usual_file_permissions(tmp_path: Path):
    """Regression (issue 15.11): PNGs were written with mode 0600 (mkstemp without a chmod)."""
    import os

    rows = [{"run": str(tmp_path / "none"), "model": "a", "params": 1e5, "wer": 10.0, "rtfx": 300.0}]
    umask = os.umask(0)
    os.umask(umask)
    written = write_plots(rows, tmp_path / "plots")
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, oct(path.stat().st_mode)


def test_the_speed_plot_uses_the_end_to_end_rtfx_only_when_every_scored_run_has_it():
    """Issue 30: the leaderboard's RTFx (features included) where every run records it; runs decoded
    before it have only the network + search RTFx, and one axis never mixes the two."""
    both = [
        {"run": "a", "wer": 5.0, "rtfx": 300.0, "rtfx_end_to_end": 250.0},
        {"run": "b", "wer": 7.0, "rtfx": 100.0, "rtfx_end_to_end": 90.0},
        {"run": "unscored", "wer": None, "rtfx": 10.0},  # no WER: not drawn, not asked for
    ]
    key, label = rtfx_axis(both)
    assert key == "rtfx_end_to_end" and "features" in label
    older = [*both, {"run": "c", "wer": 6.0, "rtfx": 200.0, "rtfx_end_to_end": None}]
    key, label = rtfx_axis(older)
    assert key == "rtfx" and "cached" in label
    assert rtfx_axis([])[0] == "rtfx"
