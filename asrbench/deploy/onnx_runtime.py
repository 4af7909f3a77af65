"""An exported model dir (``asrbench export``) at run time: onnxruntime, the NumPy front end, the
tokenizer and the searches. Nothing here imports :mod:`asrbench.models` or builds a PyTorch module:
``tests/deploy/test_export.py`` transcribes through it in a subprocess that asserts so.

:class:`ExportedCTC` offers what CTC search and alignment call on a model (``ctc_log_probs``),
:class:`ExportedTransducer` the transducer protocol (encoder, predictor step, state selection,
joiner), :class:`ExportedAttention` what attention beam search calls (encoder, decoder step, CTC
branch). Each declares its ``head_kind`` and ``search_modes`` as a PyTorch model does, so
``transcribe`` picks its search from the same table (:mod:`asrbench.decoding.search_table`) and
drives an exported model exactly as it drives a run dir's: the same search code runs on both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asrbench.data.features import GlobalCMVN
from asrbench.data.tokenizer import Tokenizer, tokenizer_from_dict
from asrbench.deploy.numpy_fbank import NumpyFbank
from asrbench.errors import AsrbenchError, excerpt
from asrbench.recipe.config import PRESETS, FeatureConfig

EXPORT_FORMAT = "asrbench-export/1"
MANIFEST = "manifest.json"


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a directory ``asrbench export`` wrote: one with a ``manifest.json`` (a run dir
    has none), readable or not, so that a damaged manifest is reported as such (:func:`load_export`)."""
    return (Path(path) / MANIFEST).is_file()


class _DeclaredEncoder:
    """What an exported model declares of its encoder, as a PyTorch model's ``acoustic_encoder()``
    does (:class:`asrbench.models.base.Encoder`): its frame rate, from the manifest."""

    subsampling_factor: int | None = None  # feature frames per encoder frame

    def acoustic_encoder(self):
        return self


