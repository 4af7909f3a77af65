"""Recipe configuration: dataclasses validated against YAML, with dotted ``--set`` overrides.

A recipe (``asrbench/recipe/*.yaml``, or any file) has shared sections (``data``, ``features``, ``augment``,
``tokenizer``, ``train``) and a ``models`` section with one entry per architecture. An entry
holds the model's constructor options and, under ``train``, overrides of the shared training
options for that model. An optional ``encoders`` section sets an encoder's options once for every
model built on it (``encoders: {cnn: {channels: 96}}`` reaches ``cnn``, ``cnn_aed`` and
``cnn_transducer``); a model's own entry wins over it. Resolving a recipe for one model gives a :class:`RunConfig`, the
resolved config written into every run dir. Unknown keys and wrong types are rejected with the
valid keys listed, so a typo never silently changes nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from asrbench.errors import AsrbenchError, did_you_mean
from asrbench.recipe.bundled import bundled, find_recipe
from asrbench.recipe.schema import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Limit,
    Override,
    build_dataclass,
    check_limits,
    choices,
    parse_count,
)

DEFAULT_DATA_ROOT = "../shared/data"
MFCC_MIN_MEL_BINS = 23  # MFCCs come from at least this many mel bins (asrbench.data.fbank)


def data_root() -> Path:
    """Where real corpora live: ``$ASRBENCH_DATA_ROOT``, default ``../shared/data``."""
    return Path(os.environ.get("ASRBENCH_DATA_ROOT", DEFAULT_DATA_ROOT))


@dataclass
class DataConfig:
    # Prepared data dir holding train/dev/test.jsonl. Resolving a recipe makes a relative one absolute
    # (from the working directory), so a run dir is read from anywhere; the spelling is kept below.
    dir: str = ""
    # data.dir as the recipe or --data wrote it, when that was relative (written by resolve(), never set
    # by hand). The config hash reads this one: it does not change with the working directory, and is
    # the hash older versions recorded for the same config (they stored data.dir as written).
    dir_as_written: str = ""
    corpus: str = ""  # if set with `source`, `train` prepares `dir` when it is missing
    source: str = ""  # corpus folder; relative paths are under $ASRBENCH_DATA_ROOT
    max_duration: float = 30.0  # longer training utterances are skipped (and counted)
    # Train on this share of train's utterances: the first ones of a permutation drawn with
    # subset_seed, so smaller shares are subsets of larger ones (study data's nested subsets).
    train_fraction: float = 1.0
    subset_seed: int = 0

    LIMITS: ClassVar[dict] = {
        "max_duration": POSITIVE,
        "train_fraction": Limit(low=0, high=1, low_open=True),
        "subset_seed": NON_NEGATIVE,
    }


@dataclass(frozen=True)
class Convention:
    """A filterbank convention (``features.preset``): how frames are cut, where the mel banks end
    and what scale the samples are on."""

    snip_edges: bool  # True: only frames that fit; False: centred frames, the edges reflected (Kaldi's snip_edges)
    high_freq: float  # the highest mel bank's upper edge in Hz; <= 0: that far below the Nyquist frequency
    scale: float  # samples in [-1, 1] are multiplied by this before framing


PRESETS = {
    # Kaldi's compute-fbank-feats defaults, on int16-scaled samples: asrbench's default.
    "kaldi": Convention(snip_edges=True, high_freq=0.0, scale=32768.0),
    # sherpa-onnx's FeatureExtractorConfig defaults (kaldi-native-fbank underneath): snip_edges false,
    # high_freq -400, samples as given in [-1, 1] (normalize_samples true), dither 0.
    "sherpa": Convention(snip_edges=False, high_freq=-400.0, scale=1.0),
}


@dataclass
class FeatureConfig:
    kind: str = "fbank"  # fbank | mfcc
    sample_rate: int = 16000
    num_mel_bins: int = 80
    num_ceps: int = 13  # mfcc only
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    # How the feature store keeps frames on disk: float16 (2 bytes a value; normalized in float32
    # after reading) or float32.
    dtype: str = "float16"
    # false: keep no frames on disk; compute them from the audio for each batch (the store holds
    # only frame counts and CMVN sums), for corpora whose features do not fit on disk.
    cache: bool = True
    # Which filterbank convention (fbank only; PRESETS above): kaldi (compute-fbank-feats:
    # frames that fit, mel banks up to the Nyquist frequency, int16-scaled samples) or sherpa
    # (sherpa-onnx's front end: centred frames with reflected edges, banks up to rate/2 - 400 Hz,
    # samples in [-1, 1]), for models that `asrbench export --format sherpa-onnx` hands to sherpa-onnx.
    preset: str = "kaldi"

    LIMITS: ClassVar[dict] = {
        "kind": choices("fbank", "mfcc"),
        "preset": choices(*PRESETS),
        "dtype": choices("float16", "float32"),
        "sample_rate": POSITIVE,
        "num_mel_bins": POSITIVE,
        "num_ceps": POSITIVE,
        "frame_length_ms": POSITIVE,
        "frame_shift_ms": POSITIVE,
    }

    def dim(self) -> int:
        return self.num_ceps if self.kind == "mfcc" else self.num_mel_bins


@dataclass
class AugmentConfig:
    spec_augment: bool = True
    freq_masks: int = 2
    freq_mask_width: int = 15  # maximum bins per mask
    time_masks: int = 2
    time_mask_width: int = 25  # maximum frames per mask
    time_mask_ratio: float = 0.1  # ... and never more than this fraction of the utterance
    speed_perturb: list = field(default_factory=list)  # e.g. [0.9, 1.1]; 1.0 is always kept
    # Noise-augmented training: sources white | pink | babble (other training speakers) | a folder of
    # noise recordings (relative: from the working directory, else under $ASRBENCH_DATA_ROOT),
    # added to the waveform before features at an SNR drawn uniformly from noise_snr (dB, over
    # the speech), to a noise_prob fraction of the utterances of every batch, seeded per batch.
    noise: list = field(default_factory=list)
    noise_snr: list = field(default_factory=lambda: [0.0, 20.0])
    noise_prob: float = 0.5

    LIMITS: ClassVar[dict] = {
        "freq_masks": NON_NEGATIVE,
        "freq_mask_width": NON_NEGATIVE,
        "time_masks": NON_NEGATIVE,
        "time_mask_width": NON_NEGATIVE,
        "time_mask_ratio": FRACTION,
        "noise_prob": FRACTION,
    }


@dataclass
class TokenizerConfig:
    kind: str = "char"  # a key of asrbench.data.tokenizer.TOKENIZERS: char | bpe | unigram | phone
    # bpe / unigram: sentencepiece pieces (<unk> included) learned from the training transcripts.
    vocab_size: int = 0
    # phone: a CMUdict / Sphinx pronunciation lexicon (e.g. an4/etc/an4.dic); a relative path that
    # does not exist from the working directory is looked up under $ASRBENCH_DATA_ROOT.
    lexicon: str = ""
    # Dev/test characters the training transcripts never had (for phones: words the lexicon lacks,
    # in training too): map them to <unk>, drop those utterances (counted), or fail naming them.
    unknown: str = "map"

    LIMITS: ClassVar[dict] = {"vocab_size": NON_NEGATIVE, "unknown": choices("map", "drop", "fail")}


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_frames: int = 20000  # padded input frames per batch (B * T_max)
    max_batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 200
    # adamw (torch's AdamW) | scaled_adam (icefall's ScaledAdam, the Zipformer's: updates relative to
    # each tensor's RMS, no weight decay; icefall's lr is 0.045): asrbench.training.optimization.
    optimizer: str = "adamw"
    # cosine | constant (after a linear warm-up from 0) | eden (icefall's: lr falls as
    # step^-0.5 past eden_steps and epoch^-0.5 past eden_epochs; warm-up from 0.5 to 1 over warmup_steps).
    schedule: str = "cosine"
    eden_steps: float = 7500.0  # schedule eden: icefall's lr_batches
    eden_epochs: float = 3.5  # schedule eden: icefall's lr_epochs
    final_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    patience: int = 0  # epochs without dev improvement before stopping; 0 = never stop early
    # The final model (checkpoints/best.pt) is the average of the weights of the N best epochs on
    # dev (CER, then loss), as ESPnet's --keep_nbest_models/average does; 1 = the single best epoch.
    average_best: int = 1
    # A time budget in minutes (0 = none), counted on train.budget_clock: "compute" is the training
    # process's CPU time over its torch threads (what the work cost, whatever else the machine runs),
    # "wall" is elapsed time, "auto" is compute on a CPU and wall on a GPU.
    max_minutes: float = 0.0
    budget_clock: str = "auto"  # auto | compute | wall
    # With max_minutes, the learning-rate decay is fitted to the budget once, at the end of the first
    # epoch, from the measured cost of an epoch: it ends at the step the budget is expected to reach
    # (recorded as schedule_steps in train_summary.json), so the schedule is a function of the step alone.
    budget_schedule: bool = True
    # The step at which the cosine decay ends (0: the last step of train.epochs). Like a budget's
    # estimate it takes over from the end of the first epoch, so that `--max-steps S --set
    # train.schedule_steps=T` repeats a budgeted run that reached step S with schedule T exactly.
    schedule_steps: int = 0
    # Also write the resumable checkpoint inside an epoch this often (0 = only at epoch ends).
    checkpoint_minutes: float = 10.0
    # Batches in a row with a non-finite loss or gradient before training stops with an error.
    max_nonfinite_batches: int = 20
    max_steps: int = 0  # stop after this many optimizer steps in all (0 = no limit)
    # Batches whose gradients add up to one optimizer step, per rank: a step sees
    # world_size * grad_accum batches (asrbench.training.distributed).
    grad_accum: int = 1
    # Processes collating batches ahead of the training step (0 = in the training process; -1 =
    # auto: on a CPU only cores left over by the compute threads, since a worker sharing a core with
    # them stalls every parallel op of the step; see asrbench.training.loader.loader_workers).
    data_workers: int = -1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # fp32 | bf16 | fp16 (autocast; fp16 adds a gradient scaler) | amp: bf16 on a GPU that has
    # it, else fp16 on a GPU, fp32 on a CPU (CPU autocast rarely pays off without AMX units).
    precision: str = "fp32"
    num_threads: int = 0  # 0 = torch's default
    eval_batch_frames: int = 60000
    # TensorBoard event files in <run>/tensorboard/ (rank 0; needs asrbench[tensorboard]): the
    # training loss and lr every tensorboard_every_steps steps (0: per epoch only), dev loss/CER/WER.
    tensorboard: bool = False
    tensorboard_every_steps: int = 50

    # The values each field takes (asrbench.recipe.schema.Limit); resolve() checks them all.
    LIMITS: ClassVar[dict] = {
        "epochs": POSITIVE,
        "batch_frames": POSITIVE,
        "max_batch_size": POSITIVE,
        "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "warmup_steps": NON_NEGATIVE,
        "optimizer": choices("adamw", "scaled_adam"),
        "schedule": choices("cosine", "constant", "eden"),
        "eden_steps": POSITIVE,
        "eden_epochs": POSITIVE,
        "final_lr_ratio": FRACTION,
        "grad_clip": NON_NEGATIVE,
        "patience": NON_NEGATIVE,
        "average_best": POSITIVE,
        "max_minutes": NON_NEGATIVE,
        "budget_clock": choices("auto", "compute", "wall"),
        "schedule_steps": NON_NEGATIVE,
        "checkpoint_minutes": NON_NEGATIVE,
        "max_nonfinite_batches": POSITIVE,
        "max_steps": NON_NEGATIVE,
        "grad_accum": POSITIVE,
        "data_workers": Limit(low=0, special=((-1, "auto"),)),
        "seed": NON_NEGATIVE,
        "device": choices("auto", "cpu", "cuda"),
        "precision": choices("fp32", "bf16", "fp16", "amp"),
        "num_threads": NON_NEGATIVE,
        "eval_batch_frames": POSITIVE,
        "tensorboard_every_steps": NON_NEGATIVE,
    }


@dataclass
class ModelSpec:
    name: str = ""
    options: dict = field(default_factory=dict)
    # Parameter-matched sizing (``models.<name>.target_params: 3M``, ``--set model.target_params=5M``):
    # the trainer sets the options' width (asrbench.models.sizing) so that the model built at the run's
    # feature dimension and vocabulary has this many parameters, +-5%; 0 = the options as given.
    target_params: int = 0


@dataclass
class RunConfig:
    """Everything one training run depends on; saved as ``config.yaml`` in the run dir."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelSpec = field(default_factory=ModelSpec)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """Short, stable hash of the resolved config: every key, with data.dir as the recipe wrote it
        (``data.dir_as_written``), so the working directory a run was started from never changes it."""
        values = self.to_dict()
        if not values["model"]["target_params"]:
            del values["model"]["target_params"]  # unsized: the hash older versions recorded
        for key, default in TRAIN_KEYS_SINCE_ISSUE_30.items():
            if values["train"][key] == default:
                del values["train"][key]  # at its default: the hash older versions recorded
        if values["features"]["preset"] == FeatureConfig.preset:
            del values["features"]["preset"]  # the convention older versions had, hashed as they did
        written = values["data"].pop("dir_as_written")
        if written:
            values["data"]["dir"] = written
        blob = json.dumps(values, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# train keys added after runs were recorded; at these values a config hashes as it did before them.
TRAIN_KEYS_SINCE_ISSUE_30 = {key: getattr(TrainConfig(), key) for key in ("optimizer", "eden_steps", "eden_epochs")}

SECTIONS = {
    "data": DataConfig,
    "features": FeatureConfig,
    "augment": AugmentConfig,
    "tokenizer": TokenizerConfig,
    "train": TrainConfig,
}

# Shared sections a model's recipe entry may override (features stay shared: one cache per corpus).
MODEL_SECTIONS = ("train", "augment")


def _validate(
    config: RunConfig, where: str, overridden: dict[tuple[str, str], str] | None = None, model_label: str = "model"
) -> None:
    """Value checks; an error names the ``--set`` argument when the value came from one.
    ``model_label``: what the model's options are called where they came from (``models.cnn`` in a recipe)."""
    overridden = overridden or {}

    def at(section: str, key: str) -> str:
        return f"--set {overridden[(section, key)]}" if (section, key) in overridden else where

    for section in SECTIONS:
        check_limits(getattr(config, section), section, overridden, where)
    options = model_config_class(config.model.name)(**config.model.options)
    check_limits(options, "model", overridden, where, model_label)
    given = [f"--set {text}" for (section, _), text in overridden.items() if section == "model"]
    _dry_build(config, ", ".join(given) or where)
    if config.model.target_params:
        dry_size(config, ", ".join(given) or f"{where}: {model_label}.target_params")
    features = config.features
    if features.kind == "mfcc" and features.preset != FeatureConfig.preset:
        raise AsrbenchError(
            f"{at('features', 'preset')}: features.preset {features.preset} is a filterbank convention; "
            "features.kind mfcc has none (use kind fbank)"
        )
    if features.kind == "mfcc" and features.num_ceps > max(features.num_mel_bins, MFCC_MIN_MEL_BINS):
        raise AsrbenchError(
            f"{at('features', 'num_ceps')}: features.num_ceps must be at most the "
            f"{max(features.num_mel_bins, MFCC_MIN_MEL_BINS)} mel bins mfcc uses, "
            f"got {features.num_ceps}"
        )
    # The tokenizer registry (a later stage), read at call time: a registered tokenizer counts at once.
    from asrbench.data.tokenizer import TOKENIZERS

    if config.tokenizer.kind not in TOKENIZERS:
        raise AsrbenchError(
            f"{at('tokenizer', 'kind')}: tokenizer.kind must be one of {', '.join(TOKENIZERS)}, "
            f"got {config.tokenizer.kind!r}"
        )
    if config.tokenizer.kind in ("bpe", "unigram") and config.tokenizer.vocab_size < 2:
        raise AsrbenchError(
            f"{at('tokenizer', 'vocab_size')}: tokenizer.kind {config.tokenizer.kind} needs "
            f"tokenizer.vocab_size (the number of subword pieces, e.g. 30 or 500)"
        )
    if config.tokenizer.kind == "phone" and not config.tokenizer.lexicon:
        raise AsrbenchError(
            f"{at('tokenizer', 'lexicon')}: tokenizer.kind phone needs tokenizer.lexicon, a "
            "pronunciation lexicon (CMUdict / Sphinx format, e.g. an4/etc/an4.dic)"
        )
    for factor in config.augment.speed_perturb:
        if not isinstance(factor, (int, float)) or not 0.5 <= factor <= 2.0:
            raise AsrbenchError(
                f"{at('augment', 'speed_perturb')}: augment.speed_perturb factors must be numbers "
                f"in [0.5, 2], got {factor!r}"
            )
    _validate_noise(config.augment, at)


