"""The training set a run learns from: a prepared data dir, its features, tokenizer and token ids.

The trainer calls :func:`load_training_data`; nothing here knows about models. Only a recipe's
own ``data.dir`` is prepared on the fly (from ``data.corpus`` and ``data.source`` under
``$ASRBENCH_DATA_ROOT``); a data dir named with ``--data`` must already be prepared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from asrbench import fileio
from asrbench.config import RunConfig, data_root
from asrbench.data.features import FeatureSet, GlobalCMVN, load_features
from asrbench.data.prepare import prepare_corpus
from asrbench.data.synth import synthesize_corpus
from asrbench.data.tokenizer import Tokenizer, TokenTable, build_tokenizer
from asrbench.errors import AsrbenchError
from asrbench.progress import console
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


def ensure_data_dir(config: RunConfig) -> Path:
    """The prepared data dir; prepared on the fly when the recipe names a corpus and source."""
    data_dir = Path(config.data.dir)
    if not config.data.dir:
        raise AsrbenchError("no data dir: set data.dir in the recipe or pass --data DIR")
    if (data_dir / "train.jsonl").is_file():
        return data_dir
    if not config.data.corpus:
        raise AsrbenchError(f"{data_dir}: no train.jsonl (run `asrbench data prepare` or set data.corpus)")
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
        source = Path(config.data.source or config.data.corpus)
        if not source.is_absolute():
            source = data_root() / source
        console.print(f"preparing {config.data.corpus} from {source} into {data_dir}")
        prepare_corpus(config.data.corpus, source, data_dir)


def load_training_data(config: RunConfig, tokenizer: Tokenizer | None = None) -> TrainingData:
    """Features of train (speed-perturbed copies included) and dev, the tokenizer (built from the
    training transcripts unless a resumed run brings its own), CMVN statistics and token ids."""
    data_dir = ensure_data_dir(config)
    train = load_features(data_dir, "train", config.features)
    dev = load_features(data_dir, "dev", config.features)
    def fits(features: FeatureSet) -> list[int]:
        # Longer than data.max_duration, or more frames than a whole batch may hold: skipped, counted.
        lengths = features.lengths.tolist()
        return [i for i, utt in enumerate(features.utterances)
                if utt.duration <= config.data.max_duration and lengths[i] <= config.train.batch_frames]

    keep = fits(train)
    skipped_long = len(train) - len(keep)
    # Statistics of the unperturbed training audio that is trained on (the store's sums, minus
    # the utterances skipped as too long).
    cmvn = train.cmvn(leave_out=sorted(set(range(len(train))) - set(keep)))
    # Every copy of an utterance (plain, speed-perturbed) has its text and token ids: rows of the
    # split's utterances, in the order the copies are concatenated.
    manifest = train.utterances  # read once; the speed copies are made from it
    texts = [normalize(utt.text) for utt in manifest]
    rows = list(keep)
    if skipped_long:
        train = train.subset(keep)
    for factor in config.augment.speed_perturb:
        if factor != 1.0:
            perturbed = load_features(data_dir, "train", config.features, speed=float(factor), manifest=manifest)
            kept = fits(perturbed)
            train = train.concat(perturbed.subset(kept))
            rows += kept
    tokenizer = tokenizer or build_tokenizer(config.tokenizer, [texts[row] for row in sorted(set(rows))])
    dev = apply_unknown_policy(dev, tokenizer, config.tokenizer.unknown, data_dir / "dev.jsonl")
    return TrainingData(
        train=train,
        dev=dev,
        tokenizer=tokenizer,
        cmvn=cmvn,
        train_tokens=TokenTable([tokenizer.encode(text) for text in texts], torch.tensor(rows, dtype=torch.int64)),
        dev_tokens=[tokenizer.encode(normalize(utt.text)) for utt in dev.utterances],
        skipped_long=skipped_long,
    )


def apply_unknown_policy(features: FeatureSet, tokenizer: Tokenizer, policy: str, where: Path) -> FeatureSet:
    """Utterances with characters the tokenizer lacks: ``map`` to <unk>, ``drop`` them, or ``fail``.

    Either way the count and the characters are reported, so nothing changes silently.
    """
    unknown = {i: tokenizer.unknown_characters(normalize(utt.text)) for i, utt in enumerate(features.utterances)}
    unknown = {i: chars for i, chars in unknown.items() if chars}
    if not unknown:
        return features
    characters = "".join(sorted(set().union(*unknown.values())))
    first = features.utterances[min(unknown)].id
    if policy == "fail":
        raise AsrbenchError(f"{where}: utterance '{first}' has characters outside the tokenizer ({characters!r}); "
                            "set tokenizer.unknown=map or drop, or add them to the training text")
    action = "mapped to <unk>" if policy == "map" else "dropped"
    console.print(f"[yellow]note[/yellow]: {where}: {len(unknown)} utterances with characters outside the "
                  f"tokenizer ({characters!r}), {action} (tokenizer.unknown={policy})")
    if policy == "drop":
        keep = [i for i in range(len(features)) if i not in unknown]
        if not keep:
            raise AsrbenchError(f"{where}: every utterance has characters outside the tokenizer; nothing left")
        return features.subset(keep)
    return features


