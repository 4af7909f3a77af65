"""Any encoder under any head (issue 29): the registry composes every encoder with every head, a
recipe sets an encoder's options once (``encoders:``), every cell of the 7 x 3 matrix trains and
decodes with its default search, and a toy encoder and a toy head, registered from outside the
package, work under every head and over every encoder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import pytest
import torch
from helpers import HEAD_TINY, INPUT_DIM, TINY, VOCAB, make, write_tone_corpus
from torch import nn

import asrbench.models as registry
from asrbench.decoding import search_table
from asrbench.decoding.decode import decode
from asrbench.decoding.greedy import ctc_greedy
from asrbench.decoding.searchers import Searcher
from asrbench.errors import AsrbenchError
from asrbench.models import ENCODERS, HEADS, MATRIX, MODELS, model_cell
from asrbench.models.base import Family
from asrbench.models.ctc import CTCHead, CTCModel, ctc_loss
from asrbench.recipe.config import resolve
from asrbench.recipe.schema import POSITIVE
from asrbench.training.trainer import train

ENCODER_NAMES = [
    "dnn",
    "cnn",
    "lstm",
    "gru",
    "crdnn",
    "transformer",
    "conformer",
    "fast_conformer",
    "e_branchformer",
    "zipformer",
]
HEAD_NAMES = ["ctc", "aed", "transducer"]


def test_the_registry_is_the_full_matrix_and_old_names_keep_their_cells():
    assert list(ENCODERS) == ENCODER_NAMES and list(HEADS) == HEAD_NAMES
    assert len(MATRIX) == 3 * len(ENCODER_NAMES) and set(MATRIX.values()) == set(MODELS)
    for (encoder, head), name in MATRIX.items():
        assert model_cell(name) == (encoder, head)
        assert MODELS[name].family.default_mode == {"ctc": "ctc", "aed": "attention", "transducer": "transducer"}[head]
    # every name that existed keeps its class (and so its options and checkpoints)
    assert MATRIX[("lstm", "aed")] == "las" and MODELS["las"].model.__name__ == "LAS"
    assert MODELS["conformer_transducer"].model.__name__ == "ConformerTransducer"
    assert MODELS["transformer_aed"].model.__name__ == "TransformerAED"
    assert MODELS["cnn"].model is ENCODERS["cnn"].model  # an encoder is its own CTC model
    # a new cell: the encoder's options and the head's, in one dataclass
    fields = {f.name for f in dataclasses.fields(MODELS["cnn_transducer"].config)}
    assert {"channels", "kernel_size", "joiner_dim", "predictor", "ctc_weight"} <= fields
    fields = {f.name for f in dataclasses.fields(MODELS["gru_aed"].config)}
    assert {"hidden_size", "decoder_layers", "decoder_heads"} <= fields


def test_a_head_that_does_not_divide_the_encoder_width_is_one_error():
    with pytest.raises(AsrbenchError, match="decoder_heads 3 must divide the encoder's output width 32"):
        registry.build_model("gru_aed", {**TINY["gru"], "decoder_heads": 3}, INPUT_DIM, VOCAB)


def test_a_recipe_sets_an_encoder_s_options_once_for_every_head(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "encoders:\n  cnn: {channels: 24, num_blocks: 1}\n"
        "models:\n  cnn: {}\n  cnn_transducer: {joiner_dim: 16, num_blocks: 3}\n  cnn_aed: {}\n"
        "  las: {}\n"
    )

    def options(model):
        return resolve(recipe, model).model.options

    assert (options("cnn")["channels"], options("cnn")["num_blocks"]) == (24, 1)
    transducer = options("cnn_transducer")  # the model's own entry wins
    assert (transducer["channels"], transducer["num_blocks"], transducer["joiner_dim"]) == (24, 3, 16)
    assert options("cnn_aed")["channels"] == 24
    assert options("las") == registry.default_options("las")  # another row: the cnn options do not reach it
    recipe.write_text("encoders:\n  cnn: {chanels: 24}\nmodels:\n  cnn: {}\n")
    with pytest.raises(AsrbenchError, match=r"encoders\.cnn\.chanels: unknown option \(did you mean 'channels'"):
        resolve(recipe, "cnn")
    recipe.write_text("encoders:\n  cnnn: {}\nmodels:\n  cnn: {}\n")
    with pytest.raises(AsrbenchError, match=r"encoders\.cnnn: unknown encoder.*valid encoders: dnn, cnn"):
        resolve(recipe, "cnn")


def _tone_recipe(tmp_path, models: dict, encoders: dict | None = None):
    data_dir = write_tone_corpus(tmp_path / "data")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        json.dumps(
            {
                "data": {"dir": str(data_dir)},
                "features": {"sample_rate": 8000, "num_mel_bins": 23},
                "augment": {"spec_augment": False},
                "train": {
                    "epochs": 1,
                    "batch_frames": 400,
                    "lr": 5.0e-3,
                    "warmup_steps": 2,
                    "average_best": 1,
                    "data_workers": 0,
                },
                **({"encoders": encoders} if encoders else {}),
                "models": models,
            }
        )
    )
    return recipe


def _trains_and_decodes(recipe, name: str, run) -> None:
    summary = train(recipe, name, run, seed=0)
    assert summary["epochs"] == 1 and summary["best_dev_cer"] is not None
    result = decode(run, "test", threads=1, measure_cost=False)  # the cost figures have their own tests
    assert result.utterances == 4 and result.wer is not None and result.gflops_per_second is None
    hypotheses = [json.loads(line) for line in (run / "decode" / "test" / "hypotheses.jsonl").read_text().splitlines()]
    assert len(hypotheses) == 4


@pytest.mark.slow
def test_every_encoder_trains_and_decodes_under_every_head(tmp_path):
    """The 7 x 3 matrix at tiny sizes: one epoch each (a few steps) on the tone corpus, then the default search
    on test. The encoders' options are given once (``encoders:``), the heads' per model."""
    models = {name: dict(HEAD_TINY.get(cell[1], {})) if name not in TINY else {} for cell, name in MATRIX.items()}
    models.update(
        {
            name: dict(TINY[name])
            for name in ("las", "transformer_aed", "conformer_aed", "conformer_transducer", "lstm_transducer")
        }
    )
    for (_encoder, head), name in MATRIX.items():
        if head == "aed":  # an untrained decoder rarely says <eos>: its search stops at a quarter of the frames
            models[name]["max_length_ratio"] = 0.25
    recipe = _tone_recipe(tmp_path, models, encoders={encoder: TINY[encoder] for encoder in ENCODER_NAMES})
    for (encoder, _head), name in MATRIX.items():
        _trains_and_decodes(recipe, name, tmp_path / "runs" / name)
        if name not in TINY:  # written before the matrix (las, transformer_aed ...): their own entries
            options = resolve(recipe, name).model.options
            assert all(options[key] == value for key, value in TINY[encoder].items()), name


# --- a toy encoder and a toy head, registered from outside the package ------------------------------


@dataclass
class ToyEncoderConfig:
    width: int = 8
    dropout: float = 0.0

    LIMITS: ClassVar[dict] = {"width": POSITIVE}


class ToyEncoder(CTCModel):
    """CTC: a toy encoder (one linear layer over 4x-subsampled frames)."""

    def __init__(self, input_dim: int, vocab_size: int, config: ToyEncoderConfig):
        super().__init__()
        self.encoder_dim = config.width
        self.proj = nn.Linear(4 * input_dim, config.width)
        self.head = CTCHead(config.width, vocab_size)

    def encode(self, features, feature_lengths):
        frames = features.size(1) // 4 * 4
        stacked = features[:, :frames].reshape(features.size(0), frames // 4, -1)
        return torch.tanh(self.proj(stacked)), torch.clamp(feature_lengths // 4, min=1)


@dataclass
class ToyHeadOptions:
    hidden: int = 8

    LIMITS: ClassVar[dict] = {"hidden": POSITIVE}


class ToyHead(nn.Module):
    """Toy: an encoder + a two-layer CTC projection (a new family, decoded with its own searchers)."""

    head_kind = "toy"
    encoder_class: ClassVar[type]
    encoder_config: ClassVar[type]

    def __init__(self, input_dim: int, vocab_size: int, config):
        super().__init__()
        names = [f.name for f in dataclasses.fields(self.encoder_config)]
        self.encoder = self.encoder_class(
            input_dim, vocab_size, self.encoder_config(**{n: getattr(config, n) for n in names})
        )
        del self.encoder.head
        self.encoder_dim = self.encoder.encoder_dim
        self.projection = nn.Sequential(
            nn.Linear(self.encoder_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, vocab_size)
        )

    def encode(self, features, feature_lengths):
        return self.encoder.encode(features, feature_lengths)

    def log_probs(self, features, feature_lengths):
        encoded, lengths = self.encode(features, feature_lengths)
        return torch.log_softmax(self.projection(encoded).float(), dim=-1), lengths

    def compute_loss(self, features, feature_lengths, targets, target_lengths):
        return ctc_loss(*self.log_probs(features, feature_lengths), targets, target_lengths)

    def search_modes(self):
        return ("toy",)

    def acoustic_encoder(self):
        return self.encoder


@runtime_checkable
class ToyFamily(Protocol):
    """The toy family's protocol: what its models give the trainer and declare to decoding."""

    head_kind: str

    def compute_loss(self, features, feature_lengths, targets, target_lengths) -> torch.Tensor: ...

    def search_modes(self) -> tuple[str, ...]: ...

    def log_probs(self, features, feature_lengths): ...