def _validate_noise(augment: AugmentConfig, at) -> None:
    """augment.noise's sources are names or folders (checked when training opens them), its SNR a range."""
    if not isinstance(augment.noise, list) or not all(isinstance(source, str) and source for source in augment.noise):
        raise AsrbenchError(
            f"{at('augment', 'noise')}: augment.noise must be a list of noise sources (white, pink, "
            f"babble or a folder of recordings), got {augment.noise!r}"
        )
    snr = augment.noise_snr
    if (
        not isinstance(snr, list)
        or len(snr) != 2
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in snr)
        or snr[0] > snr[1]
    ):
        raise AsrbenchError(
            f"{at('augment', 'noise_snr')}: augment.noise_snr must be [low, high] in dB with low <= high, got {snr!r}"
        )


def _dry_build(config: RunConfig, where: str) -> None:
    """The model's own checks of one option against another (a GRU has no forget_bias), before anything
    is written: the model is built on the meta device (no memory, milliseconds) for any vocabulary."""
    import torch  # only here: a FeatureConfig read by an exported model must not pull torch in

    from asrbench.models import build_model  # the registry loads every architecture (see model_config_class)

    try:
        with torch.device("meta"):
            build_model(config.model.name, config.model.options, config.features.dim(), 32)
    except AsrbenchError as err:
        raise AsrbenchError(f"{where}: {err}") from None


