"""The benchmark suite's one shape of a figure (benchmarks/_common.py) and run_all.py over a stub suite.

Regression (issue 28.15): ``make bench`` on a fresh checkout ended after 18 minutes in
``KeyError: 'value'`` and wrote no latest.json, because export_bench nested its figures under
``untrained`` without a trained AN4 run.
"""

from __future__ import annotations

import ast
import importlib
import json
import math
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the suite's scripts import _common as a sibling
    return importlib.import_module("_common")


@pytest.fixture
def run_all(common, monkeypatch, tmp_path):
    module = importlib.import_module("run_all")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module, "environment", lambda: {"machine": "test"})
    return module


# Every shape figure() and skipped() can produce: measured and met, measured and missed, with details,
# not measured (None, NaN), and skipped with a reason.
SHAPES = {
    "met": "figure(2.0, 1.0, 'x')",
    "missed_lower": "figure(5.0, 1.0, 's', better='lower', seconds=[1, 2])",
    "no_value": "figure(None, 1.0, 'x', note='flashlight not installed')",
    "nan_value": "figure(float('nan'), 1.0, 'x')",
    "skipped": "skipped(1e-4, 'log-prob', 'no trained run at runs/final/an4/conformer', better='lower', model='x')",
}


def test_every_figure_has_the_one_shape(common):
    for name, expression in SHAPES.items():
        made = eval(expression, {"figure": common.figure, "skipped": common.skipped})  # noqa: S307 - our table
        assert common.check_figure(name, made) is made
        assert set(common.FIELDS) <= set(made)
        assert (made["value"] is None) == (made["skipped_reason"] is not None), name
        assert made["value"] is None or math.isfinite(made["value"])
    assert (
        common.figure(None, 1.0, "x", note="flashlight not installed")["skipped_reason"] == "flashlight not installed"
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"untrained": {"parity": {"value": 1.0}}},  # export_bench's old nesting
        {"setup": {"run": "runs/x"}},  # a settings dict among the figures
        {"x": {"value": None, "target": 1.0, "unit": "x", "better": "higher", "ok": False, "skipped_reason": None}},
        {"x": {"value": "fast", "target": 1.0, "unit": "x", "better": "higher", "ok": True, "skipped_reason": None}},
    ],
)
def test_record_refuses_anything_else(common, tmp_path, bad):
    with pytest.raises(ValueError, match="figure '"):
        common.record("stub", bad, results_dir=tmp_path, environment_info={})
    assert not (tmp_path / "stub.jsonl").exists()


def _stub(path: Path, name: str, body: str) -> Path:
    path.write_text(
        textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(BENCHMARKS)!r})
        from _common import figure, record, skipped
        """)
        + textwrap.dedent(body).replace("NAME", name)
    )
    return path


def test_run_all_takes_every_shape_marks_skipped_figures_and_writes_latest_json(run_all, tmp_path, capsys, monkeypatch):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    results = str(tmp_path / "stub-results")
    figures = "{" + ", ".join(f"{name!r}: {expression}" for name, expression in SHAPES.items()) + "}"
    suite = {
        "every_shape": [
            str(
                _stub(
                    scripts / "every_shape.py",
                    "every_shape",
                    f"""
            record("NAME", {figures}, results_dir=Path(sys.argv[1]), environment_info={{}})
            """,
                )
            ),
            results,
        ],
        # A script that bypasses record() with the old nested shape: failed, not a crash of run_all.
        "nested": [
            str(
                _stub(
                    scripts / "nested.py",
                    "nested",
                    """
            import json
            print(json.dumps({"benchmark": "NAME", "figures": {"untrained": {"model": "conformer",
                  "parity": {"value": 1e-6, "target": 1e-4, "unit": "x", "ok": True}}}}))
            """,
                )
            )
        ],
        "crashes": [
            str(
                _stub(
                    scripts / "crashes.py",
                    "crashes",
                    """
            raise SystemExit("no data/an4: run make bench's data step first")
            """,
                )
            )
        ],
    }
    monkeypatch.setattr(run_all, "SUITE", suite)
    monkeypatch.setattr(sys, "argv", ["run_all.py"])
    with pytest.raises(SystemExit) as exit_:
        run_all.main()
    assert exit_.value.code == 1  # two benchmarks failed; skipped figures alone do not fail the suite
    latest = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert set(latest["figures"]) == set(SHAPES)
    assert latest["figures"]["skipped"]["skipped_reason"] == "no trained run at runs/final/an4/conformer"
    assert latest["figures"]["met"] == {**latest["figures"]["met"], "value": 2.0, "ok": True, "skipped_reason": None}
    assert sorted(latest["skipped"]) == ["nan_value", "no_value", "skipped"]
    assert latest["benchmarks"]["every_shape"]["ok"] and not latest["benchmarks"]["nested"]["ok"]
    assert "figure 'untrained'" in latest["benchmarks"]["nested"]["error"]
    assert "no data/an4" in latest["benchmarks"]["crashes"]["error"]
    table = " ".join(capsys.readouterr().out.split())
    assert "skipped: no trained run at runs/final/an4/conformer" in table
    assert "skipped: flashlight not installed" in table


def test_every_script_of_the_suite_records_through_common(run_all):
    """Each script's figures go through _common.record (which checks their shape) and nothing else."""
    for name, command in run_all.SUITE.items():
        tree = ast.parse((BENCHMARKS / command[0]).read_text(encoding="utf-8"))
        calls = {
            node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        }
        assert "record" in calls, name
        assert not any(isinstance(node, ast.Constant) and node.value == "figures" for node in ast.walk(tree)), name


