"""Transducers (conformer_transducer, lstm_transducer): the joint tensor and loss, padding, the
predictors' step-by-step decoding, greedy and modified beam search, the searcher and tuning grid
they hand out, and tiny overfits."""

from __future__ import annotations

import itertools

import pytest
import torch

from asrbench.data.tokenizer import BLANK, SOS_EOS, UNK, CharTokenizer
from asrbench.decoding.ctc_beam import Lexicon
from asrbench.decoding.search_table import build_searcher, dev_searcher, greedy_decode, tuning_grid
from asrbench.decoding.searchers import DecodeOptions, TuningRequest
from asrbench.decoding.transducer_search import (
    TransducerBeamOptions,
    greedy_advance,
    greedy_init,
    greedy_search,
    modified_beam_search,
)
from asrbench.errors import AsrbenchError
from asrbench.models import MODELS, build_model
from asrbench.models.transducer import TransducerModel

INPUT_DIM = 20
VOCAB = 9  # blank, unk, 6 characters, <sos/eos>
EOS = VOCAB - 1
TOKENIZER = CharTokenizer([BLANK, UNK, " ", "A", "B", "C", "D", "E", SOS_EOS])  # ids 2..7: " ABCDE"
ENCODER = {
    "conformer_transducer": {
        "d_model": 16,
        "num_heads": 2,
        "num_layers": 1,
        "ff_dim": 32,
        "kernel_size": 5,
        "subsample_channels": 4,
    },
    "lstm_transducer": {"subsample_channels": 4, "hidden_size": 16, "num_layers": 1},
}
# Every model with each predictor: (model, predictor) pairs.
VARIANTS = [(name, predictor) for name in ENCODER for predictor in ("stateless", "lstm")]


def make(name: str, predictor: str, seed: int = 0, **options) -> TransducerModel:
    torch.manual_seed(seed)
    tiny = {**ENCODER[name], "predictor": predictor, "predictor_dim": 16, "joiner_dim": 16, "dropout": 0.0}
    return build_model(name, {**tiny, **options}, INPUT_DIM, VOCAB)


def settled(name: str, predictor: str, seed: int = 0, **options) -> TransducerModel:
    """Eval mode after a few training-mode passes (batch-norm statistics that are not the identity)."""
    model = make(name, predictor, seed, **options).train()
    with torch.no_grad():
        for _ in range(3):
            model.encode(torch.randn(4, 50, INPUT_DIM) * 2 + 1, torch.tensor([50, 45, 40, 30]))
    return model.eval()


@pytest.fixture(params=VARIANTS, ids=[f"{name}-{predictor}" for name, predictor in VARIANTS])
def variant(request) -> tuple[str, str]:
    return request.param


def _batch(seed: int = 1):
    torch.manual_seed(seed)
    lengths = [64, 41, 23]
    utterances = [torch.randn(length, INPUT_DIM) for length in lengths]
    labels = [[2, 3, 4, 5], [6, 7], [3]]
    return utterances, lengths, labels


def _targets(labels: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor([t for label in labels for t in label], dtype=torch.long),
        torch.tensor([len(label) for label in labels]),
    )


def test_joint_tensor_shapes_and_normalized_log_probs(variant):
    model = make(*variant).eval()
    features, lengths = torch.randn(3, 60, INPUT_DIM), torch.tensor([60, 48, 30])
    padded = torch.tensor([[2, 3, 4], [5, 6, 0], [7, 0, 0]])
    with torch.no_grad():
        encoded, encoded_lengths = model.encode(features, lengths)
        log_probs = model.joint_log_probs(encoded, padded)
    assert encoded.shape == (3, int(encoded_lengths.max()), model.encoder_dim)
    assert log_probs.shape == (3, encoded.size(1), 4, VOCAB) and log_probs.dtype == torch.float32
    assert torch.allclose(log_probs.logsumexp(-1), torch.zeros(log_probs.shape[:-1]), atol=1e-5)
    assert torch.isneginf(log_probs[..., EOS]).all()  # <sos/eos> is never emitted
    assert torch.isfinite(log_probs[..., :EOS]).all()
    targets, target_lengths = _targets([[2, 3, 4], [5, 6], [7]])
    loss = model.compute_loss(features, lengths, targets, target_lengths)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss > 0


