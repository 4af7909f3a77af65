"""Streaming (asrbench/decoding/streaming.py and the Conformer's chunked mode): chunked attention masks,
chunk-by-chunk encoding equal to the masked pass, the streaming front end, the latency replay,
and end to end on a small streaming Conformer: decode --chunk-ms, transcribe --stream."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from helpers import INPUT_DIM, TINY, VOCAB, run_main, streamed_encoding

from asrbench.data.fbank import FeatureExtractor
from asrbench.data.features import GlobalCMVN
from asrbench.decoding import streaming
from asrbench.decoding.decode import decode
from asrbench.decoding.greedy import ctc_greedy
from asrbench.decoding.search_table import align
from asrbench.decoding.transducer_search import greedy_search
from asrbench.deploy.transcribe import Transcriber
from asrbench.errors import AsrbenchError
from asrbench.models import build_model
from asrbench.models.chunked import chunk_mask
from asrbench.recipe.config import FeatureConfig
from asrbench.studies.compare import collect, render

STREAMING = {**TINY["conformer"], "streaming": True, "max_train_chunk": 4}


def _model(name: str = "conformer", seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, {**TINY[name], **options}, INPUT_DIM, VOCAB).eval()


def test_chunk_masks_hide_later_chunks_and_far_left_ones():
    mask = chunk_mask(6, 2, -1, torch.device("cpu"))
    # Frame 0 and 1 (chunk 0) see chunk 0 only; frames 4, 5 see everything.
    assert mask[0].tolist() == [False, False, True, True, True, True]
    assert mask[1].tolist() == mask[0].tolist()
    assert not mask[5].any()
    limited = chunk_mask(6, 2, 1, torch.device("cpu"))
    assert limited[5].tolist() == [True, True, False, False, False, False]  # chunk 2 sees chunks 1, 2
    assert chunk_mask(6, 0, -1, torch.device("cpu")) is None


def test_the_conformer_blocks_compute_what_torchaudio_computes():
    model = _model()
    features = torch.randn(1, 90, INPUT_DIM)
    lengths = torch.tensor([90])
    with torch.no_grad():
        ours, _ = model.encode(features, lengths)
        x, out_lengths = model.subsampling(features, lengths)
        reference, _ = model.encoder(model.positions(x), out_lengths)
    torch.testing.assert_close(ours, reference)


ATTENTION_STREAMS = {
    "conformer": STREAMING,
    "conformer-chunkconv": {**STREAMING, "conv_context": "chunk"},
    "transformer": {**TINY["transformer"], "streaming": True, "max_train_chunk": 4},
    "transformer-conv": {**TINY["transformer"], "streaming": True, "positional": "conv", "conv_positional_kernel": 5},
}


@pytest.mark.parametrize("name", list(ATTENTION_STREAMS))
@pytest.mark.parametrize("chunk,left", [(1, -1), (2, -1), (4, -1), (4, 0), (3, 1), (5, 2)])
def test_chunk_by_chunk_encoding_equals_the_masked_pass(name: str, chunk: int, left: int):
    model = _model(name.split("-")[0], **ATTENTION_STREAMS[name])
    features = torch.randn(1, 131, INPUT_DIM)
    model.set_chunk(chunk, left)
    with torch.no_grad():
        masked, lengths = model.encode(features, torch.tensor([131]))
    streamed = streamed_encoding(model, features, chunk, left)
    assert streamed.shape == masked.shape and int(lengths[0]) == masked.size(1)
    torch.testing.assert_close(streamed, masked, atol=1e-5, rtol=1e-4)


def test_the_chunked_convolution_at_full_context_is_the_ordinary_one():
    """conv_context: chunk changes no weights and, at full context, no output: the offline model."""
    chunked = _model("conformer", **{**STREAMING, "conv_context": "chunk"}).eval()
    offline = _model("conformer", **{**STREAMING, "streaming": False}).eval()
    offline.load_state_dict(chunked.state_dict())
    features = torch.randn(2, 77, INPUT_DIM)
    lengths = torch.tensor([77, 50])
    with torch.no_grad():
        torch.testing.assert_close(chunked.encode(features, lengths)[0], offline.encode(features, lengths)[0])
        chunked.set_chunk(3)
        assert not torch.allclose(chunked.encode(features, lengths)[0], offline.encode(features, lengths)[0])
    with pytest.raises(AsrbenchError, match="model.conv_context must be one of causal, chunk, got 'future'"):
        _model("conformer", **{**STREAMING, "conv_context": "future"})


@pytest.mark.parametrize(
    "name,option", [("lstm", {"bidirectional": False}), ("gru", {"bidirectional": False}), ("cnn", {"causal": True})]
)
def test_recurrent_and_causal_convolution_encoders_stream_with_their_state(name: str, option: dict):
    model = _model(name, **option)
    features = torch.randn(1, 97, INPUT_DIM)
    with torch.no_grad():
        whole, _ = model.encode(features, torch.tensor([97]))
    for chunk in (1, 3, 8):
        torch.testing.assert_close(streamed_encoding(model, features, chunk, -1), whole, atol=1e-5, rtol=1e-4)
    assert streaming.streams(model)
    with pytest.raises(ValueError, match="left chunks do not apply"):
        model.set_chunk(2, 1)
    offline = _model(name)  # bidirectional, or convolutions centred on the frame
    assert streaming.streaming_encoder(offline) is None
    with pytest.raises(ValueError, match=next(iter(option))):
        offline.set_chunk(2)


@pytest.mark.parametrize("name", list(ATTENTION_STREAMS))
def test_a_chunk_sees_no_future_and_the_causal_convolution_no_right_context(name: str):
    """Changing frames after a chunk must not change that chunk's outputs (and does change later
    ones), so the chunked model's outputs are available when the chunk has arrived."""
    model = _model(name.split("-")[0], **ATTENTION_STREAMS[name])
    model.set_chunk(2)
    features = torch.randn(1, 81, INPUT_DIM)
    changed = features.clone()
    changed[:, 4 * 8 + 3 :] += torch.randn_like(changed[:, 4 * 8 + 3 :])  # after chunk 3 (frames 0..7)'s window
    with torch.no_grad():
        before, _ = model.encode(features, torch.tensor([81]))
        after, _ = model.encode(changed, torch.tensor([81]))
    torch.testing.assert_close(before[:, :8], after[:, :8])
    assert not torch.allclose(before[:, 8:], after[:, 8:])
    full = _model(name.split("-")[0])  # full context: the first frames depend on the end
    with torch.no_grad():
        assert not torch.allclose(
            full.encode(features, torch.tensor([81]))[0][:, :8], full.encode(changed, torch.tensor([81]))[0][:, :8]
        )


