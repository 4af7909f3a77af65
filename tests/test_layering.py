"""The package's layering (tools/layering.py): no import cycle, the layer rules, no import inside a
function without a reason, no function over ~80 lines without one."""

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
    # exported model (asrbench.deploy.onnx_runtime) reads a FeatureConfig without loading torch.nn modules
    assert "asrbench.models" not in graph["asrbench.recipe.config"]
    assert "asrbench.recipe.config" not in graph["asrbench.models"]  # ... and the registry does not import config
    assert "asrbench.recipe.schema" in graph["asrbench.recipe.config"]
    assert "asrbench.recipe.schema" in graph["asrbench.models"]


def test_the_checks_find_cycles_and_broken_rules():
    layering = _layering()
    assert layering.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layering.cycles({"a": {"b"}, "b": set()}) == []
    problems = layering.violations({"asrbench.data.features": {"asrbench.models.ctc"}, "asrbench.cli": {"x"}})
    assert problems == [
        "asrbench.data.features imports asrbench.models.ctc (stage order: asrbench.data comes before asrbench.models)"
    ]
    # a later stage may import an earlier one, but models never read files nor know search
    assert layering.violations({"asrbench.decoding.decode": {"asrbench.runs.checkpoint", "asrbench.data.store"}}) == []
    assert layering.violations({"asrbench.models.dnn": {"asrbench.data.manifest"}}) == [
        "asrbench.models.dnn imports asrbench.data.manifest (layer rule for asrbench.models)"
    ]
    assert layering.violations({"asrbench.models.ctc": {"asrbench.decoding.searchers"}}) == [
        "asrbench.models.ctc imports asrbench.decoding.searchers "
        "(stage order: asrbench.models comes before asrbench.decoding)"
    ]
    # a leaf utility imports no stage
    assert layering.violations({"asrbench.fileio": {"asrbench.runs.rundir"}}) == [
        "asrbench.fileio imports asrbench.runs.rundir (stage order: a leaf utility comes before asrbench.runs)"
    ]


def test_a_module_left_at_the_top_level_is_named(tmp_path, monkeypatch):
    layering = _layering()
    assert layering.unplaced(set(layering.scan().graph)) == []
    package = tmp_path / "asrbench"
    package.mkdir()
    for name in (
        "__init__",
        "__main__",
        "cli",
        "errors",
        "fileio",
        "env",
        "version",
        "progress",
        "text",
        "torchaudio_compat",
        "scoring_old",
    ):
        (package / f"{name}.py").write_text("")
    monkeypatch.setattr(layering, "PACKAGE", package)
    assert layering.unplaced({"asrbench.cli", "asrbench.scoring_old", "asrbench.fileio"}) == [
        "asrbench.scoring_old: a module at the top level that is no leaf utility: move it into its stage",
        "asrbench/ holds 11 modules at its top level (at most 10)",
    ]


def test_the_script_prints_the_import_graph():
    result = subprocess.run([sys.executable, str(TOOL)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "asrbench.decoding.tune: " in result.stdout and "asrbench.runs.checkpoint" in result.stdout
    assert result.stdout.strip().endswith("layering: no cycle, every layer rule holds")


def _function(name: str, lines: int, docstring: str = "", signature_lines: int = 1) -> str:
    """A function whose body (its statements, the docstring included) has exactly ``lines`` lines,
    under a signature of ``signature_lines`` lines."""
    signature = [f"def {name}("] + [f"    a{i}=None," for i in range(signature_lines - 2)] + ["):"]
    signature = [f"def {name}():"] if signature_lines == 1 else signature
    body = [f'    """{docstring}"""'] if docstring else []
    body += [f"    x{i} = {i}" for i in range(lines - len(body))]
    return "\n".join([*signature, *body]) + "\n\n\n"


def test_a_function_over_80_lines_must_say_why(tmp_path, monkeypatch):
    layering = _layering()
    package = tmp_path / "asrbench"
    (package / "decoding").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "decoding" / "__init__.py").write_text("")
    (package / "decoding" / "search.py").write_text(
        _function("long_plain", 81)
        + _function("just_short_enough", 80)
        + _function("a_long_signature", 80, signature_lines=40)  # a CLI command's options do not count
        + _function("long_loop", 81, "The per-frame loop (the hot loop: one function, locals bound once).")
    )
    monkeypatch.setattr(layering, "ROOT", tmp_path)
    monkeypatch.setattr(layering, "PACKAGE", package)
    result = layering.scan()
    assert [(function, length) for _, function, length, _ in result.long_functions] == [
        ("long_plain", 81),
        ("long_loop", 81),
    ]
    assert [problem for problem in layering.checks(result) if "lines (over" in problem] == [
        "asrbench.decoding.search.long_plain: 81 lines (over 80) without saying why ('hot loop')"
    ]
