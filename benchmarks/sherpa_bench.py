"""sherpa-onnx against asrbench on the same export: transcripts, WER and speed, side by side.

    python benchmarks/sherpa_bench.py RUN [RUN ...] [--split test] [--threads 1] [--beam 4] [--limit N]
    python benchmarks/sherpa_bench.py STREAMING_RUN --chunk-ms 320 --left-chunks 4

For each run (trained with ``features.preset: sherpa``; a CTC model or a transducer with the
stateless predictor): ``asrbench export --format sherpa-onnx`` into a scratch dir, then every
utterance of the split (its audio files, one at a time, after one warm-up file) through

- the unmodified sherpa-onnx package (``OfflineRecognizer``): greedy search, and for transducers
  modified beam search with ``--beam`` active paths;
- ``asrbench transcribe`` on the same export (onnxruntime, the NumPy front end, asrbench's
  searches; it also aligns each file for word times, which sherpa-onnx does not): greedy and beam;
- ``asrbench transcribe`` on the run dir (PyTorch eager): greedy.

Figures: the share of utterances whose greedy transcripts are identical (target 129/130), the
beam-search WER gap between sherpa-onnx and asrbench (target ≤ 0.3 points), and asrbench's ONNX time
over sherpa-onnx's (target ≤ 1.5). RTFx = audio seconds / wall seconds, reading the files included,
at ``--threads`` threads for every engine. Without a run it records nothing but why.

With ``--chunk-ms`` (a conformer transducer trained with ``streaming: true``): the online export
(``--chunk-ms``, ``--left-chunks``) through sherpa-onnx's OnlineRecognizer, each file followed by
0.3 s of silence, against ``asrbench decode --chunk-ms --left-chunks``'s masked pass on the run
with sherpa-onnx's search (greedy, one token an encoder frame); the figure is the WER gap (target
<= 0.5 points). Both WERs through asrbench's default normalizer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import figure, record, skipped  # noqa: E402


def _sherpa_recognizer(export: Path, threads: int, beam: int):
    import sherpa_onnx

    manifest = json.loads((export / "manifest.json").read_text())
    frontend = json.loads((export / "frontend.json").read_text())
    graphs = manifest["graphs"]
    common = {
        "tokens": str(export / "tokens.txt"),
        "num_threads": threads,
        "sample_rate": frontend["sample_rate"],
        "feature_dim": frontend["num_mel_bins"],
    }
    if manifest["search"] == "ctc":
        return sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(model=str(export / graphs["model"]), **common)
    return sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(export / graphs["encoder"]),
        decoder=str(export / graphs["predictor"]),
        joiner=str(export / graphs["joiner"]),
        decoding_method="greedy_search" if beam == 1 else "modified_beam_search",
        max_active_paths=max(beam, 1),
        **common,
    )


def sherpa_texts(export: Path, audio: list[Path], threads: int, beam: int) -> tuple[list[str], float]:
    """sherpa-onnx's transcripts of ``audio`` (one stream each) and the wall seconds they took."""
    import soundfile

    recognizer = _sherpa_recognizer(export, threads, beam)

    def one(path: Path) -> str:
        samples, rate = soundfile.read(str(path), dtype="float32")
        stream = recognizer.create_stream()
        stream.accept_waveform(rate, samples)
        recognizer.decode_stream(stream)
        return stream.result.text.strip()

    one(audio[0])  # warm-up
    start = time.perf_counter()
    texts = [one(path) for path in audio]
    return texts, time.perf_counter() - start


def sherpa_online_texts(export: Path, audio: list[Path], threads: int, tail_seconds: float = 0.3) -> list[str]:
    """sherpa-onnx's OnlineRecognizer (greedy) on an online export: each file fed whole, then
    ``tail_seconds`` of silence (sherpa-onnx decodes whole chunks only, as its own examples pad)."""
    import numpy as np
    import sherpa_onnx
    import soundfile

    frontend = json.loads((export / "frontend.json").read_text())
    recognizer = sherpa_onnx.OnlineRecognizer.from_transducer(
        tokens=str(export / "tokens.txt"),
        encoder=str(export / "encoder.onnx"),
        decoder=str(export / "decoder.onnx"),
        joiner=str(export / "joiner.onnx"),
        num_threads=threads,
        sample_rate=frontend["sample_rate"],
        feature_dim=frontend["num_mel_bins"],
        decoding_method="greedy_search",
    )
    texts = []
    for path in audio:
        samples, rate = soundfile.read(str(path), dtype="float32")
        stream = recognizer.create_stream()
        stream.accept_waveform(rate, samples)
        stream.accept_waveform(rate, np.zeros(int(tail_seconds * rate), dtype=np.float32))
        stream.input_finished()
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
        texts.append(recognizer.get_result(stream).strip())
    return texts


