"""What a run starts from: its config and, when resuming, its checkpoint; nothing is written here.

A new run's config is the recipe, then the user's ``--set`` overrides (:func:`asrbench.recipe.config.resolve`),
then the command's typed options (:class:`TrainValues`: ``--epochs``, ``--device`` ...) applied as
values, range-checked by the config's own limits. A typed option wins over a ``--set`` of the same
key, as it always did. A resumed run keeps its own config but for its budget and hardware
(:data:`RESUMABLE_OVERRIDES`).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from asrbench.data.manifest import require_prepared
from asrbench.errors import AsrbenchError
from asrbench.models.sizing import size_to
from asrbench.progress import console
from asrbench.recipe.config import RunConfig, TrainConfig, dry_size, resolve, with_data_dir, with_overrides
from asrbench.recipe.schema import coerce, field_limits
from asrbench.runs import rundir
from asrbench.training.state import resume_state

# What a resumed run may change: its budget and the hardware it runs on.
RESUMABLE_OVERRIDES = (
    "train.epochs",
    "train.max_minutes",
    "train.max_steps",
    "train.device",
    "train.num_threads",
    "train.data_workers",
    "train.tensorboard",
    "train.tensorboard_every_steps",
)


@dataclass(frozen=True)
class TrainValues:
    """The train command's typed options (None: not given), each the config key it sets: ``data_dir``
    is ``data.dir``, ``target_params`` ``model.target_params``, the others the ``train`` field of the
    same name."""

    data_dir: str | None = None
    epochs: int | None = None
    max_minutes: float | None = None
    max_steps: int | None = None
    seed: int | None = None
    device: str | None = None
    tensorboard: bool | None = None
    num_threads: int | None = None
    target_params: int | None = None  # parsed where it is given (asrbench.recipe.schema.parse_count)

    # The config key of a value that is not the train field of its name.
    KEYS: ClassVar[dict[str, str]] = {"data_dir": "data.dir", "target_params": "model.target_params"}
    # The option each value comes from, as errors and notes name it.
    OPTIONS: ClassVar[dict[str, str]] = {
        "data_dir": "--data",
        "epochs": "--epochs",
        "max_minutes": "--max-minutes",
        "max_steps": "--max-steps",
        "seed": "--seed",
        "device": "--device",
        "tensorboard": "--tensorboard",
        "num_threads": "--threads",
        "target_params": "--target-params",
    }

    @classmethod
    def key(cls, name: str) -> str:
        """The config key value ``name`` sets."""
        return cls.KEYS.get(name, f"train.{name}")

    def given(self) -> dict[str, str]:
        """config key -> value, for the values given."""
        return {self.key(name): value for name, value in dataclasses.asdict(self).items() if value is not None}

    def option(self, key: str) -> str:
        """How the user gave the value of config ``key`` ("--epochs 3", "--tensorboard")."""
        name = next((name for name, known in self.KEYS.items() if known == key), key.removeprefix("train."))
        value = getattr(self, name)
        return self.OPTIONS[name] if isinstance(value, bool) else f"{self.OPTIONS[name]} {value}"

    def only(self, keys: tuple[str, ...]) -> TrainValues:
        """These values with those of the other config keys dropped."""
        return TrainValues(
            **{name: value for name, value in dataclasses.asdict(self).items() if self.key(name) in keys}
        )

    def apply(self, config: RunConfig) -> RunConfig:
        """``config`` with these values set, each checked against its field's type and limit; an error
        names the option ("--epochs 0: train.epochs must be positive, got 0")."""
        given = {key.removeprefix("train."): value for key, value in self.given().items() if key.startswith("train.")}
        hints = typing.get_type_hints(TrainConfig)
        typed = {name: coerce(value, hints[name], self.option(f"train.{name}")) for name, value in given.items()}
        train = dataclasses.replace(config.train, **typed)
        fields = dataclasses.asdict(train)
        limits = field_limits(TrainConfig)
        for name in typed.keys() & limits.keys():
            problem = limits[name].problem(fields[name], fields, lambda other: f"train.{other}")
            if problem is not None:
                raise AsrbenchError(f"{self.option(f'train.{name}')}: train.{name} {problem}")
        config = dataclasses.replace(config, train=train)
        if self.data_dir is not None:
            config = with_data_dir(config, coerce(self.data_dir, str, self.option("data.dir")))
        if self.target_params is not None:
            config = dataclasses.replace(
                config, model=dataclasses.replace(config.model, target_params=self.target_params)
            )
            if self.target_params:
                dry_size(config, self.option("model.target_params"))
        return config


def sized(config: RunConfig, vocab_size: int) -> RunConfig:
    """``config`` with its model's width chosen for ``model.target_params`` at its feature dimension and
    this vocabulary (:func:`asrbench.models.sizing.size_to`); the same config when there is no target."""
    model = config.model
    if not model.target_params:
        return config
    options = size_to(model.name, model.options, model.target_params, config.features.dim(), vocab_size)
    return dataclasses.replace(config, model=dataclasses.replace(model, options=options))


def start(
    recipe, model_name, run_dir: Path, overrides: list[str] | None, resume: bool, values: TrainValues
) -> tuple[RunConfig, dict | None]:
    """The run's config and, when resuming, its checkpoint; nothing is written yet."""
    # A typed option replaces a --set of the same key, which is then never read (as when both were --set).
    given = values.given()
    overrides = [text for text in overrides or [] if _override_key(text) not in given]
    if resume and ((run_dir / rundir.LAST).is_file() or (run_dir / rundir.PREVIOUS).is_file()):
        return _resumed_config(run_dir, overrides, values), resume_state(run_dir)
    if resume and (run_dir / rundir.CONFIG).is_file():
        return rundir.read_config(run_dir), None  # interrupted before its first checkpoint: start it over
    if resume:
        raise AsrbenchError(f"{run_dir}: no run to resume (no {rundir.CONFIG}); start one without --resume")
    if recipe is None or model_name is None:
        raise AsrbenchError("a recipe and --model are needed to start a new run")
    if (run_dir / rundir.CONFIG).is_file():
        raise AsrbenchError(f"{run_dir}: already holds a run (use --resume to continue it, or another --out)")
    config = values.apply(resolve(recipe, model_name, overrides))
    # A data dir the user names (--data, --set data.dir=) is used as it is: only the recipe's own
    # data.dir is prepared on the fly, so a mistyped one fails instead of training on the recipe's corpus.
    if values.data_dir is not None or any(_override_key(o) == "data.dir" for o in overrides):
        given_as = "--data" if values.data_dir is not None else "--set data.dir"
        require_prepared(config.data.dir, ("train", "dev"), given_as)
    return config, None


def _resumed_config(run_dir: Path, overrides: list[str], values: TrainValues) -> RunConfig:
    """The run's own config with the budget and hardware it is given now; a note lists what is not taken."""
    allowed = [o for o in overrides if _override_key(o) in RESUMABLE_OVERRIDES]
    ignored = [o for o in overrides if _override_key(o) not in RESUMABLE_OVERRIDES]
    ignored += [values.option(key) for key in values.given() if key not in RESUMABLE_OVERRIDES]
    if ignored:
        console.print(
            f"[yellow]note[/yellow]: --resume keeps the run's own config; ignored: {', '.join(ignored)} "
            f"(a resumed run may change only {', '.join(RESUMABLE_OVERRIDES)})"
        )
    config = with_overrides(rundir.read_config(run_dir), allowed, "--resume")
    return values.only(RESUMABLE_OVERRIDES).apply(config)


def _override_key(text: str) -> str:
    return text.split("=", 1)[0].strip()