def test_a_chunked_utterance_decodes_the_same_alone_and_in_a_padded_batch():
    model = _model(**STREAMING)
    model.set_chunk(3)
    short, long = torch.randn(1, 50, INPUT_DIM), torch.randn(1, 90, INPUT_DIM)
    batch = torch.zeros(2, 90, INPUT_DIM)
    batch[0, :50], batch[1] = short[0], long[0]
    with torch.no_grad():
        alone, n = model.encode(short, torch.tensor([50]))
        together, lengths = model.encode(batch, torch.tensor([50, 90]))
    torch.testing.assert_close(together[0, : int(n[0])], alone[0], atol=1e-5, rtol=1e-4)


def test_dynamic_chunk_training_draws_full_context_and_small_chunks():
    model = _model(**STREAMING)
    torch.manual_seed(0)
    drawn = [model._training_chunk(60) for _ in range(400)]
    chunks = [chunk for chunk, _ in drawn]
    assert 0.35 < chunks.count(0) / len(chunks) < 0.65  # full context in about half the batches
    assert set(chunks) - {0} == set(range(1, STREAMING["max_train_chunk"] + 1))
    model.train()
    log_probs, lengths = model(torch.randn(2, 80, INPUT_DIM), torch.tensor([80, 60]))
    assert log_probs.shape[:2] == (2, 19) and torch.isfinite(log_probs).all()