def asrbench_texts(model_dir: Path, audio: list[Path], threads: int, beam: int) -> tuple[list[str], float]:
    """``asrbench transcribe``'s transcripts (a run dir: PyTorch eager; an export: onnxruntime)."""
    from asrbench.decoding.searchers import DecodeOptions
    from asrbench.deploy.transcribe import Transcriber

    # as `asrbench transcribe -f text` builds it: no word times (text prints none), one call for all files
    transcriber = Transcriber(model_dir, DecodeOptions(beam=beam), device="cpu", threads=threads, word_times=False)
    list(transcriber.transcribe(audio[:1]))  # warm-up
    start = time.perf_counter()
    texts = [transcript.text for transcript in transcriber.transcribe(audio)]
    return texts, time.perf_counter() - start


def _split_of(run: Path, split: str, limit: int):
    """(the run's best checkpoint, loaded; the first ``limit`` utterances of ``split``, all for 0)."""
    from asrbench.data.manifest import read_manifest, split_path
    from asrbench.runs.checkpoint import load_model
    from asrbench.runs.rundir import checkpoint_path

    loaded = load_model(checkpoint_path(run, "best"))
    return loaded, read_manifest(split_path(loaded.config.data.dir, split))[: limit or None]


def _wer(references: list[str], hypotheses: list[str]) -> float:
    """WER % as asrbench scores a decode: both sides through the default normalizer."""
    from asrbench.scoring.metrics import error_rates
    from asrbench.text import normalize

    return error_rates([normalize(text) for text in references], [normalize(text) for text in hypotheses]).wer


def measure_online(
    run: Path, split: str, threads: int, chunk_ms: float, left_chunks: int, limit: int, export: Path | None = None
) -> dict:
    """A streaming conformer transducer: sherpa-onnx's OnlineRecognizer on the online export (made
    here, or ``export``, made with the same chunk) against ``asrbench decode --chunk-ms
    --left-chunks`` (the masked pass) on the run, the same chunk."""
    from asrbench.deploy.export import export_run

    loaded, utterances = _split_of(run, split, limit)
    audio = [Path(utterance.audio) for utterance in utterances]
    references = [utterance.text for utterance in utterances]
    seconds = sum(utterance.duration for utterance in utterances)
    with tempfile.TemporaryDirectory() as scratch:
        if export is None:
            export = Path(scratch) / "online"
            export_run(run, export, fmt="sherpa-onnx", chunk_ms=chunk_ms, left_chunks=left_chunks)
        start = time.perf_counter()
        online = sherpa_online_texts(export, audio, threads)
        wall = time.perf_counter() - start
    chunked = chunked_pass(run, split, chunk_ms, left_chunks, [utterance.id for utterance in utterances], loaded)
    same = sum(
        normalize_text(text) == normalize_text(hypothesis) for text, hypothesis in zip(online, chunked, strict=True)
    )
    sherpa_wer, chunked_wer = _wer(references, online), _wer(references, chunked)
    details = {
        "sherpa_online_greedy": {"wer": sherpa_wer, "rtfx": seconds / wall, "seconds": wall},
        "asrbench_chunked_pass": {"wer": chunked_wer, "max_symbols_per_frame": 1},
    }
    figure_ = figure(
        abs(sherpa_wer - chunked_wer),
        0.5,
        f"WER points, sherpa-onnx online vs decode --chunk-ms {chunk_ms:g} --left-chunks {left_chunks}",
        better="lower",
        identical=same,
        utterances=len(audio),
    )
    return {
        "measured": {"streaming_wer_gap": figure_},
        "engines": details,
        "model": loaded.config.model.name,
        "texts": online,  # sherpa-onnx's, in the split's order
    }


def chunked_pass(run: Path, split: str, chunk_ms: float, left_chunks: int, ids: list[str], loaded=None) -> list[str]:
    """``asrbench decode RUN --chunk-ms --left-chunks``'s greedy transcripts of ``ids`` (the masked
    pass over the stored features), with sherpa-onnx's search: one token an encoder frame at most
    (decode itself keeps the model's own limit). ``loaded``: the run's best checkpoint, when already loaded."""
    import torch

    from asrbench.data.features import load_features
    from asrbench.decoding import streaming
    from asrbench.decoding.decode import recognize
    from asrbench.decoding.search_table import build_searcher
    from asrbench.decoding.searchers import DecodeOptions
    from asrbench.runs import rundir

    if loaded is None:
        loaded, _ = _split_of(run, split, 1)
    model = loaded.model.eval()
    model.max_symbols_per_frame = 1
    chunk = streaming.chunk_frames(model, chunk_ms, loaded.config.features.frame_shift_ms)
    streaming.require_streaming(model, loaded.config.model.name).set_chunk(chunk, left_chunks)  # as decode does
    features = load_features(rundir.data_dir(run, loaded.config), split, loaded.config.features)
    searcher = build_searcher(model, loaded.tokenizer, DecodeOptions(), loaded.config.data.dir)
    device, frames = torch.device("cpu"), loaded.config.train.eval_batch_frames
    recognition = recognize(model, features, loaded.cmvn, loaded.tokenizer, device, frames, searcher=searcher)
    by_id = dict(zip([utterance.id for utterance in features.utterances], recognition.hypotheses, strict=True))
    return [by_id[utterance_id] for utterance_id in ids]


