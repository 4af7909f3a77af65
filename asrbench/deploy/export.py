"""``asrbench export RUN --out DIR``: a self-contained directory that transcribes on onnxruntime.

What the directory holds (``manifest.json`` lists every file with its SHA-256):

- CTC models: ``model.onnx``, features ``(B, T, F)`` float32 and ``lengths (B,)`` int64 in, CTC
  log-probabilities ``(B, T', V)`` and ``output_lengths (B,)`` out.
- Transducers: three graphs, with the search (greedy, modified beam, LM, lexicon) left in Python
  as sherpa-onnx does: ``encoder.onnx`` (features -> encoded ``(B, T', D)``, lengths),
  ``predictor.onnx`` (one step: the stateless predictor's context ``(N, C)``, or a token ``(N,)``
  and the LSTM's ``h``, ``c``) and ``joiner.onnx`` (``(N, D)``, ``(N, P)`` -> log-probs ``(N, V)``).
- Batch, time and row dimensions are dynamic. Each graph is exported with torch's dynamo exporter,
  or the TorchScript-based one for the recurrent layers dynamo cannot export, and kept only if it
  equals PyTorch within 1e-4 on three example inputs of different shapes.
- ``*.int8.onnx`` with ``--quantize int8``: onnxruntime's dynamic int8 quantization of the weights,
  used in place of the float graphs.
- ``mel_banks.npy`` and ``frontend.json``: the filterbank front end, computed by
  :mod:`asrbench.deploy.numpy_fbank` in NumPy with the mel banks training used; ``cmvn.json``,
  ``tokenizer.json`` (a sentencepiece model inside, as in the checkpoint).
- ``--format sherpa-onnx``: the graphs in the layouts the sherpa-onnx runtime loads (CMVN and the
  joiner's projections folded in, its input and output names and metadata) and its ``tokens.txt``,
  beside the same front-end files and manifest: :mod:`asrbench.deploy.sherpa`.
- ``manifest.json``: format tag, search (ctc, transducer, attention), graphs, source run and
  checkpoint, model name, config hash, versions (asrbench, torch, onnx, onnxruntime, opsets), the
  exporter of each graph and its largest difference from PyTorch on the examples.

- Attention encoder-decoders with a Transformer decoder: ``encoder.onnx`` (features -> memory,
  lengths), ``decoder.onnx`` (prefixes ``(N, U)``, memory ``(N, T, D)``, memory lengths -> the next
  token's log-probs ``(N, V)``) and, for hybrids, ``ctc_head.onnx``; beam search (joint CTC
  scoring) stays in Python. LAS exports its decoder step with the state as tensors (the cells'
  ``h``, ``c``, the attention context and weights) going in and out.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn

from asrbench import __version__, fileio
from asrbench.data.fbank import FeatureExtractor
from asrbench.decoding.alignment import subsampling_of
from asrbench.decoding.streaming import chunk_frames
from asrbench.deploy import sherpa
from asrbench.deploy.onnx_runtime import EXPORT_FORMAT, MANIFEST
from asrbench.env import git_commit
from asrbench.errors import AsrbenchError, excerpt
from asrbench.progress import progress_bar
from asrbench.runs import rundir
from asrbench.runs.checkpoint import LoadedModel, load_model

if TYPE_CHECKING:  # the families' classes, for the graphs of each (the model is chosen by its search)
    from asrbench.models.attention import AttentionModel
    from asrbench.models.base import ASRModel, CTCFamily
    from asrbench.models.conformer import Conformer
    from asrbench.models.las import LAS
    from asrbench.models.transducer import LSTMPredictor, StatelessPredictor, TransducerModel

FORMATS = ("onnx", "sherpa-onnx")
QUANTIZATIONS = ("", "int8")
OPSET = 18  # the dynamo exporter's
LEGACY_OPSET = 17  # the TorchScript-based exporter's
EXPORTERS = ("dynamo", "torchscript")


class _CTCGraph(nn.Module):
    """What the graph computes: a CTC model's (log_probs, output_lengths)."""

    def __init__(self, model: CTCFamily):
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


PARITY = 1e-4  # largest log-prob difference from PyTorch an exported graph may show on the check batches