def dry_size(config: RunConfig, where: str) -> None:
    """A target_params no width reaches fails here, before data or a run dir (the trainer sizes the
    model again at the real vocabulary, known once the tokenizer is built)."""
    from asrbench.models.sizing import size_to  # the registry loads every architecture (see model_config_class)

    try:
        size_to(config.model.name, config.model.options, config.model.target_params, config.features.dim(), 32)
    except AsrbenchError as err:
        raise AsrbenchError(f"{where}: {err}") from None


def _overridden(overrides: list[str], model: str) -> dict[tuple[str, str], str]:
    """(section, key) -> the ``--set`` argument that set it."""
    keys = {}
    for text in overrides:
        path = text.split("=", 1)[0].strip().split(".")
        if path[0] == "models" and len(path) > 2 and path[1] == model:
            path = ["model", *path[2:]]
        if len(path) == 2:
            keys[(path[0], path[1])] = text.strip()
    return keys


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; recipes mean a float."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: str | Path) -> dict:
    """A recipe: a file, or a bundled recipe named (``an4``, ``an4.yaml``; see :mod:`asrbench.recipe.bundled`)."""
    found = find_recipe(path)
    if found is None:
        raise AsrbenchError(
            f"{path}: recipe not found (a path, or a bundled recipe: {', '.join(bundled())}; "
            "`asrbench recipes` lists them)"
        )
    path = found
    try:
        data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_RecipeLoader)  # noqa: S506 - safe loader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise AsrbenchError(f"{path}{line}: invalid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise AsrbenchError(f"{path}: not UTF-8 text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise AsrbenchError(f"{path}: a recipe must be a mapping of sections")
    return data


