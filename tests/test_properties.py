"""Property-based: whatever bytes or JSON a manifest or recipe holds, the readers return valid data
or raise the one clean error (AsrbenchError, which the CLI prints as one line), never anything else."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asrbench.data.manifest import read_manifest
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import RunConfig, resolve

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
FIELDS = ("id", "audio", "duration", "text", "speaker", "offset")
# Rows that are nearly right: the manifest's own field names with values of any JSON type.
manifest_rows = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
    st.fixed_dictionaries(
        {
            "id": st.one_of(st.sampled_from(["", " ", "a\x00"]), st.text(max_size=6)),
            "audio": st.one_of(st.sampled_from(["", "a\x00b.wav", "../x.wav", "/abs.wav"]), st.text(max_size=10)),
            "duration": st.one_of(
                st.sampled_from([math.inf, -math.inf, math.nan, 0, -1, "1.5", None]),
                st.floats(),
                st.integers(),
                st.text(max_size=4),
            ),
            "text": st.one_of(st.sampled_from(["", "  ", "ok"]), st.text(max_size=10)),
        },
        optional={
            "offset": st.one_of(st.sampled_from([math.inf, math.nan, -0.5, "x"]), st.floats()),
            "speaker": json_values,
        },
    ),
    json_values,
)


def _read(path: Path, data: bytes):
    path.write_bytes(data)
    try:
        return read_manifest(path)
    except AsrbenchError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        return None


@SETTINGS
@given(data=st.binary(max_size=300))
def test_manifest_reader_on_random_bytes(tmp_path: Path, data: bytes):
    _read(tmp_path / "m.jsonl", data)


@SETTINGS
@given(rows=st.lists(manifest_rows, max_size=5), crlf=st.booleans(), bom=st.booleans())
def test_manifest_reader_on_random_json_lines(tmp_path: Path, rows: list, crlf: bool, bom: bool):
    newline = "\r\n" if crlf else "\n"
    text = ("\ufeff" if bom else "") + newline.join(json.dumps(row) for row in rows)
    utterances = _read(tmp_path / "m.jsonl", text.encode("utf-8", "surrogatepass"))
    for utt in utterances or []:
        assert utt.id and utt.text.strip() and math.isfinite(utt.duration) and utt.duration > 0
        assert math.isfinite(utt.offset) and utt.offset >= 0 and Path(utt.audio).is_absolute()
    if utterances is not None:
        assert len({utt.id for utt in utterances}) == len(utterances)


RECIPE_KEYS = (
    "data",
    "features",
    "augment",
    "train",
    "tokenizer",
    "models",
    "dnn",
    "epochs",
    "lr",
    "dir",
    "sample_rate",
    "num_mel_bins",
    "spec_augment",
    "hidden_size",
    "num_layers",
    "context",
)
recipe_trees = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.sampled_from(RECIPE_KEYS), st.text(max_size=6)), inner, max_size=4),
    ),
    max_leaves=15,
)


def _resolve(path: Path, text: str, overrides: list[str] | None = None):
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        return resolve(path, "dnn", overrides)
    except AsrbenchError as err:
        assert "\n" not in str(err)
        return None


@SETTINGS
@given(tree=recipe_trees)
def test_recipe_reader_on_random_structures(tmp_path: Path, tree):
    config = _resolve(tmp_path / "r.yaml", json.dumps(tree))
    assert config is None or isinstance(config, RunConfig)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_recipe_reader_on_random_bytes(tmp_path: Path, data: bytes):
    path = tmp_path / "r.yaml"
    path.write_bytes(data)
    try:
        resolve(path, "dnn")
    except AsrbenchError as err:
        assert "\n" not in str(err)


@SETTINGS
@given(overrides=st.lists(st.text(max_size=20), max_size=3))
def test_set_overrides_on_random_text(tmp_path: Path, overrides: list[str]):
    config = _resolve(tmp_path / "r.yaml", "models: {dnn: {hidden_size: 8}}\n", overrides)
    assert config is None or isinstance(config, RunConfig)


@pytest.mark.parametrize("text", ["models: {dnn: {hidden_size: 8}}\n"])
def test_a_valid_recipe_still_resolves(tmp_path: Path, text: str):
    assert _resolve(tmp_path / "r.yaml", text).model.options["hidden_size"] == 8
