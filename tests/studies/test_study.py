"""`asrbench study length`: WER by duration, reference length and speaker, with CIs per bin, from
decode results (written here by hand: the study reads only decode dirs and manifests)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import run_main

from asrbench.errors import AsrbenchError
from asrbench.studies.length import duration_edges, length_study, render, write_study

# (id, speaker, duration, reference, hypothesis of run a, of run b)
UTTERANCES = [
    ("spk1-u1", "spk1", 1.0, "yes", "yes", "no"),
    ("spk1-u2", "spk1", 1.5, "no no", "no no", "no"),
    ("spk1-u3", "spk1", 3.0, "one two three four", "one two three four", "one two three for"),
    ("spk2-u1", "spk2", 4.0, "a b c d e f g h i", "a b c d e f g h x", "a b c d e f g h i"),
    ("spk2-u2", "spk2", 6.0, "the cat sat on the mat", "the cat sat on a mat", "the cat sat on the mat"),
    ("spk2-u3", "spk2", 9.0, "one", "won", "one"),
]


def _runs(root: Path) -> tuple[Path, Path]:
    data = root / "data"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text(
        "".join(
            json.dumps({"id": u, "audio": f"{u}.wav", "duration": d, "text": ref, "speaker": s}) + "\n"
            for u, s, d, ref, _, _ in UTTERANCES
        )
    )
    runs = []
    for name, column in (("a", 4), ("b", 5)):
        decoded = root / name / "decode" / "test"
        decoded.mkdir(parents=True)
        (decoded / "result.json").write_text(json.dumps({"model": f"model_{name}", "data_dir": str(data)}))
        (decoded / "hypotheses.jsonl").write_text(
            "".join(json.dumps({"id": row[0], "ref": row[3], "hyp": row[column]}) + "\n" for row in UTTERANCES)
        )
        runs.append(root / name)
    return runs[0], runs[1]


def _row(study: dict, run: Path, axis: str, bin_name: str) -> dict:
    return next(r for r in study["rows"] if r["run"] == str(run) and r["axis"] == axis and r["bin"] == bin_name)


def test_bins_count_each_utterance_once_with_its_errors_and_a_ci(tmp_path: Path):
    a, b = _runs(tmp_path)
    study = length_study([a, b], bins="0,2,5")
    assert study["duration_edges"] == [0.0, 2.0, 5.0, None]
    short = _row(study, a, "duration", "0–2 s")  # yes, no no: no errors for a
    assert (short["utterances"], short["words"], short["errors"], short["wer"]) == (2, 3, 0, 0.0)
    assert _row(study, b, "duration", "0–2 s")["errors"] == 2  # "no" for "yes", one "no" deleted
    long = _row(study, a, "duration", "≥ 5 s")  # 6 words + 1 word, 2 errors
    assert long["words"] == 7 and long["wer"] == pytest.approx(200 / 7)
    low, high = long["wer_ci"]
    assert 0.0 <= low <= long["wer"] <= high <= 100.0
    for run in (a, b):
        for axis in ("duration", "words", "speaker"):
            rows = [r for r in study["rows"] if r["run"] == str(run) and r["axis"] == axis]
            assert sum(r["utterances"] for r in rows) == len(UTTERANCES)  # every utterance in one bin
            assert sum(r["words"] for r in rows) == 23
    assert _row(study, a, "words", "1 word")["utterances"] == 2 and _row(study, a, "words", "≥ 8 words")["words"] == 9
    assert _row(study, b, "speaker", "spk1")["errors"] == 3 and _row(study, b, "speaker", "spk2")["errors"] == 0


def test_automatic_bins_are_quartiles_and_bad_bins_are_one_line(tmp_path: Path):
    assert duration_edges([1, 2, 3, 4, 5, 6, 7, 8]) == [0.0, 2.8, 4.5, 6.2, math.inf]
    assert duration_edges([1.0], "0,2,4") == [0.0, 2.0, 4.0, math.inf]
    for bad in ("4,2", "x", "3"):
        with pytest.raises(AsrbenchError, match="--bins"):
            duration_edges([1.0], bad)


def test_the_study_renders_and_writes_its_files(tmp_path: Path):
    a, b = _runs(tmp_path)
    study = length_study([a, b])
    markdown = render(study, "markdown")
    assert "### WER by duration (test)" in markdown and "| model_a |" in markdown
    assert render(study, "csv").splitlines()[0] == "run,model,axis,bin,utterances,words,errors,wer,wer_ci"
    assert json.loads(render(study, "json"))["rows"] == json.loads(json.dumps(study["rows"]))
    assert "WER by speaker" in render(study, "table")
    written = write_study(study, tmp_path / "out")
    assert [p.name for p in written] == ["study.json", "study.md", "wer_by_duration.png"]
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_speaker_axis_without_speakers(tmp_path: Path, monkeypatch, capsys):
    """Regression (issue 28.3): on yesno (ids ``0_0_1_...``, no speaker in the manifest) the study
    showed "speakers" 0 and 1, the first label of each id. Speakers come from the manifest (or the
    decode's hypotheses, which carry it); without them there is no speaker table."""
    a, _ = _runs(tmp_path)
    manifest = tmp_path / "data" / "test.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    renamed = {row["id"]: "_".join(format(i, "03b")) for i, row in enumerate(rows)}  # 0_0_0, 0_0_1, ...
    manifest.write_text(
        "".join(
            json.dumps({**{k: v for k, v in row.items() if k != "speaker"}, "id": renamed[row["id"]]}) + "\n"
            for row in rows
        )
    )
    hypotheses = a / "decode" / "test" / "hypotheses.jsonl"
    decoded = [json.loads(line) for line in hypotheses.read_text().splitlines()]
    hypotheses.write_text("".join(json.dumps({**row, "id": renamed[row["id"]]}) + "\n" for row in decoded))
    study = length_study([a])
    assert [row for row in study["rows"] if row["axis"] == "speaker"] == []
    assert {row["axis"] for row in study["rows"]} == {"duration", "words"}
    assert "WER by speaker" not in render(study, "markdown") and "WER by speaker" not in render(study, "table")
    # The decode's hypotheses carry the manifest's speaker: it is used as given.
    hypotheses.write_text(
        "".join(json.dumps({**row, "id": renamed[row["id"]], "speaker": "ann"}) + "\n" for row in decoded)
    )
    speakers = [row for row in length_study([a])["rows"] if row["axis"] == "speaker"]
    assert [(row["bin"], row["utterances"]) for row in speakers] == [("ann", len(UTTERANCES))]


def test_missing_decodes_and_foreign_hypotheses_are_one_line(tmp_path: Path, monkeypatch, capsys):
    a, _ = _runs(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "study", "length", str(a), "--split", "dev")
    assert code == 2 and "no decode result for split 'dev'" in err and "Traceback" not in err
    # Regression (issue 28.8): a tagged decode dir is written by --split SPLIT --tag TAG, not --split SPLIT-TAG.
    code, _, err = run_main(monkeypatch, capsys, "study", "length", str(a), "--split", "test-tuned")
    assert code == 2 and f"`asrbench decode {a} --split test --tuned --tag tuned`" in err
    hypotheses = a / "decode" / "test" / "hypotheses.jsonl"
    hypotheses.write_text(hypotheses.read_text() + json.dumps({"id": "other", "ref": "x", "hyp": "x"}) + "\n")
    code, _, err = run_main(monkeypatch, capsys, "study", "length", str(a))
    assert code == 2 and "utterance 'other' of its decode is not in" in err
    hypotheses.write_text("{not json\n")
    code, _, err = run_main(monkeypatch, capsys, "study", "length", str(a))
    assert code == 2 and "hypotheses.jsonl:1: not a decode hypothesis" in err


def test_the_command_prints_the_tables(tmp_path: Path, monkeypatch, capsys):
    a, b = _runs(tmp_path)
    code, out, _ = run_main(
        monkeypatch, capsys, "study", "length", str(a), str(b), "--format", "markdown", "-o", str(tmp_path / "out")
    )
    assert code == 0 and out.count("### WER by") == 3 and (tmp_path / "out" / "study.json").is_file()


# --- study data: nested subsets of train, one bench sweep per fraction ----------------------------


def test_train_subsets_are_nested_seeded_and_the_same_whatever_the_order():
    from asrbench.data.manifest import Utterance
    from asrbench.data.pipeline import train_subset

    utterances = [Utterance(f"u{i:03d}", f"u{i}.wav", 1.0, "x") for i in range(200)]
    tenth, half = train_subset(utterances, 0.1, 0), train_subset(utterances, 0.5, 0)
    assert len(tenth) == 20 and len(half) == 100 and tenth < half  # nested
    assert train_subset(utterances, 1.0, 0) == set(range(200))
    assert train_subset(utterances, 0.1, 1) != tenth  # another seed, another subset
    shuffled = utterances[::-1]  # the same utterances listed in another order: the same ids chosen
    assert {shuffled[i].id for i in train_subset(shuffled, 0.1, 0)} == {utterances[i].id for i in tenth}


def test_fractions_and_the_subset_override_are_checked(tmp_path: Path):
    from asrbench.recipe.config import resolve
    from asrbench.studies.data_size import data_study, parse_fractions

    assert parse_fractions("1.0,0.25") == [0.25, 1.0]
    for bad in ("0", "1.5", "a", "0.5,0.5"):
        with pytest.raises(AsrbenchError, match="--fractions"):
            parse_fractions(bad)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {dir: x}\nmodels: {dnn: {}}\n")
    with pytest.raises(AsrbenchError, match="data.train_fraction must be in"):
        resolve(recipe, "dnn", ["data.train_fraction=0"])
    with pytest.raises(AsrbenchError, match="the study sets them"):
        data_study(recipe, "dnn", [0.5], overrides=["data.train_fraction=0.5"])


@pytest.mark.slow
def test_the_data_study_trains_every_model_on_the_same_nested_subsets(tmp_path: Path):
    from helpers import write_tone_corpus

    from asrbench.runs.rundir import read_config
    from asrbench.studies.data_size import data_study

    data_dir = write_tone_corpus(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
train: {{epochs: 3, batch_frames: 400, lr: 3.0e-3, warmup_steps: 5}}
models:
  dnn: {{context: 3, stride: 2, hidden_size: 32, num_layers: 2}}
  cnn: {{subsample_channels: 4, channels: 16, kernel_size: 5, num_blocks: 1}}
""")
    out = tmp_path / "study"
    study = data_study(recipe, "all", [0.5, 1.0], seeds=1, out=out, epochs=2)
    assert {(r["model"], r["fraction"]) for r in study["runs"]} == {(m, f) for m in ("dnn", "cnn") for f in (0.5, 1.0)}
    hours = {(r["model"], r["fraction"]): r["train_hours"] for r in study["runs"]}
    assert hours[("dnn", 0.5)] == hours[("cnn", 0.5)] < hours[("dnn", 1.0)]  # the same subset for every model
    for run in study["runs"]:
        assert run["wer"] is not None and read_config(Path(run["run"])).data.train_fraction == run["fraction"]
    assert (out / "study.json").is_file() and (out / "wer_vs_hours.png").read_bytes()[:4] == b"\x89PNG"
    assert "| dnn | 0.5 |" in (out / "study.md").read_text()
    again = data_study(recipe, "all", [0.5, 1.0], seeds=1, out=out, epochs=2)  # resumes: nothing retrained
    assert [r["wer"] for r in again["runs"]] == [r["wer"] for r in study["runs"]]