def model_config_class(model: str) -> type:
    """The options dataclass of ``model`` (an unknown name fails with the valid ones)."""
    # Imported here: the model registry loads every architecture (torch.nn modules), which a
    # FeatureConfig read by an exported model (asrbench.deploy.onnx_runtime) must not pull in.
    from asrbench.models import model_config_class as registered

    return registered(model)


def encoder_options(recipe: dict, model: str, where: str) -> dict:
    """The ``encoders`` section's options for ``model``'s encoder: those of them that the model's own
    options have (``las``, the lstm row's attention model, names its encoder options its own way).
    Every key is checked against the encoder's options, so a typo is an error, never ignored."""
    section = recipe.get("encoders") or {}
    if not isinstance(section, dict):
        raise AsrbenchError(f"{where}: 'encoders' must map encoder names to their options")
    # The registry of encoders and models (a later stage), read only when a recipe has this section.
    from asrbench.models import ENCODERS, model_cell, model_config_class

    for encoder, options in section.items():
        if encoder not in ENCODERS:
            raise AsrbenchError(
                f"{where}: encoders.{encoder}: unknown encoder{did_you_mean(str(encoder), ENCODERS)} "
                f"(valid encoders: {', '.join(ENCODERS)})"
            )
        if not isinstance(options, dict):
            raise AsrbenchError(f"{where}: encoders.{encoder} must be a mapping")
        valid = [f.name for f in dataclasses.fields(ENCODERS[encoder].config)]
        for key in options:
            if key not in valid:
                raise AsrbenchError(
                    f"{where}: encoders.{encoder}.{key}: unknown option"
                    f"{did_you_mean(str(key), valid)} (valid: {', '.join(valid)})"
                )
    cell = model_cell(model)
    if cell is None or cell[0] not in section:
        return {}
    own = {f.name for f in dataclasses.fields(model_config_class(model))}
    return {key: copy.deepcopy(value) for key, value in section[cell[0]].items() if key in own}