def normalize_text(text: str) -> str:
    from asrbench.text import normalize

    return normalize(text)


def measure(run: Path, split: str, threads: int, beam: int, limit: int) -> dict:
    from asrbench.deploy.export import export_run

    loaded, utterances = _split_of(run, split, limit)
    audio = [Path(utterance.audio) for utterance in utterances]
    references = [utterance.text for utterance in utterances]
    seconds = sum(utterance.duration for utterance in utterances)
    with tempfile.TemporaryDirectory() as scratch:
        export = Path(scratch) / "sherpa"
        manifest = export_run(run, export, fmt="sherpa-onnx")
        transducer = manifest["search"] == "transducer"
        engines = {
            "sherpa_greedy": sherpa_texts(export, audio, threads, 1),
            "asrbench_onnx_greedy": asrbench_texts(export, audio, threads, 1),
            "pytorch_greedy": asrbench_texts(run, audio, threads, 1),
        }
        if transducer:
            engines["sherpa_beam"] = sherpa_texts(export, audio, threads, beam)
            engines["asrbench_onnx_beam"] = asrbench_texts(export, audio, threads, beam)
    pairs = list(zip(engines["sherpa_greedy"][0], engines["asrbench_onnx_greedy"][0], strict=True))
    # sherpa-onnx writes two spaces where a CTC model emits the word boundary twice, asrbench's
    # tokenizer one: transcripts are compared with runs of whitespace collapsed (exactly, too)
    same = sum(" ".join(a.split()) == " ".join(b.split()) for a, b in pairs)
    exact = sum(a == b for a, b in pairs)
    details = {
        name: {"wer": _wer(references, texts), "rtfx": seconds / wall, "seconds": wall}
        for name, (texts, wall) in engines.items()
    }
    figures = {
        "greedy_identical": figure(
            same / len(audio),
            129 / 130,
            "share of utterances",
            identical=same,
            identical_with_whitespace=exact,
            utterances=len(audio),
        ),
        "onnx_time_over_sherpa": figure(
            engines["asrbench_onnx_greedy"][1] / engines["sherpa_greedy"][1],
            1.5,
            "asrbench transcribe (export) wall / sherpa-onnx wall, greedy",
            better="lower",
        ),
    }
    if transducer:
        gap = abs(details["sherpa_beam"]["wer"] - details["asrbench_onnx_beam"]["wer"])
        figures["beam_wer_gap"] = figure(gap, 0.3, f"WER points, modified beam search {beam}", better="lower")
    else:
        figures["beam_wer_gap"] = skipped(0.3, "WER points", "a CTC model: sherpa-onnx decodes it greedily", "lower")
    return {"measured": figures, "engines": details, "model": manifest["model"], "search": manifest["search"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--limit", type=int, default=0, help="Only the first N utterances (0: all).")
    parser.add_argument(
        "--chunk-ms", type=float, default=0.0, help="Streaming runs: the online export's chunk (and decode's)."
    )
    parser.add_argument("--left-chunks", type=int, default=4, help="With --chunk-ms: chunks of left context.")
    args = parser.parse_args()
    if not args.runs:
        reason = "no run trained with features.preset sherpa given (see docs/benchmarks.md)"
        record(
            "sherpa_bench",
            {
                "greedy_identical": skipped(129 / 130, "share of utterances", reason),
                "onnx_time_over_sherpa": skipped(1.5, "asrbench / sherpa-onnx wall", reason, "lower"),
                "beam_wer_gap": skipped(0.3, "WER points", reason, "lower"),
            },
        )
        return
    # One result line for all the runs (make bench reads a script's last line): figures named by model.
    figures, engines = {}, {}
    for run in args.runs:
        if args.chunk_ms:
            result = measure_online(run, args.split, args.threads, args.chunk_ms, args.left_chunks, args.limit)
        else:
            result = measure(run, args.split, args.threads, args.beam, args.limit)
        prefix = result["model"] if result["model"] not in engines else run.name  # two runs of one model
        figures.update({f"{prefix}_{name}": value for name, value in result["measured"].items()})
        engines[prefix] = {"run": str(run), **result["engines"]}
    extra = {"runs": [str(run) for run in args.runs], "split": args.split, "threads": args.threads, "beam": args.beam}
    if args.chunk_ms:
        extra.update(chunk_ms=args.chunk_ms, left_chunks=args.left_chunks)
    record("sherpa_bench", figures, {**extra, "engines": engines})


if __name__ == "__main__":
    main()
