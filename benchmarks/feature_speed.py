"""Feature extraction and feature-cache speed on a real corpus (AN4 by default).

    python benchmarks/feature_speed.py [--data data/an4] [--splits train,dev,test] [--threads 0]

Audio is read once before timing (file reading is excluded from both sides). Timed, side by side
in this process, best of ``--repeat``:

- baseline: a per-utterance loop over torchaudio's ``compliance.kaldi.fbank`` with asrbench's
  settings (80 log-mel bins, 25/10 ms, no dither, int16-scaled samples);
- asrbench: ``FeatureExtractor.batch`` over the same waveforms, one ~8 s chunk after another on
  torch's threads, as ``asrbench.data.features.extract`` runs it; both outputs are compared with each other and with
  Kaldi's computation in float64 (the largest absolute log-mel differences are reported).

Then the cache: ``load_features`` on a warm cache, and one epoch of length-bucketed batches
(CMVN, padding, targets; no SpecAugment) read from it, in audio seconds per wall second.
Targets: batched extraction ≥ 3x the baseline, an epoch from the cache ≥ 10,000x real time.
"""

from __future__ import annotations

import argparse
import time

from _common import best_time, figure, record, set_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/an4", help="Prepared data dir (asrbench data prepare an4 ...).")
    parser.add_argument("--splits", default="train,dev,test")
    parser.add_argument("--mel-bins", type=int, default=80)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default).")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-frames", type=int, default=20000)
    args = parser.parse_args()
    threads = set_threads(args.threads)

    import torch

    from asrbench.data.audio import load_audio
    from asrbench.data.batching import BucketBatchSampler, Collator
    from asrbench.data.fbank import FeatureExtractor
    from asrbench.data.features import load_features
    from asrbench.data.manifest import read_manifest, split_path
    from asrbench.data.store import CHUNK_SECONDS, chunked
    from asrbench.recipe.config import AugmentConfig, FeatureConfig
    from asrbench.torchaudio_compat import kaldi

    utterances = [utt for split in args.splits.split(",") for utt in read_manifest(split_path(args.data, split))]
    first = read_manifest(split_path(args.data, args.splits.split(",")[0]))[0]
    import soundfile

    rate = soundfile.info(first.audio).samplerate
    config = FeatureConfig(sample_rate=rate, num_mel_bins=args.mel_bins)
    waveforms = [load_audio(utt.audio, rate, utt.offset, utt.duration if utt.offset else None) for utt in utterances]
    audio_seconds = sum(w.numel() for w in waveforms) / rate

    def baseline() -> list[torch.Tensor]:
        return [
            kaldi.fbank(
                (w * 32768.0).unsqueeze(0),
                num_mel_bins=args.mel_bins,
                sample_frequency=rate,
                frame_length=25.0,
                frame_shift=10.0,
                dither=0.0,
            )
            for w in waveforms
        ]

    extractor = FeatureExtractor(config)

    groups = [[waveforms[i] for i in group] for group in chunked([w.numel() / rate for w in waveforms], CHUNK_SECONDS)]

    def batched() -> list[torch.Tensor]:
        return [features for group in groups for features in extractor.batch(group)]

    reference, ours = baseline(), batched()  # warm-up, and the equality check
    max_difference = max(float((a - b).abs().max()) for a, b in zip(reference, ours, strict=True))
    # Both are float32; the float64 Kaldi computation says which one rounding moved (differences
    # concentrate in near-digital-silence frames, where the DC-free signal is tiny).
    exact = [
        kaldi.fbank(
            (w.double() * 32768.0).unsqueeze(0),
            num_mel_bins=args.mel_bins,
            sample_frequency=rate,
            frame_length=25.0,
            frame_shift=10.0,
            dither=0.0,
        ).float()
        for w in waveforms
    ]
    ours_vs_float64 = max(float((a - b).abs().max()) for a, b in zip(ours, exact, strict=True))
    baseline_vs_float64 = max(float((a - b).abs().max()) for a, b in zip(reference, exact, strict=True))
    baseline_seconds = best_time(baseline, args.repeat)
    batched_seconds = best_time(batched, args.repeat)

    # The cache: build it once, then time reading it back and one epoch of batches from it.
    split = args.splits.split(",")[0]
    load_features(args.data, split, config)
    start = time.perf_counter()
    features = load_features(args.data, split, config)
    load_seconds = time.perf_counter() - start
    cmvn = features.cmvn()
    tokens = [[1] * 10 for _ in range(len(features))]
    collate = Collator(features, tokens, cmvn, AugmentConfig(spec_augment=False))

    def epoch() -> int:
        sampler = BucketBatchSampler(features.lengths.tolist(), args.batch_frames, 128, True, 0)
        return sum(collate(indices).features.numel() for indices in sampler)

    epoch_seconds = best_time(epoch, args.repeat)
    split_audio = sum(utt.duration for utt in features.utterances)
    figures = {
        "feature_extraction_speedup": figure(
            baseline_seconds / batched_seconds,
            3.0,
            "x vs per-utterance kaldi.fbank",
            asrbench_rtfx=audio_seconds / batched_seconds,
            baseline_rtfx=audio_seconds / baseline_seconds,
            max_abs_difference=max_difference,
            asrbench_vs_float64=ours_vs_float64,
            baseline_vs_float64=baseline_vs_float64,
        ),
        "cache_epoch_rtfx": figure(
            split_audio / (load_seconds + epoch_seconds),
            10000.0,
            "x real time",
            load_seconds=load_seconds,
            epoch_seconds=epoch_seconds,
            split=split,
        ),
    }
    record(
        "feature_speed",
        figures,
        {
            "utterances": len(utterances),
            "audio_seconds": audio_seconds,
            "threads": threads,
            "data": args.data,
            "mel_bins": args.mel_bins,
        },
    )


if __name__ == "__main__":
    main()