def test_models_not_trained_to_stream_refuse_chunks():
    model = _model()
    with pytest.raises(ValueError, match="streaming: true"):
        model.set_chunk(4)
    with pytest.raises(AsrbenchError, match="not trained to stream"):
        streaming.require_streaming(model, "conformer")
    assert streaming.streaming_encoder(_model("lstm")) is None
    transducer = _model("conformer_transducer", streaming=True)
    assert streaming.streaming_encoder(transducer) is transducer.encoder
    assert streaming.streams(transducer) and streaming.streams(_model(**STREAMING))
    assert not streaming.streams(_model("conformer_transducer"))
    aed = _model("conformer_aed", streaming=True)  # masked chunks; no streaming search
    assert streaming.streaming_encoder(aed) is aed.encoder and not streaming.streams(aed)


@pytest.mark.parametrize(
    "name,option",
    [
        ("conformer", {"streaming": True}),
        ("lstm", {"bidirectional": False}),
        ("cnn", {"causal": True}),
        ("transformer", {"streaming": True}),
    ],
)
def test_a_window_too_short_for_one_output_frame_gives_none(name: str, option: dict):
    model = _model(name, **option)
    state = model.init_stream(2)
    encoded, state = model.encode_chunk(torch.randn(1, 6, INPUT_DIM), state)
    assert encoded.shape == (1, 0, model.encoder_dim) and state.offset == 0
    encoded, state = model.encode_chunk(torch.randn(1, 11, INPUT_DIM), state)
    assert encoded.shape == (1, 2, model.encoder_dim) and state.offset == 2


def test_chunk_sizes_are_whole_encoder_frames():
    model = _model(**STREAMING)
    assert streaming.chunk_frames(model, 320, 10.0) == 8
    assert streaming.chunk_frames(model, 40, 10.0) == 1
    for bad in (0, -40, 100):
        with pytest.raises(AsrbenchError, match="multiple of the encoder frame, 40 ms"):
            streaming.chunk_frames(model, bad, 10.0)
    assert streaming.algorithmic_latency_ms(320, 10.0, 25.0, streaming.lookahead_frames(model)) == 365.0


def test_the_streaming_front_end_gives_the_whole_utterance_frames():
    config = FeatureConfig(sample_rate=8000, num_mel_bins=20)
    extractor = FeatureExtractor(config)
    waveform = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, 8000 * 2 + 123).astype(np.float32))
    cmvn = GlobalCMVN(torch.full((20,), 2.0), torch.full((20,), 3.0))
    whole = cmvn(torch.from_numpy(extractor(waveform).numpy().astype(np.float16).astype(np.float32)))
    front_end = streaming.StreamingFrontEnd(extractor, cmvn, "float16")
    pieces = [front_end.accept(waveform[start : start + 517]) for start in range(0, waveform.numel(), 517)]
    streamed = torch.cat([piece for piece in pieces if piece.numel()])
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole, atol=2e-3, rtol=1e-3)  # float16 steps, identical nearly all
    assert (streamed == whole).float().mean() > 0.99


def test_greedy_streaming_ctc_gives_the_masked_pass_tokens():
    model = _model(**STREAMING)
    recognizer = streaming.make_recognizer(model, chunk=2)
    assert isinstance(recognizer, streaming.StreamingCTC)
    features = torch.randn(1, 209, INPUT_DIM)  # 25 whole windows and a last, shorter chunk
    model.set_chunk(2)
    with torch.no_grad():
        log_probs, lengths = model(features, torch.tensor([209]))
    expected = ctc_greedy(log_probs, lengths)[0]
    done = []
    for start in range(0, 209, 10):  # frames arrive 10 at a time
        done += recognizer.accept(features[0, start : start + 10])
    done += recognizer.finish()
    assert recognizer.tokens == expected and recognizer.frames == int(lengths[0])
    assert [r.last_frame for r in done[:3]] == [10, 18, 26]  # windows of 11 frames, stride 8
    assert done[-1].final and not any(r.final for r in done[:-1])
    assert sum(len(r.tokens) for r in done) == len(expected)


