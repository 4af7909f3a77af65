"""Shared test setup: no progress bars, one torch thread for unit tests, tiny generated audio, and
the rule that a test which trains a model is marked ``slow`` (so ``make test-fast`` stays quick).

Helpers that are plain functions (a tone corpus, tiny models, the CLI entry point) are in
``tests/helpers.py``. The folders mirror the package's stages (``tests/data/`` tests
``asrbench/data/``, ``tests/models/`` the models ...); the tests at this level cover the package as
a whole: the CLI, the docs, end-to-end runs, the layering, lint, the wheel and the benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import asrbench.training.trainer


def _refuse_to_train(self, *args, **kwargs):
    raise AssertionError("this test trains a model: mark it @pytest.mark.slow (make test-fast is the quick unit suite)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """A test not marked slow cannot build a :class:`asrbench.training.trainer.Trainer`, from its setup to its
    teardown: a module- or session-scoped fixture that trains counts for the first test using it
    (an autouse function fixture would come too late, after the wider-scoped fixtures). Nothing is
    patched at import, and the patch is undone after each test. Training in a subprocess (``python
    -m asrbench train``) is outside this guard."""
    with pytest.MonkeyPatch.context() as patch:
        if item.get_closest_marker("slow") is None:
            patch.setattr(asrbench.training.trainer.Trainer, "__init__", _refuse_to_train)
        yield


@pytest.fixture(autouse=True)
def _no_progress(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("ASRBENCH_NO_PROGRESS", "1")
    # `asrbench models` keeps its GFLOPs counts here, not in the user's ~/.cache (one folder per worker).
    monkeypatch.setenv("ASRBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "asrbench-cache"))


@pytest.fixture(autouse=True)
def _one_torch_thread(request: pytest.FixtureRequest):
    """Tests use tiny tensors: extra intra-op threads only spin, and slow the tests several
    times over on a busy 2-core machine. End-to-end tests (``e2e``: real corpora, real recipes)
    keep torch's default."""
    if request.node.get_closest_marker("e2e"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_tone(seconds: float, rate: int, frequency: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    """A sine wave with a little deterministic noise, shape (samples,), float64 in [-1, 1]."""
    time = np.arange(int(round(seconds * rate))) / rate
    noise = np.random.default_rng(int(frequency * 1000 + rate)).normal(0.0, 0.01, time.size)
    return amplitude * np.sin(2 * np.pi * frequency * time) + noise


@pytest.fixture
def tone():
    """``tone(seconds, rate, frequency=440)``: the samples ``write_audio`` writes (before PCM-16)."""
    return make_tone


@pytest.fixture
def write_audio():
    """``write_audio(path, seconds, rate=16000, frequency=440, channels=1, format=None)`` -> path."""

    def write(
        path: Path,
        seconds: float = 0.5,
        rate: int = 16000,
        frequency: float = 440.0,
        channels: int = 1,
        format: str | None = None,
    ) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        samples = make_tone(seconds, rate, frequency)
        if channels > 1:
            samples = np.stack([samples * (c + 1) / channels for c in range(channels)], axis=1)
        soundfile.write(path, samples, rate, subtype="PCM_16", format=format)
        return path

    return write


@pytest.fixture(scope="session")
def tone_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run dir, data dir): a small cnn trained once per session on the tone corpus, for the tests
    that use a trained model (transcribe, export); tests must not change the run dir."""
    from helpers import write_tone_corpus

    root = tmp_path_factory.mktemp("tone_run")
    data_dir = write_tone_corpus(root)
    recipe = root / "recipe.yaml"
    recipe.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{spec_augment: false}}
train: {{epochs: 60, batch_frames: 400, lr: 5.0e-3, warmup_steps: 5}}
models:
  cnn: {{subsample_channels: 4, channels: 16, kernel_size: 5, num_blocks: 2}}
""")
    run = root / "run"
    asrbench.training.trainer.train(recipe, "cnn", run, seed=0)
    return run, data_dir


@pytest.fixture(scope="session")
def streaming_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run dir, data dir): a small streaming Conformer (chunked attention, causal convolution,
    dynamic chunks) trained once per session on the tone corpus; tests may add decode dirs only."""
    from helpers import write_tone_corpus

    root = tmp_path_factory.mktemp("streaming_run")
    data_dir = write_tone_corpus(root, pauses=(0.1, 0.4, 0.8, 1.2))  # a stream has pauses to end segments at
    recipe = root / "recipe.yaml"
    recipe.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{spec_augment: false}}
train: {{epochs: 40, batch_frames: 400, lr: 5.0e-3, warmup_steps: 5}}
models:
  conformer: {{d_model: 32, num_heads: 2, num_layers: 2, ff_dim: 64, kernel_size: 5, subsample_channels: 4,
              streaming: true, max_train_chunk: 4}}
""")
    run = root / "run"
    asrbench.training.trainer.train(recipe, "conformer", run, seed=0)
    return run, data_dir