def recipe_models(recipe: dict, where: str) -> dict:
    models = recipe.get("models") or {}
    if not isinstance(models, dict):
        raise AsrbenchError(f"{where}: 'models' must map model names to their options")
    return models


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=1e-3`` -> (["train", "lr"], 0.001); the value is parsed as YAML."""
    if "=" not in text:
        raise AsrbenchError(f"--set {text}: expected KEY=VALUE, e.g. train.lr=1e-3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _looks_like_float(raw):
        value = float(raw)
    return key.strip().split("."), value


def _looks_like_float(raw: str) -> bool:
    try:
        float(raw)
    except ValueError:
        return False
    return True


def recipe_sizes(recipe_path: str | Path) -> tuple[int, dict[str, dict], str]:
    """What sizes a recipe's models: (feature dim, model -> its resolved options for each model the
    recipe lists, where they came from), for ``asrbench models --recipe``."""
    recipe = load_yaml(recipe_path)
    resolved = {model: resolve(recipe_path, model) for model in recipe_models(recipe, str(recipe_path))}
    dim = next(iter(resolved.values())).features.dim() if resolved else RunConfig().features.dim()
    return dim, {model: config.model.options for model, config in resolved.items()}, f"{recipe_path}'s options"


def resolve(
    recipe_path: str | Path,
    model: str,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Resolve a recipe for one model: shared sections + the model's entry + ``--set`` overrides."""
    where = str(recipe_path)
    recipe = load_yaml(recipe_path)
    valid = list(SECTIONS) + ["models", "encoders"]
    for key in recipe:
        if key not in valid:
            raise AsrbenchError(
                f"{where}: unknown key '{key}'{did_you_mean(key, valid)} (valid keys: {', '.join(valid)})"
            )
    models = recipe_models(recipe, where)
    model_config_class(model)  # an unknown model fails here, with the valid names
    if model not in models:
        available = ", ".join(models) or "none"
        raise AsrbenchError(f"{where}: no section for model '{model}' under 'models' (recipe has: {available})")
    entry = copy.deepcopy(models[model]) or {}
    if not isinstance(entry, dict):
        raise AsrbenchError(f"{where}: models.{model} must be a mapping")
    sections = {name: copy.deepcopy(recipe.get(name) or {}) for name in SECTIONS}
    # A model's entry may override keys of the shared sections (models.dnn.train.lr,
    # models.dnn.augment.speed_perturb); everything else in it is a model option.
    for name in MODEL_SECTIONS:
        override = entry.pop(name, None) or {}
        if not isinstance(override, dict):
            raise AsrbenchError(f"{where}: models.{model}.{name} must be a mapping")
        if not isinstance(sections[name], dict):
            raise AsrbenchError(f"{where}: {name}: expected a mapping")
        sections[name].update(override)
    sections["target_params"] = entry.pop("target_params", None)  # sizing, not an option of the model
    sections["model"] = {**encoder_options(recipe, model, where), **entry}
    for text in overrides or []:
        path, value = parse_override(text)
        _apply_override(sections, path, value, text, model)
    if isinstance(sections["data"], dict) and "dir_as_written" in sections["data"]:
        raise AsrbenchError(f"{where}: data.dir_as_written is written by asrbench; set data.dir")
    config = _build(sections, model, where, f"{where}: models.{model}")
    _validate(config, where, _overridden(overrides or [], model), f"models.{model}")
    _anchor_data_dir(config.data)
    return config


