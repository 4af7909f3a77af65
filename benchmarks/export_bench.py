"""Exported models against their PyTorch runs: parity on a test split, int8 accuracy, speed.

    python benchmarks/export_bench.py RUN [RUN ...] [--split test] [--repeat 3] [--skip-speed]
    python benchmarks/export_bench.py [--recipe asrbench/recipe/an4.yaml --model conformer]   # untrained: speed

For each run (a CTC model): ``asrbench export`` with ``--quantize int8`` into a scratch dir, then
on every utterance of the split (features from the run's store, batched as ``decode`` batches):

- parity: the largest absolute difference between the ONNX graph's and PyTorch's log-probabilities
  over all valid frames (target ≤ 1e-4), and the greedy hypotheses, which must be identical for
  every utterance;
- int8: the WER of the quantized graph against the full-precision one (target: within 0.5 points);
- speed: the network alone (features in, log-probs out), onnxruntime against PyTorch eager, at 1
  and 2 threads and batch 1 and 16 (utterances of the split, longest first, each side's best of
  ``--repeat``); the ratio is PyTorch's time / onnxruntime's (aim ≥ 1.5 at batch 1).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import figure, record, skipped  # noqa: E402

NOT_FIGURES = ("model", "exporter", "utterances", "untrained")  # what measure() reports besides figures


def _batches(features, cmvn, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Utterances longest first, ``size`` at a time, padded."""
    order = sorted(range(len(features)), key=lambda i: -int(features.lengths[i]))
    batches = []
    for start in range(0, len(order), size):
        pieces = [cmvn(features[i]) for i in order[start : start + size]]
        lengths = torch.tensor([p.size(0) for p in pieces])
        batches.append((torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True), lengths))
    return batches


