"""Speed of bootstrap CIs plus all pairwise tests: vectorized (asrbench.scoring.stats) against per-resample loops.

    python benchmarks/bootstrap_speed.py [--systems 10] [--utterances 10000] [--resamples 1000] [--json OUT]

Synthetic test set: U utterances of 2-30 words from a 500-word vocabulary; S systems whose
hypotheses are the references with random substitutions, deletions and insertions (rates 8% to
17%, harder utterances harder for every system). Per-utterance errors come from
``scoring.score_utterances`` (timed separately: it runs once per system, not per resample). Timed:

- vectorized: ``stats.compare_systems`` — WER bootstrap CIs of all S systems, and for all
  S (S-1) / 2 pairs the paired bootstrap, the sign test and the matched-pairs test (best of
  ``--repeat`` runs; the first run is reported too);
- numpy loop: the same CIs and paired bootstrap with a Python loop over resamples (numpy inside),
  run in full on the same resample indices, checked to give identical intervals;
- naive jiwer loop: jiwer rescoring the resampled texts of each system in each resample, timed on
  ``--naive-resamples`` resamples of one system and extrapolated to R x S (the pairwise bootstrap
  reuses those per-resample rates, so this is the whole naive cost).
All three run in this process, so their ratios compare like with like.

Issue 31's figure: the same systems each with ``--seeds`` seeds (the others' errors thinned at
random), the utterances in ``--speakers`` speakers, through ``stats.compare_seeded_systems``: the
hierarchical bootstrap of speakers and seeds, every pairwise test and Holm's correction (target
<= 2 s for 10 systems x 3 seeds x 10k utterances in 500 speakers x 1,000 resamples).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jiwer
import numpy as np
from _common import figure, record

from asrbench.scoring import stats
from asrbench.scoring.metrics import score_utterances


def synthetic_texts(systems: int, utterances: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """References and ``systems`` hypothesis lists with random edits (texts are already normalized)."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([f"W{index}" for index in range(500)])
    lengths = rng.integers(2, 31, utterances)
    difficulty = rng.gamma(2.0, 0.5, utterances)  # shared across systems: some utterances are hard for all
    references = [" ".join(vocabulary[rng.integers(0, 500, n)]) for n in lengths]
    hypotheses = []
    for system in range(systems):
        rate = 0.08 + 0.01 * system
        texts = []
        for reference, hard in zip(references, difficulty, strict=True):
            words = []
            for word in reference.split():
                draw = rng.random() / hard
                if draw < rate / 3:
                    continue  # deletion
                words.append(vocabulary[rng.integers(0, 500)] if draw < 2 * rate / 3 else word)
                if draw > 1 - rate / 3:
                    words.append(vocabulary[rng.integers(0, 500)])  # insertion
            texts.append(" ".join(words))
        hypotheses.append(texts)
    return references, hypotheses


