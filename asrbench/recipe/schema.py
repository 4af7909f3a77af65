"""Dataclasses from plain mappings (YAML, JSON, ``--set`` values), checked key by key.

A leaf module: the recipe config (``asrbench.recipe.config``) and the model registry
(``asrbench.models``) both build their dataclasses with it, so neither imports the other for it.
Unknown keys fail with the valid keys listed and the closest one suggested; a value of the wrong
type fails naming where it came from (the recipe key, or the ``--set`` argument).
"""

from __future__ import annotations

import dataclasses
import decimal
import math
import types
import typing
from collections.abc import Mapping
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
            raise AsrbenchError(
                f"{where}: unknown key '{key}'{did_you_mean(key, fields)} (valid keys: {', '.join(fields)})"
            )
        kwargs[key] = coerce(value, hints[key], f"{where}.{key}")
    return cls(**kwargs)


# --- ranges -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """The values a config field (or a command-line option) accepts, checked where it is parsed.

    A number must be finite and within ``low`` .. ``high`` (``low_open`` / ``high_open`` leave the
    end out); ``low`` and ``high`` may name another field of the same dataclass instead of a number.
    ``multiple_of``: numbers, or other fields, that divide the value (``d_model`` by 2 and by
    ``num_heads``: sine/cosine positions come in pairs, and attention splits it into heads). ``odd``: a kernel
    centred on its frame. ``special``: values taken outside the range, with what each means
    (``((-1, "all"),)``). ``choices``: the strings a text field takes. None passes (an optional field).
    """

    low: float | str | None = None
    high: float | str | None = None
    low_open: bool = False
    high_open: bool = False
    multiple_of: tuple = ()
    odd: bool = False
    special: tuple = ()
    choices: tuple = ()

    def fields(self) -> tuple[str, ...]:
        """The other fields this limit reads."""
        return tuple(ref for ref in (self.low, self.high, *self.multiple_of) if isinstance(ref, str))

    def _range(self, values: dict, name) -> str:
        """'must be positive', 'must be at least 1', 'must be in [0, 1)' ... with other fields named
        by ``name`` and the special values first ('must be -1 (all) or at least 0')."""

        def show(bound):
            return f"{name(bound)} ({values[bound]})" if isinstance(bound, str) else f"{bound:g}"

        low, high = self.low, self.high
        if low is not None and high is not None:
            phrase = f"in {'(' if self.low_open else '['}{show(low)}, {show(high)}{')' if self.high_open else ']'}"
        elif low is not None:
            phrase = f"{'greater than' if self.low_open else 'at least'} {show(low)}"
            if low == 0 and not self.special:
                return "must be positive" if self.low_open else "must not be negative"
        else:
            phrase = f"{'less than' if self.high_open else 'at most'} {show(high)}"
        return "must be " + " or ".join([*(f"{special:g} ({meaning})" for special, meaning in self.special), phrase])

    def problem(self, value: Any, values: dict | None = None, name=str) -> str | None:
        """What is wrong with ``value`` ("must be positive, got -1"), None when nothing is.
        ``values``: the dataclass's fields (for limits that name another); ``name`` labels a field."""
        values = values or {}
        if value is None:
            return None
        if self.choices:
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # a type error, which coerce reports
        if any(value == special for special, _ in self.special):
            return None
        if not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        low, high = (values.get(bound) if isinstance(bound, str) else bound for bound in (self.low, self.high))
        if (low is not None and (value < low or (self.low_open and value == low))) or (
            high is not None and (value > high or (self.high_open and value == high))
        ):
            return f"{self._range(values, name)}, got {value!r}"
        if self.odd and value % 2 != 1:
            return f"must be odd, got {value!r}"
        for factor in self.multiple_of:
            divisor = values.get(factor) if isinstance(factor, str) else factor
            if isinstance(divisor, int) and divisor > 0 and value % divisor:
                shown = f"{name(factor)} ({divisor})" if isinstance(factor, str) else f"{divisor}"
                return f"must be divisible by {shown}, got {value!r}"
        return None


POSITIVE = Limit(low=0, low_open=True)
NON_NEGATIVE = Limit(low=0)
AT_LEAST_ONE = Limit(low=1)
FRACTION = Limit(low=0, high=1)  # a share or a weight, both ends included
PROBABILITY = Limit(low=0, high=1, high_open=True)  # dropout, label smoothing: 1 would keep nothing
FINITE = Limit()
ALL_OR_COUNT = Limit(low=0, special=((-1, "all"),))  # left chunks: -1 means every one
ODD = Limit(low=1, odd=True)  # a kernel centred on its frame (padding kernel // 2 on each side)


def choices(*values: str) -> Limit:
    return Limit(choices=values)


COUNT_SUFFIXES = {"k": 10**3, "m": 10**6, "g": 10**9}


def parse_count(value: Any, where: str) -> int:
    """A count written as people write model sizes: ``5M``, ``3.2M``, ``800k``, ``1500000`` (or
    ``1.5e6``), a positive whole number; an error names ``where`` (the recipe key or ``--set``)."""
    if isinstance(value, Override):
        if value.text:
            where = f"--set {value.text}"
        value = value.raw
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip().replace("_", "")
        scale = COUNT_SUFFIXES.get(text[-1:].lower(), 1) if text else 1
        try:  # decimal: 1.1M is 1100000 exactly, where floats give 1100000.0000000002
            number = float(decimal.Decimal(text[:-1] if scale > 1 else text) * scale)
        except decimal.InvalidOperation:
            number = None
    if number is None or not math.isfinite(number) or number < 1 or number != round(number):
        raise AsrbenchError(f"{where}: expected a parameter count such as 5M, 3.2M, 800k or 1500000, got {value!r}")
    return int(round(number))


def field_limits(cls: type) -> dict[str, Limit]:
    """The ``LIMITS`` of a dataclass and of the classes it derives from (a subclass's win)."""
    merged: dict[str, Limit] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("LIMITS", {}))
    return merged


def limit_problems(instance: Any, name=str) -> list[tuple[str, tuple[str, ...], str]]:
    """Every field of a dataclass ``instance`` outside its limit: (field, the other fields its limit
    reads, the message, e.g. "must be positive, got 0"), fields labelled by ``name``."""
    values = {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}
    found = []
    for key, limit in field_limits(type(instance)).items():
        message = limit.problem(values[key], values, name) if key in values else None
        if message is not None:
            found.append((key, limit.fields(), message))
    return found


def check_limits(
    values, section: str, overridden: Mapping[tuple[str, str], str], where: str, label: str | None = None
) -> None:
    """Every field of one section (a dataclass) within its limit (``LIMITS``, :class:`asrbench.recipe.schema.Limit`);
    the error names the ``--set`` argument that gave the value (or one its limit reads), else ``where``."""
    fields = {f.name: getattr(values, f.name) for f in dataclasses.fields(values)}
    for key, limit in field_limits(type(values)).items():
        if limit.problem(fields[key], fields) is None:
            continue
        given = [(section, name) for name in (key, *limit.fields()) if (section, name) in overridden]
        prefix = section if given or label is None else label
        message = limit.problem(fields[key], fields, lambda name, prefix=prefix: f"{prefix}.{name}")
        raise AsrbenchError(f"{f'--set {overridden[given[0]]}' if given else where}: {prefix}.{key} {message}")
