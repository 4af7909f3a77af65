"""Attention encoder-decoders (las, transformer_aed, conformer_aed): the decoder contract, the
hybrid loss, step-by-step decoding, beam search with joint CTC scoring, and tiny overfits."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from asrbench.decoding.attention_beam import (
    AttentionBeamOptions,
    CTCPrefixScorer,
    attention_beam_search,
    batch_attention_beam_search,
)
from asrbench.decoding.search_table import greedy_decode
from asrbench.errors import AsrbenchError
from asrbench.models import build_model, count_parameters
from asrbench.models.attention import IGNORE

INPUT_DIM = 20
VOCAB = 9  # blank, unk, 6 characters, <sos/eos>
EOS = VOCAB - 1
TINY = {
    "las": {
        "subsample_channels": 4,
        "encoder_hidden": 16,
        "encoder_layers": 1,
        "decoder_hidden": 32,
        "embed_dim": 16,
        "attention_dim": 16,
        "location_channels": 4,
        "location_kernel": 5,
        "dropout": 0.0,
    },
    "transformer_aed": {
        "d_model": 32,
        "num_heads": 2,
        "num_layers": 1,
        "ff_dim": 64,
        "subsample_channels": 4,
        "decoder_layers": 1,
        "decoder_ff_dim": 64,
        "dropout": 0.0,
    },
    "conformer_aed": {
        "d_model": 32,
        "num_heads": 2,
        "num_layers": 1,
        "ff_dim": 64,
        "kernel_size": 5,
        "subsample_channels": 4,
        "decoder_layers": 1,
        "decoder_ff_dim": 64,
        "dropout": 0.0,
    },
}
ATTENTION_MODELS = sorted(TINY)


def make(name: str, seed: int = 0, **options) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, {**TINY[name], **options}, INPUT_DIM, VOCAB)


@pytest.fixture(params=ATTENTION_MODELS)
def name(request) -> str:
    return request.param


def test_teacher_forcing_pairs_shift_by_one_with_sos_and_eos():
    model = make("transformer_aed")
    inputs, outputs, lengths = model.teacher_forcing_pairs(torch.tensor([2, 3, 4, 5, 6]), torch.tensor([3, 2]))
    assert inputs.tolist() == [[EOS, 2, 3, 4], [EOS, 5, 6, EOS]]  # <sos> is <eos>'s id; padding unused
    assert outputs.tolist() == [[2, 3, 4, EOS], [5, 6, EOS, IGNORE]]
    assert lengths.tolist() == [4, 3]


def test_decoder_is_causal(name):
    model = make(name).eval()
    features, lengths = torch.randn(1, 60, INPUT_DIM), torch.tensor([60])
    memory, memory_lengths = model.encode(features, lengths)
    tokens = torch.tensor([[EOS, 2, 3, 4, 5]])
    changed = tokens.clone()
    changed[0, 3:] = torch.tensor([7, 7])
    with torch.no_grad():
        first = model.decoder_logits(memory, memory_lengths, tokens, torch.tensor([5]))
        second = model.decoder_logits(memory, memory_lengths, changed, torch.tensor([5]))
    assert torch.allclose(first[0, :3], second[0, :3], atol=1e-5)  # positions before the change
    assert not torch.allclose(first[0, 3:], second[0, 3:], atol=1e-3)


def test_step_by_step_decoding_matches_teacher_forcing(name):
    model = make(name).eval()
    features, lengths = torch.randn(2, 60, INPUT_DIM), torch.tensor([60, 45])
    tokens = torch.tensor([[EOS, 2, 3, 4, 5], [EOS, 6, 2, 2, 7]])
    with torch.no_grad():
        memory, memory_lengths = model.encode(features, lengths)
        forced = torch.log_softmax(model.decoder_logits(memory, memory_lengths, tokens, torch.tensor([5, 5])), -1)
        state = model.init_state(memory, memory_lengths)
        for position in range(tokens.size(1)):
            log_probs, state = model.step(state, tokens[:, : position + 1])
            assert torch.allclose(log_probs, forced[:, position], atol=1e-4), position


def test_decoder_output_does_not_depend_on_batch_padding(name):
    model = make(name).eval()
    torch.manual_seed(3)
    short, long = torch.randn(30, INPUT_DIM), torch.randn(64, INPUT_DIM)
    batch = torch.nn.utils.rnn.pad_sequence([long, short], batch_first=True)
    batch[1, 30:] = 5 * torch.randn(34, INPUT_DIM)  # noisy padding must not matter
    tokens = torch.tensor([[EOS, 2, 3, 4]])
    with torch.no_grad():
        memory, memory_lengths = model.encode(batch, torch.tensor([64, 30]))
        batched = model.decoder_logits(memory, memory_lengths, tokens.repeat(2, 1), torch.tensor([4, 4]))[1]
        memory, memory_lengths = model.encode(short.unsqueeze(0), torch.tensor([30]))
        alone = model.decoder_logits(memory, memory_lengths, tokens, torch.tensor([4]))[0]
    assert torch.allclose(batched, alone, atol=1e-4)


def test_reorder_state_selects_hypotheses(name):
    model = make(name).eval()
    with torch.no_grad():
        memory, memory_lengths = model.encode(torch.randn(3, 50, INPUT_DIM), torch.tensor([50, 40, 30]))
        state = model.init_state(memory, memory_lengths)
        prefixes = torch.tensor([[EOS], [EOS], [EOS]])
        log_probs, state = model.step(state, prefixes)
        picked = model.reorder_state(state, torch.tensor([2, 0]))
        prefixes = torch.tensor([[EOS, 3], [EOS, 3]])
        after_pick, _ = model.step(picked, prefixes)
        full, _ = model.step(state, torch.tensor([[EOS, 3]] * 3))
    assert torch.allclose(after_pick, full[[2, 0]], atol=1e-5)


def test_hybrid_loss_mixes_ctc_and_attention(name):
    features, lengths = torch.randn(2, 60, INPUT_DIM), torch.tensor([60, 48])
    targets, target_lengths = torch.tensor([2, 3, 4, 5, 6]), torch.tensor([3, 2])
    losses = {}
    for weight in (0.0, 0.5, 1.0):
        model = make(name, ctc_weight=weight).eval()
        with torch.no_grad():
            losses[weight] = float(model.compute_loss(features, lengths, targets, target_lengths))
    # Same seed, same weights: the 0.5 loss is the mean of the pure attention and pure CTC losses.
    assert math.isclose(losses[0.5], 0.5 * losses[0.0] + 0.5 * losses[1.0], rel_tol=1e-4)
    assert losses[0.0] != pytest.approx(losses[1.0])


def test_pure_attention_model_has_no_ctc_branch(name):
    pure, hybrid = make(name, ctc_weight=0.0), make(name, ctc_weight=0.3)
    assert count_parameters(pure) < count_parameters(hybrid)
    with pytest.raises(AsrbenchError, match="CTC branch"):
        pure.ctc_log_probs(torch.randn(1, 40, INPUT_DIM), torch.tensor([40]))
    with pytest.raises(AsrbenchError, match="CTC branch"):
        batch_attention_beam_search(
            pure.eval(), torch.randn(1, 40, INPUT_DIM), torch.tensor([40]), AttentionBeamOptions(beam=2, ctc_weight=0.5)
        )


def test_invalid_weights_are_rejected():
    with pytest.raises(AsrbenchError, match="ctc_weight"):
        make("las", ctc_weight=1.5)
    with pytest.raises(AsrbenchError, match="beam"):
        AttentionBeamOptions(beam=0)


def _prefix_probability_by_enumeration(log_probs: np.ndarray, prefix: tuple, whole: bool) -> float:
    """Sum of path probabilities whose collapsed labels start with (or equal) ``prefix``."""
    frames, vocab = log_probs.shape
    total = 0.0
    for path in itertools.product(range(vocab), repeat=frames):
        labels, previous = [], None
        for token in path:
            if token != 0 and token != previous:
                labels.append(token)
            previous = token
        labels = tuple(labels)
        if (labels == prefix) if whole else (labels[: len(prefix)] == prefix):
            total += math.exp(sum(log_probs[t, token] for t, token in enumerate(path)))
    return math.log(total) if total > 0 else -math.inf


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ctc_prefix_scores_match_enumeration(seed):
    rng = np.random.default_rng(seed)
    frames, vocab = 5, 4  # tokens: 0 blank, 1..2 labels, 3 <eos> (never emitted by CTC paths)
    logits = rng.normal(size=(frames, vocab))
    logits[:, 3] = -1e9
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    scorer = CTCPrefixScorer(log_probs, blank=0, eos=3)
    state, last, prefix = scorer.initial_state(), np.array([-1]), ()
    for step_token in (1, 1, 2):  # walk the prefix 1, 1, 2 (a repeat needs a blank in between)
        candidates = np.array([[1, 2, 3]])
        psi, states = scorer.score(state, last, len(prefix), candidates)
        for k, token in enumerate(candidates[0]):
            if token == 3:
                expected = _prefix_probability_by_enumeration(log_probs, prefix, whole=True)
            else:
                expected = _prefix_probability_by_enumeration(log_probs, prefix + (int(token),), whole=False)
            assert psi[0, k] == pytest.approx(expected, abs=1e-6), (prefix, token)
        k = int(np.where(candidates[0] == step_token)[0][0])
        state, last, prefix = states[:, :, :, k], np.array([step_token]), prefix + (step_token,)


def test_beam_one_without_ctc_equals_greedy(name):
    model = make(name, seed=4).eval()
    features, lengths = torch.randn(3, 70, INPUT_DIM), torch.tensor([70, 55, 40])
    greedy = greedy_decode(model, features, lengths)
    beam = batch_attention_beam_search(model, features, lengths, AttentionBeamOptions(beam=1, length_norm=False))
    assert beam == greedy


def test_wider_beam_never_finds_a_worse_score(name):
    model = make(name, seed=5).eval()
    features = torch.randn(1, 70, INPUT_DIM)
    with torch.no_grad():
        memory, memory_lengths = model.encode(features, torch.tensor([70]))
    scores = []
    for beam in (1, 4):
        options = AttentionBeamOptions(beam=beam, length_norm=False)
        scores.append(attention_beam_search(model, memory, int(memory_lengths[0]), options)[0].score)
    assert scores[1] >= scores[0] - 1e-6


def _overfit(name: str, ctc_weight: float) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, list[list[int]]]:
    """Train on four utterances (distinct random 'audio', distinct label sequences) until learnt."""
    torch.manual_seed(0)
    model = make(name, ctc_weight=ctc_weight, label_smoothing=0.0)
    lengths = torch.tensor([48, 44, 40, 36])
    features = torch.randn(4, 48, INPUT_DIM)
    labels = [[2, 3, 4], [5, 6, 7], [3, 3, 6, 2], [7, 2]]
    targets = torch.tensor([t for label in labels for t in label])
    target_lengths = torch.tensor([len(label) for label in labels])
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(300):
        optimizer.zero_grad()
        loss = model.compute_loss(features, lengths, targets, target_lengths)
        loss.backward()
        optimizer.step()
    return model.eval(), features, lengths, labels


@pytest.mark.slow  # trains: in make test, not in test-fast
@pytest.mark.parametrize("ctc_weight", [0.0, 0.3])
def test_tiny_overfit_learns_every_utterance(name, ctc_weight):
    model, features, lengths, labels = _overfit(name, ctc_weight)
    assert greedy_decode(model, features, lengths) == labels
    beam = AttentionBeamOptions(beam=4, ctc_weight=ctc_weight)
    assert batch_attention_beam_search(model, features, lengths, beam) == labels
