"""`features.preset: sherpa` and `asrbench export --format sherpa-onnx`: the features equal the
kaldi-native-fbank package's, and the real sherpa-onnx package loads the exports unmodified and
transcribes as asrbench does on the same files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import TINY, run_main, write_tone_corpus, write_tone_recipe

from asrbench.data.audio import load_audio
from asrbench.data.fbank import FeatureExtractor
from asrbench.data.phones import PhoneTokenizer
from asrbench.data.subword import SentencePieceTokenizer, train_sentencepiece
from asrbench.data.tokenizer import CharTokenizer
from asrbench.decoding.decode import decode
from asrbench.decoding.searchers import DecodeOptions
from asrbench.decoding.streaming import StreamingFrontEnd
from asrbench.deploy.export import export_run
from asrbench.deploy.numpy_fbank import NumpyFbank
from asrbench.deploy.onnx_runtime import load_export
from asrbench.deploy.sherpa import token_symbols
from asrbench.deploy.transcribe import Transcriber
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import PRESETS, FeatureConfig, ModelSpec, RunConfig, with_overrides
from asrbench.runs.checkpoint import load_model
from asrbench.runs.rundir import checkpoint_path

DATA_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import sherpa_bench  # noqa: E402  (benchmarks/ is not a package)


def _knf(waveform: np.ndarray, rate: int, mels: int) -> np.ndarray:
    """sherpa-onnx's front end: kaldi-native-fbank with FeatureExtractorConfig's defaults."""
    options = knf.FbankOptions()
    options.frame_opts.samp_freq = rate
    options.frame_opts.dither = 0.0
    options.frame_opts.snip_edges = False
    options.mel_opts.num_bins = mels
    options.mel_opts.low_freq = 20.0
    options.mel_opts.high_freq = -400.0
    fbank = knf.OnlineFbank(options)
    fbank.accept_waveform(rate, waveform.tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)]).reshape(-1, mels)


def _speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Voiced harmonics with a moving pitch, noise bursts and silence: energy in every band."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 40 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30)) * (np.sin(2 * np.pi * 2 * t) > 0)
    noise = rng.normal(0, 0.3, t.size) * (np.sin(2 * np.pi * 0.7 * t) > 0.6)
    return (0.2 * (voiced + noise) / 3).astype(np.float32)


def test_the_sherpa_preset_computes_kaldi_native_fbank_s_features_on_recorded_speech():
    files = sorted((DATA_ROOT / "yesno").rglob("*.wav"))[:4]
    assert files, f"yesno corpus expected under {DATA_ROOT} (set ASRBENCH_DATA_ROOT)"
    extractor = FeatureExtractor(FeatureConfig(sample_rate=8000, num_mel_bins=23, preset="sherpa"))
    for path in files:
        waveform, rate = sf.read(path, dtype="float32")
        assert rate == 8000
        expected, got = _knf(waveform, rate, 23), extractor(torch.from_numpy(waveform)).numpy()
        assert got.shape == expected.shape, path.name
        assert np.abs(got - expected).max() <= 1e-3, path.name


@pytest.mark.parametrize("samples", [81, 159, 160, 239, 240, 401, 1999, 20_000])
def test_centred_frames_and_reflected_edges_match_kaldi_native_fbank_at_16k(samples: int):
    waveform = _speech_like(samples / 16000, 16000, seed=samples)
    extractor = FeatureExtractor(FeatureConfig(preset="sherpa"))
    expected, got = _knf(waveform, 16000, 80), extractor(torch.from_numpy(waveform)).numpy()
    assert got.shape == expected.shape == ((samples + 80) // 160, 80)
    assert np.abs(got - expected).max() <= 1e-3


def test_the_default_preset_is_unchanged_and_the_two_differ():
    waveform = torch.from_numpy(_speech_like(1.0, 16000, seed=0))
    kaldi = FeatureExtractor(FeatureConfig())(waveform)
    sherpa = FeatureExtractor(FeatureConfig(preset="sherpa"))(waveform)
    assert kaldi.shape == (1 + (16000 - 400) // 160, 80) and sherpa.shape == (100, 80)
    assert PRESETS["kaldi"].snip_edges and PRESETS["kaldi"].scale == 32768.0
    # int16 scaling moves every log-energy by log(32768^2) where the banks overlap (frame 1 of one is 0 of the other)
    assert abs(float((kaldi[0, :40] - sherpa[1, :40]).mean()) - 2 * np.log(32768.0)) < 0.05


def test_the_numpy_front_end_equals_the_extractor_in_the_sherpa_convention():
    config = FeatureConfig(preset="sherpa")
    extractor = FeatureExtractor(config)
    convention = PRESETS["sherpa"]
    frontend = NumpyFbank(
        16000, 25.0, 10.0, extractor.banks.to_dense().numpy(), snip_edges=convention.snip_edges, scale=convention.scale
    )
    for samples in (100, 401, 12345):
        waveform = _speech_like(samples / 16000, 16000, seed=1)
        expected, got = extractor(torch.from_numpy(waveform)).numpy(), frontend(waveform)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-3


def test_a_preset_is_checked_and_leaves_older_config_hashes_alone():
    config = RunConfig(model=ModelSpec(name="cnn"))
    assert with_overrides(config, ["features.preset=sherpa"]).hash() != config.hash()
    # the default is not hashed: runs recorded before presets keep their hash (and stores their key)
    assert config.hash() == "8fa33bacfbd0"  # what asrbench computed for this config before presets
    assert with_overrides(config, ["features.preset=kaldi"]).hash() == with_overrides(config, []).hash()
    with pytest.raises(AsrbenchError, match="--set features.preset=htk: features.preset must be one of kaldi, sherpa"):
        with_overrides(config, ["features.preset=htk"])
    with pytest.raises(AsrbenchError, match="preset sherpa is a filterbank convention; features.kind mfcc"):
        with_overrides(config, ["features.preset=sherpa", "features.kind=mfcc"])


def test_streaming_refuses_centred_frames_in_one_line():
    extractor = FeatureExtractor(FeatureConfig(preset="sherpa"))
    with pytest.raises(AsrbenchError, match="preset sherpa"):
        StreamingFrontEnd(extractor, lambda frames: frames, "float32")


def test_tokens_txt_symbols_for_characters_subwords_and_phones():
    chars = CharTokenizer.build(["HELLO WORLD"])
    symbols = token_symbols(chars)
    assert symbols[0] == "<blk>" and symbols[1] == "<unk>" and "\u2581" in symbols and " " not in symbols
    assert symbols[chars.encode("H")[0]] == "H"
    pieces = SentencePieceTokenizer(train_sentencepiece(["HELLO WORLD", "HELP WORDS"] * 20, "unigram", 12), "unigram")
    symbols = token_symbols(pieces)
    assert symbols[0] == "<blk>" and symbols[-1] == "<sos/eos>"
    assert any(symbol.startswith("\u2581") and len(symbol) > 1 for symbol in symbols)  # pieces keep their mark
    phones = PhoneTokenizer(["<blank>", "<unk>", "AH", "B", "|", "<sos/eos>"], {"A": [["AH"]], "B": [["B"]]})
    assert token_symbols(phones) == ["<blk>", "<unk>", "\u2581AH", "\u2581B", "\u2581|", "<sos/eos>"]


# --- exports, run by the real sherpa-onnx ------------------------------------------------------------


@pytest.fixture(scope="module")
def sherpa_runs(tmp_path_factory) -> dict[str, Path]:
    """A CTC cnn and a conformer transducer (stateless predictor) trained on the tone corpus with the
    sherpa preset, and a transducer with an LSTM predictor (for the refusal)."""
    from asrbench.training.trainer import train

    root = tmp_path_factory.mktemp("sherpa")
    data_dir = write_tone_corpus(root)
    models = {
        "cnn": {"subsample_channels": 4, "channels": 16, "kernel_size": 5, "num_blocks": 2},
        "conformer_transducer": TINY["conformer_transducer"],
        "lstm_transducer": {**TINY["lstm_transducer"], "predictor": "lstm", "train": {"epochs": 1}},
    }
    recipe = write_tone_recipe(root / "recipe.yaml", data_dir, models, preset="sherpa")
    runs = {"data": data_dir}
    for name in ("cnn", "conformer_transducer", "lstm_transducer"):
        runs[name] = root / name
        train(recipe, name, runs[name], seed=0)
    runs["streaming_transducer"] = root / "streaming_transducer"  # for the online layout
    streaming = ["model.streaming=true", "model.max_train_chunk=4"]
    train(recipe, "conformer_transducer", runs["streaming_transducer"], seed=0, overrides=streaming)
    lexicon = root / "tones.dic"
    lexicon.write_text("".join(f"{word} {' '.join(phones)}\n" for word, phones in TONE_PHONES.items()))
    units = {
        "unigram": ["tokenizer.kind=unigram", "tokenizer.vocab_size=8"],
        "phone": ["tokenizer.kind=phone", f"tokenizer.lexicon={lexicon}"],
    }
    for unit, overrides in units.items():
        runs[f"cnn_{unit}"] = root / f"cnn_{unit}"
        train(recipe, "cnn", runs[f"cnn_{unit}"], seed=0, overrides=[*overrides, "train.epochs=40"])
    return runs


TONE_PHONES = {"LOW": ["L", "OW"], "HIGH": ["HH", "AY"]}


def _audio(data_dir: Path) -> list[Path]:
    return [
        Path(json.loads(line)["audio"])
        for split in ("train", "dev", "test")
        for line in (data_dir / f"{split}.jsonl").read_text().splitlines()
    ]


def _sherpa_texts(export: Path, audio: list[Path], beam: int = 1) -> list[str]:
    """The unmodified sherpa-onnx package's OfflineRecognizer on ``export``, one stream per file:
    benchmarks/sherpa_bench.py's, one thread."""
    return sherpa_bench.sherpa_texts(export, audio, threads=1, beam=beam)[0]