def _anchor_data_dir(data: DataConfig) -> None:
    """A relative data.dir made absolute from the working directory (where it was meant from), its
    spelling kept in data.dir_as_written for the hash (issue 28.9)."""
    if data.dir and not os.path.isabs(data.dir):
        data.dir_as_written, data.dir = data.dir, os.path.abspath(data.dir)


def with_data_dir(config: RunConfig, data_dir: str) -> RunConfig:
    """A copy of ``config`` that reads its prepared data from ``data_dir`` (``--data``), a relative one
    anchored as :func:`resolve` anchors it."""
    data = dataclasses.replace(config.data, dir=data_dir, dir_as_written="")
    _anchor_data_dir(data)
    return dataclasses.replace(config, data=data)


def _build(sections: dict, model: str, where: str, model_where: str) -> RunConfig:
    """RunConfig from plain section mappings plus the model's options, every key validated."""
    built = {name: build_dataclass(cls, sections.get(name), f"{where}: {name}") for name, cls in SECTIONS.items()}
    options = build_dataclass(model_config_class(model), sections.get("model") or {}, model_where)
    target = _target_params(sections.get("target_params"), f"{model_where}.target_params")
    return RunConfig(**built, model=ModelSpec(name=model, options=dataclasses.asdict(options), target_params=target))


