"""Synthetic CTC emissions (benchmarks/experiment_data.py) and benchmarks/decode_bench.py's measurement
on a few of them (nothing recorded)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TEXTS = ["ERASE C Q Q F SEVEN", "ENTER SIX", "RUBOUT G M E F THREE NINE", "NO"]
DURATIONS = [4.1, 1.6, 4.0, 0.7]


@pytest.fixture
def decode_bench(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # a suite script: it imports _common as a sibling
    return importlib.import_module("decode_bench")


@pytest.fixture
def experiment_data(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the benchmarks import it as a sibling
    return importlib.import_module("experiment_data")


def test_synthetic_emissions_have_an4_shapes(experiment_data) -> None:
    tokenizer, emissions, references, durations = experiment_data.synthetic_emissions(TEXTS, DURATIONS, TEXTS)
    assert references == TEXTS and durations == DURATIONS  # all fit in 25 frames per second
    assert [e.shape for e in emissions] == [(int(d * 25), len(tokenizer)) for d in DURATIONS]
    batches = experiment_data.sorted_batches(emissions, 3)
    assert [len(indices) for indices, _, _ in batches] == [3, 1]
    assert batches[0][0] == [3, 1, 2] and batches[0][2].tolist() == [17, 40, 100]  # shortest first


def test_measure_gives_the_three_figures(decode_bench, experiment_data) -> None:
    tokenizer, emissions, references, durations = experiment_data.synthetic_emissions(TEXTS, DURATIONS, TEXTS)
    figures = decode_bench.measure(tokenizer, emissions, references, sum(durations), beam=4, repeat=1)
    assert set(figures) == {"greedy_rtfx_batch1", "greedy_rtfx_batch16", "ctc_beam_vs_flashlight"}
    batch1, batch16 = figures["greedy_rtfx_batch1"], figures["greedy_rtfx_batch16"]
    assert batch1["value"] > 0 and batch16["value"] > 0 and batch1["target"] == 50000.0
    assert batch1["wer"] == batch16["wer"]  # padding and batching do not change the texts
    beam = figures["ctc_beam_vs_flashlight"]
    assert beam["native_rtfx"] > 0 and beam["beam"] == 4
    if beam["value"] is None:  # flashlight-text not installed
        assert "flashlight" in beam["note"]
    else:
        assert beam["value"] > 0 and beam["flashlight_wer"] >= 0 and 0 <= beam["same_text_fraction"] <= 1
