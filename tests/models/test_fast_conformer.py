"""FastConformer (asrbench/models/fast_conformer.py): 8x lengths, padding, size, word times of an
8x model, chunked streaming through its 8x front end, and its export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import INPUT_DIM, TINY, VOCAB, tiny_options, write_tone_corpus

import asrbench.training.trainer
from asrbench.data.tokenizer import CharTokenizer
from asrbench.decoding import streaming
from asrbench.decoding.alignment import word_spans
from asrbench.decoding.greedy import ctc_greedy
from asrbench.decoding.search_table import align
from asrbench.deploy.export import export_run
from asrbench.deploy.transcribe import Transcriber
from asrbench.errors import AsrbenchError
from asrbench.models import build_model, count_parameters, default_options
from asrbench.models.fast_conformer import DepthwiseStridingSubsampling

STREAMING = {**TINY["fast_conformer"], "streaming": True, "max_train_chunk": 4}


def _model(name: str = "fast_conformer", seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, {**TINY["fast_conformer"], **options}, INPUT_DIM, VOCAB).eval()


def test_output_lengths_are_the_input_lengths_subsampled_8x_exactly():
    """T' = ceil(T / 8): three stride-2 convolutions with padding 1, each ceil(t / 2)."""
    model = _model()
    assert model.subsampling_factor == 8
    for length in range(1, 90):
        with torch.no_grad():
            log_probs, lengths = model(torch.randn(1, length, INPUT_DIM), torch.tensor([length]))
        assert log_probs.size(1) == int(lengths[0]) == -(-length // 8), f"T={length}"
    lengths = torch.arange(97, 0, -4)
    with torch.no_grad():
        log_probs, output_lengths = model(torch.randn(len(lengths), 97, INPUT_DIM), lengths)
    assert output_lengths.tolist() == DepthwiseStridingSubsampling.output_lengths(lengths).tolist()
    assert log_probs.size(1) == 13


@pytest.mark.parametrize("options", [{}, {"streaming": True, "conv_context": "chunk"}], ids=["offline", "chunked"])
def test_an_utterance_gives_the_same_outputs_alone_and_in_a_batch_padded_with_noise(options: dict):
    """Each subsampling stage zeroes what lies past an utterance, so its last frame reads the zero
    it reads alone (lengths 61 and 23 leave a stage with an odd length, whose next frame is padding)."""
    model = _model(**options)
    if options:
        model.set_chunk(2)
    lengths = [64, 61, 23]
    utterances = [torch.randn(length, INPUT_DIM) for length in lengths]
    batch = 3 * torch.randn(3, 64, INPUT_DIM)
    for index, utterance in enumerate(utterances):
        batch[index, : lengths[index]] = utterance
    with torch.no_grad():
        together, together_lengths = model(batch, torch.tensor(lengths))
        for index, utterance in enumerate(utterances):
            alone, alone_lengths = model(utterance.unsqueeze(0), torch.tensor([lengths[index]]))
            count = int(alone_lengths[0])
            assert int(together_lengths[index]) == count
            torch.testing.assert_close(together[index, :count], alone[0], atol=1e-5, rtol=1e-4)


def test_the_front_end_zeroes_padding_alike_with_and_without_autograd_and_leaves_its_input_alone():
    """Without autograd the stages' padded tails are zeroed in place, row by row; under autograd by one
    mask: both give the same bits, and neither writes into the caller's features."""
    torch.manual_seed(0)
    front = DepthwiseStridingSubsampling(INPUT_DIM, 16, 8)
    features = 3 * torch.randn(4, 61, INPUT_DIM)
    lengths = torch.tensor([61, 60, 23, 1])
    kept = features.clone()
    with torch.no_grad():
        in_place, _ = front(features, lengths)
    masked, _ = front(features.clone().requires_grad_(), lengths)
    assert torch.equal(in_place, masked.detach())
    assert torch.equal(features, kept)
    with torch.no_grad():  # the zeros reach the next stage: an utterance alone reads the same
        alone, _ = front(features[2:3, :23], lengths[2:3])
    torch.testing.assert_close(in_place[2, :3], alone[0], atol=1e-6, rtol=1e-5)


def test_the_default_size_has_the_documented_parameter_count():
    """At its defaults (the Conformer's d_model 144, 4 heads, 4 layers, ff_dim 576; kernel 9, 256
    subsampling channels), 80-dim features and 30 tokens: 2,442,574 parameters, of which the 8x
    front end is 508,048 (the Conformer's 4x front end at 32 channels: 97,264)."""
    model = build_model("fast_conformer", default_options("fast_conformer"), 80, 30)
    assert count_parameters(model) == 2_442_574
    assert count_parameters(model.subsampling) == 508_048
    assert model.encoder.conformer_layers[0].conv_module.sequential[2].kernel_size == (9,)
    conformer = build_model("conformer", {**default_options("conformer"), "kernel_size": 9}, 80, 30)
    # The same blocks: only the front ends differ.
    assert count_parameters(model) - count_parameters(model.subsampling) == count_parameters(
        conformer
    ) - count_parameters(conformer.subsampling)


@pytest.mark.parametrize("name", ["fast_conformer", "fast_conformer_transducer"])
def test_word_times_of_an_8x_model_are_its_frames_times_80_ms(name: str):
    """An output frame of an 8x encoder lasts 8 feature shifts, whatever the utterance's length
    (a T / T' ratio gave 20 / 3 shifts on a 20-frame utterance)."""
    torch.manual_seed(0)
    model = build_model(name, tiny_options(name), INPUT_DIM, VOCAB).eval()
    tokenizer = CharTokenizer.build(["AB C"])
    tokens = tokenizer.encode("A C")
    for length in (20, 61, 64):
        features = torch.randn(1, length, INPUT_DIM)
        alignment = align(model, features, torch.tensor([length]), [tokens])[0]
        assert alignment.frames == -(-length // 8) and alignment.subsampling == 8
        words = word_spans(alignment, tokenizer, frame_shift_seconds=0.01)
        assert [word.word for word in words] == ["A", "C"]
        first, last = alignment.spans[0][0], alignment.spans[-1][1]
        assert words[0].start == pytest.approx(first * 0.08) and words[-1].end == pytest.approx((last + 1) * 0.08)


def _streamed(model, features: torch.Tensor, chunk: int, left: int) -> torch.Tensor:
    state = model.init_stream(chunk, left)
    window, stride = model.chunk_window(chunk)
    pieces = []
    for start in range(0, features.size(1), stride):
        encoded, state = model.encode_chunk(features[:, start : start + window], state)
        pieces.append(encoded)
    return torch.cat(pieces, dim=1)


@pytest.mark.parametrize("conv_context", ["causal", "chunk"])
@pytest.mark.parametrize("chunk,left", [(1, -1), (2, -1), (4, 0), (3, 1)])
def test_chunk_by_chunk_encoding_equals_the_masked_pass(conv_context: str, chunk: int, left: int):
    """The 8x front end streams with one cached input frame per stage; 131 frames end in a chunk
    of odd length (3 frames past the last whole 8), which still gives its frame."""
    model = _model(**STREAMING, conv_context=conv_context)
    features = torch.randn(1, 131, INPUT_DIM)
    model.set_chunk(chunk, left)
    with torch.no_grad():
        masked, lengths = model.encode(features, torch.tensor([131]))
    streamed = _streamed(model, features, chunk, left)
    assert streamed.shape == masked.shape and int(lengths[0]) == masked.size(1) == 17
    torch.testing.assert_close(streamed, masked, atol=1e-5, rtol=1e-4)


def test_at_full_context_the_chunked_model_is_the_offline_one_and_a_chunk_sees_no_future():
    chunked = _model(**STREAMING, conv_context="chunk")
    offline = _model(**{**STREAMING, "streaming": False})
    offline.load_state_dict(chunked.state_dict())
    features = torch.randn(2, 77, INPUT_DIM)
    lengths = torch.tensor([77, 50])
    changed = features.clone()
    changed[:, 16:] += torch.randn_like(changed[:, 16:])  # after chunk 0 (2 frames: feature frames 0..15)
    with torch.no_grad():
        torch.testing.assert_close(chunked.encode(features, lengths)[0], offline.encode(features, lengths)[0])
        chunked.set_chunk(2)
        before, after = chunked.encode(features, lengths)[0], chunked.encode(changed, lengths)[0]
    torch.testing.assert_close(before[:, :2], after[:, :2])
    assert not torch.allclose(before[:, 2:], after[:, 2:])


def test_chunks_and_latency_are_counted_in_80_ms_frames():
    model = _model(**STREAMING)
    assert streaming.chunk_frames(model, 320, 10.0) == 4
    with pytest.raises(AsrbenchError, match="multiple of the encoder frame, 80 ms"):
        streaming.chunk_frames(model, 40, 10.0)
    assert streaming.lookahead_frames(model) == 0  # a chunk reads its own 8c frames
    assert streaming.algorithmic_latency_ms(320, 10.0, 25.0, streaming.lookahead_frames(model)) == 335.0


@pytest.mark.parametrize("length", [209, 197])
def test_greedy_streaming_ctc_gives_the_masked_pass_tokens_to_the_last_frame(length: int):
    """209 frames end in a chunk of 1 frame and 197 in one of 5: each gives the output frame the
    masked pass has there (the 4x front end needs 7 frames for one; this one any)."""
    model = _model(**STREAMING)
    recognizer = streaming.make_recognizer(model, chunk=2)
    features = torch.randn(1, length, INPUT_DIM)
    model.set_chunk(2)
    with torch.no_grad():
        log_probs, lengths = model(features, torch.tensor([length]))
    done = []
    for start in range(0, length, 10):
        done += recognizer.accept(features[0, start : start + 10])
    done += recognizer.finish()
    assert recognizer.tokens == ctc_greedy(log_probs, lengths)[0] and recognizer.frames == int(lengths[0])
    assert [r.last_frame for r in done[:3]] == [15, 31, 47]  # windows of 16 frames, stride 16
    assert done[-1].final and recognizer.alignment(length).subsampling == 8
    transducer = build_model(
        "fast_conformer_transducer", {**STREAMING, "predictor_dim": 16, "joiner_dim": 16}, INPUT_DIM, VOCAB
    )
    assert streaming.streams(transducer) and streaming.streaming_encoder(transducer) is transducer.encoder


@pytest.mark.slow
def test_a_fast_conformer_run_exports_and_its_export_transcribes_like_it(tmp_path: Path):
    """``asrbench export`` of a fast_conformer CTC run: the graph matches PyTorch, the manifest
    declares the 8x frame rate, and the export gives the run's text and word times."""
    data_dir = write_tone_corpus(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{spec_augment: false}}
train: {{epochs: 3, batch_frames: 400, lr: 5.0e-3, warmup_steps: 5}}
models:
  fast_conformer: {{d_model: 16, num_heads: 2, num_layers: 1, ff_dim: 32, subsample_channels: 8}}
""")
    run = tmp_path / "run"
    asrbench.training.trainer.train(recipe, "fast_conformer", run, seed=0)
    manifest = export_run(run, tmp_path / "exported")
    assert manifest["subsampling_factor"] == 8 and manifest["max_abs_difference_vs_pytorch"]["model.onnx"] < 1e-4
    audio = [Path(json.loads(line)["audio"]) for line in (data_dir / "test.jsonl").read_text().splitlines()][:3]
    from_run = list(Transcriber(run, device="cpu").transcribe(audio))
    from_export = list(Transcriber(tmp_path / "exported").transcribe(audio))
    assert [t.text for t in from_export] == [t.text for t in from_run]
    for ours, theirs in zip(from_export, from_run, strict=True):
        times = [(word["start"], word["end"]) for segment in ours.segments for word in segment.words]
        assert times == [(word["start"], word["end"]) for segment in theirs.segments for word in segment.words]
