"""`asrbench export`: every CTC model of the zoo as an ONNX graph equal to PyTorch, the NumPy front
end equal to the extractor, and an exported dir that transcribes without asrbench.models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import INPUT_DIM, TINY, RecordingBar, make, run_main

from asrbench.data.fbank import FeatureExtractor
from asrbench.decoding.searchers import DecodeOptions
from asrbench.deploy.export import export_run, write_ctc_graph
from asrbench.deploy.numpy_fbank import NumpyFbank
from asrbench.deploy.onnx_runtime import is_export, load_export
from asrbench.deploy.transcribe import Transcriber
from asrbench.errors import AsrbenchError
from asrbench.models import default_mode
from asrbench.recipe.config import FeatureConfig
from asrbench.training.trainer import train

CTC_MODELS = sorted(name for name in TINY if default_mode(name) == "ctc")


@pytest.mark.slow
@pytest.mark.parametrize("name", CTC_MODELS)
def test_every_ctc_model_exports_equal_to_pytorch_for_other_batch_sizes_and_lengths(name: str, tmp_path: Path):
    model = make(name).eval()
    _, session, exporter, _ = write_ctc_graph(model, INPUT_DIM, tmp_path / "model.onnx")
    assert exporter in ("dynamo", "torchscript")
    generator = torch.Generator().manual_seed(1)
    for lengths in ([90], [123, 57, 31], [400, 400]):  # none is the export's check batch (317, 201)
        features = torch.randn(len(lengths), max(lengths), INPUT_DIM, generator=generator)
        lengths = torch.tensor(lengths)
        with torch.no_grad():
            expected, expected_lengths = model.ctc_log_probs(features, lengths)
        got, got_lengths = session.run(None, {"features": features.numpy(), "lengths": lengths.numpy()})
        assert got_lengths.tolist() == expected_lengths.tolist()
        valid = np.arange(got.shape[1])[None] < got_lengths[:, None]
        assert np.abs(got - expected.numpy())[valid].max() < 1e-4, name


@pytest.mark.parametrize("rate,mels", [(16000, 80), (8000, 23)])
def test_the_numpy_front_end_equals_the_feature_extractor(rate: int, mels: int):
    config = FeatureConfig(sample_rate=rate, num_mel_bins=mels)
    extractor = FeatureExtractor(config)
    frontend = NumpyFbank(rate, config.frame_length_ms, config.frame_shift_ms, extractor.banks.to_dense().numpy())
    generator = torch.Generator().manual_seed(0)
    for samples in (100, 401, 12345):  # shorter than a window, a few frames, many
        waveform = torch.randn(samples, generator=generator) * 0.1
        expected, got = extractor(waveform).numpy(), frontend(waveform.numpy())
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-3  # log-mel values of order 1-20


@pytest.fixture(scope="module")
def exported(tone_run, tmp_path_factory) -> tuple[Path, Path, Path]:
    run, data_dir = tone_run
    out = tmp_path_factory.mktemp("export") / "exported"
    export_run(run, out, quantize="int8")
    return run, out, data_dir


def _audio(data_dir: Path) -> list[Path]:
    return [Path(json.loads(line)["audio"]) for line in (data_dir / "test.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_an_exported_dir_describes_itself_and_transcribes_like_its_run(exported):
    run, out, data_dir = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert is_export(out) and not is_export(run)
    assert manifest["model"] == "cnn" and manifest["graphs"] == {"model": "model.int8.onnx"}
    assert manifest["search"] == "ctc" and manifest["units"] == "char" and manifest["subsampling_factor"] == 4
    assert manifest["max_abs_difference_vs_pytorch"]["model.onnx"] < 1e-4
    assert set(manifest["files"]) >= {"model.onnx", "model.int8.onnx", "tokenizer.json", "cmvn.json", "mel_banks.npy"}
    assert {"torch", "onnx", "onnxruntime", "opset", "asrbench"} <= set(manifest["versions"])
    audio = _audio(data_dir)
    reference = [t.text for t in Transcriber(run, device="cpu").transcribe(audio)]
    # The full-precision graph: the same text for every utterance.
    manifest["graphs"] = {"model": "model.onnx"}
    full = out.parent / "full"
    full.mkdir()
    for name in manifest["files"]:
        (full / name).write_bytes((out / name).read_bytes())
    (full / "manifest.json").write_text(json.dumps(manifest))
    assert [t.text for t in Transcriber(full).transcribe(audio)] == reference
    quantized = [t.text for t in Transcriber(out).transcribe(audio)]
    assert sum(a == b for a, b in zip(quantized, reference, strict=True)) >= len(audio) - 1


@pytest.mark.slow
def test_transcribing_an_export_loads_no_model_code(exported, tmp_path: Path):
    _, out, data_dir = exported
    script = f"""
import sys
from asrbench.cli import run_app
sys.argv = ["asrbench", "transcribe", {str(out)!r}, {str(_audio(data_dir)[0])!r}, "-f", "jsonl"]
try:
    run_app()