def test_the_joint_tensor_is_float32_under_autocast():
    model = make("conformer_transducer", "stateless").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        encoded, _ = model.encode(torch.randn(2, 40, INPUT_DIM), torch.tensor([40, 30]))
        log_probs = model.joint_log_probs(encoded, torch.tensor([[2, 3], [4, 0]]))
    assert log_probs.dtype == torch.float32


@pytest.mark.parametrize("pad", ["zeros", "noise"])
def test_padding_changes_no_utterance_loss_or_output(variant, pad):
    """Each utterance alone and inside a padded batch: the same loss (the batch's is their mean),
    the same joint log-probs inside its lattice, the same hypotheses."""
    model = settled(*variant, ctc_weight=0.3)
    utterances, lengths, labels = _batch()
    batch = torch.nn.utils.rnn.pad_sequence(utterances, batch_first=True)
    if pad == "noise":
        for i, length in enumerate(lengths):
            batch[i, length:] = 3 * torch.randn(batch.size(1) - length, INPUT_DIM)
    targets, target_lengths = _targets(labels)
    padded = torch.nn.utils.rnn.pad_sequence([torch.tensor(label) for label in labels], batch_first=True)
    with torch.no_grad():
        batch_loss = model.compute_loss(batch, torch.tensor(lengths), targets, target_lengths)
        encoded, encoded_lengths = model.encode(batch, torch.tensor(lengths))
        joint = model.joint_log_probs(encoded, padded)
        batch_greedy = greedy_decode(model, batch, torch.tensor(lengths))
        alone_losses = []
        for i, utterance in enumerate(utterances):
            features, length = utterance[None], torch.tensor([lengths[i]])
            alone_losses.append(model.compute_loss(features, length, *_targets([labels[i]])))
            alone_encoded, alone_lengths = model.encode(features, length)
            alone_joint = model.joint_log_probs(alone_encoded, torch.tensor([labels[i]]))
            frames, positions = int(alone_lengths[0]), len(labels[i]) + 1
            assert int(encoded_lengths[i]) == frames
            difference = (joint[i, :frames, :positions, :EOS] - alone_joint[0, :, :, :EOS]).abs().max().item()
            assert difference < 1e-4, f"utterance {i}: max |difference| {difference:.3g}"
            assert greedy_decode(model, features, length) == [batch_greedy[i]]
    assert batch_loss.item() == pytest.approx(torch.stack(alone_losses).mean().item(), rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("predictor", ["stateless", "lstm"])
@pytest.mark.parametrize("context_size", [1, 2, 3])
def test_step_by_step_predictor_matches_teacher_forcing(predictor, context_size):
    model = make("lstm_transducer", predictor, context_size=context_size).eval()
    tokens = torch.tensor([[0, 2, 3, 3, 7], [0, 5, 6, 2, 4]])  # the start symbol (blank) first
    with torch.no_grad():
        forced = model.predictor(tokens)  # (B, U+1, P)
        state = model.predictor_init_state(2, tokens.device)
        for position in range(tokens.size(1)):
            predicted, state = model.predictor_step(tokens[:, position], state)
            assert torch.allclose(predicted, forced[:, position], atol=1e-6), position


def test_select_and_merge_state_pick_rows(variant):
    model = make(*variant).eval()
    state = model.predictor_init_state(3, torch.device("cpu"))
    with torch.no_grad():
        out_a, state_a = model.predictor_step(torch.tensor([2, 3, 4]), state)
        out_b, state_b = model.predictor_step(torch.tensor([5, 6, 7]), state_a)
        merged = model.merge_state(state_a, state_b, torch.tensor([True, False, True]))
        picked = model.select_state(merged, torch.tensor([1, 0, 0]))
        next_out, _ = model.predictor_step(torch.tensor([2, 2, 2]), picked)
        # row 0 of `picked` is row 1 of state_a (not merged); rows 1 and 2 are row 0 of state_b
        expected_0, _ = model.predictor_step(torch.tensor([2]), model.select_state(state_a, torch.tensor([1])))
        expected_1, _ = model.predictor_step(torch.tensor([2]), model.select_state(state_b, torch.tensor([0])))
    assert torch.allclose(next_out[0], expected_0[0], atol=1e-6)
    assert torch.allclose(next_out[1], expected_1[0], atol=1e-6) and torch.allclose(next_out[2], expected_1[0])


def _encoded(model, seed: int = 2):
    torch.manual_seed(seed)
    lengths = torch.tensor([70, 52, 33, 20])
    with torch.no_grad():
        return model.encode(torch.randn(4, 70, INPUT_DIM), lengths)


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_greedy_search_of_a_batch_equals_one_utterance_at_a_time(variant, max_symbols):
    model = make(*variant, seed=3).eval()
    encoded, lengths = _encoded(model)
    batch = greedy_search(model, encoded, lengths, max_symbols)
    assert any(hypothesis.token_ids for hypothesis in batch)  # an untrained joiner still emits
    for i, hypothesis in enumerate(batch):
        alone = greedy_search(model, encoded[i : i + 1, : int(lengths[i])], lengths[i : i + 1], max_symbols)[0]
        assert alone.token_ids == hypothesis.token_ids
        assert alone.score == pytest.approx(hypothesis.score, abs=1e-4)
        assert all(0 < token < EOS for token in hypothesis.token_ids)
    if max_symbols == 1:
        assert all(len(h.token_ids) <= int(length) for h, length in zip(batch, lengths, strict=True))


@pytest.mark.parametrize("max_symbols", [1, 3])
def test_a_batch_of_one_searches_as_the_batched_loop_does_and_resumes(variant, max_symbols):
    """A batch of one takes its own loop (Python numbers, not one-element tensors); it must keep
    what the batched loop keeps: tokens, their frames, frames since the last symbol, the predictor's
    state, and split into chunks it must give the pass in one piece."""
    model = make(*variant, seed=3).eval()
    encoded, lengths = _encoded(model)
    length = lengths[1:2]
    one = encoded[1:2, : int(length)]
    twice = greedy_advance(
        model, greedy_init(model, 2, one.device), one.expand(2, -1, -1), length.expand(2), max_symbols
    )
    alone = greedy_advance(model, greedy_init(model, 1, one.device), one, length, max_symbols)
    assert alone.tokens[0] == twice.tokens[0] and alone.token_frames[0] == twice.token_frames[0]
    assert alone.tokens[0], "an untrained joiner still emits"
    assert int(alone.quiet[0]) == int(twice.quiet[0]) and alone.frames == twice.frames == int(length)
    assert float(alone.scores[0]) == pytest.approx(float(twice.scores[0]), abs=1e-4)
    assert torch.allclose(alone.predicted, twice.predicted[:1], atol=1e-5)
    pieces = greedy_init(model, 1, one.device)
    cuts = [0, 3, 8, int(length)]  # uneven chunks
    for start, end in itertools.pairwise(cuts):
        pieces = greedy_advance(model, pieces, one[:, start:end], torch.tensor([end - start]), max_symbols)
    assert pieces.tokens == alone.tokens and pieces.token_frames == alone.token_frames
    assert float(pieces.scores[0]) == float(alone.scores[0]) and int(pieces.quiet[0]) == int(alone.quiet[0])


def test_beam_one_is_greedy_search_with_one_symbol_per_frame(variant):
    """(Not greedy with more symbols per frame: modified beam search emits one symbol per frame.)"""
    model = make(*variant, seed=4).eval()
    encoded, lengths = _encoded(model)
    greedy = greedy_search(model, encoded, lengths, max_symbols_per_frame=1)
    beam = modified_beam_search(model, encoded, lengths, TransducerBeamOptions(beam=1))
    for hypotheses, best in zip(beam, greedy, strict=True):
        assert len(hypotheses) == 1
        assert hypotheses[0].token_ids == best.token_ids
        assert hypotheses[0].score == pytest.approx(best.score, abs=1e-4)


@pytest.mark.parametrize("max_symbols", [2, 3])
def test_beam_one_with_several_symbols_a_frame_is_greedy_search_with_as_many(variant, max_symbols):
    model = make(*variant, seed=4).eval()
    encoded, lengths = _encoded(model)
    greedy = greedy_search(model, encoded, lengths, max_symbols_per_frame=max_symbols)
    options = TransducerBeamOptions(beam=1, max_symbols_per_frame=max_symbols)
    beam = modified_beam_search(model, encoded, lengths, options)
    assert any(len(h.token_ids) > int(n) for h, n in zip(greedy, lengths, strict=True))  # some frame emits twice
    for hypotheses, best in zip(beam, greedy, strict=True):
        assert hypotheses[0].token_ids == best.token_ids
        assert hypotheses[0].score == pytest.approx(best.score, abs=1e-4)


def test_several_symbols_a_frame_widen_beam_search(variant):
    """Beam 4 with up to 3 symbols a frame: batched as alone, distinct hypotheses best first (beam
    search keeps no guarantee to reach greedy's score; beam 1 equals greedy, above)."""
    model = make(*variant, seed=5).eval()
    encoded, lengths = _encoded(model)
    options = TransducerBeamOptions(beam=4, max_symbols_per_frame=3)
    batch = modified_beam_search(model, encoded, lengths, options)
    for i, hypotheses in enumerate(batch):
        assert 1 <= len(hypotheses) <= 4
        assert len({tuple(h.token_ids) for h in hypotheses}) == len(hypotheses)
        assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)
        alone = modified_beam_search(model, encoded[i : i + 1, : int(lengths[i])], lengths[i : i + 1], options)[0]
        assert [h.token_ids for h in alone] == [h.token_ids for h in hypotheses]
    with pytest.raises(AsrbenchError, match="--max-symbols must be at least 1"):
        TransducerBeamOptions(max_symbols_per_frame=0)


