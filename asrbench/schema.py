"""Dataclasses from plain mappings (YAML, JSON, ``--set`` values), checked key by key.

A leaf module: the recipe config (``asrbench.config``) and the model registry
(``asrbench.models``) both build their dataclasses with it, so neither imports the other for it.
Unknown keys fail with the valid keys listed and the closest one suggested; a value of the wrong
type fails naming where it came from (the recipe key, or the ``--set`` argument).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from asrbench.errors import AsrbenchError, did_you_mean


@dataclass(frozen=True)
class Override:
    """A ``--set`` value: its raw text is kept for string fields (``data.dir=2024`` or ``=yes``),
    and the whole argument (``train.lr=abc``) for errors, which name it rather than the recipe."""

    raw: str
    value: Any
    text: str = ""


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a dataclass field type; ints are accepted where floats are."""
    if isinstance(value, Override):
        if value.text:
            where = f"--set {value.text}"
        value = value.raw if annotation in (str, "str") else value.value
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}.get(
            annotation, annotation
        )
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            if option is type(None) and value is None:
                return None
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return coerce(value, options[0], where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `--set data.dir=2024` names a folder, not a number
    elif annotation is list or origin is list:
        if isinstance(value, list):
            return value
    elif annotation is dict or origin is dict:
        if isinstance(value, dict):
            return value
    else:
        return value
    name = getattr(annotation, "__name__", str(annotation))
    raise AsrbenchError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")


def build_dataclass(cls: type, values: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise AsrbenchError(f"{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise AsrbenchError(f"{where}: unknown key '{key}'{did_you_mean(key, fields)} "
                                f"(valid keys: {', '.join(fields)})")
        kwargs[key] = coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)
