"""The bundled recipes: one YAML per corpus, shipped inside the package (``asrbench recipes`` lists them).

A recipe argument (``asrbench train RECIPE``, ``bench``, ``study data``, ``data features --recipe``) is
a path, or the name of a bundled recipe: ``an4``, ``an4.yaml``, ``recipes/an4.yaml`` or
``asrbench/recipes/an4.yaml`` (where a checkout kept them before they moved into
``asrbench/recipe/``, so older commands still run). A path that
exists always wins, so a copy edited in the working directory is the one used.

The first comment of a recipe describes it: its first sentence is the description ``asrbench
recipes`` shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

FOLDER = Path(__file__).resolve().parent
SUFFIXES = (".yaml", ".yml")
# Where a checkout kept them before: recipes/, then asrbench/recipes/ (until the stage packages).
OLD_FOLDERS = (Path("recipes"), Path("asrbench") / "recipes")


def bundled() -> dict[str, Path]:
    """Name -> file of every bundled recipe, sorted by name."""
    return {path.stem: path for path in sorted(FOLDER.glob("*.yaml"))}


def find_recipe(spec: str | Path) -> Path | None:
    """The recipe file ``spec`` names: the path itself when it is a file, else the bundled recipe
    of that name (``an4``, ``an4.yaml``, ``recipes/an4.yaml``); None when there is neither."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.parent not in (Path("."), *OLD_FOLDERS):
        return None
    name = path.name
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    return bundled().get(name)


@dataclass(frozen=True)
class RecipeSummary:
    name: str
    corpus: str  # data.corpus ("" when the recipe names none)
    models: list[str]
    description: str  # the first sentence of the recipe's first comment


def _description(text: str) -> str:
    """The first sentence of the first block of ``#`` lines (up to a ``Prepare:`` line)."""
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            if lines or stripped:
                break
            continue
        comment = stripped.lstrip("#").strip()
        if comment.startswith("Prepare:"):
            break
        lines.append(comment)
    joined = " ".join(lines)
    match = re.search(r"[.!?](?=\s|$)", joined)
    return joined[: match.end()] if match else joined


def summaries() -> list[RecipeSummary]:
    """One row per bundled recipe, for ``asrbench recipes``."""
    rows = []
    for name, path in bundled().items():
        text = path.read_text(encoding="utf-8")
        values = yaml.safe_load(text) or {}
        data = values.get("data") or {}
        rows.append(
            RecipeSummary(name, str(data.get("corpus") or ""), list(values.get("models") or {}), _description(text))
        )
    return rows