except SystemExit as exit_:
    assert not exit_.code, exit_.code
loaded = sorted(name for name in sys.modules if name.startswith(("asrbench.models", "asrbench.runs.checkpoint")))
assert not loaded, loaded
print("no model code")
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "ASRBENCH_NO_PROGRESS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    row = json.loads(result.stdout.splitlines()[0])
    assert row["model"] == "cnn" and row["segments"][0]["words"]
    assert result.stdout.strip().endswith("no model code")


@pytest.mark.slow
def test_a_damaged_export_and_unsupported_models_are_one_clear_error(exported, tmp_path, monkeypatch, capsys):
    run, out, _ = exported
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in out.iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    (damaged / "cmvn.json").write_text('{"mean": [0], "std": [1]}')
    with pytest.raises(AsrbenchError, match="cmvn.json: checksum differs"):
        load_export(damaged)
    code, _, err = run_main(monkeypatch, capsys, "export", str(run), "--out", str(tmp_path / "x"), "--quantize", "int4")
    assert code == 2 and "unknown --quantize 'int4'" in err
    code, _, err = run_main(monkeypatch, capsys, "export", str(run), "--out", str(tmp_path / "x"), "--format", "tflite")
    assert code == 2 and "unknown --format 'tflite'" in err


@pytest.fixture(scope="module")
def decoder_runs(tone_run, tmp_path_factory) -> dict[str, Path]:
    """A few epochs each on the tone corpus: transducers with a stateless and an LSTM predictor, a
    hybrid CTC/attention model and a pure attention one."""
    _, data_dir = tone_run
    root = tmp_path_factory.mktemp("transducers")
    recipe = root / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "data": {"dir": str(data_dir)},
                "features": {"sample_rate": 8000, "num_mel_bins": 23},
                "augment": {"spec_augment": False},
                "train": {"epochs": 3, "batch_frames": 400, "lr": 5.0e-3, "warmup_steps": 5},
                "models": {
                    "conformer_transducer": TINY["conformer_transducer"],
                    "lstm_transducer": {**TINY["lstm_transducer"], "predictor": "lstm"},
                    "conformer_aed": TINY["conformer_aed"],
                    "transformer_aed": {**TINY["transformer_aed"], "ctc_weight": 0.0},
                },
            }
        )
    )
    runs = {}
    for name in ("conformer_transducer", "lstm_transducer", "conformer_aed", "transformer_aed"):
        runs[name] = root / name
        train(recipe, name, runs[name], seed=0)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("name,predictor", [("conformer_transducer", "stateless"), ("lstm_transducer", "lstm")])
def test_a_transducer_exports_as_three_graphs_and_searches_like_its_run(
    decoder_runs, tone_run, tmp_path, name, predictor
):
    run, (_, data_dir) = decoder_runs[name], tone_run
    manifest = export_run(run, tmp_path / "exported")
    assert manifest["search"] == "transducer" and manifest["predictor"]["kind"] == predictor
    assert set(manifest["graphs"]) == {"encoder", "predictor", "joiner"}
    assert max(manifest["max_abs_difference_vs_pytorch"].values()) < 1e-4
    audio = _audio(data_dir)
    for beam in (1, 4):  # greedy (several symbols a frame) and modified beam search
        options = DecodeOptions(beam=beam)
        reference = [t.text for t in Transcriber(run, options, device="cpu").transcribe(audio)]
        exported = list(Transcriber(tmp_path / "exported", options).transcribe(audio))
        assert [t.text for t in exported] == reference, beam
    assert all(0.0 <= w["confidence"] <= 1.0 for t in exported for s in t.segments for w in s.words)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,graphs", [("conformer_aed", {"encoder", "decoder", "ctc_head"}), ("transformer_aed", {"encoder", "decoder"})]
)
def test_an_attention_model_exports_its_decoder_step_and_beam_searches_like_its_run(
    decoder_runs, tone_run, tmp_path, name, graphs
):
    run, (_, data_dir) = decoder_runs[name], tone_run
    manifest = export_run(run, tmp_path / "exported")
    assert manifest["search"] == "attention" and set(manifest["graphs"]) == graphs
    assert max(manifest["max_abs_difference_vs_pytorch"].values()) < 1e-4
    audio = _audio(data_dir)
    modes = [DecodeOptions(beam=4)] + ([DecodeOptions(beam=4, mode="ctc")] if "ctc_head" in graphs else [])
    for options in modes:
        reference = [t.text for t in Transcriber(run, options, device="cpu").transcribe(audio)]
        assert [t.text for t in Transcriber(tmp_path / "exported", options).transcribe(audio)] == reference, options


