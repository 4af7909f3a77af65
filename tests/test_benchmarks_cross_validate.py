"""benchmarks/experiment_data.py's fold_dirs (benchmarks/experiments/cross_validate.py): the folds, a
partition of train + dev; the test split is never read."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from asrbench.data.manifest import Utterance, read_manifest, write_manifest
from asrbench.errors import AsrbenchError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def fold_dirs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the experiment scripts import it from benchmarks/
    return importlib.import_module("experiment_data").fold_dirs


def _data_dir(root: Path, train: int, dev: int) -> Path:
    def utterances(prefix: str, count: int) -> list[Utterance]:
        return [Utterance(f"{prefix}{i:02d}", f"/audio/{prefix}{i}.wav", 1.0, "YES") for i in range(count)]

    data = root / "data"
    write_manifest(data / "train.jsonl", utterances("t", train))
    write_manifest(data / "dev.jsonl", utterances("d", dev))
    (data / "test.jsonl").write_text("this is not JSON: the folds must never read the test split\n")
    return data


def test_folds_score_every_non_test_utterance_once_on_a_run_that_never_saw_it(tmp_path, fold_dirs):
    data = _data_dir(tmp_path, train=24, dev=6)
    folds = fold_dirs(data, tmp_path / "cv", 5)
    pool = {f"t{i:02d}" for i in range(24)} | {f"d{i:02d}" for i in range(6)}
    held_out = []
    for fold in folds:
        splits = {name: [u.id for u in read_manifest(fold / f"{name}.jsonl")] for name in ("train", "dev", "test")}
        assert len(splits["test"]) == len(splits["dev"]) == 6 and len(splits["train"]) == 18
        assert set(splits["train"]) | set(splits["dev"]) | set(splits["test"]) == pool
        assert not set(splits["train"]) & set(splits["dev"]) and not set(splits["train"]) & set(splits["test"])
        assert not set(splits["dev"]) & set(splits["test"])
        held_out += splits["test"]
    assert sorted(held_out) == sorted(pool)  # a partition: every utterance scored exactly once


def test_too_few_utterances_for_the_folds_is_refused(tmp_path, fold_dirs):
    data = _data_dir(tmp_path, train=10, dev=2)
    with pytest.raises(AsrbenchError, match="12 train \\+ dev utterances are too few for 5 folds"):
        fold_dirs(data, tmp_path / "cv", 5)
