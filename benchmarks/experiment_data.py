"""Data that experiments build instead of read: cross-validation folds of a data dir, and
synthetic CTC outputs.

The experiment scripts (``benchmarks/experiments/``) and the benchmark suite (``benchmarks/``)
call these, and their tests import them from here (``benchmarks/`` on ``sys.path``, as for
``_common``); like every benchmark, this uses only public names of asrbench.

- :func:`fold_dirs` cuts a data dir's train + dev utterances into K folds, each a prepared data
  dir whose ``test`` split is the held-out fold (``benchmarks/experiments/cross_validate.py``).
  The data dir's own test split is never read.
- :func:`peaky_log_probs` and :func:`synthetic_emissions` make log-probs shaped like a trained
  CTC model's, to time searches without training one (``benchmarks/decode_bench.py``,
  ``benchmarks/experiments/ctc_beam_speed.py``); :func:`sorted_batches` pads them into the
  length-sorted batches decoding uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from asrbench.data.manifest import read_manifest, split_path, write_manifest
from asrbench.data.tokenizer import CharTokenizer
from asrbench.errors import AsrbenchError

FRAME_RATE = 25.0  # output frames per second: 10 ms features, 4x subsampling


def fold_dirs(data_dir: Path, out: Path, folds: int) -> list[Path]:
    """Prepared data dirs of the K folds: train, dev (fold k+1) and test (fold k, the held-out one).

    The pool is train + dev sorted by id; fold k is every K-th utterance from the k-th. Run k trains
    on the other K - 2 folds, picks checkpoints on fold k+1 and is scored on fold k, so every
    non-test utterance is scored exactly once by a run that never saw it. Fewer than 3 utterances
    per fold is an :class:`AsrbenchError`.
    """
    pool = sorted(
        read_manifest(split_path(data_dir, "train")) + read_manifest(split_path(data_dir, "dev")),
        key=lambda utt: utt.id,
    )
    if len(pool) < 3 * folds:
        raise AsrbenchError(f"{data_dir}: {len(pool)} train + dev utterances are too few for {folds} folds")
    parts = [pool[k::folds] for k in range(folds)]
    dirs = []
    for k in range(folds):
        held_out, dev = parts[k], parts[(k + 1) % folds]
        train = [utt for j, part in enumerate(parts) if j not in (k, (k + 1) % folds) for utt in part]
        fold = out / "folds" / f"fold{k}"
        for name, utterances in (("train", train), ("dev", dev), ("test", held_out)):
            write_manifest(fold / f"{name}.jsonl", utterances)
        dirs.append(fold)
    return dirs


def peaky_log_probs(text: str, frames: int, tokenizer: CharTokenizer, rng: np.random.Generator) -> np.ndarray:
    """(frames, V) log-probs a trained CTC model might give for ``text``.

    Characters sit on one spike frame (two, 20% of the time) at random places with a blank frame
    between repeats; spikes hold 50-99% of the mass, blank and a random rival most of the rest, and
    in 5% of spike frames the rival takes the target's place (so greedy makes errors to fix).
    Blank frames leave 10^U(-5.5, -1.5) to the other tokens, so most but not all exceed 0.999.
    """
    vocab = len(tokenizer)
    ids = tokenizer.encode(text)
    spans = [2 if rng.random() < 0.2 else 1 for _ in ids]
    needed = sum(spans) + len(ids)
    if needed > frames:
        raise ValueError(f"{len(ids)} characters do not fit in {frames} frames")
    gaps = rng.multinomial(frames - needed, np.ones(len(ids) + 1) / (len(ids) + 1))
    targets = np.zeros(frames, dtype=np.int64)
    position = gaps[0]
    for token, span, gap in zip(ids, spans, gaps[1:], strict=True):
        targets[position : position + span] = token
        position += span + 1 + gap  # at least one blank after every character
    probs = rng.dirichlet(np.full(vocab, 0.3), size=frames)  # (frames, V): how the leftover mass spreads
    spike = targets != 0
    leftover = np.where(spike, rng.uniform(0.01, 0.5, frames), 10 ** rng.uniform(-5.5, -1.5, frames))
    rival = rng.integers(2, vocab - (tokenizer.sos_id is not None), frames)  # never <sos/eos>
    probs[np.arange(frames), rival] += np.where(spike, 1.0, 0.0)  # a confusable character
    probs[spike, 0] += 2.0  # blank takes much of a spike's leftover
    probs[np.arange(frames), targets] = 0.0
    probs /= probs.sum(axis=1, keepdims=True)
    probs *= leftover[:, None]
    probs[np.arange(frames), targets] = 1.0 - leftover
    swap = np.flatnonzero(spike & (rival != targets) & (rng.random(frames) < 0.05))
    probs[swap, rival[swap]], probs[swap, targets[swap]] = probs[swap, targets[swap]], probs[swap, rival[swap]]
    if tokenizer.sos_id is not None:
        probs[:, tokenizer.sos_id] = 1e-9
    return np.log(np.maximum(probs, 1e-12)).astype(np.float32)


def synthetic_emissions(texts: list[str], durations: list[float], alphabet: list[str], seed: int = 0):
    """-> (tokenizer, [log_probs (T', V)], references, durations): peaky outputs spelling ``texts``.

    T' = ``duration * FRAME_RATE``. The tokenizer has the characters of ``alphabet`` (texts), so its
    size does not depend on how many utterances are decoded. A text whose spikes might not fit in
    its frames loses words from the end (the reference too)."""
    tokenizer = CharTokenizer.build(alphabet)
    rng = np.random.default_rng(seed)
    emissions, references = [], []
    for text, duration in zip(texts, durations, strict=True):
        frames = max(int(duration * FRAME_RATE), 1)
        while len(text) * 2.3 > frames:
            text = text.rsplit(" ", 1)[0] if " " in text else ""
        emissions.append(torch.from_numpy(peaky_log_probs(text, frames, tokenizer, rng)))
        references.append(text)
    return tokenizer, emissions, references, list(durations)


def sorted_batches(emissions: list[torch.Tensor], batch_size: int) -> list[tuple]:
    """Length-sorted batches: (utterance indices, log_probs (B, T', V) zero-padded, lengths (B,)).

    Sorted like decoding's bucketed batches, so padding (and so search time) is what a real decode
    would see."""
    order = sorted(range(len(emissions)), key=lambda i: emissions[i].size(0))
    batches = []
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        pieces = [emissions[i] for i in indices]
        padded = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True, padding_value=0.0)
        batches.append((indices, padded, torch.tensor([piece.size(0) for piece in pieces])))
    return batches
