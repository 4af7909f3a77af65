"""Outside systems in the same table: `asrbench score REF HYP --name NAME --out DIR` writes a decode-
style system dir that compare, report and the length study take beside trained runs, on the same
test set only; hypotheses as Kaldi text, JSONL, trn or CSV."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers import run_main

from asrbench.decoding.decode import decode
from asrbench.decoding.result import read_result
from asrbench.scoring.metrics import read_transcripts
from asrbench.studies import compare
from asrbench.studies.external import EXTERNAL, write_external
from asrbench.studies.length import length_study
from asrbench.studies.report import build_report

REFS = {"a1": "the cat sat", "a2": "on the mat", "b1": "a dog ran", "b2": "in the park"}
SPEAKERS = {"a1": "a", "a2": "a", "b1": "b", "b2": "b"}


def _references(tmp_path: Path) -> Path:
    path = tmp_path / "refs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t, "speaker": SPEAKERS[i]}) + "\n" for i, t in REFS.items()))
    return path


@pytest.mark.parametrize("fmt", ["kaldi", "jsonl", "trn", "csv"])
def test_every_hypothesis_format_reads_the_same_transcripts(tmp_path: Path, fmt: str):
    hyps = {"a1": "the cat sat", "a2": "on a mat", "b1": "a dog ran", "b2": "in the dark park"}
    path = tmp_path / {"kaldi": "hyp.txt", "jsonl": "hyp.jsonl", "trn": "hyp.trn", "csv": "hyp.csv"}[fmt]
    if fmt == "kaldi":
        path.write_text("".join(f"{i} {t}\n" for i, t in hyps.items()))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in hyps.items()))
    elif fmt == "trn":
        path.write_text("".join(f"{t} ({i})\n" for i, t in hyps.items()))
    else:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["utterance_id", "prediction", "speaker"])
            writer.writerows([i, t, SPEAKERS[i]] for i, t in hyps.items())
    found = read_transcripts(path, "hyp")
    assert found.texts == hyps
    result = write_external(_references(tmp_path), path, "whisper-x", tmp_path / "sys", resamples=50)
    assert result.system == EXTERNAL and result.wer == pytest.approx(100 * 2 / 12)  # a for the, dark inserted
    assert result.params is None and result.ci.method.startswith("speaker-blocked bootstrap over 2 speakers")


def test_a_csv_without_an_id_or_text_column_is_one_line_naming_its_header(tmp_path: Path):
    path = tmp_path / "hyp.csv"
    path.write_text("file,words\nx,hello\n")
    with pytest.raises(Exception, match=r"hyp.csv:1: a CSV needs a header naming its id column .* it has file, words"):
        read_transcripts(path, "hyp")
    path.write_text("id,text\nx,hello,extra\n")
    with pytest.raises(Exception, match=r"hyp.csv:2: 3 fields, the header has 2"):
        read_transcripts(path, "hyp")


def test_score_name_writes_a_system_dir_and_refuses_to_replace_it(tmp_path: Path, monkeypatch, capsys):
    refs, hyp = _references(tmp_path), tmp_path / "hyp.txt"
    hyp.write_text("a1 the cat sat\na2 on the mat\nb1 a dog ran\nb2 in the park\n")
    out = tmp_path / "systems" / "api"
    code, stdout, err = run_main(monkeypatch, capsys, "score", str(refs), str(hyp), "--name", "api", "-o", str(out))
    assert code == 0 and "api (external): WER 0.00%" in stdout + err
    result = read_result(out, "test")
    assert result.model == "api" and result.system == "external" and result.normalizer == "basic-1"
    rows = [json.loads(line) for line in (out / "decode" / "test" / "hypotheses.jsonl").read_text().splitlines()]
    assert rows[0] == {"id": "a1", "ref": "THE CAT SAT", "hyp": "THE CAT SAT", "speaker": "a"}
    code, _, err = run_main(monkeypatch, capsys, "score", str(refs), str(hyp), "--name", "api", "-o", str(out))
    assert code != 0 and "already exists" in err
    code, _, err = run_main(monkeypatch, capsys, "score", str(refs), str(hyp), "--name", "api")
    assert code != 0 and "give --out" in err
    code, _, err = run_main(
        monkeypatch, capsys, "score", str(refs), str(hyp), "--name", "a b", "-o", str(tmp_path / "x")
    )
    assert code != 0 and "a system name is letters" in err


@pytest.fixture(scope="module")
def decoded_with_external(tone_run, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(trained run decoded on test, an external system on its test manifest, one on other references)."""
    source, data_dir = tone_run
    root = tmp_path_factory.mktemp("external")
    run = root / "cnn"
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("decode"))
    decode(run, "test")
    manifest = data_dir / "test.jsonl"
    utterances = [json.loads(line) for line in manifest.read_text().splitlines()]
    hyp = root / "whisper.csv"
    with hyp.open("w", newline="") as handle:  # an outside system: every transcript right but the first
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows(
            [u["id"], "LOW" if index == 0 and u["text"] != "LOW" else u["text"]] for index, u in enumerate(utterances)
        )
    external = root / "whisper"
    write_external(manifest, hyp, "whisper", external)
    other_refs = root / "other.txt"  # the same ids, other references: another test set
    other_refs.write_text("".join(f"{u['id']} HIGH HIGH\n" for u in utterances))
    elsewhere = root / "elsewhere"
    write_external(other_refs, hyp, "elsewhere", elsewhere)
    return run, external, elsewhere