def test_beam_search_finds_a_score_at_least_greedy_and_distinct_hypotheses(variant):
    model = make(*variant, seed=5).eval()
    encoded, lengths = _encoded(model)
    greedy = greedy_search(model, encoded, lengths, max_symbols_per_frame=1)
    beam = modified_beam_search(model, encoded, lengths, TransducerBeamOptions(beam=4))
    for hypotheses, best in zip(beam, greedy, strict=True):
        assert hypotheses[0].score >= best.score - 1e-6
        assert 1 <= len(hypotheses) <= 4
        assert len({tuple(h.token_ids) for h in hypotheses}) == len(hypotheses)  # identical prefixes merged
        assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)


def test_beam_search_of_a_batch_equals_one_utterance_at_a_time(variant):
    model = make(*variant, seed=6).eval()
    encoded, lengths = _encoded(model)
    options = TransducerBeamOptions(beam=3)
    batch = modified_beam_search(model, encoded, lengths, options)
    for i, hypotheses in enumerate(batch):
        alone = modified_beam_search(model, encoded[i : i + 1, : int(lengths[i])], lengths[i : i + 1], options)[0]
        assert [h.token_ids for h in alone] == [h.token_ids for h in hypotheses]
        assert [h.score for h in alone] == pytest.approx([h.score for h in hypotheses], abs=1e-4)


