"""Streaming: WER at each chunk size next to full context, and the latencies, at 1 thread.

    python benchmarks/streaming_latency.py RUN [--split test] [--chunks 160,320,640] [--threads 1]
                                           [--baseline RUN] [--checkpoint best]

RUN is a model trained with ``streaming: true``. For the split it runs ``asrbench decode`` at full
context, then ``asrbench decode --chunk-ms C`` for each chunk size: the chunked masked pass gives
the WER, and every utterance is also streamed from its audio through the streaming front end and
search (:func:`asrbench.decoding.streaming.measure`), replayed in real time with its measured per-chunk
compute, for the latency figures (algorithmic latency; per-chunk compute and RTF; first-token and
final-result latency after the end of speech, p50 and p90). ``--baseline`` adds a non-streaming run
of the same recipe decoded at full context.

Targets (issue 19, AN4 test, chosen on dev): at 320 ms, WER within 2.5 points of full context and
the final-result latency's p90 <= chunk + 100 ms at 1 thread. The decode dirs are the run's
(``decode/<split>``, ``decode/<split>-chunk<C>``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import figure, record  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--chunks", default="160,320,640", help="chunk sizes, ms (multiples of 40)")
    parser.add_argument("--left-chunks", type=int, default=-1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--baseline", type=Path, default=None, help="a non-streaming run of the same recipe")
    parser.add_argument(
        "--checkpoint", default="best", help="best, last, or a checkpoint file in the run dir (the one chosen on dev)"
    )
    args = parser.parse_args()

    from asrbench.decoding.decode import decode

    full = decode(args.run, args.split, device="cpu", threads=args.threads, checkpoint=args.checkpoint).to_dict()
    figures: dict = {
        "full_context_wer": figure(
            full["wer"], 100.0, "% WER at full context", better="lower", wer_ci=full.get("wer_ci"), cer=full["cer"]
        )
    }
    if args.baseline is not None:
        baseline = decode(args.baseline, args.split, device="cpu", threads=args.threads).to_dict()
        figures["non_streaming_wer"] = figure(
            baseline["wer"],
            100.0,
            "% WER of the non-streaming baseline",
            better="lower",
            wer_ci=baseline.get("wer_ci"),
            run=str(args.baseline),
        )
    lines = [
        f"{'chunk':>6} {'WER':>6} {'vs full':>7} {'algo ms':>7} {'chunk ms p50/p90':>16} {'RTF':>6} "
        f"{'first p50/p90':>14} {'final p50/p90':>14} {'streamed=chunked':>16}"
    ]
    for chunk_ms in [float(value) for value in args.chunks.split(",")]:
        result = decode(
            args.run,
            args.split,
            device="cpu",
            threads=args.threads,
            chunk_ms=chunk_ms,
            left_chunks=args.left_chunks,
            checkpoint=args.checkpoint,
        ).to_dict()
        latency = result["streaming"]
        name = f"chunk{chunk_ms:g}"
        figures[f"{name}_wer_vs_full"] = figure(
            result["wer"] - full["wer"],
            2.5,
            "WER points above full context",
            better="lower",
            wer=result["wer"],
            wer_ci=result.get("wer_ci"),
            cer=result["cer"],
        )
        figures[f"{name}_final_latency_p90"] = figure(
            latency["final_latency_ms_p90"],
            chunk_ms + 100.0,
            "ms, p90 of final-result latency after the end of speech",
            better="lower",
            **latency,
        )
        lines.append(
            f"{chunk_ms:6g} {result['wer']:6.2f} {result['wer'] - full['wer']:+7.2f} "
            f"{latency['algorithmic_latency_ms']:7g} "
            f"{latency['chunk_compute_ms_p50']:7.1f}/{latency['chunk_compute_ms_p90']:<8.1f} "
            f"{latency['rtf']:6.3f} {latency['first_token_latency_ms_p50']:6.0f}/"
            f"{latency['first_token_latency_ms_p90']:<7.0f} {latency['final_latency_ms_p50']:6.0f}/"
            f"{latency['final_latency_ms_p90']:<7.0f} "
            f"{latency['streamed_equals_chunked_pass']:>8}/{latency['utterances']}"
        )
    setup = {
        "run": str(args.run),
        "split": args.split,
        "threads": args.threads,
        "checkpoint": args.checkpoint,
        "left_chunks": args.left_chunks,
        "model": full["model"],
        "config_hash": full["config_hash"],
    }
    record("streaming_latency", figures, {"setup": setup})
    print(f"full context: WER {full['wer']:.2f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
