"""`--normalizer whisper-en`: Whisper's English normalizer on openai/whisper's published examples,
recorded with the score, and one line when its package is missing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import run_main

from asrbench import text
from asrbench.errors import AsrbenchError
from asrbench.scoring.metrics import score_files
from asrbench.text import normalize

# openai/whisper tests/test_normalizer.py (EnglishTextNormalizer): input -> expected
PUBLISHED = {
    "two": "2",
    "thirty one": "31",
    "five twenty four": "524",
    "nineteen ninety nine": "1999",
    "twenty nineteen": "2019",
    "two point five million": "2500000",
    "200 thousand dollars": "$200000",
    "€52.4 million": "€52400000",
    "two double o eight": "2008",
    "forty three thousand two hundred and sixty": "43260",
    "nineteen fifties": "1950s",
    "thirty first": "31st",
    "july third twenty twenty": "july 3rd 2020",
    "3 point 14": "3.14",
    "ninety percent": "90%",
    "double oh seven": "007",
    "nine double one": "911",
    "minus 500": "-500",
    "two dollars and seventy cents": "$2.70",
    "$0.36": "¢36",
    "three and a half million": "3500000",
    "b747": "b 747",
    "10 th": "10th",
    "Let's": "let us",
    "he's like": "he is like",
    "she's been like": "she has been like",
    "10km": "10 km",
    "RC232": "rc 232",
    "Mr. Park visited Assoc. Prof. Kim Jr.": "mister park visited associate professor kim junior",
    "mobilisation": "mobilization",
    "cancelation": "cancellation",
}


@pytest.mark.parametrize("given,expected", PUBLISHED.items())
def test_whisper_en_gives_openai_whisper_s_published_outputs(given: str, expected: str):
    assert normalize(given, "whisper-en") == expected


def test_whisper_en_removes_what_the_leaderboard_removes():
    assert normalize("Hello, World! [NOISE] (laughs) uh I um  see", "whisper-en") == "hello world i see"
    assert normalize("HELLO WORLD", "basic-1") == "HELLO WORLD"  # the default is unchanged


def test_scores_under_whisper_en_record_it_and_count_its_equivalences(tmp_path: Path, monkeypatch, capsys):
    ref, hyp = tmp_path / "ref.txt", tmp_path / "hyp.txt"
    ref.write_text("a Mr. Smith paid twenty dollars\nb the colour is red\n")
    hyp.write_text("a mister smith paid $20\nb the color is read\n")
    result = score_files(ref, hyp, "whisper-en", resamples=50)
    # one error (read for red) in 8 words: the title, the amount and the spelling match once normalized
    assert result["normalizer"] == "whisper-en" and result["wer"] == pytest.approx(100 * 1 / 8)
    assert score_files(ref, hyp, "basic-1", resamples=50)["wer"] > result["wer"]
    code, out, _ = run_main(
        monkeypatch, capsys, "score", str(ref), str(hyp), "--normalizer", "whisper-en", "--format", "json"
    )
    assert code == 0 and json.loads(out)["normalizer"] == "whisper-en"


def test_a_missing_whisper_normalizer_package_is_one_line(monkeypatch):
    monkeypatch.setattr(text, "_WHISPER_EN", [])
    monkeypatch.setitem(sys.modules, "whisper_normalizer", None)
    monkeypatch.setitem(sys.modules, "whisper_normalizer.english", None)
    with pytest.raises(AsrbenchError, match=r"pip install 'asrbench\[whisper\]'"):
        normalize("two", "whisper-en")
