"""The benchmark suite (`make bench`): run every benchmark script, one table against the targets.

    python benchmarks/run_all.py [--only NAME,...] [--skip NAME,...] [--list]

Each script runs in its own process (so timings and memory do not leak between them), prints
one JSON line and appends it to ``benchmarks/results/<name>.jsonl``. This collects every figure
(one shape: ``_common.check_figure``) into ``benchmarks/results/latest.json``, plus the
environment, and prints one rich table. A figure a script could not measure is skipped: no value,
its reason in the table and in ``latest.json`` (``skipped`` lists them). A script that fails, or
whose result is not in that shape, is reported as failed (and the exit code is 1); the others still
run, and latest.json is written in every case, with each script's seconds and the suite's wall time.
The scripts run one at a time, except the pairs in ``BESIDE`` (a script whose figure is not a time,
beside one that mostly waits), which start together.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

from _common import RESULTS, ROOT, check_figures, environment

from asrbench.errors import excerpt

# name -> script and arguments; sized so that the whole suite takes <= 15 minutes on 2 cores.
# decode_bench decodes real emissions of the AN4 Conformer when its run dir exists (docs/benchmarks.md),
# synthetic AN4-shaped ones otherwise (its JSON says which).
AN4_RUN = ROOT / "runs" / "final" / "an4" / "conformer"
# transducer_bench decodes with the trained AN4 conformer_transducer when its run dir exists, with the
# untrained model otherwise (its decoding figures then say "untrained model").
AN4_TRANSDUCER_RUN = ROOT / "runs" / "final" / "an4" / "conformer_transducer"
AN4_RECIPE = "asrbench/recipe/an4.yaml"
# sherpa_bench compares sherpa-onnx with asrbench on the AN4 models trained with features.preset sherpa
# (results/an4/RESULTS.md has their commands); without them it records why it measured nothing.
AN4_SHERPA_RUNS = [ROOT / "runs" / "final" / "an4" / f"{name}_sherpa" for name in ("conformer", "conformer_transducer")]
SUITE: dict[str, list[str]] = {
    "bootstrap_speed": ["bootstrap_speed.py"],
    "feature_speed": ["feature_speed.py", "--data", "data/an4"],
    # Each timed pass about 6 s: the recurrent models on fewer than 30 batches (trainer_bench's docstring).
    "trainer_bench": [
        "trainer_bench.py",
        "--recipe",
        AN4_RECIPE,
        "--steps",
        "30",
        "--repeat",
        "2",
        "--pass-seconds",
        "6",
    ],
    "decode_bench": ["decode_bench.py", "--threads", "1"] + (["--run", str(AN4_RUN)] if AN4_RUN.is_dir() else []),
    # The loss figures over 6 batches spread evenly over the epoch's joint sizes (their median is still
    # a median batch): the loss passes were most of its time with 10, for a figure of 0.44 against 2.
    "transducer_bench": ["transducer_bench.py", "--recipe", AN4_RECIPE, "--batches", "6", "--repeat", "2"]
    + (["--run", str(AN4_TRANSDUCER_RUN)] if AN4_TRANSDUCER_RUN.is_dir() else []),
    # Two models at a time, each in its own process: its figures are per-process memory, not time;
    # growth from the end of epoch 1 to the end of epoch 3 (stricter than from epoch 2: it includes
    # the allocator's warm-up in epoch 2).
    "memory_bench": [
        "memory_bench.py",
        "--recipe",
        AN4_RECIPE,
        "--max-utterances",
        "100",
        "--epochs",
        "3",
        "--growth-from",
        "1",
        "--jobs",
        "2",
    ],
    "ddp_bench": ["ddp_bench.py", "--recipe", AN4_RECIPE, "--model", "cnn", "--batches", "40"],
    # Issue 30's encoders against the conformer at the AN4 recipe's equal sizes (3.0M): FastConformer's
    # training steps/s and RTFx, Zipformer's GFLOPs/s.
    "encoder_speed": ["encoder_speed.py", "--models", "conformer,fast_conformer,zipformer", "--steps", "8"],
    "setup_time": ["setup_time.py"],
    # onnxruntime against PyTorch eager (speed), and with the trained AN4 Conformer parity on AN4 test too.
    "export_bench": ["export_bench.py", "--repeat", "2"] + ([str(AN4_RUN)] if AN4_RUN.is_dir() else []),
    "sherpa_bench": ["sherpa_bench.py", "--threads", "1"] + [str(run) for run in AN4_SHERPA_RUNS if run.is_dir()],
    # 1 and 10 h here (the 100 h size takes ~17 GB of disk and ~10 minutes: run it by hand, see
    # docs/benchmarks.md); the ratios' targets are for the largest size measured.
    "scale_bench": ["scale_bench.py", "--hours", "1,10", "--repeat", "2"],
}
# name -> the benchmark it runs beside, started together: setup_time mostly waits on the package
# registry, and memory_bench measures memory, not time, so neither figure is one the other can
# flatter (setup_time's wall time can only grow). Everything else runs alone.
BESIDE = {"setup_time": "memory_bench"}


def start(command: list[str]) -> dict:
    """A benchmark script started in its own process; a thread collects its output and the moment
    it ends, so that a script run beside another has its own wall time."""
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / command[0]), *command[1:]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started: dict = {"process": process}

    def collect() -> None:
        started["stdout"], started["stderr"] = process.communicate()
        started["seconds"] = time.perf_counter() - began

    started["thread"] = threading.Thread(target=collect, daemon=True)
    started["thread"].start()
    return started


def finish(name: str, started: dict) -> tuple[dict | None, float, str]:
    """Wait for a started benchmark; -> (its result line, its wall seconds, an error or "")."""
    started["thread"].join()
    process, stdout, stderr, seconds = started["process"], started["stdout"], started["stderr"], started["seconds"]
    line = None
    for text in reversed(stdout.splitlines()):
        if text.startswith("{"):
            try:
                candidate = json.loads(text)
            except json.JSONDecodeError:
                continue
            if candidate.get("benchmark") == name:
                line = candidate
                break
    error = "" if process.returncode == 0 and line else (stderr.strip().splitlines() or ["no result"])[-1]
    return line, seconds, error


def run(name: str, command: list[str]) -> tuple[dict | None, float, str]:
    return finish(name, start(command))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="Comma-separated benchmark names.")
    parser.add_argument("--skip", default="", help="Comma-separated benchmark names.")
    parser.add_argument("--list", action="store_true", help="List the benchmarks and exit.")
    args = parser.parse_args()
    if args.list:
        for name, command in SUITE.items():
            print(name, " ".join(command))
        return
    only = {n for n in args.only.split(",") if n}
    skip = {n for n in args.skip.split(",") if n}
    unknown = (only | skip) - set(SUITE)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))} (valid: {', '.join(SUITE)})")

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=140)
    latest: dict = {"figures": {}, "skipped": [], "benchmarks": {}, "environment": environment()}
    failed = False
    selected = [name for name in SUITE if not (only and name not in only) and name not in skip]
    wall = time.perf_counter()
    for name in selected:
        if BESIDE.get(name) in selected:
            continue  # runs beside its host, below
        partners = [other for other, host in BESIDE.items() if host == name and other in selected]
        for other in partners:
            console.print(f"[bold]{other}[/bold] (beside {name}): {' '.join(SUITE[other])}")
        beside = {other: start(SUITE[other]) for other in partners}
        console.print(f"[bold]{name}[/bold]: {' '.join(SUITE[name])}")
        results = {name: run(name, SUITE[name])}
        results.update({other: finish(other, started) for other, started in beside.items()})
        for done, (line, seconds, error) in results.items():
            if not error:
                try:
                    check_figures(line.get("figures"))
                except ValueError as err:  # not through _common.record: its figures are not read
                    error = f"malformed result: {err}"
            latest["benchmarks"][done] = {"seconds": seconds, "ok": not error, "error": error or None}
            if done in BESIDE:
                latest["benchmarks"][done]["beside"] = BESIDE[done]
            if error:
                failed = True
                console.print(f"[red]failed[/red] ({done}): {error}", soft_wrap=True, highlight=False)
                continue
            for figure_name, figure in line["figures"].items():
                latest["figures"][figure_name] = {"benchmark": done, **figure}
                if figure["value"] is None:
                    latest["skipped"].append(figure_name)
    latest["wall_seconds"] = time.perf_counter() - wall

    table = Table(title="asrbench benchmarks")
    for column in ("benchmark", "figure", "value", "target", "unit", "met"):
        table.add_column(column, justify="right" if column in ("value", "target") else "left")
    for figure_name, figure in latest["figures"].items():
        value = figure["value"]
        shown = "-" if value is None else f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
        sign = "≥" if figure["better"] == "higher" else "≤"
        met = (
            f"[yellow]skipped: {escape(figure['skipped_reason'])}[/yellow]"
            if value is None
            else "[green]yes[/green]"
            if figure["ok"]
            else "[red]no[/red]"
        )
        table.add_row(figure["benchmark"], figure_name, shown, f"{sign} {figure['target']:,.3g}", figure["unit"], met)
    for name, info in latest["benchmarks"].items():
        if info["error"]:
            table.add_row(name, "(failed)", "-", "-", "", f"[red]{escape(excerpt(info['error'], 120))}[/red]")
    console.print(table)
    if latest["skipped"]:
        count = len(latest["skipped"])
        console.print(f"{count} figure{'s' * (count != 1)} skipped (not measured here; the reasons above)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(latest, indent=2) + "\n")
    minutes = latest["wall_seconds"] / 60
    console.print(f"{len(latest['benchmarks'])} benchmarks in {minutes:.1f} min; wrote {RESULTS / 'latest.json'}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