def test_score_extension_reaches_every_token_proposal():
    model = make("conformer_transducer", "stateless", seed=7).eval()
    encoded, lengths = _encoded(model)
    options = TransducerBeamOptions(beam=4)
    plain = modified_beam_search(model, encoded, lengths, options)
    calls = []

    def neutral(utterance, prefix, tokens):
        calls.append((utterance, prefix, tokens.copy()))
        return torch.zeros(len(tokens)).numpy()

    same = modified_beam_search(model, encoded, lengths, options, score_extension=neutral)
    assert [[h.token_ids for h in hyps] for hyps in same] == [[h.token_ids for h in hyps] for hyps in plain]
    assert calls and all((tokens != 0).all() for _, _, tokens in calls)  # the blank gets no extension
    assert {utterance for utterance, _, _ in calls} == {0, 1, 2, 3}
    used = {token for hyps in plain for h in hyps for token in h.token_ids}
    banned = max(used, key=lambda token: sum(h.token_ids.count(token) for hyps in plain for h in hyps))

    def ban(utterance, prefix, tokens):
        return torch.where(torch.from_numpy(tokens) == banned, float("-inf"), 0.0).double().numpy()

    constrained = modified_beam_search(model, encoded, lengths, options, score_extension=ban)
    assert all(banned not in h.token_ids for hyps in constrained for h in hyps)


