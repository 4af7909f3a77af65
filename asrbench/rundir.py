"""The run directory, the unit of truth: resolved config, tokenizer, checkpoints, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from asrbench import fileio
from asrbench.config import RunConfig, run_config_from_dict
from asrbench.errors import AsrbenchError

CONFIG = "config.yaml"
TOKENIZER = "tokenizer.json"
ENVIRONMENT = "environment.json"
METRICS = "metrics.jsonl"
SUMMARY = "train_summary.json"
BEST = Path("checkpoints") / "best.pt"
LAST = Path("checkpoints") / "last.pt"


def require_run_dir(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AsrbenchError(f"{run_dir}: run dir not found")
    if not (run_dir / CONFIG).is_file() or not (run_dir / BEST).is_file():
        raise AsrbenchError(f"{run_dir}: not a run dir (needs {CONFIG} and {BEST}; run `asrbench train` first)")
    return run_dir


def write_config(run_dir: Path, config: RunConfig) -> None:
    fileio.write_text(run_dir / CONFIG, yaml.safe_dump(config.to_dict(), sort_keys=False))


def read_config(run_dir: Path) -> RunConfig:
    path = run_dir / CONFIG
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise AsrbenchError(f"{path}: unreadable run config ({err})") from None
    return run_config_from_dict(values or {}, str(path))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AsrbenchError(f"{path}: not found") from None
    except (OSError, json.JSONDecodeError) as err:
        raise AsrbenchError(f"{path}: unreadable JSON ({err})") from None


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def append_metrics(run_dir: Path, row: dict) -> None:
    rows = read_metrics(run_dir) + [row]
    fileio.write_jsonl(run_dir / METRICS, rows)
