"""Equal-budget sweeps: train, decode and compare many models (and seeds) from one recipe.

Every run shares the recipe's data, features, tokenizer and augmentation; ``budget_minutes`` or
``epochs`` is applied to every model alike, on top of the recipe's per-model options. A sweep is
resumable: finished runs are skipped, an interrupted one resumes from its last checkpoint, and
decode results are reused while they belong to the run's current checkpoint.

Layout: ``<out>/<model>/seed<k>/`` run dirs, then ``<out>/bench.json`` (every run and the
per-model mean ± standard deviation over seeds) and ``<out>/bench.md``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from asrbench import fileio, rundir
from asrbench.config import load_yaml, recipe_models
from asrbench.errors import AsrbenchError
from asrbench.models import MODELS

SPLITS = ("dev", "test")


def select_models(recipe: str | Path, models: str) -> list[str]:
    """``all`` (every model of the recipe) or a comma-separated list, checked against both."""
    available = list(recipe_models(load_yaml(recipe), str(recipe)))
    if not available:
        raise AsrbenchError(f"{recipe}: no 'models' section")
    if models.strip() == "all":
        return [name for name in available if name in MODELS]
    chosen = [name.strip() for name in models.split(",") if name.strip()]
    for name in chosen:
        if name not in MODELS:
            raise AsrbenchError(f"unknown model '{name}' (valid models: {', '.join(MODELS)})")
        if name not in available:
            raise AsrbenchError(f"{recipe}: no section for model '{name}' (recipe has: {', '.join(available)})")
    if not chosen:
        raise AsrbenchError("--models: no model named")
    return chosen


def _decoded(run_dir: Path, split: str) -> dict | None:
    """The split's result when it was decoded from the run's current best checkpoint."""
    path = run_dir / "decode" / split / "result.json"
    if not path.is_file():
        return None
    result = rundir.read_json(path)
    best = run_dir / rundir.BEST
    if result.get("checkpoint_mtime") not in (None, best.stat().st_mtime):
        return None
    return result


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: list[dict]) -> list[dict]:
    """Per model: mean and standard deviation over seeds of every numeric column."""
    by_model: dict[str, list[dict]] = {}
    for run in runs:
        by_model.setdefault(run["model"], []).append(run)
    rows = []
    for model, group in by_model.items():
        row = {"model": model, "seeds": len(group)}
        for key in ("wer", "cer", "dev_wer", "dev_test_gap", "params", "train_seconds", "epochs", "rtfx",
                    "peak_memory_mb"):
            row[key], row[f"{key}_sd"] = _mean_sd([run.get(key) for run in group])
        rows.append(row)
    return sorted(rows, key=lambda row: (row["wer"] is None, row["wer"]))


def _format(mean, sd, digits: int = 2) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd else f"{mean:.{digits}f}"


def markdown(rows: list[dict]) -> str:
    header = ("| model | seeds | test WER % | test CER % | dev WER % | dev-test gap | params | train s | epochs "
              "| RTFx | peak MB |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    columns = (("wer", 2), ("cer", 2), ("dev_wer", 2), ("dev_test_gap", 2))
    for row in rows:
        params = f"{row['params'] / 1e6:.2f}M" if row["params"] else "-"
        cells = [row["model"], str(row["seeds"])] + [_format(row[key], row[f"{key}_sd"], digits)
                                                     for key, digits in columns]
        cells += [params] + [_format(row[key], row[f"{key}_sd"], digits) for key, digits in
                             (("train_seconds", 0), ("epochs", 1), ("rtfx", 0), ("peak_memory_mb", 0))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bench(
    recipe: str | Path,
    models: str = "all",
    seeds: int = 1,
    out: str | Path | None = None,
    budget_minutes: float | None = None,
    epochs: int | None = None,
    data_dir: str | None = None,
    overrides: list[str] | None = None,
    first_seed: int = 0,
) -> dict:
    """Run (or resume) the sweep and write ``bench.json`` and ``bench.md``; returns the summary."""
    from asrbench.decode import decode
    from asrbench.progress import console
    from asrbench.train import train

    if seeds < 1:
        raise AsrbenchError(f"--seeds must be at least 1, not {seeds}")
    if budget_minutes is not None and epochs is not None:
        raise AsrbenchError("give --budget-minutes or --epochs, not both")
    names = select_models(recipe, models)
    out = Path(out or Path("runs") / "bench" / Path(recipe).stem)
    extra = list(overrides or [])
    runs = []
    for name in names:
        for seed in range(first_seed, first_seed + seeds):
            run_dir = out / name / f"seed{seed}"
            if (run_dir / rundir.SUMMARY).is_file():
                console.print(f"[dim]{run_dir}: trained, skipped[/dim]")
            elif (run_dir / rundir.CONFIG).is_file():
                console.print(f"{run_dir}: resuming")
                train(None, None, run_dir, resume=True)
            else:
                train(recipe, name, run_dir, data_dir, extra, epochs=epochs, max_minutes=budget_minutes, seed=seed)
            results = {}
            for split in SPLITS:
                result = _decoded(run_dir, split)
                if result is None:
                    result = decode(run_dir, split)
                    result["checkpoint_mtime"] = (run_dir / rundir.BEST).stat().st_mtime
                    fileio.write_json(run_dir / "decode" / split / "result.json", result)
                results[split] = result
            summary = rundir.read_json(run_dir / rundir.SUMMARY)
            test, dev = results["test"], results["dev"]
            runs.append({
                "run": str(run_dir), "model": name, "seed": seed,
                "wer": test["wer"], "cer": test["cer"], "dev_wer": dev["wer"], "dev_cer": dev["cer"],
                "dev_test_gap": test["wer"] - dev["wer"], "params": test["params"],
                "train_seconds": summary.get("train_seconds"), "epochs": summary.get("epochs"),
                "stop_reason": summary.get("stop_reason"), "rtfx": test["rtfx"],
                "rtfx_conditions": {key: test["decoder"].get(key) for key in ("batch_frames", "threads")}
                | {"device": test["environment"].get("device")},
                "peak_memory_mb": (summary.get("peak_memory") or {}).get("mb"),
                "peak_memory_kind": (summary.get("peak_memory") or {}).get("kind"),
                "config_hash": test.get("config_hash"),
            })
    rows = summarize(runs)
    report = {"recipe": str(recipe), "models": names, "seeds": seeds, "first_seed": first_seed,
              "budget_minutes": budget_minutes, "epochs": epochs, "overrides": extra, "runs": runs, "summary": rows}
    fileio.write_text(out / "bench.json", json.dumps(report, indent=2) + "\n")
    fileio.write_text(out / "bench.md", markdown(rows))
    return report