def _target_params(value: Any, where: str) -> int:
    """A parameter count (``5M``, ``800k``); absent or 0: no sizing (``--set model.target_params=0``
    turns a recipe's off)."""
    plain = value.value if isinstance(value, Override) else value
    if plain is None or (isinstance(plain, (int, float)) and not isinstance(plain, bool) and plain == 0):
        return 0
    return parse_count(value, where)


def _apply_override(sections: dict, path: list[str], value: Any, text: str, model: str) -> None:
    if path[0] == "models" and len(path) > 2 and path[1] == model:
        path = ["model"] + path[2:]
    if path[0] not in sections:
        valid_sections = list(SECTIONS) + ["model"]
        raise AsrbenchError(
            f"--set {text}: unknown section '{path[0]}'{did_you_mean(path[0], valid_sections)} "
            f"(valid: {', '.join(valid_sections)})"
        )
    if len(path) != 2:
        raise AsrbenchError(f"--set {text}: expected SECTION.KEY=VALUE, e.g. train.lr=1e-3")
    if path == ["model", "target_params"]:  # sizing, not an option of the model (ModelSpec.target_params)
        sections["target_params"] = Override(text.split("=", 1)[1], value, text.strip())
        return
    section = sections[path[0]]
    if not isinstance(section, dict):
        raise AsrbenchError(f"--set {text}: section '{path[0]}' is not a mapping")
    cls = model_config_class(model) if path[0] == "model" else SECTIONS[path[0]]
    valid = [f.name for f in dataclasses.fields(cls)] + (["target_params"] if path[0] == "model" else [])
    if path[1] not in valid:
        raise AsrbenchError(
            f"--set {text}: unknown key '{path[1]}' in {path[0]}{did_you_mean(path[1], valid)} "
            f"(valid keys: {', '.join(valid)})"
        )
    if path == ["data", "dir_as_written"]:
        raise AsrbenchError(f"--set {text}: data.dir_as_written is written by asrbench; set data.dir")
    raw = text.split("=", 1)[1]
    section[path[1]] = Override(raw, value, text.strip())