TOY_SEARCH = search_table.Search(
    build=lambda model, tokenizer, options, data_dir, lm, lexicon: Searcher(
        "toy_greedy", model.log_probs, lambda out: ctc_greedy(*out), {"kind": "toy_greedy"}
    ),
    grid=lambda model, request: [],
)
TOY_HEAD_SEARCH = search_table.HeadSearch(
    greedy=lambda model, features, lengths: ctc_greedy(*model.log_probs(features, lengths)),
    dev=lambda model: Searcher("dev", model.log_probs, lambda out: ctc_greedy(*out), {"kind": "dev"}),
    align=lambda model, features, lengths, token_ids: [None] * len(token_ids),
)


@pytest.fixture
def toys(monkeypatch):
    """Register the toy encoder (one registry line) and the toy head (one registry line + its
    searchers in decoding), and remove them afterwards."""
    family = Family("toy", ToyFamily, ToyHead, default_mode="toy")
    monkeypatch.setitem(search_table.SEARCHES, ("toy", "toy"), TOY_SEARCH)
    monkeypatch.setitem(search_table.HEAD_SEARCHES, "toy", TOY_HEAD_SEARCH)
    registry.register_encoder("toy", ToyEncoderConfig, ToyEncoder)
    registry.register_head(
        "toy", "toy", ToyHeadOptions, ToyHead, "Toy: {encoder} encoder + a two-layer CTC projection.", family=family
    )
    yield
    registry.unregister_head("toy")
    registry.unregister_encoder("toy")
    registry.FAMILIES.remove(family)