class ExportedCTC(_DeclaredEncoder):
    """An exported CTC graph on onnxruntime, with the CTC model calls search and alignment use."""

    head_kind = "ctc"

    def __init__(self, path: Path, threads: int = 0):
        self.graph = _Session(path, threads)

    def ctc_log_probs(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, output_lengths = self.graph(features.float(), lengths.long())
        return log_probs, output_lengths

    def search_modes(self) -> tuple[str, ...]:
        return ("ctc",)


class _Session:
    """An onnxruntime session on one graph file, fed and returning torch tensors."""

    def __init__(self, path: Path, threads: int):
        try:
            import onnxruntime
        except ImportError:
            raise AsrbenchError("an exported model runs on onnxruntime: pip install 'asrbench[onnx]'") from None
        options = onnxruntime.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.path = path
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime's own exception types: a damaged or foreign file
            raise AsrbenchError(f"{path}: not a readable ONNX graph ({excerpt(_onnx_reason(err))})") from None
        self.names = [node.name for node in self.session.get_inputs()]

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        feed = {name: value.detach().cpu().numpy() for name, value in zip(self.names, inputs, strict=True)}
        try:
            outputs = self.session.run(None, feed)
        except Exception as err:  # noqa: BLE001 - a graph that loads but is not the one the manifest describes
            raise AsrbenchError(f"{self.path}: the graph failed ({excerpt(_onnx_reason(err))})") from None
        return [torch.from_numpy(output) for output in outputs]


def _onnx_reason(err: Exception) -> str:
    """onnxruntime's message without its ``[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Load model from
    PATH failed:`` preamble (the path is named once, by the caller)."""
    return str(err).rsplit(" failed:", 1)[-1] if "Load model from" in str(err) else str(err)


BLANK = 0


class ExportedTransducer(_DeclaredEncoder):
    """An exported transducer: encoder, predictor step and joiner graphs on onnxruntime, with the
    transducer protocol the searches drive (:class:`asrbench.models.base.TransducerFamily`), so
    greedy and modified beam search (LM, lexicon) run on it as on the PyTorch model."""

    head_kind = "transducer"

    def __init__(self, directory: Path, manifest: dict, threads: int = 0):
        graphs = manifest["graphs"]
        self.encoder = _Session(directory / graphs["encoder"], threads)
        self.predictor = _Session(directory / graphs["predictor"], threads)
        self.joiner = _Session(directory / graphs["joiner"], threads)
        self.kind = manifest["predictor"]["kind"]
        self.described = manifest["predictor"]
        self.max_symbols_per_frame = int(manifest["max_symbols_per_frame"])

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded, output_lengths = self.encoder(features.float(), lengths.long())
        return encoded, output_lengths

    def predictor_init_state(self, batch: int, device: torch.device):
        if self.kind == "lstm":
            zeros = torch.zeros(self.described["layers"], batch, self.described["dim"])
            return zeros, zeros.clone()
        return torch.full((batch, self.described["context_size"]), BLANK, dtype=torch.long)

    def predictor_step(self, tokens: torch.Tensor, state):
        if self.kind == "lstm":
            predicted, h, c = self.predictor(tokens.long(), *state)
            return predicted, (h, c)
        context = torch.cat([state[:, 1:], tokens.long()[:, None]], dim=1)
        return self.predictor(context)[0], context

    def select_state(self, state, indices: torch.Tensor):
        if self.kind == "lstm":
            return tuple(part.index_select(1, indices) for part in state)
        return state.index_select(0, indices)

    def merge_state(self, state, new_state, mask: torch.Tensor):
        if self.kind == "lstm":
            return tuple(torch.where(mask[None, :, None], new, old) for old, new in zip(state, new_state, strict=True))
        return torch.where(mask[:, None], new_state, state)

    def join(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Broadcasting like the PyTorch joiner: the graph takes rows, so the leading dimensions
        are expanded and flattened around it."""
        if encoded.dim() == 2 and encoded.shape[0] == predicted.shape[0]:  # rows already (greedy search)
            return self.joiner(encoded.float(), predicted.float())[0]
        shape = torch.broadcast_shapes(encoded.shape[:-1], predicted.shape[:-1])
        rows_encoded = encoded.float().expand(*shape, encoded.size(-1)).reshape(-1, encoded.size(-1))
        rows_predicted = predicted.float().expand(*shape, predicted.size(-1)).reshape(-1, predicted.size(-1))
        log_probs = self.joiner(rows_encoded, rows_predicted)[0]
        return log_probs.reshape(*shape, log_probs.size(-1))

    def joint_log_probs(self, encoded: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """encoded (B, T', D), padded targets (B, U) -> (B, T', U+1, V), the predictor stepped."""
        batch, count = targets.shape
        state = self.predictor_init_state(batch, encoded.device)
        outputs = []
        tokens = torch.full((batch,), BLANK, dtype=torch.long)
        for position in range(count + 1):
            predicted, state = self.predictor_step(tokens, state)
            outputs.append(predicted)
            if position < count:
                tokens = targets[:, position]
        predicted = torch.stack(outputs, dim=1)  # (B, U+1, P)
        return self.join(encoded[:, :, None], predicted[:, None])

    def search_modes(self) -> tuple[str, ...]:
        return ("transducer",)  # the CTC branch is not exported


class ExportedAttention(_DeclaredEncoder):
    """An exported encoder-decoder (Transformer decoder or LAS): encoder, decoder-step and (hybrids)
    CTC graphs on onnxruntime, with what attention beam search (joint CTC scoring) and CTC search call
    on a model (``encode``, ``init_state``, ``step``, ``reorder_state``, ``ctc_head``)."""

    head_kind = "attention"

    def __init__(self, directory: Path, manifest: dict, threads: int = 0):
        graphs = manifest["graphs"]
        self.encoder = _Session(directory / graphs["encoder"], threads)
        self.decoder = _Session(directory / graphs["decoder"], threads)
        head = _Session(directory / graphs["ctc_head"], threads) if "ctc_head" in graphs else None
        self.ctc_head = (lambda memory: head(memory.float())[0]) if head is not None else None
        decoder = manifest["decoder"]
        self.kind = decoder.get("kind", "transformer")
        self.layers, self.hidden = decoder.get("layers"), decoder.get("hidden")
        self.sos, self.eos = int(decoder["sos"]), int(decoder["eos"])
        self.ctc_weight, self.max_length_ratio = float(decoder["ctc_weight"]), float(decoder["max_length_ratio"])

    def encode(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory, output_lengths = self.encoder(features.float(), lengths.long())
        return memory, output_lengths

    def ctc_log_probs(self, features: torch.Tensor, lengths: torch.Tensor):
        if self.ctc_head is None:
            raise AsrbenchError("this model has no CTC branch (trained with ctc_weight 0)")
        memory, output_lengths = self.encode(features, lengths)
        return self.ctc_head(memory), output_lengths

    def max_length(self, memory_length: int) -> int:
        return max(1, int(self.max_length_ratio * memory_length))

    def init_state(self, memory: torch.Tensor, memory_lengths: torch.Tensor) -> dict:
        state = {"memory": memory.float(), "lengths": memory_lengths.long()}
        if self.kind == "las":  # as LAS.init_state: zero cells and context, uniform weights on real frames
            batch, frames = memory.shape[:2]
            real = (torch.arange(frames)[None] < memory_lengths[:, None]).float()
            state.update(
                h=torch.zeros(self.layers, batch, self.hidden),
                c=torch.zeros(self.layers, batch, self.hidden),
                context=torch.zeros(batch, memory.size(2)),
                weights=real / memory_lengths.clamp(min=1)[:, None].float(),
            )
        return state

    def step(self, state: dict, prefixes: torch.Tensor):
        if self.kind != "las":
            return self.decoder(prefixes.long(), state["memory"], state["lengths"])[0], state
        log_probs, h, c, context, weights = self.decoder(
            prefixes[:, -1].long(),
            state["h"],
            state["c"],
            state["context"],
            state["weights"],
            state["memory"],
            state["lengths"],
        )
        return log_probs, {**state, "h": h, "c": c, "context": context, "weights": weights}

    def reorder_state(self, state: dict, indices: torch.Tensor) -> dict:
        return {key: value.index_select(1 if key in ("h", "c") else 0, indices) for key, value in state.items()}

    def search_modes(self) -> tuple[str, ...]:
        return ("attention", "ctc") if self.ctc_head is not None else ("attention",)


class _NumpyExtractor:
    """The exported front end, with :class:`asrbench.data.fbank.FeatureExtractor`'s interface."""

    def __init__(self, frontend: NumpyFbank):
        self.frontend, self.size, self.snip_edges = frontend, frontend.size, frontend.snip_edges

    def batch(self, waveforms: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.from_numpy(self.frontend(waveform.numpy())) for waveform in waveforms]


@dataclass
class LoadedExport:
    """What ``transcribe`` needs of a model, from an export dir."""

    name: str
    features: FeatureConfig
    tokenizer: Tokenizer
    cmvn: GlobalCMVN
    model: ExportedCTC | ExportedTransducer | ExportedAttention
    extractor: _NumpyExtractor
    data_dir: str | None
    manifest: dict


def load_export(directory: str | Path, threads: int = 0, verify: bool = True) -> LoadedExport:
    """Read an export dir; with ``verify``, every file's SHA-256 must match the manifest's."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    manifest = _read(manifest_path, lambda path: json.loads(path.read_text()))
    if not isinstance(manifest, dict):
        raise AsrbenchError(f"{manifest_path}: not an export manifest (expected a JSON object)")
    if manifest.get("format") != EXPORT_FORMAT:
        raise AsrbenchError(f"{manifest_path}: format {manifest.get('format')!r}, expected {EXPORT_FORMAT!r}")
    for key in ("files", "graphs", "model"):
        if not isinstance(manifest.get(key), (dict, str)):
            raise AsrbenchError(f"{manifest_path}: no {key!r} entry (written by `asrbench export`)")
    if manifest.get("streaming"):  # sherpa-onnx's online layout: chunk states asrbench's runtime does not carry
        raise AsrbenchError(
            f"{directory}: a sherpa-onnx online (streaming) export runs in sherpa-onnx's OnlineRecognizer; "
            "asrbench streams the run dir (transcribe RUN --stream, decode --chunk-ms)"
        )
    if verify:
        for name, digest in manifest["files"].items():
            path = directory / name
            if not path.is_file():
                raise AsrbenchError(f"{path}: missing from the export")
            if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise AsrbenchError(f"{path}: checksum differs from {manifest_path} (damaged or edited)")
    features = _read(directory / "frontend.json", _frontend_features)
    banks = _read(directory / "mel_banks.npy", lambda path: np.load(path, allow_pickle=False))
    cmvn = _read(directory / "cmvn.json", _cmvn)
    tokenizer = _read(directory / "tokenizer.json", lambda path: tokenizer_from_dict(json.loads(path.read_text())))
    convention = PRESETS[features.preset]
    extractor = _NumpyExtractor(
        NumpyFbank(
            features.sample_rate,
            features.frame_length_ms,
            features.frame_shift_ms,
            banks,
            snip_edges=convention.snip_edges,
            scale=convention.scale,
        )
    )
    try:
        model = _graphs(directory, manifest, threads)
    except KeyError as err:
        raise AsrbenchError(f"{manifest_path}: no {err} entry (written by `asrbench export`)") from None
    return LoadedExport(
        manifest["model"], features, tokenizer, cmvn, model, extractor, manifest.get("data_dir"), manifest
    )


def _graphs(directory: Path, manifest: dict, threads: int) -> ExportedCTC | ExportedTransducer | ExportedAttention:
    """The runtime model the manifest's ``search`` names, on its graphs."""
    model: ExportedCTC | ExportedTransducer | ExportedAttention
    if manifest.get("search") == "transducer":
        model = ExportedTransducer(directory, manifest, threads)
    elif manifest.get("search") == "attention":
        model = ExportedAttention(directory, manifest, threads)
    else:
        model = ExportedCTC(directory / manifest["graphs"]["model"], threads)
    # The encoder's declared frame rate, for word times (None in an export written before it was recorded).
    factor = manifest.get("subsampling_factor")
    model.subsampling_factor = int(factor) if factor is not None else None
    return model


def _read(path: Path, parse):
    """``parse(path)``; a file that is missing or damaged is one line naming it."""
    try:
        return parse(path)
    except FileNotFoundError:
        raise AsrbenchError(f"{path}: missing from the export") from None
    except AsrbenchError as err:
        raise AsrbenchError(f"{path}: {err}") from None
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise AsrbenchError(
            f"{path}: damaged or not written by `asrbench export` ({type(err).__name__}: {excerpt(err)})"
        ) from None


def _frontend_features(path: Path) -> FeatureConfig:
    values = json.loads(path.read_text())
    return FeatureConfig(
        kind="fbank",
        sample_rate=values["sample_rate"],
        num_mel_bins=values["num_mel_bins"],
        frame_length_ms=values["frame_length_ms"],
        frame_shift_ms=values["frame_shift_ms"],
        dtype=values["dtype"],
        preset=_preset(values.get("preset", FeatureConfig.preset)),  # absent: written before presets
    )


def _preset(name) -> str:
    if name not in PRESETS:
        raise AsrbenchError(f"unknown front-end preset {name!r} (valid: {', '.join(PRESETS)})")
    return name


def _cmvn(path: Path) -> GlobalCMVN:
    values = json.loads(path.read_text())
    return GlobalCMVN(torch.tensor(values["mean"]), torch.tensor(values["std"]))