def _sherpa_command(program: str, export: Path, models: list[str], audio: list[Path]) -> list[str]:
    """sherpa-onnx's own command line (sherpa-onnx-bin) on the tone corpus's files, as docs/using.md
    runs it: the text of the JSON line it prints for each file."""
    command = [
        str(Path(sys.executable).parent / program),
        f"--tokens={export / 'tokens.txt'}",
        *models,
        "--num-threads=1",
        "--sample-rate=8000",
        "--feat-dim=23",
        *map(str, audio),
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    lines = finished.stdout.splitlines() + finished.stderr.splitlines()
    return [json.loads(line)["text"].strip() for line in lines if line.startswith("{") and '"text"' in line]


def _onnx_model(path: Path):
    import onnx  # seconds to import: only in the tests that read a graph (every test process collects this file)

    return onnx.load(str(path))


def _metadata(path: Path) -> dict[str, str]:
    return {entry.key: entry.value for entry in _onnx_model(path).metadata_props}


@pytest.mark.slow
def test_a_ctc_export_loads_in_sherpa_onnx_and_transcribes_as_asrbench_does(sherpa_runs, tmp_path):
    out = tmp_path / "cnn"
    manifest = export_run(sherpa_runs["cnn"], out, fmt="sherpa-onnx", quantize="int8")
    assert manifest["layout"] == "sherpa-onnx" and manifest["graphs"] == {"model": "model.int8.onnx"}
    assert {"model.onnx", "model.int8.onnx", "tokens.txt"} <= set(manifest["files"])
    assert max(manifest["max_abs_difference_vs_pytorch"][name] for name in ("model.onnx",)) < 1e-4
    metadata = _metadata(out / "model.onnx")
    assert metadata["model_type"] == "zipformer2_ctc" and metadata["subsampling_factor"] == "4"
    assert [i.name for i in _onnx_model(out / "model.onnx").graph.input] == ["x", "x_lens"]
    assert (out / "tokens.txt").read_text(encoding="utf-8").splitlines()[0] == "<blk> 0"
    audio = _audio(sherpa_runs["data"])
    ours = [t.text for t in Transcriber(out).transcribe(audio)]
    assert sum(bool(text) for text in ours) >= len(audio) // 2  # a model that says something
    assert _sherpa_texts(out, audio) == ours
    # sherpa-onnx's own command line (sherpa-onnx-bin), as docs/using.md runs it: a JSON line a file
    said = _sherpa_command("sherpa-onnx-offline", out, [f"--zipformer-ctc-model={out / 'model.int8.onnx'}"], audio[:4])
    assert said == ours[:4]
    # the PyTorch run itself, from the run dir (float graph, store-rounded features): all but one the same
    from_run = [t.text for t in Transcriber(sherpa_runs["cnn"], device="cpu").transcribe(audio)]
    assert sum(a == b for a, b in zip(from_run, ours, strict=True)) >= len(audio) - 1


@pytest.mark.slow
def test_subword_and_phone_exports_read_back_in_sherpa_onnx(sherpa_runs, tmp_path):
    audio = _audio(sherpa_runs["data"])
    out = tmp_path / "unigram"
    export_run(sherpa_runs["cnn_unigram"], out, fmt="sherpa-onnx")
    symbols = [line.split()[0] for line in (out / "tokens.txt").read_text(encoding="utf-8").splitlines()]
    assert any(symbol.startswith("\u2581") for symbol in symbols)  # the pieces' word marks, kept
    ours = [t.text for t in Transcriber(out).transcribe(audio)]
    assert sum(bool(text) for text in ours) >= len(audio) // 2
    assert _sherpa_texts(out, audio) == ours  # sherpa-onnx turns each leading mark into a space
    out = tmp_path / "phone"
    export_run(sherpa_runs["cnn_phone"], out, fmt="sherpa-onnx")
    phones = {phone for entry in TONE_PHONES.values() for phone in entry}
    sherpa = _sherpa_texts(out, audio)
    # sherpa-onnx has no lexicon: phones separated by spaces, | between words
    assert all(set(text.split()) <= phones | {"|"} for text in sherpa)
    assert all("  " not in text for text in sherpa) and sum(bool(text) for text in sherpa) >= len(audio) // 2
    # ... the greedy CTC path of the same graph on asrbench's runtime, its phones joined by spaces
    # (asrbench itself writes words, through the lexicon)
    exported = load_export(out)
    greedy = []
    for path in audio:
        features = exported.extractor.batch([load_audio(path, 8000)])[0]
        log_probs, _ = exported.model.ctc_log_probs(features[None], torch.tensor([features.size(0)]))
        path_ids = torch.unique_consecutive(log_probs[0].argmax(-1)).tolist()
        greedy.append(" ".join(exported.tokenizer.tokens[i] for i in path_ids if i != 0))
    assert sherpa == greedy


@pytest.mark.slow
def test_a_transducer_export_loads_in_sherpa_onnx_for_greedy_and_modified_beam_search(sherpa_runs, tmp_path):
    out = tmp_path / "transducer"
    manifest = export_run(sherpa_runs["conformer_transducer"], out, fmt="sherpa-onnx")
    assert manifest["graphs"] == {"encoder": "encoder.onnx", "predictor": "decoder.onnx", "joiner": "joiner.onnx"}
    assert max(manifest["max_abs_difference_vs_pytorch"].values()) < 1e-4
    # the export decodes as sherpa-onnx does, one token a frame at most; the model's own limit is kept
    assert manifest["max_symbols_per_frame"] == 1
    assert (
        manifest["model_max_symbols_per_frame"]
        == load_model(checkpoint_path(sherpa_runs["conformer_transducer"], "best")).model.max_symbols_per_frame
    )
    decoder = _metadata(out / "decoder.onnx")
    assert decoder["context_size"] == "2" and int(decoder["vocab_size"]) == len(
        (out / "tokens.txt").read_text(encoding="utf-8").splitlines()
    )
    assert _metadata(out / "encoder.onnx")["model_type"] == "conformer"
    audio = _audio(sherpa_runs["data"])
    ours = [t.text for t in Transcriber(out).transcribe(audio)]
    assert sum(bool(text) for text in ours) >= len(audio) // 2
    greedy = _sherpa_texts(out, audio)
    # sherpa-onnx's greedy search emits at most one token a frame and reads <unk> as blank
    assert sum(a == b for a, b in zip(greedy, ours, strict=True)) >= len(audio) - 1
    beam_ours = [t.text for t in Transcriber(out, DecodeOptions(beam=4)).transcribe(audio)]
    beam_sherpa = _sherpa_texts(out, audio, beam=4)
    # two implementations of modified beam search (hypothesis merging, length normalization by
    # tokens + 1 against tokens + context size): most transcripts the same
    assert sum(a == b for a, b in zip(beam_sherpa, beam_ours, strict=True)) >= 0.75 * len(audio)


@pytest.mark.slow
def test_a_streaming_conformer_transducer_runs_in_sherpa_onnx_s_online_recognizer(sherpa_runs, tmp_path):
    run, out = sherpa_runs["streaming_transducer"], tmp_path / "online"
    manifest = export_run(run, out, fmt="sherpa-onnx", chunk_ms=80, left_chunks=4)  # 2 encoder frames a chunk
    assert manifest["streaming"]["chunk"] == 2 and manifest["streaming"]["left_chunks"] == 4
    assert max(manifest["max_abs_difference_vs_pytorch"].values()) < 1e-4
    encoder = _metadata(out / "encoder.onnx")
    assert encoder["model_type"] == "conformer"
    assert {key: encoder[key] for key in ("T", "decode_chunk_len", "left_context", "cnn_module_kernel")} == {
        "T": "11",
        "decode_chunk_len": "8",
        "left_context": "8",
        "cnn_module_kernel": str(TINY["conformer_transducer"]["kernel_size"]),
    }
    names = [i.name for i in _onnx_model(out / "encoder.onnx").graph.input]
    assert names == ["x", "cached_attn", "cached_conv", "processed_frames"]
    # sherpa-onnx's OnlineRecognizer against asrbench's masked pass at the same chunk and left context,
    # as benchmarks/sherpa_bench.py --chunk-ms measures it
    measured = sherpa_bench.measure_online(run, "test", 1, 80, 4, limit=0, export=out)
    figure, engines = measured["measured"]["streaming_wer_gap"], measured["engines"]
    # a file's last chunk: sherpa-onnx pads it with silence, asrbench decodes it short
    assert figure["identical"] >= figure["utterances"] - 1 and figure["utterances"] >= 4
    gap = abs(engines["sherpa_online_greedy"]["wer"] - engines["asrbench_chunked_pass"]["wer"])
    assert figure["value"] == pytest.approx(gap) and engines["sherpa_online_greedy"]["rtfx"] > 0
    # decode --chunk-ms on a sherpa-preset model: the chunked pass's WER, and why no latencies
    result = decode(run, "test", chunk_ms=80, left_chunks=4, measure_cost=False)
    assert result.streaming is not None and not result.streaming.measured
    assert "centres its frames" in (result.streaming.latency_not_measured or "")
    test_audio = [
        Path(json.loads(line)["audio"]) for line in (sherpa_runs["data"] / "test.jsonl").read_text().splitlines()
    ]
    online = measured["texts"]
    # sherpa-onnx's own streaming command line, as docs/using.md runs it
    roles = [f"--{role}={out / role}.onnx" for role in ("encoder", "decoder", "joiner")]
    said = _sherpa_command("sherpa-onnx", out, roles, test_audio[:3])
    assert len(said) == 3 and sum(a == b for a, b in zip(said, online[:3], strict=True)) >= 2
    # asrbench's own runtime does not carry the online states: one line, the way to stream instead
    with pytest.raises(AsrbenchError, match="OnlineRecognizer"):
        load_export(out)
    with pytest.raises(AsrbenchError, match="--left-chunks 1 or more"):
        export_run(run, tmp_path / "no_left", fmt="sherpa-onnx", chunk_ms=80)
    with pytest.raises(AsrbenchError, match="streaming: true"):
        export_run(
            sherpa_runs["conformer_transducer"], tmp_path / "offline", fmt="sherpa-onnx", chunk_ms=80, left_chunks=2
        )
    with pytest.raises(AsrbenchError, match="only --format sherpa-onnx"):
        export_run(run, tmp_path / "asrbench_layout", chunk_ms=80, left_chunks=2)


@pytest.mark.slow
def test_what_sherpa_onnx_cannot_run_is_refused_in_one_line(sherpa_runs, tone_run, tmp_path, monkeypatch, capsys):
    kaldi_run, _ = tone_run  # trained with the default preset
    code, out, err = run_main(
        monkeypatch, capsys, "export", str(kaldi_run), "--format", "sherpa-onnx", "-o", str(tmp_path / "a")
    )
    assert code == 2 and "--set features.preset=sherpa" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    code, out, err = run_main(
        monkeypatch,
        capsys,
        "export",
        str(sherpa_runs["lstm_transducer"]),
        "--format",
        "sherpa-onnx",
        "-o",
        str(tmp_path / "b"),
    )
    assert code == 2 and "lstm predictor" in err and "NeMo transducer layout" in err
    code, out, err = run_main(monkeypatch, capsys, "export", str(kaldi_run), "--format", "tflite", "-o", str(tmp_path))
    assert code != 0 and "sherpa-onnx" in err
    # the online layout's options, from the command line: a fixed left context, and sherpa-onnx's format
    streaming = str(sherpa_runs["streaming_transducer"])
    code, out, err = run_main(
        monkeypatch,
        capsys,
        "export",
        streaming,
        "--format",
        "sherpa-onnx",
        "--chunk-ms",
        "80",
        "-o",
        str(tmp_path / "c"),
    )
    assert code == 2 and "--left-chunks 1 or more" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_main(
        monkeypatch, capsys, "export", streaming, "--chunk-ms", "100", "--left-chunks", "2", "-o", str(tmp_path / "d")
    )
    assert code == 2 and "only --format sherpa-onnx" in err and not (tmp_path / "d").exists()


@pytest.mark.slow
def test_the_sherpa_benchmark_measures_both_engines_on_the_same_export(sherpa_runs):
    result = sherpa_bench.measure(sherpa_runs["conformer_transducer"], "train", threads=1, beam=4, limit=6)
    measured, engines = result["measured"], result["engines"]
    engine_names = {"sherpa_greedy", "asrbench_onnx_greedy", "pytorch_greedy", "sherpa_beam", "asrbench_onnx_beam"}
    assert set(engines) == engine_names
    assert all(engine["rtfx"] > 0 and 0 <= engine["wer"] for engine in engines.values())
    assert measured["greedy_identical"]["utterances"] == 6 and measured["greedy_identical"]["identical"] >= 5
    gap = abs(engines["sherpa_beam"]["wer"] - engines["asrbench_onnx_beam"]["wer"])
    assert measured["beam_wer_gap"]["value"] == pytest.approx(gap)