def test_export_bench_without_a_trained_run_gives_flat_figures_and_says_what_it_skipped(common, tmp_path):
    export_bench = importlib.import_module("export_bench")
    speed = {
        f"speed_threads{t}_batch{b}": common.figure(1.7, 1.5 if b == 1 else 0.0, "ratio")
        for t in (1, 2)
        for b in (1, 16)
    }
    untrained = {
        "model": "conformer",
        "exporter": "dynamo",
        "parity_max_abs_log_prob": common.figure(3e-6, 1e-4, "log-prob", better="lower"),
        **speed,
    }
    figures = export_bench.flat_figures({"untrained": untrained})
    common.check_figures(figures)
    assert figures["identical_hypotheses"]["skipped_reason"].startswith("no trained CTC run")
    assert figures["int8_wer_delta"]["value"] is None
    assert figures["parity_max_abs_log_prob"]["model"] == "conformer"
    assert figures["parity_max_abs_log_prob"]["run"] == "untrained"
    assert set(speed) <= set(figures)
    # Two trained runs: each figure named after its run.
    trained = {
        **untrained,
        "identical_hypotheses": common.figure(1.0, 1.0, "fraction"),
        "int8_wer_delta": common.figure(0.1, 0.5, "points", better="lower"),
    }
    figures = export_bench.flat_figures({"runs/a/cnn": trained, "runs/a/gru": trained})
    common.check_figures(figures)
    assert "cnn_identical_hypotheses" in figures and "gru_speed_threads1_batch1" in figures


def test_a_benchmark_beside_another_runs_while_it_runs(run_all, tmp_path, monkeypatch):
    """BESIDE pairs start together: the host waits for a file its partner writes, which it could
    not see if the partner ran after it (it would give up after a minute and record 0)."""
    scripts, results = tmp_path / "scripts", str(tmp_path / "stub-results")
    scripts.mkdir()
    marker = tmp_path / "partner-started"
    host = _stub(
        scripts / "host.py",
        "host",
        f"""
        import time
        deadline = time.time() + 60
        while not Path({str(marker)!r}).exists() and time.time() < deadline:
            time.sleep(0.05)
        record("NAME", {{"saw_partner": figure(float(Path({str(marker)!r}).exists()), 1.0, "x")}},
               results_dir=Path(sys.argv[1]), environment_info={{}})
        """,
    )
    partner = _stub(
        scripts / "partner.py",
        "partner",
        f"""
        Path({str(marker)!r}).write_text("1")
        record("NAME", {{"ran": figure(1.0, 1.0, "x")}}, results_dir=Path(sys.argv[1]), environment_info={{}})
        """,
    )
    monkeypatch.setattr(run_all, "SUITE", {"host": [str(host), results], "partner": [str(partner), results]})
    monkeypatch.setattr(run_all, "BESIDE", {"partner": "host"})
    monkeypatch.setattr(sys, "argv", ["run_all.py"])
    with pytest.raises(SystemExit) as exit_:
        run_all.main()
    assert exit_.value.code == 0
    latest = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert latest["figures"]["saw_partner"]["value"] == 1.0 and latest["figures"]["ran"]["ok"]
    assert latest["benchmarks"]["partner"]["beside"] == "host" and "beside" not in latest["benchmarks"]["host"]
    assert latest["wall_seconds"] > 0


def test_the_suite_runs_beside_only_what_measures_no_time(run_all):
    assert run_all.BESIDE == {"setup_time": "memory_bench"}
    assert "--jobs" in run_all.SUITE["memory_bench"] and set(run_all.BESIDE) | set(run_all.BESIDE.values()) <= set(
        run_all.SUITE
    )


def test_memory_bench_growth_counts_from_the_chosen_epoch_end(common):
    memory_bench = importlib.import_module("memory_bench")
    rss = [371.0, 377.7, 382.5, 386.6]
    assert memory_bench.rss_growth(rss, 1000.0, 2) == pytest.approx((386.6 - 377.7) / 1000)
    assert memory_bench.rss_growth(rss, 1000.0, 1) == pytest.approx((386.6 - 371.0) / 1000)
    # from epoch 1 the allocator's warm-up in epoch 2 counts too: never less than from epoch 2 here
    assert memory_bench.rss_growth(rss, 1000.0, 1) > memory_bench.rss_growth(rss, 1000.0, 2)
    assert memory_bench.rss_growth(rss[:2], 1000.0, 2) is None  # no epoch end after epoch 2
    assert memory_bench.rss_growth(rss[:2], 1000.0, 1) == pytest.approx((377.7 - 371.0) / 1000)
    assert memory_bench.rss_growth(rss, None, 1) is None


def test_make_bench_memory_growth_spans_two_epochs(run_all):
    command = run_all.SUITE["memory_bench"]
    epochs = int(command[command.index("--epochs") + 1])
    growth_from = int(command[command.index("--growth-from") + 1]) if "--growth-from" in command else 2
    assert epochs - growth_from == 2
