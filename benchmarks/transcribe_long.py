"""Transcribing a long recording: one file made of a split's utterances end to end, split at pauses
by the VAD, against decoding the utterances one by one.

    python benchmarks/transcribe_long.py RUN [--split test] [--vads energy,silero,none]
                                         [--margins 12] [--pads 0.2] [--min-silences 0.3]
                                         [--max-segments 20] [--threads 1]

Writes ``<split>`` of the run's data dir, every utterance in manifest order, as one 16 kHz WAV
(under ``runs/``, removed afterwards), transcribes it with ``asrbench transcribe`` for each VAD
(``energy`` at each ``--margins`` dB), and scores the whole transcript against the references
joined in the same order (WER over the concatenation: word alignment across utterance borders
is free to shift, as it is for a user's long file). The baseline is the same run transcribing
every utterance file on its own, which gives ``asrbench decode``'s hypotheses. Choose the VAD's
settings with ``--split dev``; report ``--split test``.

Target (issue 19): the long file within 2 WER points of the per-utterance decode.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import figure, record, skipped  # noqa: E402


def concatenate(utterances, sample_rate: int, out: Path) -> float:
    """The utterances' audio end to end in one WAV, written block by block; returns its seconds."""
    from asrbench.data.audio import load_audio

    total = 0
    with soundfile.SoundFile(out, "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as handle:
        for utt in utterances:
            waveform = load_audio(utt.audio, sample_rate, utt.offset, utt.duration if utt.offset else None)
            handle.write(np.clip(waveform.numpy(), -1.0, 1.0))
            total += waveform.numel()
    return total / sample_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--vads", default="energy,silero,none")
    parser.add_argument("--margins", default="12", help="energy VAD margins over the noise floor, dB")
    parser.add_argument("--pads", default="0.2", help="seconds kept on each side of a speech region")
    parser.add_argument("--min-silences", default="0.3", help="seconds: shorter pauses do not split")
    parser.add_argument(
        "--max-segments", default="20", help="seconds: longer speech regions are cut at their longest pause"
    )
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from asrbench.data.manifest import read_manifest, split_path
    from asrbench.decoding.searchers import DecodeOptions
    from asrbench.deploy.transcribe import Transcriber
    from asrbench.deploy.vad import VadOptions
    from asrbench.scoring.metrics import error_rates

    torch.set_num_threads(args.threads)
    transcriber = Transcriber(args.run, DecodeOptions(), "cpu", vad=VadOptions(kind="none"), threads=args.threads)
    utterances = read_manifest(split_path(Path(transcriber.data_dir), args.split))
    references = [utt.text for utt in utterances]
    joined = " ".join(references)
    figures: dict = {}
    with tempfile.TemporaryDirectory(dir=ROOT / "runs" if (ROOT / "runs").is_dir() else None) as scratch:
        long_file = Path(scratch) / f"{args.split}-concatenated.wav"
        seconds = concatenate(utterances, transcriber.sample_rate, long_file)
        start = time.perf_counter()
        one_by_one = [t.text for t in transcriber.transcribe([Path(utt.audio) for utt in utterances])]
        baseline_seconds = time.perf_counter() - start
        baseline = error_rates(references, one_by_one).to_dict()
        baseline_long = error_rates([joined], [" ".join(one_by_one)]).to_dict()
        figures["per_utterance_wer"] = figure(
            baseline["wer"],
            100.0,
            "% WER, every utterance on its own",
            better="lower",
            concatenated_wer=baseline_long["wer"],
            seconds=baseline_seconds,
            utterances=len(utterances),
        )
        settings = []
        floats = lambda text: [float(value) for value in text.split(",")]  # noqa: E731
        for vad in args.vads.split(","):
            margins = floats(args.margins) if vad == "energy" else [None]
            pads, silences = (floats(args.pads), floats(args.min_silences)) if vad != "none" else ([0.2], [0.3])
            settings += [
                (vad, margin, pad, silence, longest)
                for margin in margins
                for pad in pads
                for silence in silences
                for longest in floats(args.max_segments)
            ]
        for vad, margin, pad, silence, longest in settings:
            options = VadOptions(
                kind=vad,
                max_segment=longest,
                pad=pad,
                min_silence=silence,
                **({"energy_margin_db": margin} if margin is not None else {}),
            )
            try:
                transcriber.vad = options
                start = time.perf_counter()
                transcript = next(iter(transcriber.transcribe([long_file])))
                elapsed = time.perf_counter() - start
            except Exception as err:  # a missing optional VAD: recorded, the others still measured
                figures[f"long_{vad}"] = skipped(
                    2.0,
                    "WER points above the utterances decoded one by one",
                    f"the {vad} VAD could not run: {err}",
                    better="lower",
                )
                continue
            rates = error_rates([joined], [transcript.text]).to_dict()
            name = (
                f"long_{vad}"
                + (f"_{margin:g}db" if margin is not None else "")
                + (f"_pad{pad:g}_silence{silence:g}" if vad != "none" else "")
                + (f"_max{longest:g}" if longest != 20 else "")
            )
            figures[name] = figure(
                rates["wer"] - baseline_long["wer"],
                2.0,
                "WER points above the utterances decoded one by one (both scored as one text)",
                better="lower",
                wer=rates["wer"],
                cer=rates["cer"],
                segments=len(transcript.segments),
                seconds=elapsed,
                rtfx=seconds / elapsed,
                vad=options.to_dict(),
                audio_seconds=seconds,
            )
    setup = {
        "run": str(args.run),
        "split": args.split,
        "model": transcriber.model_name,
        "decoder": transcriber.searcher.description,
        "audio_seconds": seconds,
        "threads": args.threads,
    }
    record("transcribe_long", figures, {"setup": setup})
    for name, value in figures.items():
        if value["value"] is None:
            print(f"{name}: skipped ({value['skipped_reason']})")
        else:
            print(
                f"{name}: {value['value']:.2f} (WER {value.get('wer', value['value']):.2f}, "
                f"{value.get('segments', '-')} segments)"
            )


if __name__ == "__main__":
    main()
