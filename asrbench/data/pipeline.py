"""The training set a run learns from: a prepared data dir, its features, tokenizer and token ids.

The trainer calls :func:`load_training_data`; nothing here knows about models. Only a recipe's
own ``data.dir`` is prepared on the fly (from ``data.corpus`` and ``data.source`` under
``$ASRBENCH_DATA_ROOT``); a data dir named with ``--data`` must already be prepared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asrbench import fileio
from asrbench.data.download import CORPORA as DOWNLOADABLE
from asrbench.data.features import FeatureSet, GlobalCMVN, load_features
from asrbench.data.prepare import prepare_corpus
from asrbench.data.synth import synthesize_corpus
from asrbench.data.tokenizer import Tokenizer, TokenTable, build_tokenizer
from asrbench.errors import AsrbenchError
from asrbench.progress import console
from asrbench.recipe.config import RunConfig, data_root
from asrbench.text import normalize


@dataclass
class TrainingData:
    train: FeatureSet
    dev: FeatureSet
    tokenizer: Tokenizer
    cmvn: GlobalCMVN
    train_tokens: TokenTable  # of train's utterances (all copies), in its order
    dev_tokens: list[list[int]]
    skipped_long: int
    train_hours: float = 0.0  # audio trained on (without speed copies): data.train_fraction's subset


def ensure_data_dir(config: RunConfig) -> Path:
    """The prepared data dir; prepared on the fly when the recipe names a corpus and source."""
    data_dir = Path(config.data.dir)
    if not config.data.dir:
        raise AsrbenchError("no data dir: set data.dir in the recipe or pass --data DIR")
    if (data_dir / "train.jsonl").is_file():
        return data_dir
    if not config.data.corpus:
        raise AsrbenchError(f"{data_dir}: no train.jsonl (run `asrbench data prepare` or set data.corpus)")
    source = _corpus_source(config)
    if source is not None and not source.exists():  # before anything is written, the prepare lock included
        raise AsrbenchError(_corpus_not_found(config, source))
    # Several processes (torchrun ranks) may start at once: one prepares, the others wait.
    with fileio.build_lock(data_dir.parent / f".{data_dir.name}.prepare.lock"):
        if not (data_dir / "train.jsonl").is_file():
            _prepare_data_dir(config, data_dir)
    return data_dir


def _prepare_data_dir(config: RunConfig, data_dir: Path) -> None:
    if config.data.corpus == "synth":
        console.print(f"preparing the built-in corpus in {data_dir}")
        synthesize_corpus(data_dir)
    else:
        source = _corpus_source(config)
        console.print(f"preparing {config.data.corpus} from {source} into {data_dir}")
        prepare_corpus(config.data.corpus, source, data_dir)


def _corpus_source(config: RunConfig) -> Path | None:
    """The corpus folder a recipe prepares from (a relative data.source is under $ASRBENCH_DATA_ROOT);
    None for the built-in corpus, which is synthesized."""
    if config.data.corpus == "synth":
        return None
    source = Path(config.data.source or config.data.corpus)
    return source if source.is_absolute() else data_root() / source


def _corpus_not_found(config: RunConfig, source: Path) -> str:
    """Where the corpus was looked for, and the two ways to get it there (issue 28.16)."""
    corpus = config.data.corpus
    download = corpus if corpus in DOWNLOADABLE else "CORPUS"
    return (
        f"{source}: {corpus} corpus not found (data.source {config.data.source or corpus!r} is looked up under "
        f"$ASRBENCH_DATA_ROOT, now {data_root()}): set ASRBENCH_DATA_ROOT to the folder that holds it, or get "
        f"it with `asrbench data download {download} --dest DIR` and set ASRBENCH_DATA_ROOT (or data.source) "
        "to where it lands"
    )


def train_subset(utterances: list, fraction: float, seed: int) -> set[int]:
    """Indices of the ``fraction`` of ``utterances`` trained on: the first ones of a permutation of
    their ids (sorted) drawn with ``seed``, so a smaller fraction is a subset of a larger one, and
    every model given the same seed trains on the same utterances."""
    if fraction >= 1.0:
        return set(range(len(utterances)))
    by_id = sorted(range(len(utterances)), key=lambda i: utterances[i].id)
    order = np.random.default_rng(seed).permutation(len(by_id))
    count = max(1, int(round(fraction * len(by_id))))
    return {by_id[int(i)] for i in order[:count]}


def load_training_data(config: RunConfig, tokenizer: Tokenizer | None = None) -> TrainingData:
    """Features of train (speed-perturbed copies included) and dev, the tokenizer (built from the
    training transcripts unless a resumed run brings its own), CMVN statistics and token ids."""
    data_dir = ensure_data_dir(config)
    train = load_features(data_dir, "train", config.features)
    dev = load_features(data_dir, "dev", config.features)
    chosen = train_subset(train.utterances, config.data.train_fraction, config.data.subset_seed)

    def fits(features: FeatureSet) -> list[int]:
        # Longer than data.max_duration, or more frames than a whole batch may hold: skipped, counted.
        # Outside data.train_fraction's subset: left out (not counted as skipped).
        lengths = features.lengths.tolist()
        return [
            i
            for i, utt in enumerate(features.utterances)
            if i in chosen and utt.duration <= config.data.max_duration and lengths[i] <= config.train.batch_frames
        ]

    keep = fits(train)
    skipped_long = len(chosen) - len(keep)
    # Statistics of the unperturbed training audio that is trained on (the store's sums, minus
    # the utterances skipped as too long).
    cmvn = train.cmvn(leave_out=sorted(set(range(len(train))) - set(keep)))
    # Every copy of an utterance (plain, speed-perturbed) has its text and token ids: rows of the
    # split's utterances, in the order the copies are concatenated.
    manifest = train.utterances  # read once; the speed copies are made from it
    texts = [normalize(utt.text) for utt in manifest]
    rows = list(keep)
    if len(keep) < len(train):
        train = train.subset(keep)
    for factor in config.augment.speed_perturb:
        if factor != 1.0:
            perturbed = load_features(data_dir, "train", config.features, speed=float(factor), manifest=manifest)
            kept = fits(perturbed)
            train = train.concat(perturbed.subset(kept))
            rows += kept
    if tokenizer is None:
        tokenizer_config = config.tokenizer
        if tokenizer_config.lexicon:
            tokenizer_config = dataclasses.replace(
                tokenizer_config, lexicon=str(resolve_lexicon_path(tokenizer_config.lexicon))
            )
        tokenizer = build_tokenizer(tokenizer_config, [texts[row] for row in sorted(set(rows))])
    # Training texts the tokenizer cannot write in full: only a lexicon's missing words (phones).
    unknown_rows = {row for row in set(rows) if tokenizer.unknown_characters(texts[row])}
    if unknown_rows:  # notes them, fails, or (drop) returns the other utterances
        known = apply_unknown_policy(
            train, tokenizer, config.tokenizer.unknown, data_dir / "train.jsonl", texts=[texts[row] for row in rows]
        )
        if known is not train:
            train, rows = known, [row for row in rows if row not in unknown_rows]
    dev = apply_unknown_policy(dev, tokenizer, config.tokenizer.unknown, data_dir / "dev.jsonl")
    return TrainingData(
        train=train,
        dev=dev,
        tokenizer=tokenizer,
        cmvn=cmvn,
        train_tokens=TokenTable([tokenizer.encode(text) for text in texts], torch.tensor(rows, dtype=torch.int64)),
        dev_tokens=[tokenizer.encode(normalize(utt.text)) for utt in dev.utterances],
        skipped_long=skipped_long,
        train_hours=sum(manifest[i].duration for i in keep) / 3600,
    )


def apply_unknown_policy(
    features: FeatureSet, tokenizer: Tokenizer, policy: str, where: Path, texts: list[str] | None = None
) -> FeatureSet:
    """Utterances with characters the tokenizer lacks (for phones: words the lexicon lacks): ``map``
    to <unk>, ``drop`` them, or ``fail``. ``texts``: the normalized transcripts of ``features``
    (read from its utterances when None).

    Either way the count and the characters (words) are reported, so nothing changes silently.
    """
    texts = texts if texts is not None else [normalize(utt.text) for utt in features.utterances]
    unknown = {i: tokenizer.unknown_characters(text) for i, text in enumerate(texts)}
    unknown = {i: chars for i, chars in unknown.items() if chars}
    if not unknown:
        return features
    unit = tokenizer.unit_name
    joined = (
        " ".join(sorted(set().union(*unknown.values())))
        if unit == "words"
        else "".join(sorted(set().union(*unknown.values())))
    )
    shown = joined if len(joined) <= 200 else joined[:200] + " ..."
    first = features.utterances[min(unknown)].id
    fix = "add them to the lexicon" if unit == "words" else "add them to the training text"
    if policy == "fail":
        raise AsrbenchError(
            f"{where}: utterance '{first}' has {unit} outside the tokenizer ({shown!r}); "
            f"set tokenizer.unknown=map or drop, or {fix}"
        )
    utterances = len({features.utterances[i].id for i in unknown})
    action = "mapped to <unk>" if policy == "map" else "dropped"
    console.print(
        f"[yellow]note[/yellow]: {where}: {utterances} utterances with {unit} outside the "
        f"tokenizer ({shown!r}), {action} (tokenizer.unknown={policy})"
    )
    if policy == "drop":
        keep = [i for i in range(len(features)) if i not in unknown]
        if not keep:
            raise AsrbenchError(f"{where}: every utterance has {unit} outside the tokenizer; nothing left")
        return features.subset(keep)
    return features


def resolve_lexicon_path(name: str) -> Path:
    """A lexicon named in a recipe (``tokenizer.lexicon``): as given when that file exists
    (absolute, or relative to the working directory), else under ``$ASRBENCH_DATA_ROOT``, like
    ``data.source``."""
    path = Path(name)
    if path.is_file() or path.is_absolute():
        return path
    under_root = data_root() / path
    if under_root.is_file():
        return under_root
    raise AsrbenchError(f"tokenizer.lexicon: {name}: no such file (nor {under_root})")
