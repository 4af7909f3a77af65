"""N-gram LMs: Kneser–Ney by hand, normalization, ARPA round trips and parsing, LM dirs, CLI."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asrbench import cli
from asrbench.cli import app, run_app
from asrbench.decoding.lm import BOS, EOS, FALLBACK_DISCOUNTS, FLOOR_LOG10, UNK, NGramLM, load_lm, train_lm, train_ngram
from asrbench.errors import AsrbenchError

LN10 = math.log(10.0)

CORPUS = [
    "THE CAT SAT ON THE MAT",
    "THE DOG SAT ON THE LOG",
    "A CAT SAW THE DOG",
    "THE CAT ATE THE FISH",
    "A DOG ATE",
    "ON THE MAT THE CAT SAT",
    "THE LOG SAT ON A DOG",
    "THE THE THE",
]


def words(texts: list[str]) -> list[list[str]]:
    return [text.split() for text in texts]


def conditional_total(lm: NGramLM, state: tuple) -> float:
    """Sum of p(w | state) over everything the model can predict: the vocabulary without <s>."""
    return sum(math.exp(lm.score(state, token)[0]) for token in lm.vocabulary - {BOS})


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("discount", ["modified-kneser-ney", "kneser-ney"])
def test_conditional_probabilities_sum_to_one(order, discount):
    lm = train_ngram(words(CORPUS * 3 + ["A FISH"]), order, discount=discount)
    states = [lm.start(), (), ("THE",), ("THE", "CAT"), ("CAT", "SAT", "ON"), ("FISH",), ("MAT", "A", "LOG")]
    for state in states:
        assert conditional_total(lm, state[-(order - 1) :] if order > 1 else ()) == pytest.approx(1.0, abs=1e-6)
    # Histories reached by scoring real sentences, including an unseen word.
    state = lm.start()
    for token in ["A", "DOG", "SAW", "ZEBRA", "THE"]:
        state = lm.score(state, token)[1]
        assert conditional_total(lm, state) == pytest.approx(1.0, abs=1e-6)


def test_char_model_sums_to_one_and_writes_space_token(tmp_path):
    lm = train_ngram([list(text) for text in CORPUS], 4, unit="char")
    assert " " in lm.vocabulary and "<space>" not in lm.vocabulary
    for history in ["", "TH", "THE ", "CAT S", "QQ"]:
        state = lm.start()
        for char in history:
            state = lm.score(state, char)[1]
        assert conditional_total(lm, state) == pytest.approx(1.0, abs=1e-6)
    lm.write_arpa(tmp_path / "char.arpa")
    text = (tmp_path / "char.arpa").read_text(encoding="utf-8")
    assert "\t<space>\t" in text or "\t<space> " in text
    reread = NGramLM.from_arpa(tmp_path / "char.arpa", unit="char")
    assert reread.vocabulary == lm.vocabulary
    assert reread.sentence_logprob("THE CAT") == lm.sentence_logprob("THE CAT")


def test_hand_computed_bigram_model_with_fallback_discounts():
    # Sentences "A B", "A B", "B". Bigram counts: <s> A 2, A B 2, B </s> 3, <s> B 1: no 4s,
    # so D3 would be 3 and the order falls back to (0.5, 1, 1.5). Unigram continuation counts:
    # A 1 (after <s>), B 2 (after A, <s>), </s> 1 (after B): no 3s, fallback too.
    lm = train_ngram(words(["A B", "A B", "B"]), 2)
    assert lm.discounts == {1: FALLBACK_DISCOUNTS, 2: FALLBACK_DISCOUNTS}
    # Unigrams: total 4, gamma = (0.5 + 1 + 0.5) / 4 = 0.5, spread over A, B, </s>, <unk>.
    unigram = {"A": 0.5 / 4 + 0.125, "B": 1 / 4 + 0.125, EOS: 0.5 / 4 + 0.125, UNK: 0.125}
    for token, probability in unigram.items():
        assert math.exp(lm.score((), token)[0]) == pytest.approx(probability, rel=1e-12)
    start = lm.start()
    # After <s>: total 3, discounted mass 1 + 0.5 = 1.5, gamma = 0.5.
    assert math.exp(lm.score(start, "A")[0]) == pytest.approx((2 - 1 + 1.5 * 0.25) / 3, rel=1e-12)
    assert math.exp(lm.score(start, "B")[0]) == pytest.approx((1 - 0.5 + 1.5 * 0.375) / 3, rel=1e-12)
    assert math.exp(lm.finish(start)) == pytest.approx(0.5 * 0.25, rel=1e-12)
    # After A: only "A B" (count 2), gamma = 1/2. After B: only "B </s>" (count 3), gamma = 1.5/3.
    assert math.exp(lm.score(("A",), "B")[0]) == pytest.approx((2 - 1 + 1.0 * 0.375) / 2, rel=1e-12)
    assert math.exp(lm.score(("A",), "A")[0]) == pytest.approx(0.5 * 0.25, rel=1e-12)
    assert math.exp(lm.finish(("B",))) == pytest.approx((3 - 1.5 + 1.5 * 0.25) / 3, rel=1e-12)
    expected = (1.375 / 3) * (1.375 / 2) * (1.875 / 3)
    assert lm.sentence_logprob(["A", "B"]) == pytest.approx(math.log(expected), rel=1e-12)
    assert lm.perplexity([["A", "B"]]) == pytest.approx(expected ** (-1 / 3), rel=1e-12)


def test_discounts_from_count_of_counts_hand_computed():
    # Order 1 keeps raw counts. A B C D and </s> once, E F twice, G three times, H four times:
    # n1=5 n2=2 n3=1 n4=1, Y=5/9, D1=1-2Y(2/5)=5/9, D2=2-3Y(1/2)=7/6, D3=3-4Y(1/1)=7/9.
    lm = train_ngram(words(["A B C D E E F F G G G H H H H"]), 1)
    assert lm.discounts[1] == pytest.approx((5 / 9, 7 / 6, 7 / 9), rel=1e-12)
    # Total 16; gamma = (5*5/9 + 2*7/6 + 2*7/9) / 16 = 5/12, over 10 predictable tokens.
    assert math.exp(lm.score((), "H")[0]) == pytest.approx((4 - 7 / 9) / 16 + 1 / 24, rel=1e-12)
    assert math.exp(lm.score((), "A")[0]) == pytest.approx((1 - 5 / 9) / 16 + 1 / 24, rel=1e-12)
    assert math.exp(lm.score((), "UNSEEN")[0]) == pytest.approx(1 / 24, rel=1e-12)
    assert lm.start() == () and lm.score((), "H")[1] == ()


def test_continuation_counts_favour_words_seen_in_many_contexts():
    # FRANCISCO occurs 12 times, always after SAN; GLASSES only 4 times, after 4 different words.
    texts = ["I LIVE IN SAN FRANCISCO"] * 6 + ["SAN FRANCISCO IS FOGGY"] * 6
    texts += ["MY GLASSES", "THE GLASSES BROKE", "NEW GLASSES", "READING GLASSES HELP"]
    lm = train_ngram(words(texts), 3)
    assert sum(text.split().count("FRANCISCO") for text in texts) > 2 * sum(
        text.split().count("GLASSES") for text in texts
    )
    unigram_francisco = lm.score((), "FRANCISCO")[0]
    unigram_glasses = lm.score((), "GLASSES")[0]
    assert unigram_francisco < unigram_glasses
    # In a context neither followed, the model backs off to those unigrams.
    assert lm.score(("THE", "BLUE"), "FRANCISCO")[0] < lm.score(("THE", "BLUE"), "GLASSES")[0]
    # ...while after SAN, FRANCISCO is nearly certain.
    assert math.exp(lm.score(("IN", "SAN"), "FRANCISCO")[0]) > 0.8


def test_arpa_round_trip_gives_identical_scores(tmp_path):
    lm = train_ngram(words(CORPUS), 3)
    path = tmp_path / "lm.arpa"
    lm.write_arpa(path)
    reread = NGramLM.from_arpa(path)
    assert reread.order == 3 and reread.vocabulary == lm.vocabulary
    assert reread.ngram_counts == lm.ngram_counts
    for text in CORPUS + ["THE ZEBRA SAT", "", "MAT MAT MAT ON"]:
        assert reread.sentence_logprob(text.split()) == lm.sentence_logprob(text.split())
    reread.write_arpa(tmp_path / "again.arpa")
    assert (tmp_path / "again.arpa").read_text() == path.read_text()
    assert not list(tmp_path.glob(".*.tmp"))


HAND_ARPA = """written by hand; text before \\data\\ is ignored