def with_overrides(config: RunConfig, overrides: list[str], where: str = "--set") -> RunConfig:
    """A copy of a resolved config with ``--set`` overrides applied (e.g. to extend a resumed run)."""
    values = config.to_dict()
    sections = {name: values[name] for name in SECTIONS}
    sections["model"] = values["model"]["options"]
    sections["target_params"] = values["model"]["target_params"]
    for text in overrides:
        path, value = parse_override(text)
        _apply_override(sections, path, value, text, config.model.name)
    result = _build(sections, config.model.name, where, f"{where}: model")
    _validate(result, where, _overridden(overrides, config.model.name))
    if ("data", "dir") in _overridden(overrides, config.model.name):
        result.data.dir_as_written = ""
    _anchor_data_dir(result.data)
    return result


def run_config_from_dict(values: dict, where: str) -> RunConfig:
    """Rebuild a RunConfig from a saved run dir or checkpoint."""
    if not isinstance(values, dict):
        raise AsrbenchError(f"{where}: not a run config (expected a mapping of sections, got {type(values).__name__})")
    model = values.get("model") or {}
    if not isinstance(model, dict):
        raise AsrbenchError(f"{where}: model: expected a mapping")
    sections = {name: values.get(name) for name in SECTIONS}
    sections["model"] = model.get("options")
    sections["target_params"] = model.get("target_params")  # absent before sizing existed
    return _build(sections, model.get("name", ""), where, f"{where}: model")


def recipe_features(
    recipe_path: str | Path, model: str | None = None, overrides: list[str] | None = None
) -> tuple[FeatureConfig, AugmentConfig]:
    """A recipe's feature and augmentation sections: for one model (its own overrides included),
    or the shared sections alone when ``model`` is None (what ``asrbench data features`` extracts)."""
    if model is not None:
        config = resolve(recipe_path, model, overrides)
        return config.features, config.augment
    where = str(recipe_path)
    recipe = load_yaml(recipe_path)
    sections = {name: copy.deepcopy(recipe.get(name) or {}) for name in ("features", "augment")}
    for text in overrides or []:
        path, value = parse_override(text)
        if path[0] not in sections or len(path) != 2:
            raise AsrbenchError(f"--set {text}: without --model only features.KEY and augment.KEY can be set")
        sections[path[0]][path[1]] = Override(text.split("=", 1)[1], value, text.strip())
    features = build_dataclass(FeatureConfig, sections["features"], f"{where}: features")
    augment = build_dataclass(AugmentConfig, sections["augment"], f"{where}: augment")
    overridden = _overridden(overrides or [], "")
    check_limits(features, "features", overridden, where)
    check_limits(augment, "augment", overridden, where)
    return features, augment
