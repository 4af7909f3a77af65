"""Helpers several test files share: a tiny tone corpus, tiny models, the CLI entry point, a
reference edit distance. (Fixtures live in conftest.py; these are plain functions and constants.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import soundfile
import torch

from asrbench import cli
from asrbench.cli import run_app
from asrbench.models import build_model, model_cell

INPUT_DIM = 20
VOCAB = 9

TINY = {
    "dnn": {"context": 2, "stride": 3, "hidden_size": 32, "num_layers": 2},
    "cnn": {"subsample_channels": 4, "channels": 16, "kernel_size": 5, "num_blocks": 2},
    "lstm": {"subsample_channels": 4, "hidden_size": 16, "num_layers": 2},
    "gru": {"subsample_channels": 4, "hidden_size": 16, "num_layers": 2},
    "crdnn": {"conv_channels": 4, "rnn_hidden": 16, "rnn_layers": 2, "dnn_hidden": 16},
    "transformer": {"d_model": 16, "num_heads": 2, "num_layers": 2, "ff_dim": 32, "subsample_channels": 4},
    "conformer": {
        "d_model": 16,
        "num_heads": 2,
        "num_layers": 2,
        "ff_dim": 32,
        "kernel_size": 5,
        "subsample_channels": 4,
    },
    "fast_conformer": {"d_model": 16, "num_heads": 2, "num_layers": 2, "ff_dim": 32, "subsample_channels": 4},
    "zipformer": {
        "downsampling_factors": [1, 2, 4, 2],
        "num_layers": [1, 1, 1, 1],
        "encoder_dims": [16, 24, 24, 16],
        "ff_dims": [32, 32, 32, 32],
        "num_heads": [2, 2, 2, 2],
        "kernel_sizes": [5, 5, 3, 5],
        "query_head_dim": 8,
        "pos_head_dim": 2,
        "value_head_dim": 4,
        "pos_dim": 8,
        "subsample_channels": 4,
    },
    "e_branchformer": {
        "d_model": 16,
        "num_heads": 2,
        "num_layers": 2,
        "ff_dim": 32,
        "cgmlp_units": 32,
        "cgmlp_kernel": 5,
        "merge_kernel": 3,
        "subsample_channels": 4,
    },
    "las": {
        "subsample_channels": 4,
        "encoder_hidden": 16,
        "encoder_layers": 1,
        "decoder_hidden": 16,
        "embed_dim": 8,
        "attention_dim": 16,
        "location_channels": 4,
        "location_kernel": 5,
    },
    "transformer_aed": {
        "d_model": 16,
        "num_heads": 2,
        "num_layers": 2,
        "ff_dim": 32,
        "subsample_channels": 4,
        "decoder_layers": 1,
        "decoder_ff_dim": 32,
    },
    "conformer_aed": {
        "d_model": 16,
        "num_heads": 2,
        "num_layers": 1,
        "ff_dim": 32,
        "kernel_size": 5,
        "subsample_channels": 4,
        "decoder_layers": 1,
        "decoder_ff_dim": 32,
    },
    "conformer_transducer": {
        "d_model": 16,
        "num_heads": 2,
        "num_layers": 1,
        "ff_dim": 32,
        "kernel_size": 5,
        "subsample_channels": 4,
        "predictor_dim": 16,
        "joiner_dim": 16,
    },
    "lstm_transducer": {
        "subsample_channels": 4,
        "hidden_size": 16,
        "num_layers": 1,
        "predictor_dim": 16,
        "joiner_dim": 16,
    },
}


# The heads' options at tiny sizes, added to the encoder's TINY for a model of the matrix (cnn_aed ...).
HEAD_TINY = {
    "aed": {"decoder_layers": 1, "decoder_ff_dim": 32, "decoder_heads": 2},
    "transducer": {"predictor_dim": 16, "joiner_dim": 16},
}


def tiny_options(name: str) -> dict:
    """A model's options at test size: its own TINY entry, else its encoder's plus its head's."""
    if name in TINY:
        return dict(TINY[name])
    cell = model_cell(name)
    if cell is None:
        return {}
    return {**TINY.get(cell[0], {}), **HEAD_TINY.get(cell[1], {})}


def make(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, tiny_options(name), INPUT_DIM, VOCAB)


WORDS = {"LOW": 300.0, "HIGH": 1500.0}


def write_tone_recipe(path: Path, data_dir: Path, models: dict, epochs: int = 60, **features) -> Path:
    """A recipe for the tone corpus at ``data_dir`` (8 kHz, 23 bins, no SpecAugment, ``features``
    added to its features section) training ``models`` for ``epochs``."""
    recipe = {
        "data": {"dir": str(data_dir)},
        "features": {"sample_rate": 8000, "num_mel_bins": 23, **features},
        "augment": {"spec_augment": False},
        "train": {"epochs": epochs, "batch_frames": 400, "lr": 5.0e-3, "warmup_steps": 5},
        "models": models,
    }
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