@pytest.mark.parametrize("predictor", ["stateless", "lstm"])
def test_greedy_streaming_transducer_gives_the_masked_pass_tokens_and_times(predictor: str):
    """Chunk by chunk, with the predictor's state carried over, the transducer's greedy search
    gives the batch search's tokens over one chunked pass; its alignment is the Viterbi one."""
    torch.manual_seed(3)
    model = build_model(
        "conformer_transducer",
        {**TINY["conformer_transducer"], "streaming": True, "predictor": predictor, "max_symbols_per_frame": 2},
        INPUT_DIM,
        VOCAB,
    ).eval()
    with torch.no_grad():  # a joiner that emits often, so the search crosses chunk ends mid-symbols
        model.joiner.out.bias[0] -= 3.0
    recognizer = streaming.make_recognizer(model, chunk=3)
    assert isinstance(recognizer, streaming.StreamingTransducer)
    features = torch.randn(1, 157, INPUT_DIM)
    model.encoder.set_chunk(3)
    with torch.no_grad():
        encoded, lengths = model.encode(features, torch.tensor([157]))
    expected = greedy_search(model, encoded, lengths, 2)[0].token_ids
    assert len(expected) > 10
    done = []
    for start in range(0, 157, 7):
        done += recognizer.accept(features[0, start : start + 7])
    done += recognizer.finish()
    assert recognizer.tokens == expected and recognizer.frames == int(lengths[0])
    assert [token for r in done for token in r.tokens] == expected
    alignment = recognizer.alignment(157)
    whole = align(model, features, torch.tensor([157]), [expected])[0]
    assert alignment.spans == whole.spans and alignment.frames == whole.frames
    # Quiet frames count from the last symbol, as endpointing needs.
    assert recognizer.trailing_blanks == int(lengths[0]) - 1 - recognizer.search.token_frames[0][-1]


def test_the_replay_waits_for_arrival_and_for_the_chunk_before():
    results = [
        streaming.ChunkResult(10, [3], 0.05, False),
        streaming.ChunkResult(18, [], 0.2, False),
        streaming.ChunkResult(20, [4], 0.01, True),
    ]
    times = streaming.simulate(results, duration=0.3, shift=160, size=400, sample_rate=16000)
    # Frame 10 arrives at (1600 + 400) / 16000 = 0.125 s; frame 18 at 0.205 s; the end at 0.3 s.
    assert times.done == pytest.approx([0.175, 0.405, 0.415])
    assert streaming.first_and_last(times) == (pytest.approx(0.175), pytest.approx(0.415))


def test_latency_summary_reports_percentiles_in_milliseconds():
    summary = streaming.latency_summary([0.1, 0.2, 0.3], [0.05, 0.15, 0.25], [0.01] * 10, 2.0, 320, -1, 365.0, 3, 3)
    assert summary["first_token_latency_ms_p50"] == 200.0 and summary["final_latency_ms_p90"] == 230.0
    assert summary["rtf"] == 0.05 and summary["chunk_compute_ms_p90"] == 10.0
    assert summary["streamed_equals_chunked_pass"] == 3 and summary["algorithmic_latency_ms"] == 365.0


# --- end to end on a small streaming Conformer trained on the tone corpus ----------------------


