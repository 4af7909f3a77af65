"""Parameter-matched sizing: a model's width chosen so that it has a given number of parameters.

Every encoder's options dataclass declares its width as a ``WIDTH`` ClassVar: the field searched
(``"d_model"``, ``"hidden_size"``, ``"channels"`` ...), or a tuple whose first field is searched and
whose others keep their ratio to it (``("d_model", "ff_dim")``: the feed-forward stays 4x wide). A
composed cell (``<encoder>_aed``, ``<encoder>_transducer``) inherits its encoder's; a head's dims
follow where the head derives them from the encoder (the attention decoder's width), and stay
as given otherwise (the predictor and joiner of a transducer).

:func:`size_to` bisects the width over its valid values (the ``LIMITS``: ``d_model`` divisible by
``num_heads`` and by 2; and whatever the model refuses, e.g. decoder heads that do not divide it),
counting the model built on the meta device (no memory, milliseconds) at the run's real feature
dimension and vocabulary, so the count is exact. Depth, heads and every other option stay as given.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from asrbench.errors import AsrbenchError
from asrbench.models import build_model, count_parameters, model_config_class
from asrbench.recipe.schema import build_dataclass, field_limits

TOLERANCE = 0.05  # a sized model's count is within +-5% of its target
MAX_WIDTH = 1 << 16  # no target needs a wider layer; the search stops here
PROBES = 16  # grid points tried around one the model refuses (e.g. decoder heads that do not divide it)


def width_fields(name: str) -> tuple[str, ...]:
    """The fields that make ``name``'s width: the searched one first (its options' ``WIDTH``)."""
    config = model_config_class(name)
    width = getattr(config, "WIDTH", None)
    if not width:
        raise AsrbenchError(
            f"model {name}: cannot be sized to a parameter count: its options ({config.__name__}) declare "
            "no WIDTH (the field to scale; see docs/extending.md)"
        )
    fields = (width,) if isinstance(width, str) else tuple(width)
    known = {f.name for f in dataclasses.fields(config)}
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise AsrbenchError(f"model {name}: WIDTH names {', '.join(unknown)}, not options of {config.__name__}")
    return fields


def format_count(count: int) -> str:
    """2993412 -> '2.99M', 812000 -> '812k'."""
    if count >= 10**6:
        return f"{count / 10**6:.3g}M"
    return f"{count / 10**3:.3g}k" if count >= 10**3 else str(count)


def _grid_step(config: type, options: dict, width: str) -> int:
    """A field's valid values are multiples of this: its limit's ``multiple_of`` (numbers, and
    other fields at their given values: ``num_heads``)."""
    step = 1
    limit = field_limits(config).get(width)
    for factor in limit.multiple_of if limit is not None else ():
        divisor = options.get(factor) if isinstance(factor, str) else factor
        if isinstance(divisor, int) and divisor > 0:
            step = math.lcm(step, divisor)
    return step


class _Counter:
    """The parameter count of ``name`` at each grid point (``index * step`` wide), None where the
    options are invalid; memoized, every model built on the meta device.

    At a width ``w`` every WIDTH field is scaled by ``w / width`` (the given width; of a per-stack
    list, its largest value, which becomes ``w``), rounded to the multiples its limit asks for."""

    def __init__(self, name: str, config: type, options: dict, fields: tuple[str, ...], input_dim: int, vocab: int):
        self.name, self.options, self.fields = name, options, fields
        self.input_dim, self.vocab = input_dim, vocab
        self.steps = {field: _grid_step(config, options, field) for field in fields}
        self.step = self.steps[fields[0]]
        first = options[fields[0]]
        self.width = max(first) if isinstance(first, list) else first
        self.seen: dict[int, int | None] = {}

    def _scaled(self, field: str, value: Any, scale: float) -> Any:
        if isinstance(value, list):
            return [self._scaled(field, item, scale) for item in value]
        step = self.steps[field]
        return max(1, round(value * scale / step)) * step

    def options_at(self, index: int) -> dict:
        scale = index * self.step / self.width
        return {**self.options, **{field: self._scaled(field, self.options[field], scale) for field in self.fields}}

    def __call__(self, index: int) -> int | None:
        if index not in self.seen:
            try:
                with torch.device("meta"):
                    model = build_model(self.name, self.options_at(index), self.input_dim, self.vocab)
                self.seen[index] = count_parameters(model)
            except AsrbenchError:
                self.seen[index] = None
        return self.seen[index]

    def at(self, index: int) -> int:
        """The count at a grid point known to be valid."""
        value = self(index)
        assert value is not None
        return value

    def valid_near(self, index: int, low: int, high: int) -> int | None:
        """The valid grid point nearest ``index`` strictly between ``low`` and ``high``."""
        for offset in range(PROBES):
            for candidate in (index + offset, index - offset):
                if low < candidate < high and self(candidate) is not None:
                    return candidate
        return None


def size_to(name: str, options: dict, target: int, input_dim: int, vocab_size: int) -> dict:
    """``options`` with ``name``'s width set so that the model has ``target`` parameters within
    :data:`TOLERANCE` at this feature dimension and vocabulary (every other option as given): the
    valid width whose count is nearest the target. A target no valid width reaches within it is an
    error naming the target and the nearest reachable counts."""
    fields = width_fields(name)
    config = model_config_class(name)
    full = dataclasses.asdict(build_dataclass(config, options, f"model {name}"))
    with torch.random.fork_rng(devices=[]):  # building never draws from the run's seeded streams
        count = _Counter(name, config, full, fields, input_dim, vocab_size)
        low, high = _bracket(count, target)
        while high is not None and low is not None and high - low > 1:  # count(low) < target <= count(high)
            middle = count.valid_near((low + high) // 2, low, high)
            if middle is None:
                break
            if count.at(middle) < target:
                low = middle
            else:
                high = middle
    reachable = [index for index in (low, high) if index is not None]
    best = min(reachable, key=lambda index: abs(count.at(index) - target))
    if _within(count.at(best), target):
        return count.options_at(best)
    raise AsrbenchError(_unreachable(name, fields[0], target, count, low, high))


def _within(count: int | None, target: int) -> bool:
    return count is not None and abs(count - target) <= TOLERANCE * target


def _bracket(count: _Counter, target: int) -> tuple[int | None, int | None]:
    """Valid grid points (low, high) with count(low) < target <= count(high), doubling from the
    narrowest: (None, narrowest) when even that is too large, (widest, None) when none is enough."""
    end = MAX_WIDTH // count.step + 1  # grid indices below this
    index = count.valid_near(1, 0, end)
    if index is None:
        raise AsrbenchError(f"model {count.name}: no valid {count.fields[0]} to size it with")
    if count.at(index) >= target:
        return None, index
    while True:
        wider = count.valid_near(min(index * 2, end - 1), index, end)
        if wider is None:
            return index, None
        if count.at(wider) >= target:
            return index, wider
        index = wider


def _unreachable(name: str, width: str, target: int, count: _Counter, low: int | None, high: int | None) -> str:
    reachable = [index for index in (low, high) if index is not None]
    nearest = " and ".join(
        f"{format_count(count.at(index))} ({count.at(index):,} at {width}={index * count.step})" for index in reachable
    )
    why = (
        "below what the narrowest valid width gives"
        if low is None
        else "above what the widest gives"
        if high is None
        else "between two neighbouring valid widths"
    )
    return (
        f"model {name}: target_params {format_count(target)} ({target:,}) cannot be met within "
        f"±{TOLERANCE:.0%}: it is {why}; nearest reachable: {nearest}"
        + ("; fewer layers (or smaller other options) go lower" if low is None else "")
    )


def sizing_record(name: str, options: dict, target: int, params: int) -> dict[str, Any]:
    """What train_summary.json records about a sized run: the target, the chosen width and count."""
    return {
        "target_params": target,
        "params": params,
        "width": {field: options[field] for field in width_fields(name)},
        "error": (params - target) / target,
    }
