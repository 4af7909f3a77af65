"""``asrbench export RUN --out DIR``: a self-contained directory that transcribes on onnxruntime.

What the directory holds (``manifest.json`` lists every file with its SHA-256):

- ``model.onnx``: the network, features ``(B, T, F)`` float32 and ``lengths (B,)`` int64 in,
  CTC log-probabilities ``(B, T', V)`` and ``output_lengths (B,)`` out, with the batch and time
  dimensions dynamic (``torch.onnx.export``: the dynamo exporter, or the TorchScript-based one for
  the recurrent models it cannot export). ``model.int8.onnx`` with
  ``--quantize int8``: onnxruntime's dynamic int8 quantization of the weights.
- ``mel_banks.npy`` and ``frontend.json``: the filterbank front end, computed by
  :mod:`asrbench.frontend` in NumPy from the same mel banks as training used;
- ``cmvn.json``, ``tokenizer.json``: the normalization statistics and the tokenizer (a
  sentencepiece model inside, as in the checkpoint);
- ``manifest.json``: format tag, source run and checkpoint, model name, config hash, the decoder
  options the run was scored with, versions (asrbench, torch, onnx, onnxruntime, opset), and the
  largest difference between the exported graph's and PyTorch's log-probabilities on a check
  batch, measured at export.

CTC models export whole. Attention and transducer models need their decoder or joiner as separate
graphs with the search in Python; that is not built yet, and exporting one is a clear error.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asrbench import __version__, fileio, rundir
from asrbench.checkpoint import load_model
from asrbench.data.fbank import FeatureExtractor
from asrbench.env import git_commit
from asrbench.errors import AsrbenchError
from asrbench.exported import EXPORT_FORMAT, MANIFEST

FORMATS = ("onnx",)
QUANTIZATIONS = ("", "int8")
OPSET = 18  # the dynamo exporter's
LEGACY_OPSET = 17  # the TorchScript-based exporter's
EXPORTERS = ("dynamo", "torchscript")


class _CTCGraph(nn.Module):
    """What the graph computes: a CTC model's (log_probs, output_lengths)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        return self.model.ctc_log_probs(features, lengths)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's dynamo exporter writes through it)
    except ImportError:
        raise AsrbenchError("export needs onnx, onnxscript and onnxruntime: pip install 'asrbench[onnx]'") from None
    return onnxruntime


def _max_difference(graph: nn.Module, session, features: torch.Tensor, lengths: torch.Tensor) -> float:
    with torch.inference_mode():
        expected, expected_lengths = graph(features, lengths)
    got, got_lengths = session.run(None, {"features": features.numpy(), "lengths": lengths.numpy()})
    if not np.array_equal(got_lengths, expected_lengths.numpy()):
        raise AsrbenchError(f"the exported graph's output lengths {got_lengths.tolist()} differ from PyTorch's "
                            f"{expected_lengths.tolist()}")
    valid = np.arange(got.shape[1])[None] < got_lengths[:, None]
    return float(np.abs(got - expected.numpy())[valid].max())


PARITY = 1e-4  # largest log-prob difference from PyTorch an exported graph may show on the check batches


