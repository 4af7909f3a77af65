"""Equal-budget sweeps: train, decode and compare many models (and seeds) from one recipe.

Every run shares the recipe's data, features, tokenizer and augmentation; ``budget_minutes`` or
``epochs`` is applied to every model alike, on top of the recipe's per-model options. A sweep is
resumable: finished runs are skipped, an interrupted one resumes from its last checkpoint, and
decode results are reused while they belong to the run's current checkpoint.

Layout: ``<out>/<model>/seed<k>/`` run dirs, then ``<out>/bench.json`` (every run and the
per-model mean ± standard deviation over seeds) and ``<out>/bench.md``.

Statistics across architectures sample what varies: the test set's speakers (utterances where
speakers are unknown) and each model's training seeds. The hierarchical bootstrap
(:func:`asrbench.scoring.stats.compare_seeded_systems`) resamples both for each model's WER
interval and every pair's t test, Holm-corrected over the comparisons with the best
(docs/statistics.md); sign tests are on seed-averaged per-utterance errors.

``jobs`` > 1 trains that many runs at once in worker processes (give each one thread with
``--set train.num_threads=1`` on a CPU); ``executor="ray"`` runs each run as a Ray task on a
cluster (:mod:`asrbench.studies.ray_executor`). The table does not depend on either.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import statistics
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

from asrbench import fileio
from asrbench.data.manifest import require_prepared
from asrbench.decoding.decode import decode
from asrbench.decoding.result import DecodeResult, load_result, result_path, write_result
from asrbench.env import CORES_VARIABLE, available_cores
from asrbench.errors import AsrbenchError
from asrbench.models import MODELS
from asrbench.progress import console, progress_bar
from asrbench.recipe.config import load_yaml, recipe_models, resolve
from asrbench.runs import rundir
from asrbench.scoring import stats
from asrbench.studies import ray_executor
from asrbench.studies.compare import BEST, MARKS, NOT_WORSE, WORSE, read_utterance_errors
from asrbench.training.start import TrainValues
from asrbench.training.trainer import train

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


def _decoded(run_dir: Path, split: str) -> DecodeResult | None:
    """The split's result when it was decoded from the run's current best checkpoint."""
    path = result_path(run_dir, split)
    if not path.is_file():
        return None
    result = load_result(path)
    best = run_dir / rundir.BEST
    if result.checkpoint_mtime not in (None, best.stat().st_mtime):
        return None
    return result


def _mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), (statistics.stdev(present) if len(present) > 1 else 0.0)


def summarize(runs: list[dict]) -> list[dict]:
    """Per model: mean and standard deviation over seeds of every numeric column."""
    by_model: dict[str, list[dict]] = {}
    for run in runs:
        by_model.setdefault(run["model"], []).append(run)
    rows = []
    for model, group in by_model.items():
        row = {"model": model, "seeds": len(group)}
        for key in (
            "wer",
            "cer",
            "dev_wer",
            "dev_test_gap",
            "params",
            "train_seconds",
            "epochs",
            "rtfx",
            "peak_memory_mb",
        ):
            row[key], row[f"{key}_sd"] = _mean_sd([run.get(key) for run in group])
        rows.append(row)
    return sorted(rows, key=lambda row: (row["wer"] is None, row["wer"]))


def add_statistics(
    rows: list[dict],
    runs: list[dict],
    resamples: int = stats.DEFAULT_RESAMPLES,
    alpha: float = stats.DEFAULT_ALPHA,
    seed: int = 0,
    resample: str = "auto",
) -> list[dict]:
    """Per-model WER CI and pairwise tests with every seed in them (see module doc).

    Adds ``wer_ci``, ``pooled_wer``, ``vs_best`` and ``statistics`` to each row and returns the pairs
    (each once). Units are speakers where every test utterance has one (``resample`` auto), else
    utterances; each model's seeds are resampled too (stats.compare_seeded_systems). Models whose
    runs were not all decoded on the same test utterances are left out.
    """
    per_model: dict[str, list] = {}
    for run in runs:
        per_model.setdefault(run["model"], []).append(
            read_utterance_errors(Path(run["run"]) / "decode" / "test" / "hypotheses.jsonl")
        )
    seeded: dict[str, np.ndarray] = {}
    key, words = None, None
    speakers: set[tuple | None] = set()
    for model, found in per_model.items():
        if any(item is None for item in found) or len({item[0] for item in found}) != 1:
            continue
        if key is None:
            key, words = found[0][0], found[0][2]
        if found[0][0] != key:
            continue
        seeded[model] = np.stack([item[1] for item in found])
        speakers.update(item[3] for item in found)
    for row in rows:
        row.setdefault("wer_ci", None), row.setdefault("pooled_wer", None), row.setdefault("vs_best", None)
    if not seeded or words is None or not words.sum() > 0:  # no reference words: nothing to compare (WER undefined)
        return []
    labels = speakers.pop() if len(speakers) == 1 else None
    groups = labels if labels is not None and resample != "utterance" and len(set(labels)) >= 2 else None
    names = list(seeded)
    comparison = stats.compare_seeded_systems(
        [seeded[name] for name in names], words, names, resamples, alpha=alpha, seed=seed, groups=groups
    )
    by_name = {system.name: system for system in comparison.systems}
    for row in rows:
        system = by_name.get(row["model"])
        if system is None:
            continue
        row["pooled_wer"], row["wer_ci"] = system.rate, system.ci
        row["vs_best"] = BEST if system.best else NOT_WORSE if system.not_significantly_worse else WORSE
        row["statistics"] = {
            "resample": comparison.resample,
            "speakers": comparison.speakers,
            "seeds": int(seeded[row["model"]].shape[0]),
            "test": "hierarchical bootstrap t test (units and seeds)",
            "correction": comparison.correction,
            "alpha": alpha,
            "p_value": system.p_value,
            "p_adjusted": system.p_adjusted,
            "mdd": comparison.mdd,
        }
    return [
        {
            "a": pair.a,
            "b": pair.b,
            "p_a_better": pair.p_a_better,
            "sign_p": pair.sign_p,
            "a_better_utterances": pair.a_better_utterances,
            "b_better_utterances": pair.b_better_utterances,
            "mp_p": pair.mp_p,  # the hierarchical test's p-value (stats.seeded_p)
            "mp_z": pair.mp_z,
        }
        for pair in comparison.pairs
    ]


def _format(mean, sd, digits: int = 2) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd else f"{mean:.{digits}f}"


def _ci(row: dict) -> str:
    ci = row.get("wer_ci")
    return f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "-"


def markdown(rows: list[dict], pairs: list[dict] | None = None) -> str:
    """The summary table, then (with ``pairs``) the pairwise matched-pairs p-values and a legend."""
    header = (
        "| model | seeds | test WER % | 95% CI | ≈best | test CER % | dev WER % | dev-test gap | params "
        "| train s | epochs | RTFx | peak MB |"
    )
    lines = [header, "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        params = f"{row['params'] / 1e6:.2f}M" if row["params"] else "-"
        wer = "n/a" if row["wer"] is None else _format(row["wer"], row["wer_sd"])  # n/a: no reference words
        cells = [row["model"], str(row["seeds"]), wer, _ci(row), MARKS.get(row.get("vs_best") or "", "-")]
        cells += [_format(row[key], row[f"{key}_sd"]) for key in ("cer", "dev_wer", "dev_test_gap")]
        cells += [params] + [
            _format(row[key], row[f"{key}_sd"], digits)
            for key, digits in (("train_seconds", 0), ("epochs", 1), ("rtfx", 0), ("peak_memory_mb", 0))
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if pairs:
        names = [row["model"] for row in rows if row.get("wer_ci")]
        lookup = {}
        for pair in pairs:
            lookup[(pair["a"], pair["b"])] = (pair["mp_p"], pair["p_a_better"])
            lookup[(pair["b"], pair["a"])] = (pair["mp_p"], 1.0 - pair["p_a_better"])
        lines += [
            "",
            "Pairwise tests, seeds and test units resampled together: the hierarchical bootstrap t "
            "test's p-value / the share of resamples in which the row model is better than the column model.",
            "",
            "| | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for a in names:
            cells = ["-" if a == b else f"{lookup[(a, b)][0]:.3f} / {lookup[(a, b)][1]:.2f}" for b in names]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        described = next((row["statistics"] for row in rows if row.get("statistics")), None)
        unit = "utterances"
        if described and described["resample"] == "speaker":
            unit = f"speakers ({described['speakers']} on the test set)"
        mdd = described.get("mdd") if described else None
        lines += [
            "",
            f"95% CI: hierarchical bootstrap over test {unit} and each model's seeds (log-t interval). "
            "≈best: 'best' is the lowest pooled WER, 'yes' a model not significantly worse than it "
            "(that bootstrap's t test, α = 0.05, Holm-corrected over the comparisons with the best), "
            "'no' one that is."
            + (
                f" Differences under {mdd:.2f} WER points cannot be told apart on this test set (80% power)."
                if mdd is not None and np.isfinite(mdd)
                else ""
            ),
        ]
    return "\n".join(lines) + "\n"


def _run_one(
    recipe: str,
    name: str,
    run_dir: str,
    data_dir: str | None,
    extra: list[str],
    epochs: int | None,
    budget_minutes: float | None,
    seed: int,
    threads: int,
    target_params: int | None,
    quiet: bool,
) -> str:
    """Train (or resume) one run, then decode dev and test; in a worker process when ``jobs`` > 1.
    ``threads`` (``--threads``, 0: not given) reaches the trainer as a typed value, train.num_threads;
    ``target_params`` (``--target-params``) as model.target_params of a new run (a resumed one has it)."""
    if quiet:
        os.environ["ASRBENCH_NO_PROGRESS"] = "1"
    run_path = Path(run_dir)
    if (run_path / rundir.SUMMARY).is_file():
        pass
    elif (run_path / rundir.CONFIG).is_file():
        train(None, None, run_path, resume=True, values=TrainValues(num_threads=threads or None))
    else:
        values = TrainValues(num_threads=threads or None, target_params=target_params)
        train(
            recipe, name, run_path, data_dir, extra, epochs=epochs, max_minutes=budget_minutes, seed=seed, values=values
        )
    for split in SPLITS:
        _decode_split(run_path, split)
    return str(run_path)


def _decode_split(run_dir: Path, split: str) -> DecodeResult:
    result = _decoded(run_dir, split)
    if result is None:
        result = decode(run_dir, split).with_checkpoint_mtime((run_dir / rundir.BEST).stat().st_mtime)
        write_result(result_path(run_dir, split), result)
    return result


@contextlib.contextmanager
def _environment(**values: str):
    """Set environment variables (inherited by processes started meanwhile), then restore them."""
    previous = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries; [] without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    return listed[: torch.cuda.device_count()] if listed else [str(i) for i in range(torch.cuda.device_count())]


def _claim_gpu(counter, gpus: list[str]) -> None:
    """Pool initializer: the i-th worker process trains on ``gpus[i % len(gpus)]``.

    It runs before the worker's first CUDA call (torch reads ``CUDA_VISIBLE_DEVICES`` then), so
    each job sees its one GPU as ``cuda:0`` and J jobs fan out round-robin over the GPUs.
    """
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]


def _worker_pool(jobs: int, context, gpus: list[str]) -> ProcessPoolExecutor:
    """``jobs`` spawned workers; with GPUs, each claims one of ``gpus`` as it starts (_claim_gpu)."""
    if gpus:
        return ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_claim_gpu, initargs=(context.Value("i", 0), gpus)
        )
    return ProcessPoolExecutor(max_workers=jobs, mp_context=context)


def _run_parallel(tasks: list[tuple], jobs: int) -> None:
    """Run ``_run_one`` tasks in ``jobs`` worker processes with one progress bar over the runs."""
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    # Each job sizes its automatic data-loader workers (train.data_workers = -1) on its share of
    # the cores, not on all of them: see asrbench.training.trainer.loader_workers.
    share = max(available_cores() // jobs, 1)
    gpus = visible_gpus()
    if gpus:
        console.print(f"bench: {jobs} jobs over {len(gpus)} GPU{'s' * (len(gpus) > 1)} ({', '.join(gpus)})")
    with (
        _environment(**{CORES_VARIABLE: str(share)}),
        _worker_pool(jobs, context, gpus) as pool,
        progress_bar("last") as progress,
    ):
        bar = progress.add_task(f"bench ({jobs} jobs)", total=len(tasks), last="-")
        pending = {pool.submit(_run_one, *(*task, True)): task for task in tasks}  # quiet=True
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    task = pending.pop(future)
                    future.result()  # a failed run stops the sweep with its own error
                    console.print(f"{task[2]}: done")
                    progress.update(bar, advance=1, last=f"{task[1]} seed {task[7]}")
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _run_row(run_dir: Path, name: str, seed: int) -> dict:
    """One trained run's row of bench.json: its dev and test decodes, training figures and config hash."""
    results = {split: _decode_split(run_dir, split) for split in SPLITS}
    summary = rundir.read_json(run_dir / rundir.SUMMARY)
    test, dev = results["test"], results["dev"]
    return {
        "run": str(run_dir),
        "model": name,
        "seed": seed,
        "wer": test.wer,
        "cer": test.cer,
        "dev_wer": dev.wer,
        "dev_cer": dev.cer,
        "dev_test_gap": None if test.wer is None or dev.wer is None else test.wer - dev.wer,
        "params": test.params,
        "train_seconds": summary.get("train_seconds"),
        "epochs": summary.get("epochs"),
        "stop_reason": summary.get("stop_reason"),
        "rtfx": test.rtfx,
        "rtfx_conditions": {
            "batch_frames": test.decoder.batch_frames if test.decoder else None,
            "threads": test.decoder.threads if test.decoder else None,
            "device": test.device,
        },
        "peak_memory_mb": (summary.get("peak_memory") or {}).get("mb"),
        "peak_memory_kind": (summary.get("peak_memory") or {}).get("kind"),
        "config_hash": test.config_hash,
    }


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
    jobs: int = 1,
    executor: str = "local",
    address: str = "local",
    gpus_per_run: float = 0.0,
    threads: int = 0,
    target_params: int | None = None,
) -> dict:
    """Run (or resume) the sweep and write ``bench.json`` and ``bench.md``; returns the summary.
    ``threads``: torch threads of each run (``--threads``; 0 keeps the recipe's train.num_threads);
    ``target_params``: every model sized to this many parameters (``--target-params``, model.target_params)."""
    if seeds < 1:
        raise AsrbenchError(f"--seeds must be at least 1, not {seeds}")
    if jobs < 1:
        raise AsrbenchError(f"--jobs must be at least 1, not {jobs}")
    if budget_minutes is not None and epochs is not None:
        raise AsrbenchError("give --max-minutes or --epochs, not both")
    names = select_models(recipe, models)
    if data_dir is not None:
        require_prepared(data_dir, ("train", *SPLITS), "--data")  # a named data dir is never prepared on the fly
    out = Path(out or Path("runs") / "bench" / Path(recipe).stem)
    extra = list(overrides or [])
    if target_params:  # a size some model cannot reach fails now, not after the models before it trained
        for name in names:
            TrainValues(target_params=target_params).apply(resolve(recipe, name, extra))
    plan = [
        (name, seed, out / name / f"seed{seed}") for name in names for seed in range(first_seed, first_seed + seeds)
    ]
    tasks = []
    for name, seed, run_dir in plan:
        if (run_dir / rundir.SUMMARY).is_file():
            console.print(f"[dim]{run_dir}: trained, skipped[/dim]")
        elif (run_dir / rundir.CONFIG).is_file():
            console.print(f"{run_dir}: resuming")
        task = (str(recipe), name, str(run_dir), data_dir, extra, epochs, budget_minutes, seed, threads, target_params)
        tasks.append(task)
    if executor not in EXECUTORS:
        raise AsrbenchError(f"unknown executor '{executor}' (valid: {', '.join(EXECUTORS)})")
    if executor == "ray":
        unfinished = [task for task in tasks if _unfinished(Path(task[2]))]
        if unfinished:
            ray_executor.run_tasks(_run_one, unfinished, address, cpus=threads or _threads(extra), gpus=gpus_per_run)
    elif jobs > 1:
        _run_parallel([task for task in tasks if _unfinished(Path(task[2]))], jobs)
    runs = []
    for task in tasks:
        name, seed, run_dir = task[1], task[7], Path(task[2])
        if _unfinished(run_dir):
            _run_one(*task, False)
        runs.append(_run_row(run_dir, name, seed))
    rows = summarize(runs)
    pairs = add_statistics(rows, runs)
    report = {
        "recipe": str(recipe),
        "models": names,
        "seeds": seeds,
        "first_seed": first_seed,
        "budget_minutes": budget_minutes,
        "epochs": epochs,
        "jobs": jobs,
        "executor": executor,
        "overrides": extra,
        "threads": threads or None,
        "target_params": target_params,
        "runs": runs,
        "summary": rows,
        "pairs": pairs,
    }
    report["too_close"] = too_close(rows)
    if report["too_close"]:
        console.print(f"[yellow]note[/yellow]: {report['too_close']}", soft_wrap=True)
    fileio.write_text(out / "bench.json", json.dumps(report, indent=2) + "\n")
    fileio.write_text(out / "bench.md", markdown(rows, pairs))
    return report


