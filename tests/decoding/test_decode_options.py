"""The one builder of DecodeOptions from what a user gave (decode, transcribe): defaults, the LM
weight's default, validation, and --tuned's merge on top."""

from __future__ import annotations

import json

import pytest
from helpers import run_main

from asrbench.decoding.decode import resolve_options
from asrbench.decoding.searchers import DEFAULT_LM_WEIGHT, DecodeOptions, given_options
from asrbench.errors import AsrbenchError


def test_nothing_given_is_the_defaults():
    assert given_options() == (DecodeOptions(), set())
    assert given_options(beam=None, lm=None, lm_weight=None) == (DecodeOptions(), set())


def test_given_values_are_taken_and_named():
    options, explicit = given_options(beam=4, mode="ctc", lexicon="train", word_bonus=0.0, length_norm=False)
    assert options == DecodeOptions(beam=4, mode="ctc", lexicon="train")
    assert explicit == {"beam", "mode", "lexicon", "word_bonus", "length_norm"}  # a given 0 / False is given


def test_an_lm_without_a_weight_gets_the_default_weight_which_is_not_given():
    options, explicit = given_options(lm="lm", lm_weight=None)
    assert DEFAULT_LM_WEIGHT == 0.5
    assert options.lm == "lm" and options.lm_weight == DEFAULT_LM_WEIGHT
    assert explicit == {"lm"}  # so --tuned replaces the default with the tuned weight
    assert given_options(lm="lm", lm_weight=0.25)[0].lm_weight == 0.25
    assert given_options(lm="", lm_weight=None)[0].lm_weight == 0.0  # no LM: no weight


def test_the_options_are_validated_and_frozen():
    with pytest.raises(AsrbenchError, match="--beam must be at least 1"):
        given_options(beam=0)
    with pytest.raises(AsrbenchError, match="unknown decoding mode 'rnnt'"):
        given_options(mode="rnnt")
    options, _ = given_options(beam=2)
    with pytest.raises(AttributeError):
        options.beam = 3  # type: ignore[misc]


def test_tuned_values_replace_the_default_lm_weight_but_never_a_given_one(tmp_path):
    (tmp_path / "tuned.json").write_text(
        json.dumps({"split": "dev", "options": {"beam": 4, "lm": "lm", "lm_weight": 0.8}})
    )
    merged, tuned_from = resolve_options(tmp_path, *given_options(lm="lm"), use_tuned=True)
    assert merged == DecodeOptions(beam=4, lm="lm", lm_weight=0.8) and tuned_from["split"] == "dev"
    merged, _ = resolve_options(tmp_path, *given_options(lm="lm", lm_weight=0.3, beam=2), use_tuned=True)
    assert merged == DecodeOptions(beam=2, lm="lm", lm_weight=0.3)


class _Stop(Exception):
    pass


def test_decode_and_transcribe_hand_the_same_options_on(tmp_path, monkeypatch, capsys):
    """The CLI's decode and transcribe build their options with one function: the same flags give
    the same options and the same given names (transcribe once counted the default LM weight as given,
    so its --tuned kept 0.5 where decode took the tuned weight)."""
    import asrbench.decoding.decode
    import asrbench.deploy.transcribe

    seen = {}

    def fake_decode(run_dir, split, data, device, *, options, explicit, use_tuned, **_):
        seen["decode"] = (options, set(explicit), use_tuned)
        raise _Stop

    def fake_transcriber(model, options, device, checkpoint, explicit, use_tuned, *_, **__):
        seen["transcribe"] = (options, set(explicit), use_tuned)
        raise _Stop

    monkeypatch.setattr(asrbench.decoding.decode, "decode", fake_decode)
    monkeypatch.setattr(asrbench.deploy.transcribe, "Transcriber", fake_transcriber)
    flags = ["--lm", "lm", "--beam", "3", "--word-bonus", "1.5", "--lexicon", "train", "--tuned"]
    for command in (["decode", "run"], ["transcribe", "run", "a.wav"]):
        with pytest.raises(_Stop):
            run_main(monkeypatch, capsys, *command, *flags)
    expected = DecodeOptions(beam=3, lm="lm", lm_weight=0.5, word_bonus=1.5, lexicon="train")
    assert seen["decode"] == seen["transcribe"] == (expected, {"lm", "beam", "word_bonus", "lexicon"}, True)
