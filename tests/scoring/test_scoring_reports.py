"""asrbench/scoring/metrics.py, what it reads and writes: per-utterance scores and their alignments,
confusions, speakers, trn files checked by NIST sclite, transcript files, the report files,
`asrbench score` and the report decode writes.

The error-rate arithmetic and normalization: tests/scoring/test_scoring_rates.py.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import jiwer
import pytest
from helpers import levenshtein, run_main, write_tone_corpus
from typer.testing import CliRunner

from asrbench.cli import app
from asrbench.errors import AsrbenchError
from asrbench.scoring.metrics import (
    confusions,
    error_rates,
    format_alignment,
    per_speaker,
    read_transcripts,
    read_trn,
    score_files,
    score_utterances,
    speaker_report,
    summarize,
    trn_id,
    write_report,
)

runner = CliRunner()
VOCABULARY = ["A", "B", "C", "D"]  # small, so random pairs share words and every kind of edit occurs


def random_words(rng: random.Random, max_words: int = 7) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(0, max_words)))  # 0 words: empty


def test_per_utterance_counts_equal_levenshtein_on_random_pairs():
    rng = random.Random(0)
    references = [random_words(rng) for _ in range(600)]
    hypotheses = [random_words(rng) for _ in range(600)]
    references[:3], hypotheses[:3] = ["", "", "A B"], ["", "C D", ""]  # both empty, empty ref, empty hyp
    scores = score_utterances(references, hypotheses, "none")
    assert sum(not ref for ref in references) > 50 and sum(not hyp for hyp in hypotheses) > 50
    for score, ref, hyp in zip(scores, references, hypotheses, strict=True):
        ref_words, hyp_words = ref.split(), hyp.split()
        assert score.word_errors == levenshtein(ref_words, hyp_words), (ref, hyp)
        assert score.char_errors == levenshtein(list(ref), list(hyp)), (ref, hyp)
        assert score.words == len(ref_words) and score.characters == len(ref)
        # The alignment spells out both texts and agrees with the counts.
        assert [r for op, r, _ in score.alignment if op != "I"] == ref_words
        assert [h for op, _, h in score.alignment if op != "D"] == hyp_words
        assert all(r == h for op, r, h in score.alignment if op == "C")
        assert all(r != h for op, r, h in score.alignment if op == "S")
        ops = [op for op, _, _ in score.alignment]
        assert (ops.count("S"), ops.count("D"), ops.count("I")) == (
            score.substitutions,
            score.deletions,
            score.insertions,
        )
    rates = summarize(scores, "none")
    total_errors = sum(levenshtein(r.split(), h.split()) for r, h in zip(references, hypotheses, strict=True))
    assert rates.substitutions + rates.deletions + rates.insertions == total_errors
    assert rates.wer == pytest.approx(100 * total_errors / sum(len(r.split()) for r in references))
    assert rates == error_rates(references, hypotheses, "none")


def test_empty_reference_convention():
    # An empty reference adds no words; its hypothesis words are insertions counted in the total.
    (score,) = score_utterances([""], ["A B"])
    assert (score.words, score.insertions, score.word_errors) == (0, 2, 2)
    rates = error_rates(["A", ""], ["A", "B C"])
    assert (rates.words, rates.insertions) == (1, 2)
    assert rates.wer == pytest.approx(200.0)
    # Regression (issue 15.2): with no reference word at all the rate has no denominator: it is
    # undefined (None, "n/a"), not 0%; the counts remain.
    rates = error_rates([""], ["A B"])
    assert rates.wer is None and rates.cer is None and rates.insertions == 2 and rates.sentence_errors == 1
    rates = error_rates([""], [""])
    assert rates.wer is None and rates.insertions == 0 and rates.sentence_errors == 0
    # A speaker whose references are all empty: undefined too, while the pooled rate counts its insertions.
    scores = score_utterances(["A B", ""], ["A B", "C"], ids=["s1-1", "s2-1"])
    rows = {row["speaker"]: row for row in per_speaker(scores, {"s1-1": "s1", "s2-1": "s2"})}
    assert rows["s2"]["wer"] is None and rows["s2"]["insertions"] == 1 and rows["s1"]["wer"] == 0.0
    assert summarize(scores).wer == pytest.approx(50.0)


def test_empty_references_in_the_bootstrap():
    """Resamples that draw only empty references have no rate: they are left out of the CI, and a
    set with no reference word at all has no CI."""
    from asrbench.scoring.metrics import confidence_intervals

    assert confidence_intervals(score_utterances([""], ["A B"]))["wer_ci"] is None
    scores = score_utterances(["", "", "", "A"], ["B", "C", "", "A"])  # 2 insertions, 1 reference word
    interval = confidence_intervals(scores, resamples=2000)["wer_ci"]
    # A resample that draws the one real utterance k times and j insertions has rate 100 j / k;
    # the all-empty resamples ((3/4)^4 = 32%) would have pulled the lower bound to 0% as "rates" of 0.
    assert interval is not None and 0.0 <= interval[0] <= summarize(scores).wer <= interval[1]
    rates = [
        r
        for r in __import__("asrbench.scoring.stats", fromlist=["x"]).resampled_rates(
            [[s.word_errors for s in scores]], [s.words for s in scores], 2000
        )[:, 0]
    ]
    assert sum(rate != rate for rate in rates) > 400  # NaN: undefined, not 0


def test_agrees_with_jiwer_on_its_documented_examples():
    # jiwer's README: one substitution in two words.
    assert error_rates(["hello world"], ["hello duck"], "none").wer == pytest.approx(
        100 * jiwer.wer("hello world", "hello duck")
    )
    assert error_rates(["hello world"], ["hello duck"], "none").wer == 50.0
    # jiwer.visualize_alignment / visualize_error_counts docstring example: S=2 D=2 I=4, hits 5, WER 88.89%.
    references = ["short one here", "quite a bit of longer sentence"]
    hypotheses = ["shoe order one", "quite bit of an even longest sentence here"]
    rates = error_rates(references, hypotheses, "none")
    assert (rates.substitutions, rates.deletions, rates.insertions) == (2, 2, 4)
    assert rates.words - rates.substitutions - rates.deletions == 5
    assert rates.wer == pytest.approx(800 / 9) == pytest.approx(100 * jiwer.wer(references, hypotheses))
    assert rates.cer == pytest.approx(100 * jiwer.cer(references, hypotheses))
    pairs = confusions(score_utterances(references, hypotheses, "none"))
    assert {(p["ref"], p["hyp"]) for p in pairs["substitutions"]} == {("short", "order"), ("longer", "longest")}
    assert {p["word"] for p in pairs["deletions"]} == {"here", "a"}
    # jiwer groups neighbouring insertions ("an even"); we count words.
    assert {p["word"] for p in pairs["insertions"]} == {"shoe", "an", "even", "here"}


def test_agrees_with_jiwer_on_random_corpora():
    rng = random.Random(1)
    for _ in range(50):
        references = [random_words(rng) or "A" for _ in range(rng.randint(1, 6))]  # jiwer's CER needs words
        hypotheses = [random_words(rng) for _ in references]
        rates = error_rates(references, hypotheses, "none")
        assert rates.wer == pytest.approx(100 * jiwer.wer(references, hypotheses))
        assert rates.cer == pytest.approx(100 * jiwer.cer(references, hypotheses))


def test_alignment_is_sclite_like():
    (score,) = score_utterances(["the cat sat on the mat"], ["the bat sat the mat too"])
    text = format_alignment(score, "spk_utt1")
    assert text.splitlines() == [
        "id: (spk_utt1)",
        "Scores: (#C #S #D #I) 4 1 1 1",
        "REF:  THE CAT SAT ON  THE MAT ***",
        "HYP:  THE BAT SAT *** THE MAT TOO",
        "Eval:     S       D           I",
    ]
    (score,) = score_utterances(["hello"], [""])
    assert format_alignment(score).splitlines()[2:] == ["REF:  HELLO", "HYP:  *****", "Eval: D"]


def test_confusions_are_counted_and_sorted():
    scores = score_utterances(["A B C", "A B C", "A B"], ["A X C", "A X", "Y A B"])
    pairs = confusions(scores, top=5)
    assert pairs["substitutions"] == [{"ref": "B", "hyp": "X", "count": 2}]
    assert pairs["deletions"] == [{"word": "C", "count": 1}]
    assert pairs["insertions"] == [{"word": "Y", "count": 1}]
    assert confusions(scores, top=0) == {"substitutions": [], "deletions": [], "insertions": []}


def test_speakers_come_from_the_manifest_never_from_the_id():
    """Regression (issue 28.3): yesno ids ``0_0_1_...`` start with the first label, and the prefix
    before '_' was taken as a speaker: "speaker 0" and "speaker 1". Speakers are given (manifest,
    JSONL ``speaker``, utt2spk) or unknown; unknown means no per-speaker table."""
    ids = ["0_0_1_0", "1_1_0_0", "fash-an251-b"]
    scores = score_utterances(["NO NO YES NO", "YES YES NO NO", "A"], ["NO NO YES NO", "YES NO NO", "A"], ids=ids)
    assert speaker_report(scores) == {"per_speaker": None, "speakers": None}
    assert speaker_report(scores, {"0_0_1_0": "s1"}) == {"per_speaker": None, "speakers": None}  # not all known
    known = speaker_report(scores, {"0_0_1_0": "s1", "1_1_0_0": "s1", "fash-an251-b": "fash"})
    assert [(r["speaker"], r["utterances"], r["words"]) for r in known["per_speaker"]] == [("fash", 1, 1), ("s1", 2, 8)]
    rows = per_speaker(scores, {"0_0_1_0": "s1", "1_1_0_0": "s1", "fash-an251-b": "s2"})
    assert [(r["speaker"], r["utterances"], r["words"], r["wer"]) for r in rows] == [
        ("s1", 2, 8, 12.5),
        ("s2", 1, 1, 0.0),
    ]


def test_trn_ids_put_the_speaker_before_the_first_dash():
    assert trn_id("an251-fash-b", "fash") == "fash-an251-fash-b"
    assert trn_id("0_george_0", "george") == "george-0_george_0"
    assert trn_id("u 1(x)", "mary-ann") == "mary_ann-u_1_x_"
    # No speaker: sclite's spu_id still needs one, so a placeholder, never a piece of the id.
    assert trn_id("0_0_1_0") == "unknown-0_0_1_0" and trn_id("fash-an251-b") == "unknown-fash-an251-b"


def test_report_files_parse_back(tmp_path):
    ids = ["fash-an251-b", "0_george_0", "empty-hyp"]
    scores = score_utterances(["yes no", "seven", "one two"], ["yes", "seven eight", ""], ids=ids)
    write_report(tmp_path, scores, {"0_george_0": "george", "fash-an251-b": "fash", "empty-hyp": "empty"})
    ref, hyp = read_trn(tmp_path / "ref.trn"), read_trn(tmp_path / "hyp.trn")
    expected_ids = ["fash-fash-an251-b", "george-0_george_0", "empty-empty-hyp"]
    assert [i for i, _ in ref] == expected_ids == [i for i, _ in hyp]
    assert [t for _, t in ref] == ["YES NO", "SEVEN", "ONE TWO"]
    assert [t for _, t in hyp] == ["YES", "SEVEN EIGHT", ""]
    assert (tmp_path / "hyp.trn").read_text().splitlines()[2] == "(empty-empty-hyp)"
    alignments = (tmp_path / "alignments.txt").read_text()
    assert alignments.count("REF:") == 3 and "id: (george-0_george_0)" in alignments
    report = json.loads((tmp_path / "report.json").read_text())
    assert [row["speaker"] for row in report["per_speaker"]] == ["empty", "fash", "george"]
    assert report["confusions"]["insertions"] == [{"word": "EIGHT", "count": 1}]
    assert report["normalizer"] == "basic-1"


# Debian's sctk package installs sclite off PATH, under /usr/lib/sctk/bin.
SCLITE = shutil.which("sclite") or next((p for p in ["/usr/lib/sctk/bin/sclite"] if Path(p).is_file()), None)


def test_sclite_agrees_on_the_trn_files(tmp_path):
    # No skip: CI must run this (`make test` installs SCTK when it is root with apt-get).
    if SCLITE is None:
        pytest.fail(
            "NIST sclite (SCTK) is not installed: apt-get install sctk (Debian/Ubuntu, as root; "
            "`make test` does it when it can), or build SCTK from source and put sclite on PATH",
            pytrace=False,
        )
    rng = random.Random(3)
    speakers = {f"u{index:03d}": rng.choice(["ann", "bob_x", "c-d"]) for index in range(80)}
    references = [random_words(rng) or "A" for _ in speakers]
    hypotheses = [random_words(rng) if rng.random() < 0.5 else ref for ref in references]
    scores = score_utterances(references, hypotheses, ids=list(speakers))
    write_report(tmp_path, scores, speakers)
    output = subprocess.run(
        [SCLITE, "-r", "ref.trn", "trn", "-h", "hyp.trn", "trn", "-i", "spu_id", "-o", "sum", "stdout"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    table = {}  # first cell -> cells of the rows "| SPKR | # Snt # Wrd | Corr Sub Del Ins Err S.Err |"
    for line in output.splitlines():
        cells = [cell.split() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and len(cells[0]) == 1:
            table[cells[0][0]] = cells
    rates = summarize(scores)
    assert table["Sum/Avg"][1] == [str(rates.utterances), str(rates.words)]
    assert float(table["Sum/Avg"][2][4]) == pytest.approx(rates.wer, abs=0.051)
    for row in per_speaker(scores, speakers):  # sclite's speaker: before the first '-', which was '_' in "c-d"
        sclite_speaker = row["speaker"].replace("-", "_")
        assert table[sclite_speaker][1] == [str(row["utterances"]), str(row["words"])]
        assert float(table[sclite_speaker][2][4]) == pytest.approx(row["wer"], abs=0.051)


def test_malformed_trn_line_is_an_error(tmp_path):
    (tmp_path / "bad.trn").write_text("A B (id1)\nno id here\n")
    with pytest.raises(AsrbenchError, match=r"bad.trn:2"):
        read_trn(tmp_path / "bad.trn")


# --- transcript files ---------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_kaldi_and_jsonl_transcripts(tmp_path):
    kaldi = read_transcripts(write(tmp_path / "text", "u1 Hello world\n\nu2\nu3  two  spaces \n"))
    assert kaldi.texts == {"u1": "Hello world", "u2": "", "u3": "two  spaces "}
    rows = [{"id": "u1", "text": "hi", "speaker": "ann"}, {"id": "u2", "text": ""}]
    jsonl = read_transcripts(write(tmp_path / "m.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))
    assert jsonl.texts == {"u1": "hi", "u2": ""} and jsonl.speakers == {"u1": "ann"}
    decoded = write(tmp_path / "hypotheses.jsonl", json.dumps({"id": "u1", "ref": "A B", "hyp": "A"}) + "\n")
    assert read_transcripts(decoded, "ref").texts == {"u1": "A B"}
    assert read_transcripts(decoded, "hyp").texts == {"u1": "A"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("u1 a\nu2 b\nu1 c\n", r"text:3: duplicate utterance id 'u1' \(first on line 1\)"),
        (" u1 a\n", r"text:1: starts with whitespace"),
        ('{"id": "u1", "text": "a"}\n{"id": "u2", "text": \n', r"text:2: not valid JSON"),
        ('{"id": "u1", "text": "a"}\n["u2", "b"]\n', r"text:2: expected a JSON object"),
        ('{"id": "u1", "words": "a"}\n', r"text:1: no string 'ref' or 'text'"),
        ('{"id": "u1", "text": 3}\n', r"text:1: no string 'ref' or 'text'"),
    ],
    ids=["duplicate", "leading-space", "bad-json", "not-object", "no-text", "text-not-string"],
)
def test_malformed_transcripts_name_file_and_line(tmp_path, content, message):
    with pytest.raises(AsrbenchError, match=message):
        read_transcripts(write(tmp_path / "text", content))


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(AsrbenchError, match="no such file"):
        read_transcripts(tmp_path / "nope")


def test_score_files_matches_ids_and_handles_missing_ones(tmp_path):
    ref = write(tmp_path / "ref", "u1 the cat sat\nu2 on the mat\nu3 yes\n")
    hyp = write(tmp_path / "hyp", "u2 on a mat\nu1 the cat sat\n")
    with pytest.raises(AsrbenchError, match=r"hyp: no hypothesis for utterance 'u3' of .*ref"):
        score_files(ref, hyp)
    result = score_files(ref, hyp, missing_as_empty=True)
    assert (result["substitutions"], result["deletions"], result["words"]) == (1, 1, 7)
    assert result["missing_hypotheses"] == 1 and result["utterances"] == 3
    extra = write(tmp_path / "extra", "u1 the cat sat\nu2 on the mat\nu3 yes\nu4 surprise\n")
    with pytest.raises(AsrbenchError, match=r"ref: no reference for utterance 'u4' of .*extra"):
        score_files(ref, extra)
    result = score_files(ref, extra, missing_as_empty=True)
    assert result["insertions"] == 1 and result["missing_references"] == 1 and result["wer"] == pytest.approx(100 / 7)
    # Regression (issue 15.2): an empty reference against 'hello there' scored WER 0%.
    empty_ref = write(tmp_path / "empty_ref", "u1\n")
    hello = write(tmp_path / "hello", "u1 hello there\n")
    result = score_files(empty_ref, hello)
    assert result["wer"] is None and result["wer_ci"] is None and result["insertions"] == 2 and result["words"] == 0
    # --missing-as-empty: an extra hypothesis id is scored against an empty reference, the same way.
    only_extra = write(tmp_path / "only_extra", "u1\nu9 surprise words\n")
    result = score_files(empty_ref, only_extra, missing_as_empty=True)
    assert result["wer"] is None and result["insertions"] == 2 and result["missing_references"] == 1


# --- the command line -----------------------------------------------------------------------------------


REQUIRED = {"wer", "cer", "substitutions", "deletions", "insertions", "words", "utterances", "wer_ci", "normalizer"}


def test_score_command_on_kaldi_files(tmp_path):
    ref = write(tmp_path / "ref.txt", "spk1-u1 Hello, world!\nspk1-u2 the cat sat\nspk2-u1 yes\n")
    hyp = write(tmp_path / "hyp.txt", "spk1-u1 hello word\nspk1-u2 the cat sat down\nspk2-u1 yes\n")
    result = runner.invoke(app, ["score", str(ref), str(hyp), "--format", "json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert REQUIRED <= set(scored)
    assert (scored["substitutions"], scored["deletions"], scored["insertions"]) == (1, 0, 1)
    assert (scored["words"], scored["utterances"], scored["normalizer"]) == (6, 3, "basic-1")
    assert scored["wer"] == pytest.approx(100 * 2 / 6)
    low, high = scored["wer_ci"]
    assert low <= scored["wer"] <= high
    assert scored["per_speaker"] is None  # "spk1-" is an id, not a speaker: no utt2spk, no speakers
    table = runner.invoke(app, ["score", str(ref), str(hyp)])
    assert table.exit_code == 0 and "33.33" in table.stdout and "WORLD -> WORD" in table.stdout
    none = json.loads(
        runner.invoke(app, ["score", str(ref), str(hyp), "--format", "json", "--normalizer", "none"]).stdout
    )
    assert none["normalizer"] == "none" and none["wer"] > scored["wer"]  # case and punctuation now count


def test_score_command_on_jsonl_and_decode_output(tmp_path):
    ref = write(
        tmp_path / "ref.jsonl",
        "".join(json.dumps({"id": f"u{i}", "text": t, "speaker": "s"}) + "\n" for i, t in enumerate(["a b", "c d e"])),
    )
    hyp = write(
        tmp_path / "hyp.jsonl",
        "".join(json.dumps({"id": f"u{i}", "text": t}) + "\n" for i, t in enumerate(["a", "c d e f"])),
    )
    out = tmp_path / "report"
    result = runner.invoke(app, ["score", str(ref), str(hyp), "--format", "json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert (scored["deletions"], scored["insertions"], scored["words"]) == (1, 1, 5)
    assert [i for i, _ in read_trn(out / "ref.trn")] == ["s-u0", "s-u1"]
    pairs = [("A B", "A B"), ("C", "D")]
    decoded = write(
        tmp_path / "hypotheses.jsonl",
        "".join(json.dumps({"id": f"u{i}", "ref": r, "hyp": h}) + "\n" for i, (r, h) in enumerate(pairs)),
    )
    result = runner.invoke(app, ["score", str(decoded), str(decoded), "--format", "json"])
    assert json.loads(result.stdout)["substitutions"] == 1


def test_score_invents_no_speakers_from_yesno_ids(tmp_path):
    """Regression (issue 28.3): ``score`` on yesno printed a per-speaker table of "speakers" 0 and 1."""
    ids = ["0_0_1_0_0_0_1_0", "0_1_0_0_0_1_0_1", "1_0_0_0_0_0_0_1", "1_1_0_1_0_1_0_0"]
    words = {"0": "NO", "1": "YES"}
    ref = write(tmp_path / "ref.txt", "".join(f"{i} {' '.join(words[c] for c in i.split('_'))}\n" for i in ids))
    hyp = write(tmp_path / "hyp.txt", "".join(f"{i} YES\n" for i in ids))
    scored = json.loads(runner.invoke(app, ["score", str(ref), str(hyp), "--format", "json"]).stdout)
    assert scored["per_speaker"] is None and scored["speakers"] is None
    table = runner.invoke(app, ["score", str(ref), str(hyp)], terminal_width=140).stdout
    assert "per speaker" not in table
    out = tmp_path / "report"
    score_files(ref, hyp, out_dir=out)
    assert [i for i, _ in read_trn(out / "ref.trn")] == [f"unknown-{i}" for i in ids]
    assert json.loads((out / "report.json").read_text())["per_speaker"] is None


def test_decode_hypotheses_carry_the_manifest_speaker(tmp_path):
    """Regression (issue 28.3): decode's hypotheses.jsonl had no speaker, so scoring it (or a study of
    it) could only guess one from the id."""
    from types import SimpleNamespace

    from asrbench.data.manifest import Utterance
    from asrbench.decoding.decode import _write_scores

    utterances = [
        Utterance("an251-fash-b", "a.wav", 1.0, "YES NO", "fash"),
        Utterance("cen1-mblw-b", "b.wav", 1.0, "ONE", "mblw"),
    ]
    _write_scores(tmp_path, SimpleNamespace(utterances=utterances), ["YES", "ONE"], "basic-1")
    rows = [json.loads(line) for line in (tmp_path / "hypotheses.jsonl").read_text().splitlines()]
    assert [row.get("speaker") for row in rows] == ["fash", "mblw"]
    scored = score_files(tmp_path / "hypotheses.jsonl", tmp_path / "hypotheses.jsonl")
    assert [row["speaker"] for row in scored["per_speaker"]] == ["fash", "mblw"]
    unknown = [Utterance("0_1_0", "c.wav", 1.0, "NO YES NO"), Utterance("1_1_0", "d.wav", 1.0, "YES YES NO")]
    _write_scores(tmp_path / "yesno", SimpleNamespace(utterances=unknown), ["NO", "YES"], "basic-1")
    rows = [json.loads(line) for line in (tmp_path / "yesno" / "hypotheses.jsonl").read_text().splitlines()]
    assert all("speaker" not in row for row in rows)
    assert json.loads((tmp_path / "yesno" / "report.json").read_text())["per_speaker"] is None


def test_score_reads_the_trn_files_decode_writes(tmp_path, monkeypatch, capsys):
    """Regression (issue 28.10): ``score ref.trn hyp.trn`` failed with "duplicate utterance id 'NO'":
    sclite's trn lines (``TEXT (SPEAKER-UTTERANCE)``) were read as Kaldi ``id text``. A trn file is
    known by its .trn suffix or by every line ending in ``(id)``."""
    ids = ["0_0_1_0", "0_1_1_0", "1_0_0_1", "an251-fash-b"]
    refs = ["NO NO YES NO", "NO YES YES NO", "YES NO NO YES", "ERASE C Q Q F SEVEN"]
    hyps = ["NO NO YES NO", "NO YES NO", "YES NO NO YES YES", ""]
    out = tmp_path / "decode"
    write_report(out, score_utterances(refs, hyps, ids=ids), {"an251-fash-b": "fash"})
    expected = error_rates(refs, hyps)
    code, stdout, err = run_main(
        monkeypatch, capsys, "score", str(out / "ref.trn"), str(out / "hyp.trn"), "--format", "json"
    )
    assert code == 0, err
    scored = json.loads(stdout)
    assert (scored["wer"], scored["words"], scored["utterances"]) == (expected.wer, expected.words, 4)
    assert (scored["substitutions"], scored["deletions"], scored["insertions"]) == (
        expected.substitutions,
        expected.deletions,
        expected.insertions,
    )
    assert scored["per_speaker"] is None  # a trn id's speaker part is not a given speaker
    # Without the suffix: every line ends in "(id)", so it is a trn file too.
    plain = write(tmp_path / "hyp.txt", (out / "hyp.trn").read_text())
    assert read_transcripts(plain, "hyp").texts == read_transcripts(out / "hyp.trn", "hyp").texts
    assert read_transcripts(plain, "hyp").texts["unknown-0_1_1_0"] == "NO YES NO"
    assert read_transcripts(plain, "hyp").texts["fash-an251-fash-b"] == ""
    # A Kaldi text whose last word happens to be in parentheses on one line stays a Kaldi text.
    kaldi = write(tmp_path / "text", "u1 hello (laughs)\nu2 hello there\n")
    assert read_transcripts(kaldi).texts == {"u1": "hello (laughs)", "u2": "hello there"}
    bad = write(tmp_path / "bad.trn", "A B (u1)\nno id here\n")
    with pytest.raises(AsrbenchError, match=r"bad.trn:2: not a trn line"):
        read_transcripts(bad)
    twice = write(tmp_path / "twice.trn", "A (u1)\nB (u1)\n")
    with pytest.raises(AsrbenchError, match=r"twice.trn:2: duplicate utterance id 'u1' \(first on line 1\)"):
        read_transcripts(twice)


def test_score_title_names_reference_then_hypothesis(tmp_path, monkeypatch):
    """Regression (issue 28.10): the title read "HYP vs REF", the reverse of the argument order."""
    monkeypatch.chdir(tmp_path)  # short relative names: a long temp path would be folded mid-name
    write(tmp_path / "truth.txt", "u1 a b\n")
    write(tmp_path / "system.txt", "u1 a c\n")
    table = runner.invoke(app, ["score", "truth.txt", "system.txt"], terminal_width=300).stdout
    title = " ".join(table.split("┏")[0].split())  # the title, wrapped or not, comes before the table
    assert title.index("truth.txt") < title.index("system.txt")
    assert "truth.txt (reference)" in title and "system.txt (hypothesis)" in title


def test_a_utf8_bom_is_not_part_of_the_first_id(tmp_path):
    """Regression (issue 28.10): a BOM (as Windows editors write) was read into the first id, so
    'u1' had no hypothesis. Kaldi text, JSONL, trn, utt2spk and manifests are read as utf-8-sig."""
    bom = "\ufeff"
    ref = write(tmp_path / "ref.txt", bom + "u1 a b\nu2 c\n")
    hyp = write(
        tmp_path / "hyp.jsonl",
        bom + json.dumps({"id": "u1", "text": "a b"}) + "\n" + json.dumps({"id": "u2", "text": "d"}) + "\n",
    )
    assert list(read_transcripts(ref).texts) == ["u1", "u2"]
    assert list(read_transcripts(hyp, "hyp").texts) == ["u1", "u2"]  # JSONL found despite the BOM
    utt2spk = write(tmp_path / "utt2spk", bom + "u1 ann\nu2 bob\n")
    scored = score_files(ref, hyp, utt2spk=utt2spk)
    assert scored["wer"] == pytest.approx(100 / 3) and [r["speaker"] for r in scored["per_speaker"]] == ["ann", "bob"]
    trn = write(tmp_path / "hyp.trn", bom + "A B (u1)\nD (u2)\n")
    assert list(read_transcripts(trn, "hyp").texts) == ["u1", "u2"] and read_trn(trn)[0][0] == "u1"
    from asrbench.data.manifest import read_manifest

    manifest = write(
        tmp_path / "test.jsonl", bom + json.dumps({"id": "u1", "audio": "a.wav", "duration": 1.0, "text": "A B"}) + "\n"
    )
    assert read_manifest(manifest)[0].id == "u1"


def test_score_command_missing_ids_exit_2_naming_id_and_file(monkeypatch, capsys, tmp_path):
    ref = write(tmp_path / "ref.txt", "u1 a b\nu2 c\n")
    hyp = write(tmp_path / "hyp.txt", "u1 a b\n")
    code, out, err = run_main(monkeypatch, capsys, "score", str(ref), str(hyp), "--format", "json")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "'u2'" in err and str(hyp) in err and "--missing-as-empty" in err
    code, out, _ = run_main(monkeypatch, capsys, "score", str(ref), str(hyp), "--format", "json", "--missing-as-empty")
    assert code == 0
    scored = json.loads(out)
    assert scored["deletions"] == 1 and scored["wer"] == pytest.approx(100 / 3)


def test_score_command_user_errors_exit_2(monkeypatch, capsys, tmp_path):
    ref = write(tmp_path / "ref.txt", "u1 a\nu1 b\n")
    code, _, err = run_main(monkeypatch, capsys, "score", str(ref), str(ref))
    assert code == 2 and f"{ref}:2: duplicate utterance id 'u1'" in err
    good = write(tmp_path / "good.txt", "u1 a\n")
    code, _, err = run_main(monkeypatch, capsys, "score", str(good), str(good), "--format", "xml")
    assert code == 2 and "unknown format 'xml'" in err
    code, _, err = run_main(monkeypatch, capsys, "score", str(good), str(good), "--normalizer", "basic-9")
    assert code == 2 and "unknown text normalizer" in err


# --- decode writes the report ---------------------------------------------------------------------------


@pytest.mark.slow
def test_decode_writes_alignments_trn_report_and_cis(tmp_path):
    import shutil

    from asrbench.decoding.decode import decode
    from asrbench.studies.compare import collect
    from asrbench.training.trainer import train

    data_dir = write_tone_corpus(tmp_path)
    recipe = write(
        tmp_path / "recipe.yaml",
        f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
train: {{epochs: 1, batch_frames: 400}}
models:
  dnn: {{context: 1, stride: 2, hidden_size: 8, num_layers: 1}}
""",
    )
    run = tmp_path / "run"
    train(recipe, "dnn", run, seed=0)
    result = decode(run, "test")
    out = run / "decode" / "test"
    for name in ("hypotheses.jsonl", "alignments.txt", "ref.trn", "hyp.trn", "report.json", "result.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "result.json").read_text())
    assert saved["normalizer"] == "basic-1" and saved["wer_ci"] == list(result.wer_ci)
    for key in ("wer", "cer"):
        low, high = saved[f"{key}_ci"]
        assert low <= saved[key] <= high
    rows = [json.loads(line) for line in (out / "hypotheses.jsonl").read_text().splitlines()]
    ref, hyp = read_trn(out / "ref.trn"), read_trn(out / "hyp.trn")
    assert [i for i, _ in ref] == [trn_id(row["id"]) for row in rows] == [i for i, _ in hyp]
    assert [t for _, t in ref] == [row["ref"] for row in rows]
    assert [t for _, t in hyp] == [row["hyp"] for row in rows]
    assert (out / "alignments.txt").read_text().count("REF:") == len(rows) == saved["utterances"]
    report = json.loads((out / "report.json").read_text())
    # The tone corpus's manifest gives no speakers: no per-speaker rows (none guessed from the ids).
    assert report["per_speaker"] is None and report["speakers"] is None
    # Two decodes of the same test set are compared pairwise; identical systems are equally good.
    twin = tmp_path / "twin"
    shutil.copytree(run, twin)
    first, second = collect([run, twin])
    assert first["vs_best"] == "best" and second["vs_best"] == "not significantly worse"
    assert first["pairs"][0]["p_better"] == 0.5 and first["pairs"][0]["sign_p"] == 1.0


def test_cis_resample_speakers_when_every_utterance_has_one(tmp_path):
    """Issue 31: score (and decode, through the same function) block the bootstrap by speaker when
    the speakers are given for every utterance, and say so in ``ci.method``."""
    import numpy as np

    from asrbench.scoring import stats
    from asrbench.scoring.metrics import score_files

    rows = [
        {"id": f"u{i:02d}", "ref": "ONE TWO THREE FOUR", "hyp": "ONE TWO" if i % 4 == 0 else "ONE TWO THREE FOUR"}
        for i in range(40)
    ]
    refs, hyps = tmp_path / "ref.jsonl", tmp_path / "hyp.jsonl"
    refs.write_text("".join(json.dumps({"id": r["id"], "text": r["ref"]}) + "\n" for r in rows))
    hyps.write_text("".join(json.dumps({"id": r["id"], "text": r["hyp"]}) + "\n" for r in rows))
    plain = score_files(refs, hyps)
    assert plain["ci"]["method"] == "percentile bootstrap over utterances"
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"{r['id']} s{i % 5}\n" for i, r in enumerate(rows)))
    blocked = score_files(refs, hyps, utt2spk=utt2spk)
    assert blocked["ci"]["method"] == "speaker-blocked bootstrap over 5 speakers, log-t interval"
    errors = np.array([2.0 if i % 4 == 0 else 0.0 for i in range(40)])
    expected = stats.bootstrap_ci(errors, np.full(40, 4.0), groups=[f"s{i % 5}" for i in range(40)])
    assert blocked["wer_ci"] == pytest.approx(list(expected))
