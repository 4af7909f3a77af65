"""Comparison tables built from decode results of fake run dirs."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from helpers import run_main
from rich.console import Console

from asrbench.errors import AsrbenchError
from asrbench.studies.compare import COLUMNS, FORMATS, collect, render, rich_table, select_runs


def fake_run(
    root: Path, name: str, wer: float, params: int, split: str = "test", summary: bool = True, **extra
) -> Path:
    run_dir = root / name
    result = {
        "run": str(run_dir),
        "model": name,
        "split": split,
        "wer": wer,
        "cer": wer / 3,
        "params": params,
        "rtfx": 1234.5,
        "substitutions": 3,
        "deletions": 2,
        "insertions": 1,
        "words": 100,
        "utterances": 10,
        "normalizer": "basic-1",
        "config_hash": f"hash-{name}",
        **extra,
    }
    (run_dir / "decode" / split).mkdir(parents=True)
    (run_dir / "decode" / split / "result.json").write_text(json.dumps(result), encoding="utf-8")
    if summary:
        (run_dir / "train_summary.json").write_text(json.dumps({"train_seconds": 61.4, "epochs": 12}), encoding="utf-8")
    return run_dir


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    return [
        fake_run(tmp_path, "lstm", 12.3456, 1_500_000),
        fake_run(tmp_path, "cnn", 8.5, 520_062, summary=False),
    ]


def test_collect_reads_result_and_summary(runs):
    rows = collect(runs)
    assert [row["model"] for row in rows] == ["lstm", "cnn"]
    lstm, cnn = rows
    assert lstm["run"] == str(runs[0])
    assert lstm["wer"] == 12.3456 and lstm["cer"] == pytest.approx(12.3456 / 3)
    assert lstm["params"] == 1_500_000
    assert lstm["train_seconds"] == 61.4 and lstm["epochs"] == 12
    assert lstm["split"] == "test"
    assert (lstm["substitutions"], lstm["deletions"], lstm["insertions"], lstm["words"]) == (3, 2, 1, 100)
    assert lstm["normalizer"] == "basic-1" and lstm["config_hash"] == "hash-lstm"
    # No train_summary.json: those columns are empty, not an error.
    assert cnn["train_seconds"] is None and cnn["epochs"] is None
    assert set(COLUMNS) <= set(lstm)


def test_collect_other_split(tmp_path):
    run = fake_run(tmp_path, "gru", 20.0, 10, split="dev")
    assert collect([run], split="dev")[0]["split"] == "dev"
    with pytest.raises(AsrbenchError, match="split 'test'"):
        collect([run])


def test_missing_result_is_an_error_naming_the_run(tmp_path, runs):
    run = tmp_path / "not-decoded"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    with pytest.raises(AsrbenchError) as err:
        collect(runs + [run])
    assert str(err.value).startswith(f"{run}: no decode result for split 'test'")
    assert f"asrbench decode {run} --split test" in str(err.value)


def test_a_folder_that_is_not_a_run_dir_is_named_so(tmp_path, runs):
    """Regression (issue 15.5): an LM dir in ``compare runs/an4/*`` failed with "run `asrbench
    decode` first". Named alone it is "not a run dir"; among run dirs (a glob) it is set aside."""
    lm_dir = tmp_path / "lm3"
    lm_dir.mkdir()
    (lm_dir / "lm.arpa").write_text("\\data\\\n")
    with pytest.raises(AsrbenchError, match=rf"^{lm_dir}: not a run dir") as err:
        collect([lm_dir])
    assert "asrbench decode" not in str(err.value)
    notes = tmp_path / "RESULTS.md"
    notes.write_text("# results\n")
    chosen, skipped = select_runs([*runs, lm_dir, notes])
    assert chosen == list(runs) and skipped == [lm_dir, notes]
    assert select_runs([lm_dir]) == ([lm_dir], [])  # alone: collect names it


def test_an_undefined_wer_is_na_and_left_out_of_the_tests(tmp_path, runs):
    """Regression (issue 15.2): a decode with no reference words is n/a in every table."""
    run = tmp_path / "empty-refs"
    (run / "decode" / "test").mkdir(parents=True)
    (run / "decode" / "test" / "result.json").write_text(
        json.dumps({"model": "x", "wer": None, "cer": None, "wer_ci": None, "insertions": 8, "words": 0})
    )
    (run / "decode" / "test" / "hypotheses.jsonl").write_text(json.dumps({"id": "u1", "ref": "", "hyp": "A B"}) + "\n")
    rows = collect([run])
    assert rows[0]["wer"] is None and rows[0]["vs_best"] is None and rows[0]["wer_ci"] is None
    line = [line for line in render(rows, "markdown").splitlines() if line.startswith(f"| {run} ")][0]
    assert "| n/a | n/a |" in line


def test_corrupt_result_is_an_error(tmp_path):
    run = fake_run(tmp_path, "dnn", 1.0, 1)
    (run / "decode" / "test" / "result.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(AsrbenchError, match="result.json"):
        collect([run])


def test_json_parses_back_to_the_rows(runs):
    rows = collect(runs)
    assert json.loads(render(rows, "json")) == rows


def test_csv_parses_back_to_the_rows(runs):
    rows = collect(runs)
    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert len(parsed) == 2
    assert list(parsed[0]) == list(rows[0])  # every field, in order
    for row, back in zip(rows, parsed, strict=True):
        assert back["model"] == row["model"]
        assert float(back["wer"]) == pytest.approx(row["wer"])
        assert int(back["params"]) == row["params"]
    assert parsed[1]["train_seconds"] == ""  # None is an empty cell


def test_markdown_table(runs):
    text = render(collect(runs), "markdown")
    results, provenance = text.split("\n\n")
    lines = results.splitlines()
    assert len(lines) == 4  # header, alignment, one line per run
    # The second table says where each number comes from: one row per run with its config hash.
    assert provenance.splitlines()[0].startswith("| run | test set | config hash | decoder | asrbench | git commit")
    assert provenance.splitlines()[2].startswith(f"| {runs[0]} | unknown |")  # no hypotheses.jsonl: set unknown
    assert len(provenance.splitlines()) == 4
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:2] == ["run", "model"] and "WER %" in header and "CER %" in header
    assert len(header) == len(COLUMNS)
    alignment = lines[1].strip("|").split("|")
    assert len(alignment) == len(COLUMNS) and set(alignment) <= {"---", "---:"}
    lstm = dict(zip(header, (cell.strip() for cell in lines[2].strip("|").split("|")), strict=True))
    assert lstm["model"] == "lstm"
    assert lstm["WER %"] == "12.35"  # two decimals
    assert lstm["params"] == "1.50M"
    assert lstm["train s"] == "61"
    cnn = dict(zip(header, (cell.strip() for cell in lines[3].strip("|").split("|")), strict=True))
    assert cnn["train s"] == "-" and cnn["epochs"] == "-"


def test_rich_table_has_a_row_per_run(runs):
    console = Console(file=io.StringIO(), width=200)
    console.print(rich_table(collect(runs), title="test results"))
    output = console.file.getvalue()
    assert "test results" in output
    assert "12.35" in output and "8.50" in output


def test_unknown_format_lists_valid_formats(runs):
    with pytest.raises(AsrbenchError) as err:
        render(collect(runs), "xml")
    for fmt in FORMATS:
        assert fmt in str(err.value)


def test_empty_rows_render():
    assert json.loads(render([], "json")) == []
    assert list(csv.reader(io.StringIO(render([], "csv")))) == [list(COLUMNS)]
    assert len(render([], "markdown").split("\n\n")[0].splitlines()) == 2


# --- confidence intervals and pairwise tests from hypotheses.jsonl -------------------------------------


def write_hypotheses(run_dir: Path, pairs: list[tuple[str, str]], split: str = "test") -> None:
    rows = [{"id": f"utt{index:03d}", "ref": ref, "hyp": hyp} for index, (ref, hyp) in enumerate(pairs)]
    (run_dir / "decode" / split / "hypotheses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


REFS = [f"W{i % 7} W{(i + 1) % 5} W{i % 3}" for i in range(60)]


@pytest.fixture
def decoded(tmp_path) -> list[Path]:
    """Three runs on the same 60 utterances: good (2 errors), close (3), bad (40); one on other utterances."""
    good, close, bad, other = (
        fake_run(tmp_path, name, wer, 1000)
        for name, wer in (("good", 1.1), ("close", 1.7), ("bad", 22.2), ("other", 5.0))
    )
    write_hypotheses(good, [(r, "X" + r if i < 2 else r) for i, r in enumerate(REFS)])
    write_hypotheses(close, [(r, "X" + r if i in (3, 4, 5) else r) for i, r in enumerate(REFS)])
    write_hypotheses(bad, [(r, "X" + r if i < 40 else r) for i, r in enumerate(REFS)])
    write_hypotheses(other, [(r, r) for r in REFS[:10]])
    return [good, close, bad, other]


def test_runs_on_the_same_utterances_are_compared_pairwise(decoded):
    rows = collect(decoded, allow_mixed=True)
    good, close, bad, other = rows
    # "other" is alone on its 10 utterances: the best of its set, never ranked against the others.
    assert [row["vs_best"] for row in rows] == ["best", "not significantly worse", "significantly worse", "best"]
    assert other["pairs"] == [] and other["wer_ci"] == [0.0, 0.0]  # CI from its hypotheses; nothing to pair with
    assert [pair["run"] for pair in good["pairs"]] == [close["run"], bad["run"]]
    to_bad = good["pairs"][1]
    assert to_bad["p_better"] == 1.0 and to_bad["sign_p"] < 1e-6 and to_bad["mp_p"] < 1e-6
    back = bad["pairs"][0]
    assert back["run"] == good["run"] and back["p_better"] == 0.0 and back["sign_p"] == to_bad["sign_p"]
    assert close["pairs"][0]["sign_p"] == 1.0  # 2 utterances against 3
    for row in rows:
        low, high = row["wer_ci"]
        assert low <= high
    assert good["wer_ci"][0] <= 100 * 2 / 180 <= good["wer_ci"][1]
    assert json.loads(render(rows, "json")) == rows


def test_wer_ci_from_result_json_wins(tmp_path):
    run = fake_run(tmp_path, "lstm", 12.0, 10, wer_ci=[10.0, 14.0])
    write_hypotheses(run, [("A B", "A")])
    assert collect([run])[0]["wer_ci"] == [10.0, 14.0]


def test_tables_mark_the_best_and_show_the_ci(decoded):
    rows = collect(decoded, allow_mixed=True)
    lines = render(rows, "markdown").splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert "WER 95% CI" in header and "≈best" in header
    cells = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:6]]
    assert [c["≈best"] for c in cells] == ["best", "yes", "no", "best"]
    assert cells[3]["WER 95% CI"] == "0.00–0.00"
    assert any(line.startswith("≈best:") for line in lines)
    table = render(rows, "table")
    assert "WER 95% CI" in table and "best" in table
    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert json.loads(parsed[0]["wer_ci"]) == rows[0]["wer_ci"]
    assert json.loads(parsed[0]["pairs"]) == rows[0]["pairs"]


def test_corrupt_hypotheses_are_an_error_naming_file_and_line(tmp_path):
    run = fake_run(tmp_path, "lstm", 12.0, 10)
    (run / "decode" / "test" / "hypotheses.jsonl").write_text('{"id": "a", "ref": "A", "hyp": "A"}\n{oops\n')
    with pytest.raises(AsrbenchError, match=r"hypotheses.jsonl:2"):
        collect([run])


# --- runs decoded on different test sets (issue 28.2) ---------------------------------------------------


def _on(run_dir: Path, ids: list[str], errors: int = 0) -> Path:
    """Hypotheses of ``run_dir`` on the utterances ``ids`` (3 words each), the first ``errors`` wrong."""
    rows = [
        {"id": i, "ref": f"YES NO {i}", "hyp": ("NO NO " if n < errors else "YES NO ") + i} for n, i in enumerate(ids)
    ]
    (run_dir / "decode" / "test" / "hypotheses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


TEST_IDS = [f"test{i:02d}" for i in range(30)]
OTHER_IDS = [f"train{i:02d}" for i in range(30)]  # decoded on train + dev: a 0.00% that must not win


@pytest.fixture
def mixed(tmp_path) -> list[Path]:
    """The issue's three runs: 30 test utterances, 20 of them, and 30 other (train+dev) utterances."""
    return [
        _on(fake_run(tmp_path, "cnn", 1.25, 1000), TEST_IDS, errors=1),
        _on(fake_run(tmp_path, "lstm", 3.33, 1000), TEST_IDS[:20], errors=2),
        _on(fake_run(tmp_path, "gru", 0.0, 1000), OTHER_IDS),
    ]


def test_runs_on_different_test_sets_are_refused_naming_runs_and_sets(mixed, monkeypatch, capsys):
    """Regression (issue 28.2): three runs decoded on 30, 20 and 30 different utterances shared one
    table, a 0.00% row decoded on train+dev beside a 1.25% row marked best."""
    with pytest.raises(AsrbenchError) as err:
        collect(mixed)
    message = str(err.value)
    for run in mixed:
        assert str(run) in message
    assert "30 utterances" in message and "20 utterances" in message and "--allow-mixed" in message
    assert (
        len(
            {
                word
                for word in message.replace(",", " ").replace(":", " ").split()
                if len(word) == 8 and all(c in "0123456789abcdef" for c in word)
            }
        )
        == 3
    )  # three set hashes
    code, out, err = run_main(monkeypatch, capsys, "compare", *map(str, mixed))
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: ") and str(mixed[2]) in err
    # Runs on one set are compared as before; the set is named in every export.
    same = collect(mixed[:1] + [_on(fake_run(mixed[0].parent, "dnn", 6.6, 10), TEST_IDS, errors=5)])
    assert same[0]["test_set"] == same[1]["test_set"] and same[0]["test_set_utterances"] == 30


def test_allow_mixed_ranks_within_each_set_and_shows_it(mixed, monkeypatch, capsys):
    rows = collect(mixed, allow_mixed=True)
    sets = [(row["test_set"], row["test_set_utterances"]) for row in rows]
    assert [n for _, n in sets] == [30, 20, 30] and len({h for h, _ in sets}) == 3
    assert [row["vs_best"] for row in rows] == ["best", "best", "best"]  # each alone on its set: best of it
    assert all(row["pairs"] == [] for row in rows)  # nothing is tested across sets
    label = {row["run"]: f"{row['test_set']} ({row['test_set_utterances']})" for row in rows}
    table = render(rows, "table")
    assert "test set" in table and all(value in table for value in label.values())
    markdown = render(rows, "markdown")
    header = [cell.strip() for cell in markdown.splitlines()[0].strip("|").split("|")]
    assert "test set" in header
    for run, value in label.items():
        assert any(line.startswith(f"| {run} |") and f"| {value} |" in line for line in markdown.splitlines())
    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert [(r["test_set"], int(r["test_set_utterances"])) for r in parsed] == sets
    assert [(r["test_set"], r["test_set_utterances"]) for r in json.loads(render(rows, "json"))] == sets
    code, out, err = run_main(monkeypatch, capsys, "compare", *map(str, mixed), "--allow-mixed", "--format", "json")
    assert code == 0, err
    assert [row["vs_best"] for row in json.loads(out)] == ["best", "best", "best"]
    # Within a set the usual ranking: a second run on the 30 test utterances, worse, is "no"/"yes" against cnn.
    worse = _on(fake_run(mixed[0].parent, "dnn", 33.3, 10), TEST_IDS, errors=30)
    ranked = collect([*mixed, worse], allow_mixed=True)
    assert [row["vs_best"] for row in ranked] == ["best", "best", "best", "significantly worse"]
    assert [pair["run"] for pair in ranked[3]["pairs"]] == [str(mixed[0])]


def test_a_lone_run_is_the_best_of_its_set(tmp_path):
    """Regression (issue 28.2): a run alone on its utterances read '-' in the ≈best column."""
    (row,) = collect([_on(fake_run(tmp_path, "cnn", 1.25, 1000), TEST_IDS, errors=1)])
    assert row["vs_best"] == "best" and row["test_set_utterances"] == 30
    assert "| best |" in render([row], "markdown")


def test_the_same_ids_with_other_references_are_another_set(tmp_path):
    """Two decodes of the same ids whose references differ (another normalizer, another manifest)
    are not one test set: the error says so."""
    first = _on(fake_run(tmp_path, "cnn", 1.25, 1000), TEST_IDS)
    second = fake_run(tmp_path, "lstm", 2.0, 1000)
    rows = [{"id": i, "ref": f"yes no {i}", "hyp": f"yes no {i}"} for i in TEST_IDS]
    (second / "decode" / "test" / "hypotheses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(AsrbenchError, match="the same utterance ids with different reference texts"):
        collect([first, second])


# --- advice and named paths (issue 28.8) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("test-tuned", "--split test --tuned --tag tuned"),
        ("test-chunk320", "--split test --chunk-ms 320"),
        ("test-chunk320-left2", "--split test --chunk-ms 320 --left-chunks 2"),
        ("dev-beam10", "--split dev --tag beam10"),
        ("test_other", "--split test_other"),
    ],
)
def test_the_advice_for_a_missing_decode_is_a_command_that_writes_it(tmp_path, name, command):
    """Regression (issue 28.8): ``compare --split test-tuned`` advised ``asrbench decode RUN --split
    test-tuned``, which fails (no such split): a tagged decode dir is ``--split SPLIT --tag TAG``."""
    run = fake_run(tmp_path, "cnn", 1.0, 10)
    with pytest.raises(AsrbenchError) as err:
        collect([run], split=name)
    assert f"(run `asrbench decode {run} {command}` first" in str(err.value)
    if "-" in name:  # a decode dir name, not a split
        assert f"--split {name}" not in str(err.value)


def test_a_named_path_that_is_not_a_run_dir_is_an_error(tmp_path, monkeypatch, capsys):
    """Regression (issue 28.8): a mistyped run path was skipped with a note, exit 0. Only what looks
    like a glob's match (another argument in the same folder) is set aside; a path that does not
    exist, or a folder named alone in its own folder, is an error naming it."""
    runs = [str(fake_run(tmp_path / "runs", "lstm", 12.5, 10)), str(fake_run(tmp_path / "runs", "cnn", 9.0, 10))]
    typo = tmp_path / "runs" / "cnnn"
    code, out, err = run_main(monkeypatch, capsys, "compare", *runs, str(typo), "--format", "json")
    assert (code, out) == (2, "") and err == f"error: {typo}: run dir not found\n"
    with pytest.raises(AsrbenchError, match=f"^{typo}: run dir not found"):
        select_runs([typo, *runs])
    parent = tmp_path / "runs"  # the folder of the runs, named by mistake beside them
    code, out, err = run_main(monkeypatch, capsys, "compare", *runs, str(parent), "--format", "json")
    assert code == 2 and err.count("\n") == 1 and f"error: {parent}: not a run dir" in err
    lm_dir = tmp_path / "runs" / "lm3"  # what `runs/*` also matches: set aside with a note, as before
    lm_dir.mkdir()
    assert select_runs([*runs, lm_dir]) == ([Path(r) for r in runs], [lm_dir])


# --- cost beside accuracy (issue 30): GFLOPs/s, end-to-end RTFx, training throughput, peak memory ---------


def test_cost_columns_come_from_the_result_and_the_train_summary(tmp_path):
    run = fake_run(
        tmp_path,
        "conformer",
        5.0,
        2_000_000,
        gflops_per_second=0.1091,
        rtfx_end_to_end=812.4,
        end_to_end_batch_size=7.5,
        end_to_end_threads=2,
    )
    summary = {"train_seconds": 1800.0, "epochs": 3, "audio_hours_trained": 12.5}
    summary["peak_memory"] = {"kind": "process_max_rss", "mb": 912.3}
    (run / "train_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    row = collect([run])[0]
    assert (row["gflops_per_second"], row["rtfx_end_to_end"], row["rtfx"]) == (0.1091, 812.4, 1234.5)
    assert (row["end_to_end_batch_size"], row["end_to_end_threads"]) == (7.5, 2)
    assert row["train_audio_hours"] == 12.5 and row["train_audio_hours_per_hour"] == pytest.approx(25.0)
    assert (row["peak_memory_mb"], row["peak_memory_kind"]) == (912.3, "process_max_rss")
    header, _, line = render([row], "markdown").split("\n\n")[0].splitlines()
    cells = dict(zip(header.strip("|").split(" | "), line.strip("|").split(" | "), strict=True))
    cells = {key.strip(): value.strip() for key, value in cells.items()}
    assert (cells["GFLOPs/s"], cells["RTFx"], cells["RTFx e2e"]) == ("0.109", "1,234", "812")
    assert (cells["train audio h/h"], cells["peak MB"]) == ("25.0", "912")
    assert json.loads(render([row], "json"))[0]["rtfx_end_to_end"] == 812.4
    assert next(csv.DictReader(io.StringIO(render([row], "csv"))))["gflops_per_second"] == "0.1091"


def test_older_runs_show_a_dash_and_take_the_trained_audio_from_metrics(runs):
    """Results decoded before the cost figures: '-'; a summary before audio_hours_trained: metrics.jsonl's
    loop_audio_seconds; no summary at all: nothing."""
    (runs[0] / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "loop_audio_seconds": 1800.0}) + "\n" for e in (1, 2)), encoding="utf-8"
    )
    lstm, cnn = rows = collect(runs)
    assert lstm["gflops_per_second"] is None and lstm["rtfx_end_to_end"] is None
    assert lstm["train_audio_hours"] == 1.0 and lstm["train_audio_hours_per_hour"] == pytest.approx(3600 / 61.4)
    assert lstm["peak_memory_mb"] is None
    assert cnn["train_audio_hours"] is None and cnn["train_audio_hours_per_hour"] is None
    header, _, first, second = render(rows, "markdown").split("\n\n")[0].splitlines()
    names = [cell.strip() for cell in header.strip("|").split("|")]
    for line in (first, second):
        cells = dict(zip(names, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        assert cells["GFLOPs/s"] == cells["RTFx e2e"] == cells["peak MB"] == "-"
    assert dict(zip(names, (c.strip() for c in first.strip("|").split("|")), strict=True))["train audio h/h"] == "58.6"


def test_the_table_is_as_wide_as_its_cells(tmp_path):
    """Sixteen columns: the run names are shown whole, not cut to fit 140 characters."""
    long = fake_run(tmp_path / ("a-rather-long-folder-name-" * 3), "conformer_transducer", 5.0, 3_000_000)
    assert str(long) in render(collect([long]), "table")


# --- issue 31: speakers, the correction and the smallest difference, in rows and legends ---------------


def _with_speakers(run_dir: Path, hypotheses: list[str], speakers: list[str | None]) -> Path:
    rows = [
        {"id": f"utt{index:03d}", "ref": ref, "hyp": hyp, **({"speaker": speaker} if speaker else {})}
        for index, ((ref, hyp), speaker) in enumerate(zip(hypotheses, speakers, strict=True))
    ]
    (run_dir / "decode" / "test" / "hypotheses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


@pytest.fixture
def spoken(tmp_path) -> list[Path]:
    """Two runs on 60 utterances of 6 speakers: 'b' makes 12 more errors, all on speaker s0's."""
    speakers = [f"s{i // 10}" for i in range(60)]
    a = _with_speakers(fake_run(tmp_path, "a", 1.0, 10), [(r, r) for r in REFS], speakers)
    b = _with_speakers(
        fake_run(tmp_path, "b", 7.0, 10), [(r, "X" + r if i < 10 else r) for i, r in enumerate(REFS)], speakers
    )
    return [a, b]


def test_where_every_utterance_has_a_speaker_the_statistics_resample_speakers(spoken):
    """b's errors all on one speaker of six: significant counted over utterances; over speakers, every
    sign pattern of (-10, 0, 0, 0, 0, 0) is as far from zero, so p = 1: one speaker is one observation."""
    a, b = collect(spoken)
    assert a["statistics"]["resample"] == "speaker" and a["statistics"]["speakers"] == 6
    assert b["statistics"]["test"] == "speaker sign-flip test" and b["statistics"]["correction"] == "holm"
    assert b["vs_best"] == "not significantly worse" and b["statistics"]["p_value"] == 1.0
    assert b["pairs"][0]["speaker_p"] == 1.0 and b["pairs"][0]["mp_p"] < 1e-3
    by_utterance = collect(spoken, resample="utterance")
    assert by_utterance[1]["vs_best"] == "significantly worse" and by_utterance[1]["statistics"]["speakers"] is None
    assert b["wer_ci"][1] - b["wer_ci"][0] > by_utterance[1]["wer_ci"][1] - by_utterance[1]["wer_ci"][0]
    assert b["statistics"]["mdd"] > 0 and a["statistics"]["mdd"] == b["statistics"]["mdd"]
    legend = render([a, b], "markdown")
    assert "speaker sign-flip test over speakers (6 on the test set)" in legend and "Holm-corrected" in legend
    assert f"Differences under {b['statistics']['mdd']:.2f} WER points cannot be told apart" in legend
    assert "bootstrap over utterances" in render(by_utterance, "markdown")


def test_without_speakers_auto_resamples_utterances_and_speaker_is_an_error_naming_the_file(tmp_path, spoken):
    """One run of the two lacks a speaker (a regression: the first run's speakers were used for all)."""
    _with_speakers(spoken[1], [(r, r) for r in REFS], ["s0"] * 59 + [None])
    rows = collect(spoken)
    assert {row["statistics"]["resample"] for row in rows} == {"utterance"}
    with pytest.raises(AsrbenchError, match=r"b/decode/test/hypotheses.jsonl: an utterance without a speaker"):
        collect(spoken, resample="speaker")
    with pytest.raises(AsrbenchError, match="unknown resampling 'speakers'"):
        collect(spoken, resample="speakers")
    with pytest.raises(AsrbenchError, match="unknown correction"):
        collect(spoken, correction="bonferroni")


def test_compare_cli_takes_resample_and_correction(spoken, monkeypatch, capsys):
    code, out, _ = run_main(
        monkeypatch, capsys, "compare", *map(str, spoken), "--format", "json", "--resample", "utterance"
    )
    assert code == 0 and json.loads(out)[1]["statistics"]["resample"] == "utterance"
    code, out, _ = run_main(monkeypatch, capsys, "compare", *map(str, spoken), "--format", "json", "--correction", "bh")
    assert code == 0 and json.loads(out)[1]["statistics"]["correction"] == "bh"
    code, out, _ = run_main(monkeypatch, capsys, "compare", *map(str, spoken), "--format", "json", "--no-group-seeds")
    assert code == 0 and [row["seeds"] for row in json.loads(out)] == [1, 1]
    code, _, err = run_main(monkeypatch, capsys, "compare", *map(str, spoken), "--resample", "speakers")
    assert code != 0 and "--resample 'speakers'" in err and "Traceback" not in err


def _seeded_run(root: Path, name: str, seed: int, wrong: int, model: str = "cnn") -> Path:
    """A run dir with a resolved config (``model``, ``seed``) and a test decode on REFS, 6 speakers."""
    from asrbench.recipe.config import RunConfig
    from asrbench.runs import rundir

    run = fake_run(root, name, 100 * wrong / 180, 1000, decoder={"kind": "ctc_greedy"})
    config = RunConfig()
    config.model.name = model
    config.train.seed = seed
    rundir.write_config(run, config)
    _with_speakers(
        run, [(r, "X" + r if i < wrong else r) for i, r in enumerate(REFS)], [f"s{i % 6}" for i in range(60)]
    )
    return run


def test_runs_that_differ_only_by_seed_are_one_system_with_its_seeds_in_the_interval(tmp_path):
    runs = [_seeded_run(tmp_path, f"a{seed}", seed, wrong) for seed, wrong in enumerate((6, 12, 9))]
    runs.append(_seeded_run(tmp_path, "b", 0, 30, model="lstm"))
    rows = collect(runs)
    assert [row["seeds"] for row in rows] == [3, 1] and rows[0]["runs"] == [str(run) for run in runs[:3]]
    assert rows[0]["run"] == f"{runs[0]} (+2 seeds)"
    assert rows[0]["wer"] == pytest.approx(100 * 27 / (3 * 180))  # the seeds' errors pooled
    assert rows[0]["statistics"]["test"].startswith("hierarchical bootstrap") and rows[0]["statistics"]["seeds"] == 3
    assert rows[0]["vs_best"] == "best" and rows[1]["statistics"]["seeds"] == 1
    markdown = render(rows, "markdown")
    assert (
        "| seeds |" in markdown.splitlines()[0].replace("| seeds |", "| seeds |")
        and "hierarchical bootstrap" in markdown
    )
    copy = tmp_path / "a0-copy"  # the same seed again is not another seed: its own row
    import shutil

    shutil.copytree(runs[0], copy)
    assert [row["seeds"] for row in collect([runs[0], copy])] == [1, 1]
    apart = collect(runs, group_seeds=False)
    assert len(apart) == 4 and all(row["seeds"] == 1 for row in apart)
    assert "seeds" not in render(apart, "markdown").splitlines()[0]
    # Another decoder, or a config that differs in more than the seed, is another system.
    other = _seeded_run(tmp_path, "a9", 9, 6)
    config_path = other / "config.yaml"
    config_path.write_text(config_path.read_text().replace("lr: 0.001", "lr: 0.002"))
    assert [row["seeds"] for row in collect([*runs[:2], other])] == [2, 1]