def _check_batches(dim: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The traced batch and others of other sizes and lengths (a graph that baked in a shape fails)."""
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(len(lengths), max(lengths), dim, generator=generator), torch.tensor(lengths))
            for lengths in ([317, 201], [90], [123, 57, 31])]


def _export(graph: nn.Module, example: tuple, path: Path, exporter: str) -> None:
    names = {"input_names": ["features", "lengths"], "output_names": ["log_probs", "output_lengths"]}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracing notes
        if exporter == "dynamo":
            batch, time = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("time", min=16, max=200_000)
            program = torch.onnx.export(graph, example, dynamo=True, opset_version=OPSET, verbose=False,
                                        dynamic_shapes={"features": {0: batch, 1: time}, "lengths": {0: batch}},
                                        **names)
            with fileio.atomic_open(path, "wb") as handle:
                handle.write(program.model_proto.SerializeToString())
        else:
            with fileio.atomic_open(path, "wb") as handle:
                torch.onnx.export(graph, example, handle, dynamo=False, opset_version=LEGACY_OPSET, **names,
                                  dynamic_axes={"features": {0: "batch", 1: "time"}, "lengths": {0: "batch"},
                                                "log_probs": {0: "batch", 1: "frames"}, "output_lengths": {0: "batch"}})


def write_ctc_graph(model: nn.Module, dim: int, path: Path):
    """A CTC model's ``ctc_log_probs`` as an ONNX graph at ``path`` (batch and time dynamic).

    torch's dynamo exporter first; where it fails or its graph differs from PyTorch on the check
    batches (it cannot decompose ``aten.gru``, and its LSTM graph breaks on other lengths), the
    TorchScript-based exporter, which has ONNX's own GRU and LSTM ops. Returns the wrapped module,
    an onnxruntime session on the file, the exporter used and the largest difference measured.
    """
    onnxruntime = _require_onnx()
    graph = _CTCGraph(model.eval()).eval()
    batches = _check_batches(dim)
    failures = []
    # Recurrent layers go straight to the exporter that has ONNX's GRU and LSTM ops (dynamo would
    # trace the whole model before failing on them); the other remains the fallback.
    recurrent = any(isinstance(module, nn.RNNBase) for module in model.modules())
    for exporter in (EXPORTERS[::-1] if recurrent else EXPORTERS):
        try:
            _export(graph, batches[0], path, exporter)
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            difference = max(_max_difference(graph, session, *batch) for batch in batches)
        except Exception as err:  # noqa: BLE001 - any exporter failure: try the next, report all
            failures.append(f"{exporter}: {str(err).strip().splitlines()[0][:200]}")
            continue
        if difference <= PARITY:
            return graph, session, exporter, difference
        failures.append(f"{exporter}: log-probs differ from PyTorch by {difference:.1e}")
    path.unlink(missing_ok=True)
    raise AsrbenchError(f"{type(model).__name__}: no ONNX export equals PyTorch ({'; '.join(failures)})")


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "onnx", quantize: str = "",
               checkpoint: str = "best") -> dict:
    """Export ``run_dir``'s model to ``out``; returns the manifest written there."""
    if fmt not in FORMATS:
        raise AsrbenchError(f"unknown --format '{fmt}' (valid: {', '.join(FORMATS)}; TorchScript is not supported: "
                            "torch.jit is deprecated in the torch this runs on)")
    if quantize not in QUANTIZATIONS:
        raise AsrbenchError(f"unknown --quantize '{quantize}' (valid: int8)")
    run_dir = rundir.require_run_dir(run_dir)
    onnxruntime = _require_onnx()
    loaded = load_model(run_dir / {"best": rundir.BEST, "last": rundir.LAST}.get(checkpoint, Path(checkpoint)))
    config, model = loaded.config, loaded.model.eval()
    if model.search_modes()[0] != "ctc":
        raise AsrbenchError(f"{config.model.name}: only CTC models export yet (attention and transducer models "
                            "need their decoder or joiner as separate graphs, not built yet)")
    if config.features.kind != "fbank":
        raise AsrbenchError(f"{config.model.name}: the exported front end computes fbank features; this run uses "
                            f"{config.features.kind}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # written last: a half-written export has none
    model_path = out / "model.onnx"
    graph, session, exporter, largest = write_ctc_graph(model, config.features.dim(), model_path)
    files = ["model.onnx"]
    difference = {"model.onnx": largest}
    graph_file = "model.onnx"
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic  # only for --quantize int8

        quantized = out / "model.int8.onnx"
        logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, printed on every call
        quantize_dynamic(str(model_path), str(quantized), weight_type=QuantType.QInt8)
        session = onnxruntime.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
        difference["model.int8.onnx"] = max(_max_difference(graph, session, *batch)
                                            for batch in _check_batches(config.features.dim()))
        files.append("model.int8.onnx")
        graph_file = "model.int8.onnx"
    extractor = FeatureExtractor(config.features)
    with fileio.atomic_open(out / "mel_banks.npy", "wb") as handle:
        np.save(handle, extractor.banks.to_dense().numpy().astype(np.float32))
    fileio.write_json(out / "frontend.json", {
        "kind": "fbank", "sample_rate": config.features.sample_rate, "num_mel_bins": config.features.num_mel_bins,
        "frame_length_ms": config.features.frame_length_ms, "frame_shift_ms": config.features.frame_shift_ms,
        "dtype": config.features.dtype})
    fileio.write_json(out / "cmvn.json", {"mean": loaded.cmvn.mean.tolist(), "std": loaded.cmvn.std.tolist()})
    fileio.write_json(out / "tokenizer.json", loaded.tokenizer.to_dict())
    files += ["mel_banks.npy", "frontend.json", "cmvn.json", "tokenizer.json"]
    import onnx  # its version for the manifest (_require_onnx checked it is there)

    manifest = {
        "format": EXPORT_FORMAT,
        "graph": graph_file,
        "family": "ctc",
        "model": config.model.name,
        "source_run": str(run_dir),
        "checkpoint": checkpoint,
        "config_hash": config.hash(),
        "data_dir": config.data.dir,
        "units": loaded.tokenizer.kind,
        "inputs": {"features": "(batch, time, features) float32", "lengths": "(batch,) int64"},
        "outputs": {"log_probs": "(batch, frames, vocab) float32", "output_lengths": "(batch,) int64"},
        "exporter": exporter,
        "max_abs_difference_vs_pytorch": difference,
        "versions": {"asrbench": __version__, "git_commit": git_commit(), "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "opset": OPSET if exporter == "dynamo" else LEGACY_OPSET},
        "files": {name: _sha256(out / name) for name in files},
    }
    fileio.write_json(out / MANIFEST, manifest)
    return manifest