def test_a_toy_encoder_and_a_toy_head_fill_a_row_and_a_column(toys):
    assert [MATRIX[("toy", head)] for head in HEADS] == ["toy", "toy_aed", "toy_transducer", "toy_toy"]
    assert [MATRIX[(encoder, "toy")] for encoder in ENCODERS][:3] == ["dnn_toy", "cnn_toy", "lstm_toy"]
    assert registry.describe_model("cnn_toy") == "Toy: cnn encoder + a two-layer CTC projection."
    for name in ("toy_aed", "toy_transducer", "toy_toy", "cnn_toy"):
        model = make(name)
        features, lengths = torch.randn(2, 48, INPUT_DIM), torch.tensor([48, 33])
        loss = model.compute_loss(features, lengths, torch.tensor([1, 2, 3]), torch.tensor([2, 1]))
        assert torch.isfinite(loss)
        assert len(search_table.greedy_decode(model.eval(), features, lengths)) == 2


def test_unregistering_removes_the_row_and_the_column(toys):
    registry.unregister_head("toy")
    assert "toy" not in HEADS and "cnn_toy" not in MODELS and ("cnn", "toy") not in MATRIX
    registry.unregister_encoder("toy")
    assert "toy" not in ENCODERS and "toy_aed" not in MODELS
    registry.register_encoder("toy", ToyEncoderConfig, ToyEncoder)  # for the fixture's teardown
    registry.register_head("toy", "toy", ToyHeadOptions, ToyHead, "Toy: {encoder}.")


@pytest.mark.slow
def test_every_combination_of_the_toy_encoder_and_the_toy_head_trains_a_few_steps(toys, tmp_path):
    names = sorted({name for cell, name in MATRIX.items() if "toy" in cell})
    assert len(names) == len(ENCODERS) + len(HEADS) - 1
    models = {
        name: ({"width": 8} if model_cell(name)[0] == "toy" else dict(TINY.get(model_cell(name)[0], {})))
        | (dict(HEAD_TINY.get(model_cell(name)[1], {})) if model_cell(name)[1] != "toy" else {"hidden": 8})
        for name in names
    }
    models["toy_aed"]["max_length_ratio"] = 0.25  # as in the matrix test: an untrained decoder's search stops early
    recipe = _tone_recipe(tmp_path, models)
    for name in names:
        _trains_and_decodes(recipe, name, tmp_path / "runs" / name)
