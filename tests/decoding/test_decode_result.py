"""The typed decode result (asrbench.decoding.result): the one loader of result.json, old files
included, its errors, and compare reading results through it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from asrbench.decoding.result import (
    FORMAT,
    DecodeResult,
    DecoderRecord,
    StreamingFigures,
    load_result,
    read_result,
    write_result,
)
from asrbench.errors import AsrbenchError
from asrbench.studies.compare import collect

# runs/s28/yesno/dnn/decode/test/result.json, as decode wrote it before results carried a format.
WRITTEN_BEFORE_THE_FORMAT = (
    '{"run": "runs/s28/yesno/dnn", "model": "dnn", "split": "test", "tag": null, "data_dir": "/work/main/'
    'data/yesno", "wer": 0.8333333333333334, "cer": 0.4914004914004914, "substitutions": 1, "deletions": '
    '1, "insertions": 0, "words": 240, "char_substitutions": 0, "char_deletions": 3, "char_insertions": 1'
    ', "characters": 814, "utterances": 30, "sentence_errors": 2, "normalizer": "basic-1", "wer_ci": [0.0'
    ', 2.0833333333333335], "cer_ci": [0.0, 1.3530135301353015], "ci": {"method": "percentile bootstrap o'
    'ver utterances", "resamples": 1000, "confidence": 0.95, "seed": 0}, "ter": 1.71990171990172, "token_'
    'errors": 14, "tokens": 814, "units": "char", "rtfx": 2628.736840856681, "search_rtfx": 342149.731906'
    '7717, "audio_seconds": 186.27999999999997, "decode_seconds": 0.0708629320001819, "search_seconds": 0'
    '.0005444399998850713, "params": 386825, "decoder": {"kind": "ctc_greedy", "options": {"beam": 1, "mo'
    'de": "auto", "lm": "", "lm_weight": 0.0, "word_bonus": 0.0, "lexicon": "", "ctc_weight": null, "leng'
    'th_bonus": 0.0, "length_norm": false, "backend": "native"}, "tuned": null, "batch_frames": 40000, "c'
    'heckpoint": "best", "threads": 1, "rtfx_covers": "network + search after one warm-up batch, features'
    ' from cache; search_rtfx: the search alone (attention search includes its decoder network)"}, "strea'
    'ming": null, "config_hash": "a32e2f34d1ed", "environment": {"asrbench_version": "0.1.0", "git_commit'
    '": "e451423232fe584e6ff2430dd6d3a55b36e79d6a-dirty", "torch_version": "2.13.0+cpu", "python_version"'
    ': "3.11.7", "platform": "Linux-6.18.44-fc-v1300-x86_64-with-glibc2.36", "device": "cpu", "cpu": "AMD'
    ' EPYC", "torch_threads": 1}}'
)
# The first decode's result.json (commit 8b8e01f): no tag, CIs, token rates, units, search timing,
# streaming figures or decoder options.
OLDEST = {
    "run": "runs/yesno/cnn",
    "model": "cnn",
    "split": "test",
    "data_dir": "data/yesno",
    "wer": 2.5,
    "cer": 1.25,
    "substitutions": 4,
    "deletions": 1,
    "insertions": 1,
    "words": 240,
    "char_substitutions": 8,
    "char_deletions": 1,
    "char_insertions": 1,
    "characters": 480,
    "utterances": 30,
    "sentence_errors": 5,
    "normalizer": "basic-1",
    "rtfx": 1500.0,
    "audio_seconds": 186.28,
    "decode_seconds": 0.124,
    "params": 60000,
    "decoder": {
        "kind": "ctc_greedy",
        "batch_frames": 40000,
        "checkpoint": "best",
        "rtfx_covers": "model forward + greedy search, after one warm-up batch; features from cache",
    },
    "config_hash": "0123456789ab",
    "environment": {"asrbench_version": "0.1.0", "device": "cpu"},
}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _as_decode_wrote(values: dict) -> str:
    return json.dumps(values, indent=2, ensure_ascii=False) + "\n"  # fileio.write_json


def test_a_file_written_before_the_format_loads_and_writes_back_the_same_bytes_plus_the_format(tmp_path):
    values = json.loads(WRITTEN_BEFORE_THE_FORMAT)
    path = _write(tmp_path / "old" / "result.json", _as_decode_wrote(values))
    result = load_result(path)
    assert result.format == "asrbench-result-0"
    assert (result.model, result.split, result.tag, result.units) == ("dnn", "test", None, "char")
    assert result.wer == values["wer"] and result.wer_ci == (0.0, 2.0833333333333335)
    assert result.ci.resamples == 1000 and result.ci.seed == 0
    assert result.decoder.kind == "ctc_greedy" and result.decoder.options["beam"] == 1
    assert result.decoder.checkpoint == "best" and result.decoder.threads == 1
    assert result.streaming is None and result.device == "cpu" and result.extra == {}
    again = tmp_path / "new" / "result.json"
    again.parent.mkdir()
    write_result(again, result)
    old_text = path.read_text(encoding="utf-8")
    assert again.read_text(encoding="utf-8") == old_text.replace("{\n", f'{{\n  "format": "{FORMAT}",\n', 1)
    assert load_result(again) == replace(result, format=FORMAT)


def test_the_oldest_shape_loads_with_the_documented_defaults(tmp_path):
    result = load_result(_write(tmp_path / "result.json", json.dumps(OLDEST)))
    assert result.units == "char"  # before subword and phone units
    assert result.tag is None and result.wer_ci is None and result.cer_ci is None and result.ci is None
    assert result.ter is None and result.search_rtfx is None and result.streaming is None
    assert result.decoder == DecoderRecord(
        search={"kind": "ctc_greedy"},
        batch_frames=40000,
        checkpoint="best",
        rtfx_covers=OLDEST["decoder"]["rtfx_covers"],
    )
    assert result.decoder.options is None and result.checkpoint_mtime is None
    assert (result.wer, result.words, result.params) == (2.5, 240, 60000)


COST = {
    "gflops_per_second": 0.035,
    "rtfx_end_to_end": 812.5,
    "end_to_end_seconds": 0.23,
    "end_to_end_batch_size": 7.5,
    "end_to_end_threads": 1,
}


def test_the_cost_figures_load_as_none_from_older_files_and_round_trip_when_set(tmp_path):
    old = load_result(_write(tmp_path / "old.json", WRITTEN_BEFORE_THE_FORMAT))
    assert all(getattr(old, key) is None for key in COST)
    assert not set(COST) & set(old.to_dict())  # an older file writes back without them
    new = load_result(_write(tmp_path / "new.json", json.dumps({**json.loads(WRITTEN_BEFORE_THE_FORMAT), **COST})))
    assert {key: getattr(new, key) for key in COST} == COST and new.extra == {}
    assert {key: new.to_dict()[key] for key in COST} == COST
    assert new.rtfx == old.rtfx  # rtfx keeps its meaning (network + search, features cached)


def test_a_cost_figure_of_the_wrong_type_is_one_line_naming_the_file(tmp_path):
    path = _write(tmp_path / "result.json", json.dumps({"gflops_per_second": "fast"}))
    with pytest.raises(AsrbenchError, match="'gflops_per_second' must be a number or null"):
        load_result(path)


@pytest.mark.parametrize("values", [{}, {"model": "cnn", "data_dir": "data"}, {"model": "x", "wer": None}])
def test_a_file_with_only_some_keys_loads(tmp_path, values):
    result = load_result(_write(tmp_path / "result.json", json.dumps(values)))
    assert result.model == values.get("model") and result.data_dir == values.get("data_dir")
    assert result.wer is None and result.decoder is None and result.units == "char"


def test_keys_it_does_not_know_are_kept(tmp_path):
    result = load_result(_write(tmp_path / "result.json", json.dumps({**OLDEST, "site": {"gpu": "H100"}})))
    assert result.extra == {"site": {"gpu": "H100"}}
    assert result.to_dict()["site"] == {"gpu": "H100"}


@pytest.mark.parametrize(
    "streaming",
    [
        {"chunk_ms": 160.0, "left_chunks": -1, "algorithmic_latency_ms": 205.0, "full_context_wer": None},
        {
            "chunk_ms": 80.0,
            "left_chunks": 2,
            "algorithmic_latency_ms": 125.0,
            "chunk_compute_ms_p50": 1.5,
            "chunk_compute_ms_p90": 2.5,
            "rtf": 0.02,
            "first_token_latency_ms_p50": 100.0,
            "first_token_latency_ms_p90": 140.0,
            "final_latency_ms_p50": 90.0,
            "final_latency_ms_p90": 130.0,
            "utterances": 4,
            "streamed_equals_chunked_pass": 4,
            "latency_reference": "end of speech",
            "threads": 1,
            "full_context_wer": 0.0,
        },
    ],
)
def test_streaming_figures_keep_their_keys_measured_or_not(streaming):
    figures = StreamingFigures.from_dict(streaming)
    assert figures.to_dict() == streaming and list(figures.to_dict()) == list(streaming)
    assert figures.measured == ("rtf" in streaming)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"model": "cnn", "wer": ', "unreadable JSON"),
        ("[1, 2]", "unreadable JSON (expected an object"),
        ("null", "unreadable JSON (expected an object"),
        ('{"wer": "low"}', "unreadable decode result ('wer' must be a number"),
        ('{"words": 2.5}', "unreadable decode result ('words' must be a whole number"),
        ('{"wer_ci": [1.0]}', "unreadable decode result ('wer_ci' must be [low, high]"),
        ('{"decoder": "greedy"}', "unreadable decode result ('decoder' must be an object"),
        ('{"decoder": {"kind": 3}}', "unreadable decode result ('decoder.kind' must be a string"),
        ('{"streaming": {"chunk_ms": "x"}}', "unreadable decode result ('streaming.chunk_ms' must be a number"),
        ('{"format": "asrbench-result-9"}', "unreadable decode result (format asrbench-result-9 is newer than"),
        ('{"format": "whisper"}', "unreadable decode result (unknown format 'whisper'"),
    ],
)
def test_a_malformed_file_is_one_line_naming_it(tmp_path, text, problem):
    path = _write(tmp_path / "decode" / "test" / "result.json", text)
    with pytest.raises(AsrbenchError) as err:
        load_result(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {problem}") and "\n" not in message
    with pytest.raises(AsrbenchError, match="unreadable"):
        collect([tmp_path])  # compare reads through the same loader


def test_a_missing_result_names_the_decode_that_writes_it(tmp_path):
    _write(tmp_path / "run" / "decode" / "test-beam4" / "result.json", json.dumps(OLDEST))
    with pytest.raises(AsrbenchError) as err:
        read_result(tmp_path / "run", "dev")
    assert str(err.value) == (
        f"{tmp_path / 'run'}: no decode result for split 'dev' (run `asrbench decode "
        f"{tmp_path / 'run'} --split dev` first; it has decode results for: test-beam4)"
    )
    with pytest.raises(AsrbenchError, match="result.json: not found"):
        load_result(tmp_path / "run" / "decode" / "dev" / "result.json")


def _decoded_run(root: Path, name: str, values: dict, pairs: list[tuple[str, str]]) -> Path:
    run = root / name
    _write(run / "decode" / "test" / "result.json", _as_decode_wrote(values))
    _write(
        run / "decode" / "test" / "hypotheses.jsonl",
        "".join(json.dumps({"id": f"u{i}", "ref": ref, "hyp": hyp}) + "\n" for i, (ref, hyp) in enumerate(pairs)),
    )
    return run


def test_compare_ranks_old_and_new_results_alike_and_refuses_mixed_sets(tmp_path):
    new = json.loads(WRITTEN_BEFORE_THE_FORMAT)
    good = [("YES NO", "YES NO")] * 20
    bad = [("YES NO", "NO NO")] * 20
    runs = [
        _decoded_run(tmp_path, "new", {"format": FORMAT, **new, "model": "new"}, good),
        _decoded_run(tmp_path, "old", {**OLDEST, "model": "old"}, bad),
    ]
    rows = collect(runs)
    assert [(row["model"], row["vs_best"]) for row in rows] == [("new", "best"), ("old", "significantly worse")]
    assert rows[0]["wer_ci"] == [0.0, 2.0833333333333335]  # recorded
    assert rows[1]["wer_ci"] == [50.0, 50.0] and rows[1]["units"] == "char"  # computed from the hypotheses
    assert rows[0]["decoder"] == "ctc_greedy" and rows[0]["environment"] == new["environment"]
    other = _decoded_run(tmp_path, "other", OLDEST, [("NO", "NO")] * 3)
    with pytest.raises(AsrbenchError, match="runs decoded on different test sets are not ranked"):
        collect([*runs, other])
    assert {row["model"]: row["vs_best"] for row in collect([*runs, other], allow_mixed=True)}["cnn"] == "best"


@pytest.mark.slow
def test_decode_returns_what_it_writes_and_the_loader_gives_it_back(tmp_path):
    from helpers import write_tone_corpus

    from asrbench.decoding.decode import decode
    from asrbench.studies.bench import _decode_split
    from asrbench.training.trainer import train

    data_dir = write_tone_corpus(tmp_path)
    recipe = _write(
        tmp_path / "recipe.yaml",
        f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{spec_augment: false}}
train: {{epochs: 1, batch_frames: 400}}
models:
  cnn: {{subsample_channels: 4, channels: 8, kernel_size: 5, num_blocks: 1}}
""",
    )
    run = tmp_path / "run"
    train(recipe, "cnn", run, seed=0)
    result = decode(run, "test")
    assert isinstance(result, DecodeResult) and result.format == FORMAT
    path = run / "decode" / "test" / "result.json"
    assert load_result(path) == result == read_result(run, "test")
    written = json.loads(path.read_text(encoding="utf-8"))
    assert written == result.to_dict()
    cost = ["gflops_per_second", "rtfx_end_to_end", "end_to_end_seconds", "end_to_end_batch_size", "end_to_end_threads"]
    # the keys, in decode's order: the older ones, then the cost figures (issue 30)
    assert list(written) == ["format", *json.loads(WRITTEN_BEFORE_THE_FORMAT), *cost]
    assert result.gflops_per_second > 0 and result.rtfx_end_to_end > 0 and result.end_to_end_batch_size >= 1
    with pytest.raises(AttributeError):
        result.wer = 0.0  # frozen
    # bench records the checkpoint the result belongs to, and reads it back through the loader
    dev = _decode_split(run, "dev")
    assert dev.checkpoint_mtime == (run / "checkpoints" / "best.pt").stat().st_mtime
    assert (
        read_result(run, "dev") == dev
        and json.loads((run / "decode" / "dev" / "result.json").read_text(encoding="utf-8"))["checkpoint_mtime"]
        == dev.checkpoint_mtime
    )
