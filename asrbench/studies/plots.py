"""PNG figures of a comparison: WER against parameters and against speed (with the Pareto front),
and learning curves (dev CER against epoch and against training time) for every run.

matplotlib is an optional extra (``asrbench[plot]``, installed by ``make setup``); it is imported
only here, with the non-interactive Agg backend, so plotting works on headless machines.
"""

from __future__ import annotations

from pathlib import Path

from asrbench import fileio
from asrbench.errors import AsrbenchError
from asrbench.runs import rundir

# What write_plots writes: WER (with its CI) against size, compute and speed, each with its Pareto front.
FILES = ("wer_vs_params.png", "wer_vs_gflops.png", "wer_vs_rtfx.png", "learning_curves.png")


INSTALL = "pip install 'asrbench[plot]'"


def available() -> bool:
    """Whether matplotlib (the plot extra) is installed: without it a report leaves its plots out."""
    try:
        import matplotlib  # noqa: F401 - only asked whether it imports
    except ImportError:
        return False
    return True


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise AsrbenchError(f"plots need matplotlib: {INSTALL}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_front(points: list[tuple[float, float]], higher_x_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (lower y is better), sorted by x."""
    order = sorted(
        range(len(points)), key=lambda i: (-points[i][0] if higher_x_is_better else points[i][0], points[i][1])
    )
    front, best_y = [], float("inf")
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def _save(figure, path: Path) -> None:
    """Atomically, with the usual file permissions: fileio's temporary file, then a rename."""
    with fileio.atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120, bbox_inches="tight")


def _compact(value: float, _position=None) -> str:
    """Tick labels that stay short: 300, 1.5k, 20k, 3M."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _x_axis(axes, values: list[float], log_x: bool) -> None:
    """A log x axis with short labels (300, 1k, 2k) at a few ticks when the values span a decade or
    more. matplotlib's own log labels collide on narrow ranges (it labels the minor ticks 2x10^2,
    3x10^2, ... side by side); less than a decade is drawn on a linear axis with a few round ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    low, high = min(values), max(values)
    if log_x and low > 0 and high / low >= 10:
        axes.set_xscale("log")
        # Up to three decades: labels at 1, 2 and 5 times each power of ten; beyond, decades only.
        subs = (1.0, 2.0, 5.0) if high / low < 1000 else (1.0,)
        axes.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
        axes.xaxis.set_minor_formatter(NullFormatter())
    else:
        axes.xaxis.set_major_locator(MaxNLocator(nbins=5))
    axes.xaxis.set_major_formatter(FuncFormatter(_compact))
    axes.margins(x=0.08, y=0.1)


def _position(value: float, values: list[float], log_x: bool) -> float:
    """Where ``value`` lies between the smallest and the largest value, 0 to 1 (on the axis' scale)."""
    import math

    low, high = min(values), max(values)
    if log_x and low > 0 and high / low >= 10:
        value, low, high = math.log(value), math.log(low), math.log(high)
    return (value - low) / (high - low) if high > low else 0.0


def _label(row: dict) -> str:
    return row.get("model") or Path(row["run"]).name


def _scatter(plt, rows: list[dict], key: str, xlabel: str, log_x: bool, higher_x_is_better: bool, title: str):
    usable = [row for row in rows if row.get(key) and row.get("wer") is not None]
    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    points = [(float(row[key]), float(row["wer"])) for row in usable]
    xs = [x for x, _ in points] or [1.0]
    for row, (x, y) in zip(usable, points, strict=True):
        axes.scatter(x, y, s=36, zorder=3)
        # Points in the right half are labelled on their left, so no label runs past the right edge.
        right = _position(x, xs, log_x) > 0.5
        axes.annotate(
            _label(row),
            (x, y),
            textcoords="offset points",
            xytext=(-5, 4) if right else (5, 4),
            ha="right" if right else "left",
            fontsize=8,
        )
        low_high = row.get("wer_ci")
        if low_high:
            axes.errorbar(
                x, y, yerr=[[y - low_high[0]], [low_high[1] - y]], fmt="none", ecolor="grey", capsize=3, zorder=2
            )
    if len(points) > 1:
        front = pareto_front(points, higher_x_is_better)
        axes.plot(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            "--",
            color="tab:red",
            label="Pareto front",
            zorder=1,
        )
        axes.legend(fontsize=8)
    _x_axis(axes, xs, log_x)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("test WER % (95% CI where known)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    return figure


def rtfx_axis(rows: list[dict]) -> tuple[str, str]:
    """The speed the RTFx plot draws, and its axis label: the leaderboard's end-to-end RTFx (features,
    network and search) when every run with a WER has it, else the network + search RTFx every run
    has, so that one axis never mixes the two definitions."""
    scored = [row for row in rows if row.get("wer") is not None]
    if scored and all(row.get("rtfx_end_to_end") for row in scored):
        return "rtfx_end_to_end", "RTFx end to end: features + network + search (higher is faster)"
    return "rtfx", "RTFx of network + search, features cached (higher is faster)"


def write_plots(rows: list[dict], out_dir: str | Path) -> list[Path]:
    """rows: ``compare.collect`` output (run, model, params, wer, rtfx, optional wer_ci and
    gflops_per_second); -> the files written, :data:`FILES` in order."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    written = []
    split = rows[0].get("split", "test") if rows else "test"
    figure = _scatter(plt, rows, "params", "parameters", True, False, f"WER vs model size ({split})")
    _save(figure, out_dir / "wer_vs_params.png")
    written.append(out_dir / "wer_vs_params.png")
    plt.close(figure)
    figure = _scatter(
        plt,
        rows,
        "gflops_per_second",
        "forward GFLOPs per second of audio (lower is cheaper)",
        True,
        False,
        f"WER vs compute ({split}; runs decoded before issue 30 have no GFLOPs)",
    )
    _save(figure, out_dir / "wer_vs_gflops.png")
    written.append(out_dir / "wer_vs_gflops.png")
    plt.close(figure)
    key, label = rtfx_axis(rows)
    figure = _scatter(plt, rows, key, label, True, True, f"WER vs decoding speed ({split})")
    _save(figure, out_dir / "wer_vs_rtfx.png")
    written.append(out_dir / "wer_vs_rtfx.png")
    plt.close(figure)

    figure, (by_epoch, by_time) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for row in rows:
        run = Path((row.get("runs") or [row["run"]])[0])  # a system of several seeds: its first run's curve
        metrics_path = run / rundir.METRICS
        if not metrics_path.is_file():
            continue
        metrics = [m for m in rundir.read_metrics(run) if m.get("dev_cer") is not None]
        if not metrics:
            continue
        label = _label(row)
        by_epoch.plot([m["epoch"] for m in metrics], [m["dev_cer"] for m in metrics], label=label)
        by_time.plot([m["train_seconds"] / 60 for m in metrics], [m["dev_cer"] for m in metrics], label=label)
    by_epoch.set_xlabel("epoch")
    by_time.set_xlabel("training wall time (minutes)")
    by_epoch.set_ylabel("dev CER %")
    for axes in (by_epoch, by_time):
        axes.set_yscale("symlog", linthresh=1.0)  # dev CER reaches 0 on small corpora
        axes.grid(True, alpha=0.3)
    if by_time.lines:
        by_time.legend(fontsize=8)
    figure.suptitle("learning curves", fontsize=10)
    _save(figure, out_dir / "learning_curves.png")
    written.append(out_dir / "learning_curves.png")
    plt.close(figure)
    return written
