"""sherpa-onnx's online conformer encoder around asrbench's chunked conformer: chunk by chunk with
its fixed-shape caches, it gives the masked pass's outputs (``decode --chunk-ms --left-chunks``)."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY

from asrbench.data.features import GlobalCMVN
from asrbench.deploy.sherpa import SherpaStreamingEncoder, streaming_refusal
from asrbench.models import build_model

DIM, VOCAB = 80, 9


def streaming_transducer(conv_context: str, seed: int = 0):
    torch.manual_seed(seed)
    options = {**TINY["conformer_transducer"], "streaming": True, "conv_context": conv_context}
    return build_model("conformer_transducer", options, DIM, VOCAB).eval()


def cmvn(seed: int = 1) -> GlobalCMVN:
    generator = torch.Generator().manual_seed(seed)
    return GlobalCMVN(torch.randn(DIM, generator=generator) * 2 + 8, torch.rand(DIM, generator=generator) + 0.5)


def stream(graph: SherpaStreamingEncoder, features: torch.Tensor, start: torch.Tensor | None = None):
    """Run ``graph`` over (N, T, F) as sherpa-onnx does: windows of T = 4c + 3 frames advancing 4c,
    zero caches, ``processed_frames`` counted from ``start`` (N,) -> (N, chunks * c, J)."""
    encoder = graph.encoder
    batch = features.size(0)
    layers, width = len(encoder.encoder.conformer_layers), encoder.encoder_dim
    attn = torch.zeros(layers, graph.left, batch, width)
    conv = torch.zeros(layers, graph.kernel - 1, batch, width)
    processed = torch.zeros(batch, dtype=torch.int64) if start is None else start.clone()
    window, advance = encoder.chunk_window(graph.chunk)
    outputs = []
    with torch.no_grad():
        for begin in range(0, features.size(1) - window + 1, advance):
            out, attn, conv = graph(features[:, begin : begin + window], attn, conv, processed)
            outputs.append(out)
            processed = processed + advance
    return torch.cat(outputs, dim=1)


def masked_pass(model, features: torch.Tensor, chunk: int, left_chunks: int, normalizer: GlobalCMVN):
    model.encoder.set_chunk(chunk, left_chunks)
    with torch.no_grad():
        normalized = (features - normalizer.mean) / normalizer.std
        encoded, _ = model.encode(normalized, torch.full((features.size(0),), features.size(1)))
    return model.joiner.encoder_proj(encoded)


@pytest.mark.parametrize("conv_context", ["causal", "chunk"])
@pytest.mark.parametrize(("chunk", "left_chunks"), [(2, 1), (3, 4)])
def test_chunk_by_chunk_equals_the_masked_pass(conv_context: str, chunk: int, left_chunks: int):
    model, normalizer = streaming_transducer(conv_context), cmvn()
    graph = SherpaStreamingEncoder(model, normalizer, chunk, left_chunks).eval()
    features = torch.randn(2, 4 * chunk * 9 + 3, DIM) * 3 + 8  # nine whole chunks, past the left context
    streamed = stream(graph, features)
    expected = masked_pass(model, features, chunk, left_chunks, normalizer)[:, : streamed.size(1)]
    assert streamed.shape == (2, 9 * chunk, model.joiner.encoder_proj.out_features)
    torch.testing.assert_close(streamed, expected, atol=2e-5, rtol=1e-5)
    # More left context is another model: the cache does bound what attention sees.
    wider = masked_pass(model, features, chunk, left_chunks + 2, normalizer)[:, : streamed.size(1)]
    assert (wider - streamed).abs().max() > 1e-3


def test_streams_of_a_batch_keep_their_own_positions_and_caches():
    """Rows at different points of their streams (sherpa-onnx batches streams that started at
    different times) each get what they would alone."""
    model, normalizer = streaming_transducer("causal"), cmvn()
    graph = SherpaStreamingEncoder(model, normalizer, 2, 2).eval()
    features = torch.randn(1, 4 * 2 * 6 + 3, DIM) * 3 + 8
    alone = stream(graph, features)
    # The same stream as row 1 of a batch whose row 0 is 10 chunks further into another stream.
    other = torch.randn(1, features.size(1), DIM) * 3 + 8
    together = stream(graph, torch.cat([other, features]), start=torch.tensor([80, 0]))
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-5)
    later = stream(graph, other, start=torch.tensor([80]))
    torch.testing.assert_close(together[:1], later, atol=1e-5, rtol=1e-5)


def test_what_the_online_layout_cannot_hold_is_refused():
    streaming = streaming_transducer("causal")
    assert streaming_refusal(streaming, "conformer_transducer", 2) is None
    assert "--left-chunks 1 or more" in streaming_refusal(streaming, "conformer_transducer", -1)
    offline = build_model("conformer_transducer", TINY["conformer_transducer"], DIM, VOCAB)
    assert "streaming: true" in streaming_refusal(offline, "conformer_transducer", 2)
    ctc = build_model("conformer", {**TINY["conformer"], "streaming": True}, DIM, VOCAB)
    assert "conformer transducer" in streaming_refusal(ctc, "conformer", 2)