def too_close(rows: list[dict]) -> str | None:
    """A warning when the test set is too small for the question: models within the minimum detectable
    difference of the best, which the paired test cannot tell from it (None when there are none)."""
    scored = [row for row in rows if row.get("statistics") and row.get("pooled_wer") is not None]
    best = next((row for row in scored if row.get("vs_best") == BEST), None)
    mdd = best["statistics"].get("mdd") if best else None
    if best is None or mdd is None or not np.isfinite(mdd):
        return None
    close = [row["model"] for row in scored if row is not best and row["pooled_wer"] - best["pooled_wer"] < mdd]
    if not close:
        return None
    return (
        f"differences under {mdd:.2f} WER points cannot be told apart on this test set (80% power at α = 0.05), "
        f"and {', '.join(close)} {'is' if len(close) == 1 else 'are'} within that of {best['model']}: a larger "
        "test set (more speakers) or more seeds would be needed to rank them"
    )


EXECUTORS = ("local", "ray")


def _threads(overrides: list[str]) -> int:
    """The CPUs one run asks for: its train.num_threads override (1 without one)."""
    values = [text.split("=", 1)[1] for text in overrides if text.split("=", 1)[0].strip() == "train.num_threads"]
    try:
        return max(1, int(values[-1])) if values else 1
    except ValueError:
        raise AsrbenchError(f"--set train.num_threads={values[-1]}: expected a whole number") from None


def _unfinished(run_dir: Path) -> bool:
    """Whether the run still needs training or a decode of its current checkpoint."""
    if not (run_dir / rundir.SUMMARY).is_file() or not (run_dir / rundir.BEST).is_file():
        return True
    return any(_decoded(run_dir, split) is None for split in SPLITS)
