"""The package's layering (tools/layering.py): no import cycle, the layer rules, no import inside a
function without a reason, no function over ~100 lines without one."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "layering.py"


def _layering():
    spec = importlib.util.spec_from_file_location("layering", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["layering"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_package_layering_is_clean():
    layering = _layering()
    result = layering.scan()
    assert layering.checks(result) == []
    graph = result.graph
    # config builds model options through the registry, imported where they are built, so that an
    # exported model (asrbench.exported) reads a FeatureConfig without loading torch.nn modules
    assert "asrbench.models" not in graph["asrbench.config"]
    assert "asrbench.config" not in graph["asrbench.models"]  # ... and the registry does not import config
    assert "asrbench.schema" in graph["asrbench.config"] and "asrbench.schema" in graph["asrbench.models"]


def test_the_checks_find_cycles_and_broken_rules():
    layering = _layering()
    assert layering.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layering.cycles({"a": {"b"}, "b": set()}) == []
    problems = layering.violations({"asrbench.data.features": {"asrbench.models.ctc"}, "asrbench.cli": {"x"}})
    assert problems == ["asrbench.data.features imports asrbench.models.ctc (layer rule for asrbench.data)"]
    assert layering.violations({"asrbench.models.dnn": {"asrbench.data.manifest"}})


def test_the_script_prints_the_import_graph():
    result = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "asrbench.models.ctc: asrbench.decoding.alignment, asrbench.decoding.greedy, asrbench.decoding.searchers" \
        in result.stdout
    assert result.stdout.strip().endswith("layering: no cycle, every layer rule holds")