@pytest.mark.slow
def test_an_external_system_is_a_row_of_compare_beside_trained_runs(decoded_with_external, monkeypatch, capsys):
    run, external, elsewhere = decoded_with_external
    rows = compare.collect([run, external])
    assert [row["system"] for row in rows] == [None, "external"]
    assert rows[0]["test_set"] == rows[1]["test_set"] and rows[1]["params"] is None and rows[1]["train_seconds"] is None
    assert {row["vs_best"] for row in rows} <= {"best", "not significantly worse", "significantly worse"}
    assert "best" in {row["vs_best"] for row in rows}
    code, out, _ = run_main(monkeypatch, capsys, "compare", str(run), str(external), "--format", "markdown")
    assert code == 0 and "whisper (external)" in out and "not trained or decoded here" in out
    code, _, err = run_main(monkeypatch, capsys, "compare", str(run), str(elsewhere))
    assert code != 0 and "different test sets" in err and str(elsewhere) in err


@pytest.mark.slow
def test_an_external_system_is_in_the_report_and_the_length_study(decoded_with_external):
    run, external, elsewhere = decoded_with_external
    page = build_report([run, external, elsewhere], worst=1)
    assert "whisper (external)" in page and "not trained or decoded here" in page
    assert f"Left out (no data dir to read durations from): {elsewhere}" in page
    found = length_study([run, external])
    assert {row["run"] for row in found["rows"]} == {str(run), str(external)}
    with pytest.raises(
        Exception, match="an external system scored against references that are not a prepared manifest"
    ):
        length_study([elsewhere])


@pytest.mark.slow
def test_a_run_decoded_under_whisper_en_ranks_with_an_outside_system_scored_under_it(tone_run, tmp_path):
    source, data_dir = tone_run
    run = tmp_path / "cnn"
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("decode"))
    result = decode(run, "test", tag="whisper", normalizer="whisper-en", measure_cost=False)
    assert result.normalizer == "whisper-en" and result.tokens  # the token error rate stays in the model's units
    rows = [
        json.loads(line) for line in (run / "decode" / "test-whisper" / "hypotheses.jsonl").read_text().splitlines()
    ]
    assert all(row["ref"] == row["ref"].lower() for row in rows)
    hyp = tmp_path / "outside.txt"
    hyp.write_text("".join(f"{row['id']} {row['ref'].upper()}\n" for row in rows))  # an outside system, in capitals
    external = tmp_path / "outside"
    write_external(data_dir / "test.jsonl", hyp, "outside", external, split="test-whisper", normalizer="whisper-en")
    ranked = compare.collect([run, external], split="test-whisper")
    assert ranked[0]["test_set"] == ranked[1]["test_set"] and ranked[1]["wer"] == 0.0
    with pytest.raises(Exception, match="different test sets"):  # under basic-1 the references are other strings
        write_external(data_dir / "test.jsonl", hyp, "upper", tmp_path / "upper", split="test-whisper")
        compare.collect([run, tmp_path / "upper"], split="test-whisper")
