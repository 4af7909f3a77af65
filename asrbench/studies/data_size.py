"""``asrbench study data RECIPE``: a data-scaling curve, test WER against hours of training audio.

It is ``bench`` with one more axis: for each fraction of train, every model and seed is trained
on the same nested subset (``data.train_fraction`` with ``data.subset_seed``: the first utterances
of one fixed permutation, so 10% is inside 25%, inside 50%), under the recipe's budget rule (or
``--max-minutes`` / ``--epochs`` for all), then decoded on dev and test. Each fraction is one
``bench`` sweep dir under ``out``, so the study resumes where it stopped, run by run.

Output: per (model, fraction) the mean and spread over seeds of test WER, with the hours trained
on; ``study.json``, ``study.md`` and ``wer_vs_hours.png`` (log hours, one line per model, the seeds'
range as a band).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from asrbench.errors import AsrbenchError
from asrbench.runs import rundir
from asrbench.scoring import metrics
from asrbench.studies.bench import bench
from asrbench.studies.length import write_files


def parse_fractions(text: str) -> list[float]:
    try:
        fractions = [float(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise AsrbenchError(f"--fractions '{text}': give shares of train in (0, 1], e.g. 0.1,0.25,0.5,1.0") from None
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions) or len(set(fractions)) != len(fractions):
        raise AsrbenchError(f"--fractions '{text}': give distinct shares of train in (0, 1], e.g. 0.1,0.25,0.5,1.0")
    return sorted(fractions)


def data_study(
    recipe: str | Path,
    models: str = "all",
    fractions: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    seeds: int = 1,
    out: str | Path | None = None,
    budget_minutes: float | None = None,
    epochs: int | None = None,
    data_dir: str | None = None,
    overrides: list[str] | None = None,
    subset_seed: int = 0,
    jobs: int = 1,
    executor: str = "local",
    address: str = "local",
    gpus_per_run: float = 0.0,
    threads: int = 0,
) -> dict:
    """Run (or resume) one ``bench`` sweep per fraction; returns and writes the study."""
    out = Path(out or Path("runs") / "study_data" / Path(recipe).stem)
    extra = list(overrides or [])
    if any(text.split("=", 1)[0].strip() in ("data.train_fraction", "data.subset_seed") for text in extra):
        raise AsrbenchError(
            "--set data.train_fraction / data.subset_seed: the study sets them (use --fractions, --subset-seed)"
        )
    runs = []
    for fraction in fractions:
        sweep = out / f"fraction{fraction:g}"
        report = bench(
            recipe,
            models,
            seeds,
            sweep,
            budget_minutes,
            epochs,
            data_dir,
            [*extra, f"data.train_fraction={fraction!r}", f"data.subset_seed={subset_seed}"],
            0,
            jobs,
            executor,
            address,
            gpus_per_run,
            threads,
        )
        for run in report["runs"]:
            summary = rundir.read_json(Path(run["run"]) / rundir.SUMMARY)
            runs.append(
                {
                    "model": run["model"],
                    "fraction": fraction,
                    "seed": run["seed"],
                    "run": run["run"],
                    "train_hours": summary.get("train_hours"),
                    "wer": run["wer"],
                    "cer": run["cer"],
                    "dev_wer": run["dev_wer"],
                    "train_seconds": run["train_seconds"],
                    "epochs": run["epochs"],
                    "config_hash": run["config_hash"],
                }
            )
    study = {
        "kind": "data",
        "recipe": str(recipe),
        "fractions": list(fractions),
        "seeds": seeds,
        "subset_seed": subset_seed,
        "budget_minutes": budget_minutes,
        "epochs": epochs,
        "overrides": extra,
        "runs": runs,
        "summary": summarize(runs),
    }
    write_study(study, out)
    return study


def summarize(runs: list[dict]) -> list[dict]:
    """Per (model, fraction): hours, and test WER's mean, standard deviation, min and max over seeds."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["model"], run["fraction"]), []).append(run)
    rows = []
    for (model, fraction), group in groups.items():
        wers = [run["wer"] for run in group if run["wer"] is not None]
        hours = [run["train_hours"] for run in group if run["train_hours"] is not None]
        rows.append(
            {
                "model": model,
                "fraction": fraction,
                "seeds": len(group),
                "train_hours": float(np.mean(hours)) if hours else None,
                "wer": float(np.mean(wers)) if wers else None,
                "wer_sd": float(np.std(wers, ddof=1)) if len(wers) > 1 else None,
                "wer_min": min(wers) if wers else None,
                "wer_max": max(wers) if wers else None,
            }
        )
    return sorted(rows, key=lambda row: (row["model"], row["fraction"]))


def markdown(study: dict) -> str:
    lines = [
        "| model | fraction | hours | seeds | test WER % (mean) | sd | min–max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in study["summary"]:
        hours = "-" if row["train_hours"] is None else f"{row['train_hours']:.3f}"
        spread = "-" if row["wer_min"] is None else f"{row['wer_min']:.2f}–{row['wer_max']:.2f}"
        sd = "-" if row["wer_sd"] is None else f"{row['wer_sd']:.2f}"
        lines.append(
            f"| {row['model']} | {row['fraction']:g} | {hours} | {row['seeds']} | "
            f"{metrics.format_rate(row['wer'])} | {sd} | {spread} |"
        )
    return "\n".join(lines) + "\n"


def plot_data(study: dict, path: Path) -> Path:
    """Test WER against training hours (log x), one line per model, the seeds' min-max as a band."""
    from asrbench.studies.plots import _pyplot, _save  # matplotlib is the plot extra's: imported when plotting

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.2))
    for model in dict.fromkeys(row["model"] for row in study["summary"]):
        rows = [
            row for row in study["summary"] if row["model"] == model and row["wer"] is not None and row["train_hours"]
        ]
        if not rows:
            continue
        hours = [row["train_hours"] for row in rows]
        (line,) = axes.plot(hours, [row["wer"] for row in rows], marker="o", label=model)
        axes.fill_between(
            hours,
            [row["wer_min"] for row in rows],
            [row["wer_max"] for row in rows],
            alpha=0.15,
            color=line.get_color(),
        )
    axes.set_xscale("log")
    axes.set_xlabel("hours of training audio (log)")
    axes.set_ylabel("test WER % (mean over seeds; band: min–max)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    _save(figure, path)
    plt.close(figure)
    return path


def write_study(study: dict, out_dir: Path, plot: bool = True) -> list[Path]:
    """``study.json``, ``study.md`` and (with the plot extra) ``wer_vs_hours.png`` in ``out_dir``."""
    return write_files(study, out_dir, markdown(study), plot_data if plot else None, "wer_vs_hours.png")