\\data\\
ngram  1 = 5
ngram 2=2

\\1-grams:
-1.0\t<s>\t-0.5
-0.6\tA\t-0.25
-0.9\tB
-0.7\t</s>
-1.5\t<unk>

\\2-grams:
-0.2\t<s> A
-0.1  A  </s>

\\end\\
"""


def test_hand_written_arpa_applies_backoff(tmp_path):
    path = tmp_path / "hand.arpa"
    path.write_text(HAND_ARPA, encoding="utf-8")
    lm = NGramLM.from_arpa(path)
    assert lm.order == 2 and lm.vocabulary == {BOS, EOS, UNK, "A", "B"}
    start = lm.start()
    assert start == (BOS,)
    assert lm.score(start, "A") == (pytest.approx(-0.2 * LN10), ("A",))
    assert lm.score(start, "B")[0] == pytest.approx((-0.5 - 0.9) * LN10)
    assert lm.score(("A",), "B")[0] == pytest.approx((-0.25 - 0.9) * LN10)
    assert lm.finish(("A",)) == pytest.approx(-0.1 * LN10)
    # B has no backoff and starts no bigram: its history is forgotten, and nothing is added.
    assert lm.score(start, "B")[1] == ()
    assert lm.score((), "A")[0] == pytest.approx(-0.6 * LN10)
    # Unknown words are scored as <unk>, with the backoff of the context.
    assert lm.score(start, "ZEBRA")[0] == pytest.approx((-0.5 - 1.5) * LN10)
    assert lm.sentence_logprob(["A"]) == pytest.approx((-0.2 - 0.1) * LN10)

    no_unk = tmp_path / "no_unk.arpa"
    no_unk.write_text(HAND_ARPA.replace("-1.5\t<unk>\n", "").replace("1 = 5", "1 = 4"), encoding="utf-8")
    assert NGramLM.from_arpa(no_unk).score(start, "ZEBRA") == (pytest.approx(FLOOR_LOG10 * LN10), ())


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("-0.9\tB", "minus-0.9\tB"), 10, "not a number"),
        (("-0.9\tB", "-0.9\tB\t-0.1\t7"), 10, "field"),
        (("ngram 2=2", "ngram 2=3"), 18, "header says 3"),  # reported where the section ends
        (("\\end\\\n", ""), 18, "no \\end\\"),
        (("\\2-grams:", "\\3-grams:"), 14, "expected section \\2-grams:"),
        (("ngram 2=2", "ngram two"), 5, "ngram N=COUNT"),
        (("-0.1  A  </s>", "-0.2 <s> A"), 16, "duplicate"),
    ],
)
def test_malformed_arpa_names_file_and_line(tmp_path, change, line, message):
    path = tmp_path / "bad.arpa"
    path.write_text(HAND_ARPA.replace(*change), encoding="utf-8")
    with pytest.raises(AsrbenchError) as err:
        NGramLM.from_arpa(path)
    assert f"{path}:{line}:" in str(err.value)
    assert message in str(err.value)


def test_not_an_arpa_file(tmp_path):
    with pytest.raises(AsrbenchError, match="not found"):
        NGramLM.from_arpa(tmp_path / "missing.arpa")
    (tmp_path / "empty.arpa").write_text("hello\n", encoding="utf-8")
    with pytest.raises(AsrbenchError, match="no \\\\data"):
        NGramLM.from_arpa(tmp_path / "empty.arpa")
    (tmp_path / "latin1.arpa").write_bytes(HAND_ARPA.replace("\tB", "\t\xe9").encode("latin-1"))
    with pytest.raises(AsrbenchError, match=r"latin1.arpa:10: not UTF-8"):
        NGramLM.from_arpa(tmp_path / "latin1.arpa")


def test_bad_training_input_is_a_user_error():
    with pytest.raises(AsrbenchError, match="no sentences"):
        train_ngram([], 3)
    with pytest.raises(AsrbenchError, match="order"):
        train_ngram([["A"]], 0)
    with pytest.raises(AsrbenchError, match="valid: modified-kneser-ney"):
        train_ngram([["A"]], 2, discount="witten-bell")
    with pytest.raises(AsrbenchError, match="whitespace"):
        train_ngram([["A B"]], 2)
    with pytest.raises(AsrbenchError, match="markers"):
        train_ngram([["A", EOS, "B"]], 2)


def write_split(path: Path, texts: list[str]) -> None:
    rows = [
        {"id": f"{path.stem}-{index}", "audio": f"{index}.wav", "duration": 1.0, "text": text}
        for index, text in enumerate(texts)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    write_split(data / "train.jsonl", ["the cat sat, on the mat!", "The dog's log.", "a cat sat", "???"])
    write_split(data / "dev.jsonl", ["the cat sat on a log", "a zebra"])
    (data / "test.jsonl").write_text("this is not JSON and must never be read\n", encoding="utf-8")
    return data


def test_train_lm_writes_lm_dir_from_train_split_only(data_dir, tmp_path):
    out = tmp_path / "lm"
    summary = train_lm(data_dir, out, order=3)
    assert sorted(path.name for path in out.iterdir()) == ["lexicon.txt", "lm.arpa", "lm.json"]
    assert json.loads((out / "lm.json").read_text(encoding="utf-8")) == summary
    assert summary["format"] == "asrbench-lm-1" and summary["normalizer"] == "basic-1"
    assert summary["sentences"] == 3 and summary["skipped_empty"] == 1 and summary["tokens"] == 12
    assert summary["ngram_counts"]["1"] == summary["vocabulary_size"] == 8 + 3  # + <s> </s> <unk>
    assert summary["dev_sentences"] == 2 and summary["dev_perplexity"] > summary["train_perplexity"]
    assert summary["dev_oov_rate"] == pytest.approx(1 / 8)  # ZEBRA
    assert len(summary["train_manifest_sha256"]) == 64
    lexicon = (out / "lexicon.txt").read_text(encoding="utf-8").splitlines()
    assert lexicon == [
        "A\tA",
        "CAT\tC A T",
        "DOG'S\tD O G ' S",
        "LOG\tL O G",
        "MAT\tM A T",
        "ON\tO N",
        "SAT\tS A T",
        "THE\tT H E",
    ]

    lm, metadata = load_lm(out)
    assert metadata == summary and lm.order == 3
    assert lm.perplexity([["THE", "CAT", "SAT", "ON", "A", "LOG"], ["A", "ZEBRA"]]) == pytest.approx(
        summary["dev_perplexity"]
    )
    # dev is only scored: without it the model is byte for byte the same.
    (data_dir / "dev.jsonl").unlink()
    again = train_lm(data_dir, tmp_path / "no_dev", order=3)
    assert again["dev_perplexity"] is None
    assert (tmp_path / "no_dev" / "lm.arpa").read_bytes() == (out / "lm.arpa").read_bytes()


def test_train_lm_char_unit(data_dir, tmp_path):
    summary = train_lm(data_dir, tmp_path / "lm", order=5, unit="char")
    lm, _ = load_lm(tmp_path / "lm")
    assert summary["unit"] == "char" and " " in lm.vocabulary
    assert "<space>" in (tmp_path / "lm" / "lm.arpa").read_text(encoding="utf-8")
    assert lm.perplexity([list("THE CAT SAT ON A LOG"), list("A ZEBRA")]) == pytest.approx(summary["dev_perplexity"])


def test_load_lm_rejects_missing_and_foreign_dirs(tmp_path):
    with pytest.raises(AsrbenchError, match="LM dir not found"):
        load_lm(tmp_path / "nowhere")
    with pytest.raises(AsrbenchError, match="no lm.json"):
        load_lm(tmp_path)
    (tmp_path / "lm.json").write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(AsrbenchError, match="something-else"):
        load_lm(tmp_path)


def test_cli_lm_train(data_dir, tmp_path):
    out = tmp_path / "lm"
    result = CliRunner().invoke(app, ["lm", "train", str(data_dir), "--order", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 sentences" in result.output and "dev perplexity" in result.output
    assert json.loads((out / "lm.json").read_text(encoding="utf-8"))["order"] == 2


@pytest.mark.parametrize(
    "args", [["lm", "train", "MISSING", "--out", "LM"], ["lm", "train", "DATA", "--out", "LM", "--unit", "phone"]]
)
def test_cli_bad_input_is_one_line_error(monkeypatch, capsys, data_dir, tmp_path, args):
    args = [
        str(data_dir) if arg == "DATA" else str(tmp_path / arg) if arg in ("MISSING", "LM") else arg for arg in args
    ]
    monkeypatch.setattr(sys, "argv", ["asrbench", *args])
    monkeypatch.setitem(cli._state, "debug", False)
    with pytest.raises(SystemExit) as exit_:
        run_app()
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "LM").exists()