def _rows(data_dir: Path, split: str = "test") -> list[dict]:
    return [json.loads(line) for line in (data_dir / f"{split}.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_decode_with_chunks_records_the_latency_figures(streaming_run):
    run, _ = streaming_run
    full = decode(run, "test", threads=1).to_dict()
    result = decode(run, "test", threads=1, chunk_ms=80).to_dict()
    assert (run / "decode" / "test-chunk80" / "result.json").exists()
    figures = result["streaming"]
    assert figures["chunk_ms"] == 80 and figures["algorithmic_latency_ms"] == 125.0  # 8 kHz: 80 + 30 + 15
    assert figures["streamed_equals_chunked_pass"] == figures["utterances"] == 4
    for key in ("chunk_compute_ms_p50", "rtf", "first_token_latency_ms_p90", "final_latency_ms_p90"):
        assert figures[key] is not None
    assert 0 < figures["rtf"] < 1 and full["streaming"] is None
    assert figures["full_context_wer"] == full["wer"]  # next to each other in result.json and compare
    assert result["wer"] <= full["wer"] + 25.0  # it learned to stream (tones: both near 0)
    rows = collect([run], split="test-chunk80")
    assert rows[0]["chunk_ms"] == 80 and rows[0]["final_latency_ms_p90"] == figures["final_latency_ms_p90"]
    table = render(rows, "markdown")
    assert "| chunk ms | full-context WER % | algorithmic latency ms | final latency p90 ms |" in table
    assert "chunk ms" not in render(collect([run], split="test"), "markdown")


@pytest.mark.slow
def test_transcribe_stream_gives_the_chunked_pass_text(streaming_run, tmp_path: Path):
    run, data_dir = streaming_run
    decode(run, "test", chunk_ms=160, left_chunks=2)
    chunked = {
        json.loads(line)["id"]: json.loads(line)["hyp"]
        for line in (run / "decode" / "test-chunk160-left2" / "hypotheses.jsonl").read_text().splitlines()
    }
    rows = _rows(data_dir)
    options = streaming.StreamOptions(chunk_ms=160, left_chunks=2)
    transcripts = list(Transcriber(run, device="cpu", stream=options).transcribe([Path(r["audio"]) for r in rows]))
    assert [t.text for t in transcripts] == [chunked[r["id"]] for r in rows]
    for transcript in transcripts:
        for segment in transcript.segments:
            assert [w["word"] for w in segment.words] == segment.text.split()
            assert all(segment.start <= w["start"] < w["end"] <= segment.end + 0.05 for w in segment.words)


@pytest.mark.slow
def test_a_stream_ends_segments_at_pauses_and_at_the_longest_segment(streaming_run, tmp_path: Path):
    run, data_dir = streaming_run
    pieces, texts = [], []
    for row in _rows(data_dir):
        samples, rate = soundfile.read(row["audio"])
        pieces += [samples, np.random.default_rng(0).normal(0, 0.003, int(1.5 * rate))]
        texts.append(row["text"])
    path = tmp_path / "long.wav"
    soundfile.write(path, np.concatenate(pieces), rate, subtype="PCM_16")
    paused = streaming.StreamOptions(chunk_ms=80, endpoint_silence=0.6, block_seconds=1.0)
    transcript = next(iter(Transcriber(run, device="cpu", stream=paused).transcribe([path])))
    # A segment ends at each 1.5 s pause (and at a long pause inside an utterance): the words of
    # the segments are the utterances' words, each segment's words inside it.
    assert len(transcript.segments) >= len(texts)
    assert transcript.text.split() == " ".join(texts).split()
    for segment in transcript.segments:
        assert all(segment.start <= w["start"] < w["end"] <= segment.end + 0.05 for w in segment.words)
    never = streaming.StreamOptions(chunk_ms=80, endpoint_silence=0, max_segment=0)
    assert len(next(iter(Transcriber(run, device="cpu", stream=never).transcribe([path]))).segments) == 1
    starts = [s.start for s in transcript.segments]
    assert starts == sorted(starts) and transcript.segments[-1].end <= transcript.duration + 1e-6
    capped = streaming.StreamOptions(chunk_ms=80, endpoint_silence=0, max_segment=1.0)
    capped_transcript = next(iter(Transcriber(run, device="cpu", stream=capped).transcribe([path])))
    assert all(s.end - s.start <= 1.0 + 0.2 for s in capped_transcript.segments)
    assert len(capped_transcript.segments) >= 4


@pytest.mark.slow
def test_the_stream_command_shows_partials_and_refuses_what_it_cannot_do(streaming_run, tone_run, monkeypatch, capsys):
    run, data_dir = streaming_run
    audio = _rows(data_dir)[1]["audio"]
    code, out, err = run_main(monkeypatch, capsys, "transcribe", str(run), audio, "--stream", "--chunk-ms", "80")
    assert code == 0 and out.count("\t") == 1
    assert any("s  " in line for line in err.splitlines())  # partial results as they grew
    for args, message in [(["--beam", "4"], "--stream decodes greedily"), (["--chunk-ms", "100"], "multiple of")]:
        code, _, err = run_main(monkeypatch, capsys, "transcribe", str(run), audio, "--stream", *args)
        assert code == 2 and message in err and "Traceback" not in err
    cnn_run, _ = tone_run
    code, _, err = run_main(monkeypatch, capsys, "transcribe", str(cnn_run), audio, "--stream")
    assert code == 2 and "not trained to stream" in err
    code, _, err = run_main(monkeypatch, capsys, "decode", str(cnn_run), "--chunk-ms", "80")
    assert code == 2 and "not trained to stream" in err


# --- end to end on a small streaming Conformer transducer ------------------------------------


@pytest.fixture(scope="module")
def streaming_transducer_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run dir, data dir): a small conformer transducer with a streaming encoder (chunked
    attention, the dynamic chunk convolution), trained on the tone corpus."""
    from helpers import write_tone_corpus

    import asrbench.training.trainer

    root = tmp_path_factory.mktemp("streaming_transducer")
    data_dir = write_tone_corpus(root, pauses=(0.1, 0.4, 0.8))
    recipe = root / "recipe.yaml"
    recipe.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{spec_augment: false}}
train: {{epochs: 30, batch_frames: 400, lr: 5.0e-3, warmup_steps: 5}}
models:
  conformer_transducer: {{d_model: 32, num_heads: 2, num_layers: 2, ff_dim: 64, kernel_size: 5,
                          subsample_channels: 4, streaming: true, conv_context: chunk, max_train_chunk: 4,
                          predictor_dim: 32, joiner_dim: 32}}
""")
    run = root / "run"
    asrbench.training.trainer.train(recipe, "conformer_transducer", run, seed=0)
    return run, data_dir


