"""asrbench report: a self-contained page, escaped, checked in a real headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from helpers import INPUT_DIM, TINY, run_main

from asrbench.data.fbank import FeatureExtractor
from asrbench.data.features import GlobalCMVN
from asrbench.data.tokenizer import CharTokenizer
from asrbench.decoding.decode import decode
from asrbench.errors import AsrbenchError
from asrbench.models import build_model
from asrbench.recipe.config import FeatureConfig
from asrbench.runs.checkpoint import LoadedModel
from asrbench.scoring.metrics import score_utterances
from asrbench.studies.report import (
    alignment_html,
    build_report,
    comparison_section,
    error_browser,
    esc,
    find_browser,
    posteriorgram,
    select_inputs,
    table,
    write_report,
)

ATTACK = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def test_text_is_escaped_in_cells_attributes_and_alignments():
    assert esc('<b a="1">&') == "&lt;b a=&quot;1&quot;&gt;&amp;"
    page = table(["<th>"], [[(ATTACK, '"><script>')]])
    assert "<script>" not in page and "<img" not in page and "&lt;script&gt;" in page
    score = score_utterances(["a <b> c"], ["a <i> c <script>"], "none")[0]
    aligned = alignment_html(score)
    assert "<i>" not in aligned and "&lt;i&gt;" in aligned and "&lt;script&gt;" in aligned
    assert aligned.count('class="S"') == 1 and aligned.count('class="I"') == 1


@pytest.mark.parametrize(
    ("name", "options", "drawn"),
    [
        ("cnn", {}, True),
        ("transformer_aed", {"ctc_weight": 0.3}, True),
        ("transformer_aed", {"ctc_weight": 0.0}, False),
    ],
)
def test_posteriorgrams_come_from_the_ctc_output_or_are_declined(name, options, drawn):
    config = FeatureConfig(sample_rate=8000, num_mel_bins=INPUT_DIM)
    tokenizer = CharTokenizer.build(["ab cd"])
    model = build_model(name, {**TINY[name], **options}, INPUT_DIM, len(tokenizer)).eval()
    loaded = LoadedModel(None, tokenizer, GlobalCMVN(torch.zeros(INPUT_DIM), torch.ones(INPUT_DIM)), model, {})
    png = posteriorgram(loaded, torch.randn(8000) * 0.1, FeatureExtractor(config))
    assert (png is not None and png[:4] == b"\x89PNG") if drawn else png is None


def test_inputs_are_chosen_and_bad_ones_named(tmp_path):
    run = tmp_path / "run"
    (run / "decode").mkdir(parents=True)
    log = tmp_path / "a.log"
    log.write_text("x")
    assert select_inputs([run, log]) == [run]
    assert select_inputs([log]) == [log]
    with pytest.raises(AsrbenchError, match="nowhere: no such run or study dir"):
        build_report([tmp_path / "nowhere"])
    with pytest.raises(AsrbenchError, match="a.log: neither a run dir"):
        build_report([log])


def test_the_error_browser_names_only_known_speakers(tmp_path):
    """Regression (issue 28.3): yesno's utterances were shown as "speaker 0" / "speaker 1", the first
    label of the id. A speaker is shown only when the manifest gives one."""
    data = tmp_path / "data"
    data.mkdir()
    manifest = [
        {"id": "0_1_1_0", "audio": "a.wav", "duration": 1.0, "text": "NO YES YES NO"},
        {"id": "1_0_0_1", "audio": "b.wav", "duration": 1.0, "text": "YES NO NO YES", "speaker": "ann"},
    ]
    (data / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in manifest))
    decoded = tmp_path / "run" / "decode" / "test"
    decoded.mkdir(parents=True)
    (decoded / "result.json").write_text(json.dumps({"model": "cnn", "data_dir": str(data)}))
    (decoded / "hypotheses.jsonl").write_text(
        "".join(json.dumps({"id": row["id"], "ref": row["text"], "hyp": "NO"}) + "\n" for row in manifest)
    )
    page = error_browser(tmp_path / "run", "test", 5, link_audio=True)
    assert page.count('<div class="utt">') == 2
    assert "speaker 0" not in page and "speaker 1" not in page and "speaker ann" in page


def test_the_comparison_names_each_runs_test_set(tmp_path):
    """Regression (issue 28.2): runs decoded on different utterances were ranked in one table. The
    report shows each run's test set (hash, count), warns when there are several, and ranks within
    a set only."""
    from asrbench.studies.compare import collect

    runs = []
    for name, ids in (("cnn", ["a", "b", "c"]), ("lstm", ["x", "y"])):
        decoded = tmp_path / name / "decode" / "test"
        decoded.mkdir(parents=True)
        (decoded / "result.json").write_text(json.dumps({"model": name, "wer": 0.0, "cer": 0.0}))
        (decoded / "hypotheses.jsonl").write_text(
            "".join(json.dumps({"id": i, "ref": "YES", "hyp": "YES"}) + "\n" for i in ids)
        )
        runs.append(tmp_path / name)
    rows = collect(runs, allow_mixed=True)
    section = comparison_section(rows)
    assert "2 different test sets" in section and "test set" in section
    assert f"{rows[0]['test_set']} (3)" in section and f"{rows[1]['test_set']} (2)" in section
    assert "different test sets" not in comparison_section(rows[:1])


def test_the_comparison_legend_says_how_the_statistics_were_made(tmp_path):
    """Issue 31: the report's legend is compare's: speakers resampled where known, Holm's correction."""
    from asrbench.studies.compare import collect, statistics_legend

    runs = []
    for name, wrong in (("cnn", 0), ("lstm", 3)):
        decoded = tmp_path / name / "decode" / "test"
        decoded.mkdir(parents=True)
        (decoded / "result.json").write_text(json.dumps({"model": name, "wer": 0.0, "cer": 0.0}))
        rows = [
            {"id": f"u{i}", "ref": "YES", "hyp": "NO" if i < wrong else "YES", "speaker": f"s{i % 4}"} for i in range(8)
        ]
        (decoded / "hypotheses.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        runs.append(tmp_path / name)
    rows = collect(runs)
    section = comparison_section(rows)
    assert "speaker sign-flip test over speakers (4 on the test set)" in section and "Holm-corrected" in section
    assert html.escape(statistics_legend(rows) or "") in section


@pytest.fixture(scope="module")
def report_runs(tone_run, streaming_run, tmp_path_factory) -> tuple[Path, list[Path]]:
    """Copies of the two session runs, decoded on test; the cnn's worst hypothesis holds markup."""
    root = tmp_path_factory.mktemp("report")
    runs = []
    for name, (source, _) in (("cnn", tone_run), ("conformer", streaming_run)):
        run = root / name
        shutil.copytree(source, run, ignore=shutil.ignore_patterns("decode"))
        decode(run, "test")
        runs.append(run)
    hypotheses = runs[0] / "decode" / "test" / "hypotheses.jsonl"
    rows = [json.loads(line) for line in hypotheses.read_text().splitlines()]
    rows[0]["hyp"] = f"{rows[0]['hyp']} {ATTACK}"  # now the worst utterance: it is shown in the error browser
    hypotheses.write_text("".join(json.dumps(row) + "\n" for row in rows))
    study = root / "study"
    study.mkdir()
    (study / "study.json").write_text(
        json.dumps({"rows": [{"run": ATTACK, "noise": "white", "snr": 10.0, "wer": 12.5, "wer_ci": [10.0, 15.0]}]})
    )
    return root, runs + [study]


@pytest.fixture(scope="module")
def report_page(report_runs) -> Path:
    root, inputs = report_runs
    return write_report(inputs, root / "report.html", worst=3)


def test_a_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    code, _, stderr = run_main(monkeypatch, capsys, "report", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r.html"))
    assert code == 2 and stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: no such run or study dir"]
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
def test_the_page_is_self_contained_and_escaped(report_page):
    page = report_page.read_text()
    assert "window.__pwned" in page and "<script>window.__pwned" not in page and "<img src=x" not in page
    assert page.count("<script>") == 1  # the sort script, and nothing from the files
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched at view time
    assert page.count("data:audio/ogg;base64,") >= 1 and page.count("data:image/png;base64,") >= 5
    assert page.count('<div class="utt">') <= 6


@pytest.mark.slow
def test_the_page_works_in_headless_chromium(report_page, tmp_path):
    """Loads with no console errors, one row per run, a sort click reorders, audio plays, markup stays text."""
    from playwright.sync_api import sync_playwright

    out = report_page
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=find_browser(), args=["--autoplay-policy=no-user-gesture-required"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(out.as_uri())
        page.wait_for_load_state("load")
        assert errors == []
        rows = page.locator("#comparison tbody tr")
        assert rows.count() == 2
        first_column = "#comparison tbody tr td:first-child"
        before = page.locator(first_column).all_inner_texts()
        page.click("#comparison th:has-text('run')")
        ascending = page.locator(first_column).all_inner_texts()
        page.click("#comparison th:has-text('run')")
        descending = page.locator(first_column).all_inner_texts()
        assert ascending == sorted(before) and descending == sorted(before, reverse=True)
        page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
        played = page.evaluate("""async () => {
            const audio = document.querySelector('audio');
            await audio.play();
            for (let waited = 0; audio.currentTime < 0.05 && waited < 5000; waited += 50) {
                await new Promise(resolve => setTimeout(resolve, 50));
            }
            return {time: audio.currentTime, error: audio.error && audio.error.code, duration: audio.duration};
        }""")
        assert played["error"] is None and played["duration"] > 0.2 and played["time"] > 0.05
        assert page.evaluate("window.__pwned") is None  # the injected markup ran nothing
        assert ATTACK in page.inner_text("body")  # ... and shows as text, in the error browser and the study
        shot = Path(os.environ.get("ASRBENCH_REPORT_SCREENSHOT", tmp_path / "report.png"))
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(shot))
        browser.close()
        assert errors == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_without_matplotlib_the_page_is_written_without_plots(tmp_path, monkeypatch, write_audio):
    """Regression (issue 28.16): without the plot extra, `report` failed ("plots need matplotlib"); the tables
    and the error browser need none, so the page is written with the plots left out and a note."""
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    data = tmp_path / "data"
    data.mkdir()
    manifest = [
        {"id": f"u{i}", "audio": str(write_audio(tmp_path / f"u{i}.wav", 0.3)), "duration": 0.3, "text": "YES NO"}
        for i in range(3)
    ]
    (data / "test.jsonl").write_text("".join(json.dumps(row) + "\n" for row in manifest))
    runs = []
    for name, hyp in (("cnn", "YES"), ("lstm", "NO NO")):
        decoded = tmp_path / name / "decode" / "test"
        decoded.mkdir(parents=True)
        (decoded / "result.json").write_text(
            json.dumps(
                {
                    "model": name,
                    "split": "test",
                    "wer": 50.0,
                    "cer": 30.0,
                    "params": 1000,
                    "rtfx": 20.0,
                    "data_dir": str(data),
                    "words": 6,
                    "utterances": 3,
                }
            )
        )
        (decoded / "hypotheses.jsonl").write_text(
            "".join(json.dumps({"id": row["id"], "ref": row["text"], "hyp": hyp}) + "\n" for row in manifest)
        )
        runs.append(tmp_path / name)
    page = write_report(runs, tmp_path / "report.html", worst=2).read_text()
    assert "plots left out: matplotlib is not installed" in page
    assert 'id="comparison-table"' in page and 'id="errors"' in page and page.count('<div class="utt">') == 4
    assert "data:image/png" not in page
    with pytest.raises(AsrbenchError, match="matplotlib"):  # --plot itself still says what it needs
        from asrbench.studies.plots import write_plots

        write_plots([], tmp_path)