def numpy_loop(errors: np.ndarray, words: np.ndarray, indices: np.ndarray, confidence: float) -> np.ndarray:
    """CIs and the paired-bootstrap matrix with a Python loop over resamples; returns the CIs (S, 2)."""
    systems = errors.shape[0]
    rates = np.empty((indices.shape[0], systems))
    for row, drawn in enumerate(indices):
        rates[row] = 100.0 * errors[:, drawn].sum(axis=1) / words[drawn].sum()
    tail = (1 - confidence) / 2
    for i in range(systems):
        for j in range(i + 1, systems):
            _ = (rates[:, i] < rates[:, j]).mean() + 0.5 * (rates[:, i] == rates[:, j]).mean()
    return np.quantile(rates, [tail, 1 - tail], axis=0).T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=10)
    parser.add_argument("--utterances", type=int, default=10000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="Vectorized runs; the best is reported.")
    parser.add_argument("--naive-resamples", type=int, default=3, help="Resamples timed in the jiwer loop.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per system for the hierarchical figure.")
    parser.add_argument("--speakers", type=int, default=500, help="Speakers the utterances are split into.")
    parser.add_argument("--json", type=Path, help="Write the numbers here.")
    args = parser.parse_args()

    references, hypotheses = synthetic_texts(args.systems, args.utterances, args.seed)
    start = time.perf_counter()
    scores = [score_utterances(references, texts, "none") for texts in hypotheses]
    scoring_seconds = time.perf_counter() - start
    errors = np.array([[s.word_errors for s in system] for system in scores], dtype=np.float64)
    words = np.array([s.words for s in scores[0]], dtype=np.float64)
    names = [f"sys{index}" for index in range(args.systems)]

    timings = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        comparison = stats.compare_systems(errors, words, names, args.resamples, seed=args.seed)
        timings.append(time.perf_counter() - start)
    vectorized = min(timings)

    indices = stats.resample_indices(args.utterances, args.resamples, args.seed)
    start = time.perf_counter()
    loop_cis = numpy_loop(errors, words, indices, stats.DEFAULT_CONFIDENCE)
    loop_seconds = time.perf_counter() - start
    if not np.array_equal(loop_cis, np.array([system.ci for system in comparison.systems])):
        raise SystemExit("the numpy loop and compare_systems disagree on the CIs")

    start = time.perf_counter()
    for drawn in indices[: args.naive_resamples]:
        jiwer.wer([references[i] for i in drawn], [hypotheses[0][i] for i in drawn])
    per_evaluation = (time.perf_counter() - start) / args.naive_resamples
    naive_seconds = per_evaluation * args.resamples * args.systems

    pairs = len(comparison.pairs)
    report = {
        "systems": args.systems,
        "utterances": args.utterances,
        "resamples": args.resamples,
        "pairs": pairs,
        "vectorized_seconds": vectorized,
        "vectorized_first_seconds": timings[0],
        "vectorized_median_seconds": statistics.median(timings),
        "numpy_loop_seconds": loop_seconds,
        "naive_jiwer_seconds_per_system_resample": per_evaluation,
        "naive_jiwer_extrapolated_seconds": naive_seconds,
        "speedup_vs_numpy_loop": loop_seconds / vectorized,
        "speedup_vs_naive_jiwer": naive_seconds / vectorized,
        "scoring_seconds_once": scoring_seconds,
        "best": comparison.best,
        "not_significantly_worse": [s.name for s in comparison.systems if s.not_significantly_worse and not s.best],
        "environment": {
            "cpus": os.cpu_count(),
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
    }
    print(
        f"{args.systems} systems x {args.utterances:,} utterances x {args.resamples:,} resamples: "
        f"CIs + {pairs} pairwise tests (paired bootstrap, sign, matched pairs)"
    )
    print(
        f"  vectorized (asrbench.scoring.stats):  {vectorized:.3f} s best of {args.repeat} "
        f"(first {timings[0]:.3f} s, median {statistics.median(timings):.3f} s)"
    )
    print(f"  numpy per-resample loop:      {loop_seconds:.3f} s  ({loop_seconds / vectorized:,.1f}x slower)")
    print(
        f"  naive jiwer loop:             {naive_seconds:,.0f} s extrapolated = {naive_seconds / 60:.1f} min "
        f"({per_evaluation:.3f} s per system-resample x {args.resamples * args.systems:,}; "
        f"{naive_seconds / vectorized:,.0f}x slower)"
    )
    print(f"  per-utterance scoring, once:  {scoring_seconds:.2f} s for {args.systems} systems (not per resample)")
    print(f"  best {comparison.best}; not significantly worse: {report['not_significantly_worse'] or 'none'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    # Issue 31: every system trained with --seeds seeds, the test set in --speakers speakers; the
    # hierarchical bootstrap (speakers and seeds), all pairwise tests and Holm's correction.
    rng = np.random.default_rng(args.seed + 1)
    speakers = np.repeat(np.arange(args.speakers), -(-args.utterances // args.speakers))[: args.utterances]
    seeded = [
        np.stack([errors[k], *(rng.binomial(np.maximum(errors[k], 1).astype(int), 0.9) for _ in range(args.seeds - 1))])
        for k in range(args.systems)
    ]
    seeded_timings = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        hierarchical = stats.compare_seeded_systems(
            seeded, words, names, args.resamples, seed=args.seed, groups=speakers, correction="holm"
        )
        seeded_timings.append(time.perf_counter() - start)
    print(
        f"  with {args.seeds} seeds each and {args.speakers} speakers (hierarchical bootstrap, "
        f"{len(hierarchical.pairs)} pairwise tests, Holm): {min(seeded_timings):.3f} s best of {args.repeat} "
        f"(first {seeded_timings[0]:.3f} s)"
    )
    figures = {
        "bootstrap_seconds": figure(
            vectorized,
            1.0,
            "s",
            better="lower",
            speedup_vs_numpy_loop=loop_seconds / vectorized,
            speedup_vs_naive_jiwer=naive_seconds / vectorized,
        ),
        "bootstrap_seeds_speakers_seconds": figure(
            min(seeded_timings),
            2.0,
            "s",
            better="lower",
            first_seconds=seeded_timings[0],
            seeds=args.seeds,
            speakers=args.speakers,
        ),
    }
    record("bootstrap_speed", figures, {key: report[key] for key in ("systems", "utterances", "resamples", "pairs")})


if __name__ == "__main__":
    main()