def _time(run, batches, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for features, lengths in batches:
            run(features, lengths)
        best = min(best, time.perf_counter() - start)
    return best


def measure_speed(model, graph_path: Path, batches: dict[int, list], frame_shift_ms: float, repeat: int) -> dict:
    """The network alone, PyTorch eager against onnxruntime, at 1 and 2 threads, for each batch size
    (batch 1: 40 utterances across the lengths)."""
    from asrbench.deploy.onnx_runtime import ExportedCTC

    result = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        session = ExportedCTC(graph_path, threads=threads)
        for size, sized in batches.items():
            chosen = sized[:: max(1, len(sized) // 40)] if size == 1 else sized
            with torch.inference_mode():
                eager = _time(lambda f, n: model.ctc_log_probs(f, n), chosen, repeat)
            onnx = _time(session.ctc_log_probs, chosen, repeat)
            audio = sum(int(n.sum()) for _, n in chosen) * frame_shift_ms / 1000
            result[f"speed_threads{threads}_batch{size}"] = figure(
                eager / onnx,
                1.5 if size == 1 else 0.0,
                "PyTorch eager time / onnxruntime time",
                eager_rtfx=audio / eager,
                onnx_rtfx=audio / onnx,
            )
    return result


def measure_untrained(recipe: str, name: str, repeat: int) -> dict:
    """Speed only, without a trained run: the recipe's ``name`` freshly initialised, on random
    features of AN4 test's utterance lengths (130 utterances, 1-8 s)."""
    from asrbench.deploy.export import write_ctc_graph
    from asrbench.models import build_model
    from asrbench.recipe.config import resolve

    config = resolve(recipe, name)
    torch.manual_seed(0)
    model = build_model(name, config.model.options, config.features.dim(), 30).eval()
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(100, 800, (130,), generator=generator).sort(descending=True).values.tolist()
    batches = {}
    for size in (1, 16):
        batches[size] = []
        for start in range(0, len(lengths), size):
            chunk = torch.tensor(lengths[start : start + size])
            batches[size].append(
                (torch.randn(len(chunk), int(chunk.max()), config.features.dim(), generator=generator), chunk)
            )
    with tempfile.TemporaryDirectory() as scratch:
        _, _, exporter, difference = write_ctc_graph(model, config.features.dim(), Path(scratch) / "model.onnx")
        result = {
            "model": name,
            "exporter": exporter,
            "untrained": True,
            "parity_max_abs_log_prob": figure(
                difference, 1e-4, "largest |ONNX - PyTorch| log-prob, check batches", better="lower"
            ),
        }
        result.update(
            measure_speed(model, Path(scratch) / "model.onnx", batches, config.features.frame_shift_ms, repeat)
        )
    return result


def measure(run_dir: Path, split: str, repeat: int, speed: bool) -> dict:
    from asrbench.data.features import load_features
    from asrbench.decoding.greedy import ctc_greedy
    from asrbench.deploy.export import export_run
    from asrbench.deploy.onnx_runtime import ExportedCTC
    from asrbench.runs.checkpoint import load_model
    from asrbench.scoring.metrics import error_rates

    loaded = load_model(run_dir / "checkpoints" / "best.pt")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    features = load_features(loaded.config.data.dir, split, loaded.config.features)
    references = [utt.text for utt in features.utterances]
    with tempfile.TemporaryDirectory() as scratch:
        manifest = export_run(run_dir, scratch, quantize="int8")
        graphs = {name: ExportedCTC(Path(scratch) / name, threads=2) for name in ("model.onnx", "model.int8.onnx")}
        hypotheses = {
            "pytorch": [""] * len(features),
            "model.onnx": [""] * len(features),
            "model.int8.onnx": [""] * len(features),
        }
        largest = 0.0
        order = sorted(range(len(features)), key=lambda i: -int(features.lengths[i]))
        for start in range(0, len(order), 16):
            indices = order[start : start + 16]
            pieces = [loaded.cmvn(features[i]) for i in indices]
            lengths = torch.tensor([p.size(0) for p in pieces])
            padded = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
            with torch.inference_mode():
                expected, expected_lengths = model.ctc_log_probs(padded, lengths)
            outputs = {"pytorch": (expected, expected_lengths)}
            for name, graph in graphs.items():
                outputs[name] = graph.ctc_log_probs(padded, lengths)
            valid = torch.arange(expected.size(1))[None] < expected_lengths[:, None]
            largest = max(largest, float((outputs["model.onnx"][0] - expected).abs()[valid].max()))
            for name, (log_probs, out_lengths) in outputs.items():
                for index, ids in zip(indices, ctc_greedy(log_probs, out_lengths), strict=True):
                    hypotheses[name][index] = tokenizer.decode(ids)
        rates = {name: error_rates(references, hyps).to_dict() for name, hyps in hypotheses.items()}
        identical = sum(a == b for a, b in zip(hypotheses["model.onnx"], hypotheses["pytorch"], strict=True))
        result = {
            "model": loaded.config.model.name,
            "exporter": manifest["exporter"],
            "utterances": len(features),
            "parity_max_abs_log_prob": figure(
                largest, 1e-4, "largest |ONNX - PyTorch| log-prob, all frames", better="lower"
            ),
            "identical_hypotheses": figure(
                identical / len(features), 1.0, "fraction of utterances", identical=identical
            ),
            "int8_wer_delta": figure(
                rates["model.int8.onnx"]["wer"] - rates["model.onnx"]["wer"],
                0.5,
                "WER points, int8 - float32",
                better="lower",
                wer_pytorch=rates["pytorch"]["wer"],
                wer_onnx=rates["model.onnx"]["wer"],
                wer_int8=rates["model.int8.onnx"]["wer"],
            ),
        }
        if speed:
            batches = {size: _batches(features, loaded.cmvn, size) for size in (1, 16)}
            result.update(
                measure_speed(
                    model, Path(scratch) / "model.onnx", batches, loaded.config.features.frame_shift_ms, repeat
                )
            )
    return result


def flat_figures(results: dict[str, dict]) -> dict:
    """The suite's flat figures from :func:`measure` / :func:`measure_untrained` results by run
    (``untrained`` for the untrained model). One result keeps the figure names; several prefix each
    with its run's folder name. Each figure names its run, model and exporter. Without a trained run
    the figures only a trained run gives are skipped figures that say so, not missing ones."""
    figures = {}
    for run, result in results.items():
        about = {"run": run, "model": result.get("model"), "exporter": result.get("exporter")}
        if "utterances" in result:
            about["utterances"] = result["utterances"]
        measured = {key: value for key, value in result.items() if key not in NOT_FIGURES}
        if run == "untrained":
            reason = (
                "no trained CTC run given (run_all passes runs/final/an4/conformer when it exists): parity "
                "and speed measured on an untrained model"
            )
            measured.setdefault("identical_hypotheses", skipped(1.0, "fraction of utterances", reason))
            measured.setdefault("int8_wer_delta", skipped(0.5, "WER points, int8 - float32", reason, better="lower"))
        prefix = f"{Path(run).name}_" if len(results) > 1 else ""
        for key, value in measured.items():
            figures[prefix + key] = {**value, **about}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="*", help="trained CTC run dirs (none: an untrained model, speed)")
    parser.add_argument("--recipe", default="asrbench/recipe/an4.yaml", help="without runs: the recipe of the model")
    parser.add_argument("--model", default="conformer", help="without runs: the model to time")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    results = {}
    if not args.runs:
        results["untrained"] = measure_untrained(args.recipe, args.model, args.repeat)
    for run in args.runs:
        results[str(run)] = measure(run, args.split, args.repeat, not args.skip_speed)
    figures = flat_figures(results)
    for name, value in figures.items():
        shown = f"skipped: {value['skipped_reason']}" if value["value"] is None else f"{value['value']:.6g}"
        print(f"{name} ({value['run']}, {value['model']}): {shown}")
    record("export_bench", figures)


if __name__ == "__main__":
    main()
