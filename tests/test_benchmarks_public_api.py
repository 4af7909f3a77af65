"""``benchmarks/`` uses only public names of asrbench: no import of a name (or module) starting with
``_``, and no ``._x`` attribute read on anything an asrbench import bound (issue 29), so the library
may rename its private functions without breaking the suite or the experiment scripts."""

from __future__ import annotations

import ast
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_asrbench_names(source: str) -> list[str]:
    """'line: what' for every private asrbench name the source imports or reads as an attribute of
    something an asrbench import bound (a module, a class, a function)."""
    tree = ast.parse(source)
    bound, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "asrbench":
            for alias in node.names:
                if _private(alias.name) or any(_private(part) for part in node.module.split(".")):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
                bound.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "asrbench":
                    continue
                if any(_private(part) for part in alias.name.split(".")):
                    found.append(f"{node.lineno}: import {alias.name}")
                bound.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(found, key=lambda hit: int(hit.split(":")[0]))


def test_the_scan_finds_every_kind_of_private_use() -> None:
    source = """
import asrbench.decoding.decode
import asrbench.training.trainer as training
from asrbench import fileio
from asrbench.data import _shards
from asrbench.decoding.searchers import DecodeOptions, _resolve as resolve
from _common import _number  # the suite's own helper: not asrbench
import numpy as np

asrbench.decoding.decode._checkpoint_path(1)
training.Trainer._step
fileio._tmp
DecodeOptions.__doc__, np._private, fileio.atomic_write
"""
    assert private_asrbench_names(source) == [
        "5: from asrbench.data import _shards",
        "6: from asrbench.decoding.searchers import _resolve",
        "10: asrbench.decoding.decode._checkpoint_path",
        "11: training.Trainer._step",
        "12: fileio._tmp",
    ]


def test_benchmarks_use_only_public_asrbench_names() -> None:
    scripts = sorted(BENCHMARKS.rglob("*.py"))
    assert BENCHMARKS / "experiment_data.py" in scripts and BENCHMARKS / "experiments" / "cross_validate.py" in scripts
    found = [
        f"{path.relative_to(BENCHMARKS.parent)}:{hit}"
        for path in scripts
        for hit in private_asrbench_names(path.read_text())
    ]
    assert found == []