def test_the_family_hands_out_its_searchers_and_grid():
    model = make("conformer_transducer", "stateless", ctc_weight=0.3).eval()
    assert MODELS["conformer_transducer"].family.default_mode == "transducer"
    assert MODELS["lstm_transducer"].family.default_mode == "transducer"
    assert model.search_modes() == ("transducer", "ctc")
    greedy = build_searcher(model, TOKENIZER, DecodeOptions())
    assert greedy.description == {
        "kind": "transducer_greedy",
        "beam": 1,
        "max_symbols_per_frame": 3,
        "lm": None,
        "lexicon": None,
    }
    beam = build_searcher(model, TOKENIZER, DecodeOptions(beam=5, mode="transducer", length_norm=True))
    assert beam.description == {
        "kind": "transducer_modified_beam",
        "beam": 5,
        "length_norm": True,
        "max_symbols_per_frame": 1,
        "lm": None,
        "lm_weight": 0.0,
        "word_bonus": 0.0,
        "lexicon": None,
        "lexicon_words": None,
    }
    assert build_searcher(model, TOKENIZER, DecodeOptions(mode="ctc")).kind == "ctc_greedy"
    features, lengths = torch.randn(2, 40, INPUT_DIM), torch.tensor([40, 31])
    assert greedy(features, lengths) == greedy_decode(model, features, lengths) == _dev_decode(model, features, lengths)
    assert len(beam(features, lengths)) == 2
    grid = tuning_grid(model, TuningRequest(beams=(1, 4, 8)))
    assert [(options.beam, options.mode) for options in grid] == [(1, "auto"), (4, "auto"), (8, "auto")]
    assert all(options.mode == "ctc" for options in tuning_grid(model, TuningRequest(mode="ctc")))


def test_options_the_family_cannot_honour_are_one_line_errors():
    model = make("lstm_transducer", "lstm", ctc_weight=0.0).eval()
    assert model.search_modes() == ("transducer",) and model.ctc_head is None
    for options, fragment in (
        (DecodeOptions(beam=4, lexicon="train"), "--lexicon train needs the run's data dir"),
        (
            DecodeOptions(mode="ctc"),
            r"^--mode ctc: this transducer model decodes with "
            r"--mode transducer only \(it has no CTC branch",
        ),
        (
            DecodeOptions(mode="attention"),
            "^--mode attention: this transducer model decodes with --mode transducer only$",
        ),
        (DecodeOptions(beam=4, backend="flashlight"), "CTC search backend"),
    ):
        with pytest.raises(AsrbenchError, match=fragment):
            build_searcher(model, TOKENIZER, options)
    grid = tuning_grid(model, TuningRequest(beams=(4,), lm="runs/lm"))  # an LM: weights and bonuses too
    assert len({(options.lm_weight, options.word_bonus) for options in grid}) == len(grid) > 1
    with pytest.raises(AsrbenchError, match="no CTC branch"):
        model(torch.randn(1, 40, INPUT_DIM), torch.tensor([40]))
    ctc_model = build_model("dnn", {}, INPUT_DIM, VOCAB)
    with pytest.raises(AsrbenchError, match="^--mode transducer: this ctc model decodes with --mode ctc only$"):
        build_searcher(ctc_model, TOKENIZER, DecodeOptions(mode="transducer"))
    with pytest.raises(AsrbenchError, match="unknown decoding mode"):
        DecodeOptions(mode="rnnt")
    with pytest.raises(AsrbenchError, match="beam must be at least 1"):
        TransducerBeamOptions(beam=0)