def write_tone_corpus(root: Path, pauses: tuple[float, ...] = ()) -> Path:
    """Utterances of one or two tone 'words' (300 Hz = LOW, 1500 Hz = HIGH) separated by silence:
    0.1 s after each word, or one of ``pauses`` (seconds, drawn per word) when given."""
    rng = np.random.default_rng(0)
    pause_rng = np.random.default_rng(1)  # its own draws: the corpus without pauses stays the same
    data_dir = root / "data"
    (root / "audio").mkdir(parents=True)
    for split, count in (("train", 12), ("dev", 4), ("test", 4)):
        rows = []
        for index in range(count):
            words = [rng.choice(list(WORDS)) for _ in range(1 + index % 2)]
            pieces = []
            for word in words:
                time = np.arange(2400) / 8000
                silence = int(8000 * pause_rng.choice(pauses)) if pauses else 800
                pieces += [np.sin(2 * np.pi * WORDS[word] * time) * 0.3, np.zeros(silence)]
            audio = np.concatenate(pieces) + rng.normal(0, 0.003, sum(len(p) for p in pieces))
            path = root / "audio" / f"{split}{index}.wav"
            soundfile.write(path, audio, 8000, subtype="PCM_16")
            rows.append(
                {"id": f"{split}{index}", "audio": str(path), "duration": len(audio) / 8000, "text": " ".join(words)}
            )
        data_dir.mkdir(exist_ok=True)
        (data_dir / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return data_dir


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run the console-script entry point in-process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["asrbench", *args])
    monkeypatch.setitem(cli._state, "debug", False)
    code = 0
    try:
        run_app()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def levenshtein(reference: list, hypothesis: list) -> int:
    """Minimum substitutions + deletions + insertions turning ``reference`` into ``hypothesis``."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_item in enumerate(reference, start=1):
        current = [i]
        for j, hyp_item in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_item != hyp_item)))
        previous = current
    return previous[-1]


class RecordingBar:
    """Stands in for ``progress_bar``: records the task's total, every completed count and field."""

    def __init__(self):
        self.total, self.completed, self.history, self.fields, self.unit = None, 0.0, [], {}, None

    def __call__(self, *fields, unit: str = "", disable: bool = False):
        self.field_names, self.unit = fields, unit
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, description, total=None, **fields):
        self.description, self.total = description, total
        self.fields.update(fields)
        return 0

    def update(self, task, advance=None, completed=None, **fields):
        if completed is not None:
            self.completed = completed
        if advance is not None:
            self.completed += advance
        self.fields.update(fields)
        self.history.append(self.completed)

    def advance(self, task, advance=1):
        self.update(task, advance=advance)


def fake_run(root: Path, name: str, wer: float) -> Path:
    """A run dir holding only what compare reads: a test decode's result.json and a train summary."""
    run_dir = root / name
    (run_dir / "decode" / "test").mkdir(parents=True)
    result = {"model": name, "wer": wer, "cer": wer / 2, "params": 1000, "rtfx": 50.0, "words": 10}
    (run_dir / "decode" / "test" / "result.json").write_text(json.dumps(result), encoding="utf-8")
    (run_dir / "train_summary.json").write_text(json.dumps({"train_seconds": 3.0, "epochs": 2}), encoding="utf-8")
    return run_dir


def streamed_encoding(model, features: torch.Tensor, chunk: int, left: int) -> torch.Tensor:
    """A chunked encoder's output fed chunk by chunk (``encode_chunk``), each chunk's window read
    while at least 7 feature frames (the 4x front end's receptive field) remain."""
    state = model.init_stream(chunk, left)
    window, stride = model.chunk_window(chunk)
    pieces = []
    for start in range(0, features.size(1), stride):
        if features.size(1) - start >= 7:
            encoded, state = model.encode_chunk(features[:, start : start + window], state)
            pieces.append(encoded)
    return torch.cat(pieces, dim=1)


# An AN4-like pronunciation lexicon (CMUdict phones) of the digit and command words, for phone units.
AN4_LIKE_LEXICON = """ONE W AH N
TWO T UW
TO T UW
THREE TH R IY
FOUR F AO R
FIVE F AY V
SEVEN S EH V AH N
EIGHT EY T
NINE N AY N
TEN T EH N
ENTER EH N T ER
ERASE IH R EY S
RUBOUT R AH B AW T
"""