@pytest.mark.slow
def test_a_streaming_transducer_streams_what_its_chunked_pass_decodes(streaming_transducer_run):
    """decode --chunk-ms streams every utterance through the transducer search and measures the
    latencies; transcribe --stream gives the chunked pass's text, with word times in segments."""
    run, data_dir = streaming_transducer_run
    full = decode(run, "test", threads=1).to_dict()
    result = decode(run, "test", threads=1, chunk_ms=160).to_dict()
    figures = result["streaming"]
    assert figures["streamed_equals_chunked_pass"] == figures["utterances"] == 4
    assert figures["final_latency_ms_p90"] is not None and 0 < figures["rtf"] < 1
    assert figures["full_context_wer"] == full["wer"]
    assert result["wer"] <= 50.0  # it learned the tones at 160 ms chunks
    chunked = {
        json.loads(line)["id"]: json.loads(line)["hyp"]
        for line in (run / "decode" / "test-chunk160" / "hypotheses.jsonl").read_text().splitlines()
    }
    rows = _rows(data_dir)
    transcripts = list(
        Transcriber(run, device="cpu", stream=streaming.StreamOptions(chunk_ms=160)).transcribe(
            [Path(r["audio"]) for r in rows]
        )
    )
    assert [t.text for t in transcripts] == [chunked[r["id"]] for r in rows]
    assert any(t.text for t in transcripts)
    for transcript in transcripts:
        for segment in transcript.segments:
            assert [w["word"] for w in segment.words] == segment.text.split()
            assert all(segment.start <= w["start"] < w["end"] <= segment.end + 0.05 for w in segment.words)
            assert all(0.0 <= w["confidence"] <= 1.0 for w in segment.words)
