"""What every benchmark script shares: the environment record, results files and figures.

Each script measures one or more figures, prints one JSON line and appends it to
``benchmarks/results/<name>.jsonl`` with the machine, torch version and git commit, all through
:func:`record`. Every figure has one shape, made by :func:`figure` or :func:`skipped` and checked
by :func:`check_figure` (``run_all.py`` reads nothing else)::

    {"value": float | None, "target": float, "unit": str, "better": "higher" | "lower",
     "ok": bool, "skipped_reason": str | None, **details}

``ok`` says whether the target is met. ``value`` is None exactly when the script could not measure
the figure (no trained run, a missing optional package), and then ``skipped_reason`` says why and
``ok`` is False: a script says what it skipped instead of crashing. Speeds are ratios measured
side by side in one process, because absolute times on a shared machine drift.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))


FIELDS = ("value", "target", "unit", "better", "ok", "skipped_reason")  # every figure has these


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def figure(value: float | None, target: float, unit: str, better: str = "higher", **details) -> dict:
    """One measured figure against its target. A value of None (or NaN) was not measured: the
    figure is skipped, its reason ``skipped_reason=`` or ``note=`` when given."""
    if value is not None and not isinstance(value, bool):
        value = float(value)  # numpy and torch scalars too; anything else is a bug of the script (TypeError)
    reason = details.pop("skipped_reason", None)  # used only when there is no value
    if value is None or not _number(value):
        reason = reason or details.get("note") or ("not measured" if value is None else f"not measured ({value})")
        return skipped(target, unit, reason, better, **details)
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    ok = value >= target if better == "higher" else value <= target
    return {
        "value": float(value),
        "target": float(target),
        "unit": unit,
        "better": better,
        "ok": bool(ok),
        "skipped_reason": None,
        **details,
    }


def skipped(target: float, unit: str, reason: str, better: str = "higher", **details) -> dict:
    """A figure the script could not measure: no value, and the reason (shown in run_all's table)."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    if not reason:
        raise ValueError("a skipped figure says why")
    return {
        "value": None,
        "target": float(target),
        "unit": unit,
        "better": better,
        "ok": False,
        "skipped_reason": str(reason),
        **details,
    }


def check_figure(name: str, figure: object) -> dict:
    """``figure`` if it has the one shape (see the module docstring); else ValueError naming it."""
    if not isinstance(figure, dict) or not set(FIELDS) <= set(figure):
        missing = [key for key in FIELDS if key not in figure] if isinstance(figure, dict) else list(FIELDS)
        raise ValueError(
            f"figure {name!r} is not a figure (no {', '.join(missing)}): make it with figure() or "
            "skipped(), and put settings in record()'s extra"
        )
    value, reason = figure["value"], figure["skipped_reason"]
    if value is None and not (isinstance(reason, str) and reason):
        raise ValueError(f"figure {name!r}: no value and no skipped_reason")
    if value is not None and (not _number(value) or reason is not None):
        raise ValueError(f"figure {name!r}: value {value!r} must be a finite number, with no skipped_reason")
    if (
        not _number(figure["target"])
        or figure["better"] not in ("higher", "lower")
        or not isinstance(figure["ok"], bool)
        or not isinstance(figure["unit"], str)
    ):
        raise ValueError(f"figure {name!r}: target a number, better 'higher' or 'lower', ok a bool, unit a string")
    return figure


def check_figures(figures: object) -> dict:
    """Every figure of a script's result checked (:func:`check_figure`); ValueError at the first bad one."""
    if not isinstance(figures, dict) or not figures:
        raise ValueError("figures: a non-empty dict of name -> figure")
    for name, one in figures.items():
        check_figure(name, one)
    return figures


def environment() -> dict:
    import torch

    from asrbench.env import environment as asrbench_environment

    info = asrbench_environment(torch.device("cpu"))
    info["cpu_count"] = os.cpu_count()
    info["machine"] = info.pop("platform")
    return info


def record(
    name: str,
    figures: dict[str, dict],
    extra: dict | None = None,
    results_dir: Path = RESULTS,
    environment_info: dict | None = None,
) -> dict:
    """Check every figure's shape, then print the result as one JSON line and append it to
    ``results/<name>.jsonl``; ``extra`` holds the settings (run, split, threads...), never figures."""
    check_figures(figures)
    line = {
        "benchmark": name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "figures": figures,
        **(extra or {}),
        "environment": environment() if environment_info is None else environment_info,
    }
    text = json.dumps(line)
    print(text)
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / f"{name}.jsonl", "a", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return line


def best_time(function: Callable[[], object], repeat: int = 3) -> float:
    """The fastest of ``repeat`` wall-clock timings of ``function()`` (seconds)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def set_threads(threads: int) -> int:
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()
