"""An exported model dir (``asrbench export``) at run time: onnxruntime, the NumPy front end, the
tokenizer and CTC search. Nothing here imports :mod:`asrbench.models` or builds a PyTorch module:
``tests/test_export.py`` transcribes through it in a subprocess that asserts so.

:class:`ExportedCTC` offers what CTC search and alignment call on a model (``ctc_log_probs``,
``make_searcher``, ``align``, ``search_modes``), so ``transcribe`` drives an exported model
exactly as it drives a run dir's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asrbench.config import FeatureConfig
from asrbench.data.features import GlobalCMVN
from asrbench.data.tokenizer import Tokenizer, tokenizer_from_dict
from asrbench.decoding.alignment import ctc_alignments
from asrbench.decoding.searchers import DecodeOptions, Searcher, ctc_searcher
from asrbench.errors import AsrbenchError
from asrbench.frontend import NumpyFbank

EXPORT_FORMAT = "asrbench-export/1"
MANIFEST = "manifest.json"


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a directory ``asrbench export`` wrote."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == EXPORT_FORMAT
    except (ValueError, AttributeError):
        return False


class ExportedCTC:
    """An exported CTC graph on onnxruntime, with the CTC model calls search and alignment use."""

    def __init__(self, path: Path, threads: int = 0):
        try:
            import onnxruntime
        except ImportError:
            raise AsrbenchError("an exported model runs on onnxruntime: pip install 'asrbench[onnx]'") from None
        options = onnxruntime.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def ctc_log_probs(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, output_lengths = self.session.run(None, {
            "features": features.detach().cpu().float().numpy(), "lengths": lengths.detach().cpu().long().numpy()})
        return torch.from_numpy(log_probs), torch.from_numpy(output_lengths)

    def search_modes(self) -> tuple[str, ...]:
        return ("ctc",)

    def make_searcher(self, tokenizer, options: DecodeOptions, data_dir=None, lm=None, lexicon=None) -> Searcher:
        if options.mode not in ("auto", "ctc"):
            raise AsrbenchError(f"--mode {options.mode}: an exported CTC model decodes its CTC output only")
        return ctc_searcher(self, tokenizer, options, data_dir, lm, lexicon)

    def align(self, features: torch.Tensor, feature_lengths: torch.Tensor, token_ids: list[list[int]]) -> list:
        log_probs, lengths = self.ctc_log_probs(features, feature_lengths)
        return ctc_alignments(log_probs, lengths, feature_lengths, token_ids)


class _NumpyExtractor:
    """The exported front end, with :class:`asrbench.data.fbank.FeatureExtractor`'s interface."""

    def __init__(self, frontend: NumpyFbank):
        self.frontend, self.size = frontend, frontend.size

    def batch(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.from_numpy(self.frontend(waveform.numpy())) for waveform in waveforms]


@dataclass
class LoadedExport:
    """What ``transcribe`` needs of a model, from an export dir."""

    name: str
    features: FeatureConfig
    tokenizer: Tokenizer
    cmvn: GlobalCMVN
    model: ExportedCTC
    extractor: _NumpyExtractor
    data_dir: str | None
    manifest: dict


def load_export(directory: str | Path, threads: int = 0, verify: bool = True) -> LoadedExport:
    """Read an export dir; with ``verify``, every file's SHA-256 must match the manifest's."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as err:
        raise AsrbenchError(f"{manifest_path}: not a readable export manifest ({err})") from None
    if manifest.get("format") != EXPORT_FORMAT:
        raise AsrbenchError(f"{manifest_path}: format {manifest.get('format')!r}, expected {EXPORT_FORMAT!r}")
    if verify:
        for name, digest in manifest["files"].items():
            path = directory / name
            if not path.is_file():
                raise AsrbenchError(f"{path}: missing from the export")
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise AsrbenchError(f"{path}: checksum differs from {manifest_path} (damaged or edited)")
    frontend = json.loads((directory / "frontend.json").read_text())
    features = FeatureConfig(kind="fbank", sample_rate=frontend["sample_rate"], num_mel_bins=frontend["num_mel_bins"],
                             frame_length_ms=frontend["frame_length_ms"], frame_shift_ms=frontend["frame_shift_ms"],
                             dtype=frontend["dtype"])
    banks = np.load(directory / "mel_banks.npy", allow_pickle=False)
    cmvn_values = json.loads((directory / "cmvn.json").read_text())
    cmvn = GlobalCMVN(torch.tensor(cmvn_values["mean"]), torch.tensor(cmvn_values["std"]))
    tokenizer = tokenizer_from_dict(json.loads((directory / "tokenizer.json").read_text()))
    extractor = _NumpyExtractor(NumpyFbank(features.sample_rate, features.frame_length_ms, features.frame_shift_ms,
                                           banks))
    model = ExportedCTC(directory / manifest["graph"], threads)
    return LoadedExport(manifest["model"], features, tokenizer, cmvn, model, extractor, manifest.get("data_dir"),
                        manifest)
