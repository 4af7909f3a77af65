"""The bundled recipes and what a pip user meets first (issue 28.16): recipes shipped inside the package
and found by name, `asrbench recipes`, `asrbench --version`, and the corpus-not-found advice."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import run_main

import asrbench
from asrbench.errors import AsrbenchError
from asrbench.recipe.bundled import FOLDER, bundled, find_recipe, summaries
from asrbench.recipe.config import DataConfig, RunConfig, load_yaml, resolve

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["an4", "fsdd", "librispeech100", "synth", "yesno"]


def test_the_recipes_live_in_the_package_and_nowhere_else():
    """One source of truth: the YAMLs are package data (asrbench/recipe/), not a folder beside it."""
    assert FOLDER == ROOT / "asrbench" / "recipe"
    assert sorted(bundled()) == NAMES
    assert not (ROOT / "recipes").exists() and not (ROOT / "asrbench" / "recipes").exists()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"recipe/*.yaml"' in pyproject  # shipped in the wheel (tests/test_wheel.py installs one)


def test_a_bare_name_is_the_bundled_recipe_and_a_path_that_exists_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty directory, as a pip user's
    # recipes/, then asrbench/recipes/, is where a checkout kept them before
    for spec in ("yesno", "yesno.yaml", "recipes/yesno.yaml", "asrbench/recipes/yesno.yaml"):
        assert find_recipe(spec) == FOLDER / "yesno.yaml", spec
        assert resolve(spec, "cnn").features.sample_rate == 8000
    assert resolve("an4", "conformer").model.name == "conformer"
    mine = tmp_path / "yesno.yaml"
    mine.write_text("features: {sample_rate: 16000}\nmodels: {cnn: {}}\n")
    assert find_recipe("yesno.yaml") == Path("yesno.yaml")
    assert resolve("yesno.yaml", "cnn").features.sample_rate == 16000
    for missing in ("yesn", "elsewhere/yesno.yaml"):
        with pytest.raises(
            AsrbenchError,
            match=rf"{missing}: recipe not found \(a path, or a bundled recipe: "
            r"an4, fsdd, librispeech100, synth, yesno; `asrbench recipes`",
        ):
            load_yaml(missing)


def test_train_finds_a_bundled_recipe_from_an_empty_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(monkeypatch, capsys, "train", "yesno", "--model", "whisper", "--out", "run")
    assert code == 2 and "recipe not found" not in err and "whisper" in err


def test_recipes_lists_name_corpus_models_and_description(monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "recipes")
    assert code == 0, err
    rows = {row.name: row for row in summaries()}
    assert list(rows) == NAMES
    assert rows["yesno"].corpus == "yesno" and "cnn" in rows["yesno"].models and "conformer" in rows["yesno"].models
    assert rows["yesno"].description == (
        "Kaldi's yesno corpus (60 files, one speaker, 8 kHz): a smoke test that trains in seconds."
    )
    assert rows["fsdd"].description == "Free Spoken Digit Dataset: 6 speakers, isolated digits, 8 kHz."
    assert rows["librispeech100"].description.endswith("(icefall's RESULTS-100hours).")
    flat = " ".join(out.split())
    for row in rows.values():
        assert row.name in out and row.corpus in out
    assert "Kaldi's yesno corpus" in flat and "│" in out  # a rich table


def test_version_prints_the_version_and_the_commit(monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "--version")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert code == 0
    assert out.startswith(f"asrbench {asrbench.__version__} (commit {commit}")


def test_a_missing_corpus_names_the_data_root_and_the_download_command(tmp_path, monkeypatch):
    from asrbench.data.pipeline import ensure_data_dir

    monkeypatch.setenv("ASRBENCH_DATA_ROOT", str(tmp_path / "corpora"))
    config = RunConfig(data=DataConfig(dir=str(tmp_path / "data" / "yesno"), corpus="yesno", source="yesno"))
    with pytest.raises(AsrbenchError) as caught:
        ensure_data_dir(config)
    message = str(caught.value)
    assert "$ASRBENCH_DATA_ROOT" in message and str(tmp_path / "corpora") in message
    assert "asrbench data download yesno" in message
    assert not (tmp_path / "data").exists()  # nothing written, not even the prepare lock


def test_the_documents_name_recipe_files_that_exist():
    """Every recipe file the documents name exists (``asrbench/recipe/X.yaml``), or is a folder where
    a checkout kept them before (``asrbench/recipes/``, ``recipes/``, as results record the exact
    commands run then), which a recipe argument still resolves to the bundled recipe."""
    import re

    from asrbench.recipe.bundled import find_recipe

    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("results/*/RESULTS.md"))]
    for document in documents:
        for match in re.finditer(r"(?<![\w.])((?:\w+/)*)recipes?/(\w+)\.yaml", document.read_text()):
            if match[1] == "asrbench/" and "/recipe/" in match[0]:
                assert (ROOT / match[0]).is_file(), f"{document.name}: {match[0]} does not exist"
            else:
                assert match[1] in ("", "asrbench/"), f"{document.name}: {match[0]} (use the bare name)"
                assert find_recipe(match[0]) == ROOT / "asrbench" / "recipe" / f"{match[2]}.yaml", match[0]