@pytest.mark.slow
def test_las_exports_its_recurrent_decoder_state_and_beam_searches_like_its_run(tmp_path, tone_run):
    _, data_dir = tone_run
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "data": {"dir": str(data_dir)},
                "features": {"sample_rate": 8000, "num_mel_bins": 23},
                "augment": {"spec_augment": False},
                "train": {"epochs": 3, "batch_frames": 400, "lr": 5.0e-3},
                "models": {"las": {**TINY["las"], "ctc_weight": 0.3}},
            }
        )
    )
    train(recipe, "las", tmp_path / "las", seed=0)
    manifest = export_run(tmp_path / "las", tmp_path / "exported")
    assert manifest["decoder"]["kind"] == "las" and set(manifest["graphs"]) == {"encoder", "decoder", "ctc_head"}
    audio = _audio(data_dir)
    options = DecodeOptions(beam=4)
    reference = [t.text for t in Transcriber(tmp_path / "las", options, device="cpu").transcribe(audio)]
    assert [t.text for t in Transcriber(tmp_path / "exported", options).transcribe(audio)] == reference


@pytest.mark.slow
def test_export_shows_its_progress_graph_by_graph(tone_run, tmp_path, monkeypatch):
    """Regression (issue 28.14): ``export`` was silent for ~10 s."""
    import asrbench.deploy.export as export_module

    bar = RecordingBar()
    monkeypatch.setattr(export_module, "progress_bar", bar)
    run, _ = tone_run
    export_run(run, tmp_path / "exported", quantize="int8")
    assert bar.unit == "graphs" and bar.total == 2  # model.onnx, then model.int8.onnx
    assert bar.completed == 2 and bar.history == sorted(bar.history) and bar.fields["graph"] == "model.int8.onnx"


# --- a damaged export dir: one line naming the file (issue 28.11) ---------------------------------


def hand_made_export(root: Path, graph: bytes = b"\x08\x07\x12\x07pytorch") -> Path:
    """An export dir as `asrbench export` lays it out, written by hand (no training, no export):
    ``graph`` as model.onnx, every checksum in the manifest matching its file."""
    import hashlib

    from asrbench.data.tokenizer import CharTokenizer

    out = root / "exported"
    out.mkdir()
    config = FeatureConfig(sample_rate=8000, num_mel_bins=23)
    (out / "model.onnx").write_bytes(graph)
    np.save(out / "mel_banks.npy", FeatureExtractor(config).banks.to_dense().numpy().astype(np.float32))
    (out / "frontend.json").write_text(
        json.dumps(
            {
                "kind": "fbank",
                "sample_rate": 8000,
                "num_mel_bins": 23,
                "frame_length_ms": 25.0,
                "frame_shift_ms": 10.0,
                "dtype": "float16",
            }
        )
    )
    (out / "cmvn.json").write_text(json.dumps({"mean": [0.0] * 23, "std": [1.0] * 23}))
    (out / "tokenizer.json").write_text(json.dumps(CharTokenizer.build(["yes no"]).to_dict()))
    files = ["model.onnx", "mel_banks.npy", "frontend.json", "cmvn.json", "tokenizer.json"]
    (out / "manifest.json").write_text(
        json.dumps(
            {
                "format": "asrbench-export/1",
                "search": "ctc",
                "graphs": {"model": "model.onnx"},
                "model": "cnn",
                "source_run": "run",
                "units": "char",
                "files": {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in files},
            }
        )
    )
    return out


def test_a_truncated_graph_with_its_checksum_updated_is_one_line_naming_it(tmp_path, monkeypatch, capsys, write_audio):
    """Regression (issue 28.11): a truncated model.onnx whose checksum was updated ended in a 54-line
    onnxruntime traceback."""
    out = hand_made_export(tmp_path)
    with pytest.raises(AsrbenchError, match=rf"^{out / 'model.onnx'}: not a readable ONNX graph \("):
        load_export(out)
    audio = write_audio(tmp_path / "a.wav", seconds=1.0, rate=8000)
    code, _, err = run_main(monkeypatch, capsys, "transcribe", str(out), str(audio))
    assert code == 2 and err.startswith(f"error: {out / 'model.onnx'}: not a readable ONNX graph")
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": "asrbench-export/1"}', ""])
def test_an_export_manifest_that_is_not_json_is_named_not_called_a_run_dir(
    tmp_path, monkeypatch, capsys, write_audio, text
):
    """Regression (issue 28.11): a manifest.json that is not JSON made transcribe say "not a run dir"."""
    out = hand_made_export(tmp_path)
    (out / "manifest.json").write_text(text)
    assert is_export(out)  # a folder with a manifest.json is an export dir, readable or not
    audio = write_audio(tmp_path / "a.wav", seconds=1.0, rate=8000)
    code, _, err = run_main(monkeypatch, capsys, "transcribe", str(out), str(audio))
    assert code == 2 and err.startswith(f"error: {out / 'manifest.json'}: "), err
    assert "not a run dir" not in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "name,text",
    [("frontend.json", "{oops"), ("cmvn.json", "[]"), ("tokenizer.json", "{}"), ("mel_banks.npy", "not numpy")],
)
def test_a_damaged_file_of_an_unverified_export_names_the_file(tmp_path, name, text):
    out = hand_made_export(tmp_path)
    (out / name).write_text(text)
    with pytest.raises(AsrbenchError, match=rf"^{out / name}: "):
        load_export(out, verify=False)