def _check_batches(dim: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The traced batch and others of other sizes and lengths (a graph that baked in a shape fails)."""
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(len(lengths), max(lengths), dim, generator=generator), torch.tensor(lengths))
        for lengths in ([317, 201], [90], [123, 57, 31])
    ]


DIM_RANGES = {
    "batch": (1, 1024),
    "time": (16, 200_000),
    "rows": (1, 1_000_000),
    "prefix": (1, 4096),
    "frames": (1, 100_000),
}


@dataclass
class GraphSpec:
    """One graph to export: its module, input and output names, which axes are dynamic (input or
    output name -> {axis: dimension name}), example inputs (the first is traced, all are checked)
    and how far ONNX may be from PyTorch (``compare(expected outputs, ONNX outputs) -> difference``)."""

    module: nn.Module
    inputs: list[str]
    outputs: list[str]
    dynamic: dict[str, dict[int, str]]
    examples: list[tuple]
    compare: Callable[[tuple, list], float]


def _sequence_difference(expected: tuple, got: list) -> float:
    """(values (B, T', ...), lengths (B,)): lengths equal, values within the valid frames."""
    values, lengths = expected
    if not np.array_equal(got[1], lengths.numpy()):
        return float("inf")
    valid = np.arange(got[0].shape[1])[None] < got[1][:, None]
    return float(np.abs(got[0] - values.numpy())[valid].max())


def _all_difference(expected: tuple, got: list) -> float:
    """Every output, every value (``-inf`` where PyTorch has ``-inf``)."""
    worst = 0.0
    for value, onnx in zip(expected, got, strict=True):
        value = value.numpy()
        finite = np.isfinite(value)
        if not np.array_equal(finite, np.isfinite(onnx)):
            return float("inf")
        worst = max(worst, float(np.abs(onnx[finite] - value[finite]).max()) if finite.any() else 0.0)
    return worst


# torch's exporters log their internals (a missing torchvision, a failed tracing strategy that a
# fallback then handles) to these loggers; a user exporting a model needs none of it.
QUIET_LOGGERS = ("torch.onnx", "torch._dynamo", "torch._guards", "torch.export", "torch.fx", "onnxscript")


@contextmanager
def _quiet_exporters():
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _export(spec: GraphSpec, path: Path, exporter: str) -> None:
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), _quiet_exporters():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracing notes
        if exporter == "dynamo":
            dims = {name: torch.export.Dim(name, min=low, max=high) for name, (low, high) in DIM_RANGES.items()}
            shapes = {
                name: {axis: dims[dim] for axis, dim in spec.dynamic.get(name, {}).items()} for name in spec.inputs
            }
            program = torch.onnx.export(
                spec.module,
                spec.examples[0],
                dynamo=True,
                opset_version=OPSET,
                verbose=False,
                dynamic_shapes=shapes,
                input_names=spec.inputs,
                output_names=spec.outputs,
            )
            assert program is not None  # dynamo=True returns the program
            with fileio.atomic_open(path, "wb") as handle:
                handle.write(program.model_proto.SerializeToString())
        else:
            with fileio.atomic_open(path, "wb") as handle:
                # torch's stub names a path; the TorchScript exporter writes to a file object too
                torch.onnx.export(
                    spec.module,
                    spec.examples[0],
                    handle,  # type: ignore[arg-type]
                    dynamo=False,
                    opset_version=LEGACY_OPSET,
                    dynamic_axes=spec.dynamic,
                    input_names=spec.inputs,
                    output_names=spec.outputs,
                )


def _largest_difference(spec: GraphSpec, session) -> float:
    """How far ``session`` (an onnxruntime session on ``spec``'s graph) is from PyTorch on its examples."""
    difference = 0.0
    for example in spec.examples:
        with torch.inference_mode():
            expected = spec.module(*example)
        got = session.run(None, {name: value.numpy() for name, value in zip(spec.inputs, example, strict=True)})
        difference = max(difference, spec.compare(expected, got))
    return difference


def write_graph(spec: GraphSpec, path: Path):
    """``spec`` as an ONNX graph at ``path``, kept only if it equals PyTorch on every example.

    torch's dynamo exporter first; where it fails or its graph differs (it cannot decompose
    ``aten.gru``, and its LSTM graph breaks on other lengths), the TorchScript-based exporter,
    which has ONNX's own GRU and LSTM ops; modules with recurrent layers try that one first.
    Returns an onnxruntime session on the file, the exporter used and the largest difference.
    """
    onnxruntime = _require_onnx()
    module = spec.module.eval()
    recurrent = any(isinstance(part, nn.RNNBase) for part in module.modules())
    failures = []
    for exporter in EXPORTERS[::-1] if recurrent else EXPORTERS:
        try:
            _export(spec, path, exporter)
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            difference = _largest_difference(spec, session)
        except Exception as err:  # noqa: BLE001 - any exporter failure: try the next, report all
            failures.append(f"{exporter}: {excerpt((str(err).strip().splitlines() or [type(err).__name__])[0])}")
            continue
        if difference <= PARITY:
            return session, exporter, difference
        failures.append(f"{exporter}: outputs differ from PyTorch by {difference:.1e}")
    path.unlink(missing_ok=True)
    raise AsrbenchError(f"{type(module).__name__}: no ONNX export equals PyTorch ({'; '.join(failures)})")


def write_ctc_graph(model: nn.Module, dim: int, path: Path):
    """A CTC model's ``ctc_log_probs`` as an ONNX graph at ``path`` (batch and time dynamic).
    Returns the wrapped module, an onnxruntime session, the exporter used and the largest
    difference from PyTorch on the check batches."""
    spec = _ctc_specs(model.eval(), dim)["model.onnx"]
    session, exporter, difference = write_graph(spec, path)
    return spec.module, session, exporter, difference


class _EncoderGraph(nn.Module):
    def __init__(self, model: TransducerModel | AttentionModel):
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, lengths: torch.Tensor):
        return self.model.encode(features, lengths)


class _StatelessStep(nn.Module):
    """The stateless predictor on its new context (N, context_size) -> (N, P); Python keeps the context."""

    def __init__(self, predictor: StatelessPredictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.predictor._convolve(self.predictor.embed(context))[:, -1]


class _LSTMStep(nn.Module):
    """The LSTM predictor reading one token per hypothesis: tokens (N,), h, c (L, N, P)."""

    def __init__(self, predictor: LSTMPredictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, tokens: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        output, (h, c) = self.predictor.step(tokens, (h, c))
        return output, h, c


class _JoinerGraph(nn.Module):
    def __init__(self, model: TransducerModel):
        super().__init__()
        self.model = model

    def forward(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        return self.model.join(encoded, predicted)


def _ctc_specs(model: nn.Module, dim: int) -> dict[str, GraphSpec]:
    return {
        "model.onnx": GraphSpec(
            _CTCGraph(cast("CTCFamily", model)),
            ["features", "lengths"],
            ["log_probs", "output_lengths"],
            {
                "features": {0: "batch", 1: "time"},
                "lengths": {0: "batch"},
                "log_probs": {0: "batch", 1: "frames"},
                "output_lengths": {0: "batch"},
            },
            _check_batches(dim),
            _sequence_difference,
        )
    }


def _transducer_specs(model: TransducerModel, dim: int, vocab: int) -> tuple[dict[str, GraphSpec], dict]:
    """Encoder, predictor step and joiner: the search (greedy, modified beam) stays in Python."""
    generator = torch.Generator().manual_seed(0)
    predictor = model.predictor
    encoder = GraphSpec(
        _EncoderGraph(model),
        ["features", "lengths"],
        ["encoded", "output_lengths"],
        {
            "features": {0: "batch", 1: "time"},
            "lengths": {0: "batch"},
            "encoded": {0: "batch", 1: "frames"},
            "output_lengths": {0: "batch"},
        },
        _check_batches(dim),
        _sequence_difference,
    )
    tokens = [torch.randint(0, vocab - 1, (rows,), generator=generator) for rows in (6, 1, 33)]
    if predictor.kind == "lstm":
        lstm = cast("LSTMPredictor", predictor)  # kind names the predictor's class
        layers, width = lstm.lstm.num_layers, lstm.lstm.hidden_size
        step = GraphSpec(
            _LSTMStep(lstm),
            ["tokens", "h", "c"],
            ["predicted", "h_out", "c_out"],
            {
                "tokens": {0: "rows"},
                "h": {1: "rows"},
                "c": {1: "rows"},
                "predicted": {0: "rows"},
                "h_out": {1: "rows"},
                "c_out": {1: "rows"},
            },
            [
                (
                    t,
                    torch.randn(layers, t.numel(), width, generator=generator),
                    torch.randn(layers, t.numel(), width, generator=generator),
                )
                for t in tokens
            ],
            _all_difference,
        )
        described = {"kind": "lstm", "layers": layers, "dim": width}
    else:
        stateless = cast("StatelessPredictor", predictor)
        size = stateless.context_size
        step = GraphSpec(
            _StatelessStep(stateless),
            ["context"],
            ["predicted"],
            {"context": {0: "rows"}, "predicted": {0: "rows"}},
            [(torch.randint(0, vocab - 1, (t.numel(), size), generator=generator),) for t in tokens],
            lambda expected, got: _all_difference((expected,), got),
        )
        described = {"kind": "stateless", "context_size": size}
    width = model.joiner.predictor_proj.in_features
    joiner = GraphSpec(
        _JoinerGraph(model),
        ["encoded", "predicted"],
        ["log_probs"],
        {"encoded": {0: "rows"}, "predicted": {0: "rows"}, "log_probs": {0: "rows"}},
        [
            (torch.randn(rows, model.encoder_dim, generator=generator), torch.randn(rows, width, generator=generator))
            for rows in (6, 1, 33)
        ],
        lambda expected, got: _all_difference((expected,), got),
    )
    return {"encoder.onnx": encoder, "predictor.onnx": step, "joiner.onnx": joiner}, described


class _CTCHeadGraph(nn.Module):
    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        return self.head(memory)


class _DecoderStep(nn.Module):
    """A Transformer decoder's next-token log-probs for prefixes (N, U) over memory (N, T, D)."""

    def __init__(self, model: AttentionModel):
        super().__init__()
        self.model = model

    def forward(self, prefixes: torch.Tensor, memory: torch.Tensor, memory_lengths: torch.Tensor) -> torch.Tensor:
        log_probs, _ = self.model.step(self.model.init_state(memory, memory_lengths), prefixes)
        return log_probs


class _LASStep(nn.Module):
    """LAS's decoder step with its state as tensors: the previous tokens (N,), the LSTM cells' h and
    c stacked (L, N, H), the attention context (N, D) and weights (N, T), over memory (N, T, D)."""

    def __init__(self, model: LAS):
        super().__init__()
        self.model = model

    def forward(self, tokens, h, c, context, weights, memory, memory_lengths):
        state = self.model.init_state(memory, memory_lengths)
        state = {**state, "h": list(h.unbind(0)), "c": list(c.unbind(0)), "context": context, "weights": weights}
        logits, state = self.model._advance(state, tokens)
        return (
            torch.log_softmax(logits.float(), dim=-1),
            torch.stack(state["h"]),
            torch.stack(state["c"]),
            state["context"],
            state["weights"],
        )


def _las_step_spec(model: LAS, vocab: int, generator: torch.Generator) -> tuple[GraphSpec, dict]:
    layers, hidden = len(model.cells), cast(nn.LSTMCell, model.cells[0]).hidden_size
    examples = []
    for rows, frames in ((3, 40), (1, 9), (6, 71)):
        lengths = torch.randint(max(1, frames // 2), frames + 1, (rows,), generator=generator)
        lengths[0] = frames
        weights = torch.rand(rows, frames, generator=generator)
        examples.append(
            (
                torch.randint(1, vocab - 1, (rows,), generator=generator),
                torch.randn(layers, rows, hidden, generator=generator),
                torch.randn(layers, rows, hidden, generator=generator),
                torch.randn(rows, model.encoder_dim, generator=generator),
                weights / weights.sum(1, True),
                torch.randn(rows, frames, model.encoder_dim, generator=generator),
                lengths,
            )
        )
    names = ["tokens", "h", "c", "context", "weights", "memory", "memory_lengths"]
    outputs = ["log_probs", "h_out", "c_out", "context_out", "weights_out"]
    dynamic = {
        "tokens": {0: "rows"},
        "h": {1: "rows"},
        "c": {1: "rows"},
        "context": {0: "rows"},
        "weights": {0: "rows", 1: "frames"},
        "memory": {0: "rows", 1: "frames"},
        "memory_lengths": {0: "rows"},
        "log_probs": {0: "rows"},
        "h_out": {1: "rows"},
        "c_out": {1: "rows"},
        "context_out": {0: "rows"},
        "weights_out": {0: "rows", 1: "frames"},
    }
    return (
        GraphSpec(_LASStep(model), names, outputs, dynamic, examples, _all_difference),
        {"kind": "las", "layers": layers, "hidden": hidden},
    )


def _attention_specs(model: AttentionModel, dim: int, vocab: int) -> tuple[dict[str, GraphSpec], dict]:
    """Encoder, the CTC branch (hybrids) and the decoder step: beam search stays in Python. The
    Transformer decoder's state is the memory (it re-reads the prefix each step); LAS's is its
    cells, attention context and weights, which go in and out of the step graph."""
    from asrbench.models.attention import TransformerDecoderMixin  # which decoder step to export

    generator = torch.Generator().manual_seed(0)
    encoder = GraphSpec(
        _EncoderGraph(model),
        ["features", "lengths"],
        ["memory", "output_lengths"],
        {
            "features": {0: "batch", 1: "time"},
            "lengths": {0: "batch"},
            "memory": {0: "batch", 1: "frames"},
            "output_lengths": {0: "batch"},
        },
        _check_batches(dim),
        _sequence_difference,
    )
    examples = []
    for rows, prefix, frames in ((3, 5, 40), (1, 1, 9), (6, 12, 71)):
        prefixes = torch.randint(1, vocab - 1, (rows, prefix), generator=generator)
        prefixes[:, 0] = model.sos
        lengths = torch.randint(max(1, frames // 2), frames + 1, (rows,), generator=generator)
        lengths[0] = frames
        examples.append((prefixes, torch.randn(rows, frames, model.encoder_dim, generator=generator), lengths))
    decoder = GraphSpec(
        _DecoderStep(model),
        ["prefixes", "memory", "memory_lengths"],
        ["log_probs"],
        {
            "prefixes": {0: "rows", 1: "prefix"},
            "memory": {0: "rows", 1: "frames"},
            "memory_lengths": {0: "rows"},
            "log_probs": {0: "rows"},
        },
        examples,
        lambda expected, got: _all_difference((expected,), got),
    )
    kind: dict = {"kind": "transformer"}
    if not isinstance(model, TransformerDecoderMixin):
        decoder, kind = _las_step_spec(cast("LAS", model), vocab, generator)  # the other decoder: LAS's
    specs = {"encoder.onnx": encoder, "decoder.onnx": decoder}
    if model.ctc_head is not None:
        specs["ctc_head.onnx"] = GraphSpec(
            _CTCHeadGraph(model.ctc_head),
            ["memory"],
            ["log_probs"],
            {"memory": {0: "batch", 1: "frames"}, "log_probs": {0: "batch", 1: "frames"}},
            [(torch.randn(b, t, model.encoder_dim, generator=generator),) for b, t in ((2, 40), (1, 9), (3, 71))],
            lambda expected, got: _all_difference((expected,), got),
        )
    ctc_weight = model.ctc_weight if model.ctc_head is not None else 0.0
    described = {
        **kind,
        "sos": model.sos,
        "eos": model.eos,
        "ctc_weight": ctc_weight,
        "max_length_ratio": model.max_length_ratio,
    }
    return specs, described


def _online_encoder_spec(transducer: TransducerModel, cmvn, dim: int, chunk: int, left_chunks: int) -> GraphSpec:
    """sherpa-onnx's online conformer encoder at ``chunk`` encoder frames and ``left_chunks`` chunks
    back, checked on streams of 1 and 3 at their start, a few chunks in and past the left context."""
    graph = sherpa.SherpaStreamingEncoder(transducer, cmvn, chunk, left_chunks)
    encoder = graph.encoder
    layers, width = len(encoder.encoder.conformer_layers), encoder.encoder_dim
    window = 4 * chunk + 3
    generator = torch.Generator().manual_seed(0)
    examples = []
    for batch, processed in ((1, [0]), (3, [0, 4 * chunk, 4 * chunk * (left_chunks + 3)])):
        examples.append(
            (
                torch.randn(batch, window, dim, generator=generator) * 3 + 10,  # filterbank-like values
                torch.randn(layers, chunk * left_chunks, batch, width, generator=generator),
                torch.randn(layers, encoder.kernel_size - 1, batch, width, generator=generator),
                torch.tensor(processed, dtype=torch.int64),
            )
        )
    examples.reverse()  # the batch of 3 is traced: nothing batch-sized is baked in
    states = {0: "batch"}
    return GraphSpec(
        graph,
        ["x", "cached_attn", "cached_conv", "processed_frames"],
        ["encoder_out", "new_cached_attn", "new_cached_conv"],
        {
            "x": states,
            "cached_attn": {2: "batch"},
            "cached_conv": {2: "batch"},
            "processed_frames": states,
            "encoder_out": states,
            "new_cached_attn": {2: "batch"},
            "new_cached_conv": {2: "batch"},
        },
        examples,
        _all_difference,
    )


def _sherpa_specs(
    model: nn.Module, search: str, cmvn, dim: int, vocab: int, stream: tuple[int, int] | None = None
) -> tuple[dict[str, GraphSpec], dict]:
    """The sherpa-onnx layout's graphs (:mod:`asrbench.deploy.sherpa`), and what the manifest
    records beyond them; CMVN inside the encoder, the joiner's projections folded in. ``stream``:
    (chunk, left chunks) for the online layout's encoder."""
    features = {"x": {0: "batch", 1: "time"}, "x_lens": {0: "batch"}}
    if search == "ctc":
        graph = sherpa.SherpaCTC(cast("CTCFamily", model), cmvn)
        outputs = {"log_probs": {0: "batch", 1: "frames"}, "log_probs_len": {0: "batch"}}
        spec = GraphSpec(
            graph, ["x", "x_lens"], list(outputs), {**features, **outputs}, _check_batches(dim), _sequence_difference
        )
        return {"model.onnx": spec}, {}
    transducer = cast("TransducerModel", model)
    generator = torch.Generator().manual_seed(0)
    size = cast("StatelessPredictor", transducer.predictor).context_size
    width = transducer.joiner.out.in_features
    outputs = {"encoder_out": {0: "batch", 1: "frames"}, "encoder_out_lens": {0: "batch"}}
    contexts = []
    for rows in (6, 1, 33):  # real tokens, and -1 where a hypothesis has not started
        context = torch.randint(0, vocab - 1, (rows, size), generator=generator)
        context[0, : size - 1] = -1
        contexts.append((context,))
    specs = {
        "encoder.onnx": (
            _online_encoder_spec(transducer, cmvn, dim, *stream)
            if stream is not None
            else GraphSpec(
                sherpa.SherpaEncoder(transducer, cmvn),
                ["x", "x_lens"],
                list(outputs),
                {**features, **outputs},
                _check_batches(dim),
                _sequence_difference,
            )
        ),
        "decoder.onnx": GraphSpec(
            sherpa.SherpaDecoder(transducer),
            ["y"],
            ["decoder_out"],
            {"y": {0: "rows"}, "decoder_out": {0: "rows"}},
            contexts,
            lambda expected, got: _all_difference((expected,), got),
        ),
        "joiner.onnx": GraphSpec(
            sherpa.SherpaJoiner(transducer),
            ["encoder_out", "decoder_out"],
            ["logit"],
            {"encoder_out": {0: "rows"}, "decoder_out": {0: "rows"}, "logit": {0: "rows"}},
            [
                (torch.randn(rows, width, generator=generator), torch.randn(rows, width, generator=generator))
                for rows in (6, 1, 33)
            ],
            lambda expected, got: _all_difference((expected,), got),
        ),
    }
    extra = {
        "predictor": {"kind": "stateless", "context_size": size},
        # sherpa-onnx's transducer searches (greedy and modified beam) emit at most one token per
        # encoder frame; the export records that search, so that `asrbench transcribe` on it runs
        # what sherpa-onnx runs (the run dir's decode keeps the model's own limit).
        "max_symbols_per_frame": 1,
        "model_max_symbols_per_frame": transducer.max_symbols_per_frame,
    }
    return specs, extra


def _graph_specs(model: nn.Module, search: str, dim: int, vocab: int) -> tuple[dict[str, GraphSpec], dict]:
    """The graphs ``search`` (ctc, transducer or attention) needs, by file name, and what the
    manifest records for it beyond them (the predictor's or the decoder's description)."""
    extra: dict = {}
    # the model's class follows from its search (its head): what each graph builder is given
    if search == "ctc":
        specs = _ctc_specs(model, dim)
    elif search == "transducer":
        transducer = cast("TransducerModel", model)
        specs, extra["predictor"] = _transducer_specs(transducer, dim, vocab)
        extra["max_symbols_per_frame"] = transducer.max_symbols_per_frame
    else:
        specs, extra["decoder"] = _attention_specs(cast("AttentionModel", model), dim, vocab)
    return specs, extra


def _write_graphs(
    specs: dict[str, GraphSpec], out: Path, quantize: str, onnxruntime, model_name: str
) -> tuple[list[str], dict[str, str], dict[str, str], dict[str, float]]:
    """Export each graph into ``out`` and check it against PyTorch; with ``quantize`` int8 also its
    int8 version, checked the same way, which then serves in its place. Returns the files written,
    each role's graph file, each graph's exporter and each file's largest difference from PyTorch."""
    files, difference, exporters, graphs = [], {}, {}, {}
    with progress_bar("graph", unit="graphs") as bar:  # each graph: export, then the check against PyTorch
        task = bar.add_task(f"export {model_name}", total=len(specs) * (2 if quantize else 1), graph=next(iter(specs)))
        for name, spec in specs.items():
            bar.update(task, graph=name)
            _, exporters[name], difference[name] = write_graph(spec, out / name)
            files.append(name)
            graphs[name.removesuffix(".onnx")] = name
            bar.advance(task)
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic  # only for --quantize int8

            logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, printed on every call
            for name, spec in specs.items():
                quantized = name.replace(".onnx", ".int8.onnx")
                bar.update(task, graph=quantized)
                quantize_dynamic(str(out / name), str(out / quantized), weight_type=QuantType.QInt8)
                session = onnxruntime.InferenceSession(str(out / quantized), providers=["CPUExecutionProvider"])
                difference[quantized] = _largest_difference(spec, session)
                files.append(quantized)
                graphs[name.removesuffix(".onnx")] = quantized
                bar.advance(task)
    return files, graphs, exporters, difference


def _write_front_end(out: Path, loaded: LoadedModel, folded: bool = False) -> list[str]:
    """The files that turn audio into the graphs' input: the fbank front end (mel banks and its
    settings, for :mod:`asrbench.deploy.numpy_fbank`), the CMVN statistics and the tokenizer.
    ``folded``: the graphs normalize their input (sherpa-onnx's layout), so the CMVN written is the
    identity and the features are not rounded to the store's dtype (sherpa-onnx does not round them).
    Returns their names."""
    features = loaded.config.features
    extractor = FeatureExtractor(features)
    with fileio.atomic_open(out / "mel_banks.npy", "wb") as handle:
        np.save(handle, extractor.banks.to_dense().numpy().astype(np.float32))
    fileio.write_json(
        out / "frontend.json",
        {
            "kind": "fbank",
            "sample_rate": features.sample_rate,
            "num_mel_bins": features.num_mel_bins,
            "frame_length_ms": features.frame_length_ms,
            "frame_shift_ms": features.frame_shift_ms,
            "dtype": "float32" if folded else features.dtype,
            "preset": features.preset,
        },
    )
    mean, std = loaded.cmvn.mean, loaded.cmvn.std
    if folded:
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    fileio.write_json(out / "cmvn.json", {"mean": mean.tolist(), "std": std.tolist()})
    fileio.write_json(out / "tokenizer.json", loaded.tokenizer.to_dict())
    return ["mel_banks.npy", "frontend.json", "cmvn.json", "tokenizer.json"]


def _sherpa_files(out: Path, files: list[str], loaded: LoadedModel, search: str, extra: dict) -> list[str]:
    """sherpa-onnx's metadata in each graph file (written after the checks, so the checked graph is
    the one kept) and its ``tokens.txt``. Returns the names of the files added."""
    vocab, name = len(loaded.tokenizer), loaded.config.model.name
    common: dict[str, object] = {
        "vocab_size": vocab,
        "comment": f"asrbench {__version__} export of {name}",
        "model_author": "asrbench",
    }
    for graph in (file for file in files if file.endswith(".onnx")):
        role = graph.split(".")[0]
        if search == "ctc":
            # sherpa-onnx times words as if 4 feature frames made an encoder frame; the true factor, for the record
            values = {**common, "model_type": "zipformer2_ctc", "subsampling_factor": subsampling_of(loaded.model)}
        elif role == "encoder" and "streaming" in extra:
            stream = extra["streaming"]
            values = {**common, **stream["metadata"], "model_type": "conformer"}
        elif role == "encoder":
            values = {**common, "model_type": "zipformer2" if "zipformer" in name else "conformer"}
        elif role == "decoder":
            values = {**common, "context_size": extra["predictor"]["context_size"]}
        else:
            values = {**common, "joiner_dim": cast("TransducerModel", loaded.model).joiner.out.in_features}
        sherpa.add_metadata(out / graph, values)
    sherpa.write_tokens(out / "tokens.txt", loaded.tokenizer)
    return ["tokens.txt"]


def _online_record(transducer: TransducerModel, chunk_ms: float, chunk: int, left_chunks: int) -> dict:
    """What the manifest records of an online export, with the encoder metadata sherpa-onnx reads."""
    encoder = cast("Conformer", transducer.encoder)
    window, advance = encoder.chunk_window(chunk)
    return {
        "chunk_ms": chunk_ms,
        "chunk": chunk,
        "left_chunks": left_chunks,
        "metadata": {
            "num_encoder_layers": len(encoder.encoder.conformer_layers),
            "T": window,  # feature frames a chunk reads
            "decode_chunk_len": advance,  # feature frames a chunk advances
            "left_context": chunk * left_chunks,  # encoder frames of attention context kept
            "encoder_dim": encoder.encoder_dim,
            "pad_length": window - advance,  # read by sherpa-onnx, not used: the window's lookahead
            "cnn_module_kernel": encoder.kernel_size,
        },
    }


def _stream_of(model: nn.Module, config, sherpa_layout: bool, chunk_ms: float, left_chunks: int):
    """(chunk in encoder frames, left chunks) of an online export; None for an offline one; the
    user errors of --chunk-ms / --left-chunks, before anything is written."""
    if not chunk_ms:
        if left_chunks >= 0:
            raise AsrbenchError("--left-chunks only applies with --chunk-ms")
        return None
    if not sherpa_layout:
        raise AsrbenchError(
            "--chunk-ms: only --format sherpa-onnx has a streaming layout (asrbench streams the run dir: "
            "decode --chunk-ms, transcribe --stream)"
        )
    reason = sherpa.streaming_refusal(model, config.model.name, left_chunks)
    if reason is not None:
        raise AsrbenchError(reason)
    return chunk_frames(model, chunk_ms, config.features.frame_shift_ms), left_chunks


def export_run(
    run_dir: str | Path,
    out: str | Path,
    fmt: str = "onnx",
    quantize: str = "",
    checkpoint: str = "best",
    chunk_ms: float = 0.0,
    left_chunks: int = -1,
) -> dict:
    """Export ``run_dir``'s model to ``out``; returns the manifest written there. ``chunk_ms`` (with
    ``fmt`` sherpa-onnx, a streaming conformer transducer): sherpa-onnx's online layout at chunks of
    that many ms and ``left_chunks`` chunks of left context."""
    if fmt not in FORMATS:
        raise AsrbenchError(
            f"unknown --format '{fmt}' (valid: {', '.join(FORMATS)}; TorchScript is not supported: "
            "torch.jit is deprecated in the torch this runs on)"
        )
    if quantize not in QUANTIZATIONS:
        raise AsrbenchError(f"unknown --quantize '{quantize}' (valid: int8)")
    run_dir = rundir.require_run_dir(run_dir)
    onnxruntime = _require_onnx()
    loaded = load_model(rundir.checkpoint_path(run_dir, checkpoint))
    config, model = loaded.config, loaded.model.eval()
    search = cast("ASRModel", model).search_modes()[0]  # the model's own search: which graphs it needs
    if config.features.kind != "fbank":
        raise AsrbenchError(
            f"{config.model.name}: the exported front end computes fbank features; this run uses {config.features.kind}"
        )
    sherpa_layout = fmt == "sherpa-onnx"
    if sherpa_layout:
        predictor = getattr(getattr(model, "predictor", None), "kind", None)
        reason = sherpa.refusal(config.features, search, predictor, config.model.name)
        if reason is not None:
            raise AsrbenchError(reason)
        sherpa.token_symbols(loaded.tokenizer)  # a tokenizer tokens.txt cannot hold: refused before any graph
    stream = _stream_of(model, config, sherpa_layout, chunk_ms, left_chunks)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # written last: a half-written export has none
    if sherpa_layout:
        specs, extra = _sherpa_specs(model, search, loaded.cmvn, config.features.dim(), len(loaded.tokenizer), stream)
        if stream is not None:
            extra["streaming"] = _online_record(cast("TransducerModel", model), chunk_ms, *stream)
    else:
        specs, extra = _graph_specs(model, search, config.features.dim(), len(loaded.tokenizer))
    files, graphs, exporters, difference = _write_graphs(specs, out, quantize, onnxruntime, config.model.name)
    files += _write_front_end(out, loaded, folded=sherpa_layout)
    if sherpa_layout:
        files += _sherpa_files(out, files, loaded, search, extra)
        graphs = {("predictor" if role == "decoder" else role): name for role, name in graphs.items()}
        extra["layout"] = "sherpa-onnx"
    import onnx  # its version for the manifest (_require_onnx checked it is there)

    manifest = {
        "format": EXPORT_FORMAT,
        "search": search,  # the search the graphs serve: ctc, transducer or attention
        "graphs": graphs,  # role -> file: model (CTC); encoder, predictor, joiner; encoder, decoder, ctc_head
        **extra,
        # feature frames per encoder frame, as the encoder declares it: word times from alignments
        "subsampling_factor": subsampling_of(model),
        "model": config.model.name,
        "source_run": str(run_dir),
        "checkpoint": checkpoint,
        "config_hash": config.hash(),
        "data_dir": config.data.dir,
        "units": loaded.tokenizer.kind,
        "io": {
            name: {"inputs": spec.inputs, "outputs": spec.outputs, "dynamic": spec.dynamic}
            for name, spec in specs.items()
        },
        "exporter": exporters,
        "max_abs_difference_vs_pytorch": difference,
        "versions": {
            "asrbench": __version__,
            "git_commit": git_commit(),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "opset": {name: OPSET if used == "dynamo" else LEGACY_OPSET for name, used in exporters.items()},
        },
        "files": {name: _sha256(out / name) for name in files},
    }
    fileio.write_json(out / MANIFEST, manifest)
    return manifest