@pytest.mark.parametrize(
    ("option", "value"), [("predictor", "gru"), ("ctc_weight", 1.0), ("context_size", 0), ("max_symbols_per_frame", 0)]
)
def test_invalid_options_are_refused(option, value):
    with pytest.raises(AsrbenchError, match=option):
        build_model("conformer_transducer", {**ENCODER["conformer_transducer"], option: value}, INPUT_DIM, VOCAB)


def test_a_transducer_lacking_the_protocol_is_refused_at_registration():
    from asrbench.models import family_of, register

    class NoJoiner(TransducerModel):
        join = None

    with pytest.raises(TypeError, match=r"NoJoiner satisfies no model family \(.*transducer needs join"):
        register("no_joiner", MODELS["conformer_transducer"].config, NoJoiner)
    with pytest.raises(TypeError, match="transducer needs join"):
        family_of(NoJoiner)
    assert "no_joiner" not in MODELS


def _overfit(name: str, predictor: str, ctc_weight: float):
    """Train on four utterances (distinct random 'audio', distinct label sequences) until learnt."""
    torch.manual_seed(0)
    model = make(name, predictor, ctc_weight=ctc_weight, predictor_dim=32, joiner_dim=32)
    lengths = torch.tensor([48, 44, 40, 36])
    features = torch.randn(4, 48, INPUT_DIM)
    labels = [[2, 3, 4], [5, 6, 7], [3, 3, 6, 2], [7, 2]]
    targets, target_lengths = _targets(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(200):
        optimizer.zero_grad()
        loss = model.compute_loss(features, lengths, targets, target_lengths)
        loss.backward()
        optimizer.step()
    return model.eval(), features, lengths, labels


@pytest.mark.slow  # trains: in make test, not in test-fast
@pytest.mark.parametrize(
    ("name", "predictor", "ctc_weight"),
    [
        ("conformer_transducer", "stateless", 0.0),
        ("conformer_transducer", "lstm", 0.3),
        ("lstm_transducer", "lstm", 0.3),
        ("lstm_transducer", "stateless", 0.0),
    ],
)
def test_tiny_overfit_learns_every_utterance(name, predictor, ctc_weight):
    model, features, lengths, labels = _overfit(name, predictor, ctc_weight)
    assert greedy_decode(model, features, lengths) == labels
    encoded, encoded_lengths = model.encode(features, lengths)
    beam = modified_beam_search(model, encoded, encoded_lengths, TransducerBeamOptions(beam=4))
    assert [hypotheses[0].token_ids for hypotheses in beam] == labels
    assert build_searcher(model, TOKENIZER, DecodeOptions(beam=4))(features, lengths) == labels
    # A lexicon keeps the search to its words: "CDE" (utterance 1) is not one of them.
    lexicon = Lexicon.from_words(["AB", "AAD", "E"], TOKENIZER)
    constrained = build_searcher(model, TOKENIZER, DecodeOptions(beam=4), lexicon=lexicon)(features, lengths)
    assert constrained[1] != labels[1]
    assert all(set(TOKENIZER.decode(ids).split()) <= {"AB", "AAD", "E"} for ids in constrained)


@pytest.mark.slow
def test_a_transducer_trains_decodes_and_tunes_through_the_run_dir(tmp_path):
    """The trainer, checkpoints, decode and tune know nothing of transducers: the family contract
    carries it all (a tiny conformer_transducer, three epochs on the tone corpus)."""
    from helpers import write_tone_corpus

    from asrbench.decoding.decode import decode
    from asrbench.decoding.tune import tune
    from asrbench.training.trainer import train

    data_dir = write_tone_corpus(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
data: {{dir: {data_dir}}}
features: {{sample_rate: 8000, num_mel_bins: 23}}
augment: {{spec_augment: false}}
train: {{epochs: 3, batch_frames: 600, lr: 5.0e-3, warmup_steps: 5}}
models:
  conformer_transducer: {{d_model: 32, num_heads: 2, num_layers: 1, ff_dim: 64, kernel_size: 5,
                         subsample_channels: 4, predictor_dim: 32, joiner_dim: 32, dropout: 0.0}}
""")
    run = tmp_path / "run"
    summary = train(recipe, "conformer_transducer", run, seed=0)
    assert summary["epochs"] == 3
    greedy = decode(run, "test")
    assert greedy.decoder.kind == "transducer_greedy" and greedy.utterances == 4
    assert greedy.decoder.search["max_symbols_per_frame"] == 3
    beam = decode(run, "test", options=DecodeOptions(beam=3), tag="beam")
    assert beam.decoder.kind == "transducer_modified_beam" and beam.decoder.search["beam"] == 3
    ctc = decode(run, "test", options=DecodeOptions(mode="ctc"), tag="ctc")
    assert ctc.decoder.kind == "ctc_greedy"
    tuned = tune(run, beams=[1, 2])
    assert [row["options"]["beam"] for row in tuned["grid"]] == [1, 2]


@pytest.mark.parametrize("name", list(ENCODER))
def test_fused_sub_batches_give_the_dense_loss_and_gradients(name):
    """fused_batch_size: joiner + loss over checkpointed sub-batches, each cut to its own lengths;
    the same loss and the same gradient for every parameter as the whole batch at once."""
    labels = [[2, 3, 4], [5], [3, 3, 6, 2, 7], [7, 2], [4, 4]]
    targets, target_lengths = _targets(labels)
    features, lengths = torch.randn(5, 48, INPUT_DIM), torch.tensor([48, 30, 44, 20, 36])
    results = []
    for fused in (0, 2):
        model = make(name, "stateless", seed=1, fused_batch_size=fused).train()
        loss = model.compute_loss(features, lengths, targets, target_lengths)
        loss.backward()
        results.append(
            (
                float(loss.detach()),
                {key: param.grad.clone() for key, param in model.named_parameters() if param.grad is not None},
            )
        )
    (dense_loss, dense_grads), (fused_loss, fused_grads) = results
    assert fused_loss == pytest.approx(dense_loss, rel=1e-5)
    assert dense_grads.keys() == fused_grads.keys() and any("joiner" in key for key in dense_grads)
    for key, grad in dense_grads.items():
        torch.testing.assert_close(fused_grads[key], grad, rtol=1e-4, atol=1e-5, msg=key)
    with pytest.raises(AsrbenchError, match="model.fused_batch_size must not be negative, got -1"):
        build_model(name, {**ENCODER[name], "fused_batch_size": -1}, INPUT_DIM, VOCAB)


def test_a_no_grad_loss_pass_splits_big_batches_and_gives_the_same_loss(monkeypatch):
    """The dev loss (decode's big batches, no backward) runs in sub-batches within a joint budget."""
    import asrbench.models.transducer as transducer

    labels = [[2, 3, 4], [5], [3, 3, 6, 2, 7], [7, 2], [4, 4]]
    targets, target_lengths = _targets(labels)
    features, lengths = torch.randn(5, 48, INPUT_DIM), torch.tensor([48, 30, 44, 20, 36])
    model = make("conformer_transducer", "stateless", seed=2).eval()
    with torch.no_grad():
        whole = model.compute_loss(features, lengths, targets, target_lengths)
        calls = []
        real = model._joint_loss
        monkeypatch.setattr(model, "_joint_loss", lambda *args: calls.append(args[0].shape) or real(*args))
        monkeypatch.setattr(transducer, "EVAL_JOINT_BYTES", 1)  # one utterance per sub-batch
        split = model.compute_loss(features, lengths, targets, target_lengths)
    assert len(calls) == 5 and float(split) == pytest.approx(float(whole), rel=1e-5)


def _dev_decode(model, features, lengths):
    """The ids the trainer's dev search gives (network and search in one call)."""
    searcher = dev_searcher(model)
    return searcher.search(searcher.outputs(features, lengths))
