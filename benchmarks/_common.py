"""What every benchmark script shares: the environment record, results files and figures.

Each script measures one or more figures, prints one JSON line and appends it to
``benchmarks/results/<name>.jsonl`` with the machine, torch version and git commit. A figure is
``{"value", "target", "unit", "ok"}``; ``ok`` says whether the target is met (``higher`` or
``lower`` is better). Speeds are ratios measured side by side in one process, because absolute
times on a shared machine drift.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))


def figure(value: float | None, target: float, unit: str, better: str = "higher", **details) -> dict:
    """One measured figure against its target."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
    ok = value is not None and (value >= target if better == "higher" else value <= target)
    return {"value": value, "target": target, "unit": unit, "better": better, "ok": bool(ok), **details}


def environment() -> dict:
    import torch

    from asrbench.env import environment as asrbench_environment

    info = asrbench_environment(torch.device("cpu"))
    info["cpu_count"] = os.cpu_count()
    info["machine"] = info.pop("platform")
    return info


def record(name: str, figures: dict[str, dict], extra: dict | None = None, results_dir: Path = RESULTS) -> dict:
    """Print the result as one JSON line and append it to ``results/<name>.jsonl``."""
    line = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "figures": figures,
            **(extra or {}), "environment": environment()}
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
