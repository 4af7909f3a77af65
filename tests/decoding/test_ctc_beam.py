"""CTC prefix beam search: exact against brute force and torch's CTC loss, LM fusion, lexicon, flashlight."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from asrbench.data.tokenizer import CharTokenizer
from asrbench.decoding.ctc_beam import CTCBeamOptions, Hypothesis, Lexicon, ctc_prefix_beam_search
from asrbench.decoding.greedy import ctc_greedy
from asrbench.decoding.lm import train_ngram
from asrbench.errors import AsrbenchError

EXHAUSTIVE = CTCBeamOptions(beam=10_000, token_top_k=100, token_beam=math.inf, score_beam=math.inf, blank_skip=1.0)
TOKENIZER = CharTokenizer.build(["the cat cab sat on a mat"])


def random_log_probs(batch: int, frames: int, vocab: int, seed: int, sharpness: float = 2.0) -> torch.Tensor:
    """(B, T, V) log-softmax of Gaussian logits; the last token (<sos/eos>) all but impossible, as in a
    trained CTC head (the search never emits it, so greedy must not either for comparisons)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, frames, vocab, generator=generator) * sharpness
    logits[..., -1] = -30.0
    return logits.log_softmax(-1)


def peaky(
    text: str,
    tokenizer: CharTokenizer,
    seed: int,
    frames: int | None = None,
    overrides: dict[int, dict[str, float]] | None = None,
) -> torch.Tensor:
    """(T, V) log-probs: each character a spike frame followed by two blank frames.

    ``overrides`` maps a character's index in ``text`` to the probabilities of its spike frame.
    """
    rng = np.random.default_rng(seed)
    ids = tokenizer.encode(text)
    frames = frames or 3 * len(ids) + 2
    probs = rng.dirichlet(np.full(len(tokenizer), 0.5), size=frames) * 0.02
    probs[:, 0] += 1.0
    for i, token in enumerate(ids):
        row = probs[1 + 3 * i]
        row *= 0.1
        for char, p in (overrides or {}).get(i, {tokenizer.tokens[token]: 1.0}).items():
            row[tokenizer.tokens.index(char)] += p
    probs /= probs.sum(axis=1, keepdims=True)
    return torch.from_numpy(np.log(probs)).float()


def ctc_log_prob(log_probs: torch.Tensor, labels: list[int]) -> float:
    """log P(labels | frames) by torch's CTC forward algorithm: (T, V) -> float."""
    loss = torch.nn.functional.ctc_loss(
        log_probs.double().unsqueeze(1),
        torch.tensor([labels], dtype=torch.long),
        torch.tensor([log_probs.size(0)]),
        torch.tensor([len(labels)]),
        reduction="sum",
    )
    return -float(loss)


def words_of(hypothesis: Hypothesis, tokenizer: CharTokenizer = TOKENIZER) -> list[str]:
    return tokenizer.decode(hypothesis.token_ids).split(" ")


# ---- exactness -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_over_every_alignment(seed):
    tokenizer = CharTokenizer.build(["ab "])  # blank, unk, space, a, b, sos/eos
    frames, vocab = 6, len(tokenizer)
    log_probs = random_log_probs(1, frames, vocab, seed)[0].double()
    emitted = [i for i in range(vocab) if i != tokenizer.sos_id]  # the search never emits <sos/eos>
    paths = np.array(list(itertools.product(emitted, repeat=frames)))  # (N, T)
    path_scores = log_probs.numpy()[np.arange(frames), paths].sum(axis=1)
    totals: dict[tuple[int, ...], float] = {}
    for path, score in zip(paths.tolist(), path_scores.tolist(), strict=True):
        labels = tuple(c for t, c in enumerate(path) if c != 0 and (t == 0 or path[t - 1] != c))
        totals[labels] = float(np.logaddexp(totals.get(labels, -np.inf), score))
    best = max(totals, key=totals.get)

    hypotheses = ctc_prefix_beam_search(log_probs.float().unsqueeze(0), torch.tensor([frames]), tokenizer, EXHAUSTIVE)[
        0
    ]
    assert tuple(hypotheses[0].token_ids) == best
    assert hypotheses[0].acoustic == pytest.approx(totals[best], abs=1e-4)
    assert len(hypotheses) == len(totals)  # every label sequence, each once (identical prefixes merged)
    for hypothesis in hypotheses:
        assert hypothesis.acoustic == pytest.approx(totals[tuple(hypothesis.token_ids)], abs=1e-4)
        assert hypothesis.score == hypothesis.acoustic and hypothesis.lm == 0.0
    assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)


def test_scores_equal_ctc_forward_probability_with_repeats():
    tokenizer = CharTokenizer.build(["ab"])
    log_probs = random_log_probs(1, 9, len(tokenizer), seed=7)[0]
    log_probs[::2, tokenizer.encode("a")[0]] += 3.0  # a - a - a ...: repeated labels near the top
    log_probs = log_probs.log_softmax(-1)
    hypotheses = ctc_prefix_beam_search(log_probs.unsqueeze(0), torch.tensor([9]), tokenizer, EXHAUSTIVE)[0]
    assert any(a == b for h in hypotheses[:5] for a, b in itertools.pairwise(h.token_ids))
    for hypothesis in hypotheses[:50]:
        assert hypothesis.acoustic == pytest.approx(ctc_log_prob(log_probs, hypothesis.token_ids), abs=1e-4)


def test_repeated_characters_need_a_blank_between_them():
    tokenizer = CharTokenizer.build(["a"])
    a = tokenizer.encode("a")[0]
    probs = torch.full((4, len(tokenizer)), 1e-4)
    probs[:, a] = 1.0  # a a a a: only ever "a", never "aa"
    hypotheses = ctc_prefix_beam_search(probs.log().log_softmax(-1).unsqueeze(0), torch.tensor([4]), tokenizer)[0]
    assert hypotheses[0].token_ids == [a]
    probs[2] = 1e-4
    probs[2, 0] = 1.0  # a a - a: "aa"
    hypotheses = ctc_prefix_beam_search(probs.log().log_softmax(-1).unsqueeze(0), torch.tensor([4]), tokenizer)[0]
    assert hypotheses[0].token_ids == [a, a]


@pytest.mark.parametrize("seed", range(5))
def test_beam_one_equals_or_beats_greedy(seed):
    """Greedy's score is its best path's log-probability; a prefix search sums paths, so it scores at
    least that (not a theorem for beam 1, where a repeat can split the mass, but true on CTC-like outputs)."""
    log_probs = random_log_probs(3, 40, len(TOKENIZER), seed, sharpness=4.0)
    lengths = torch.tensor([40, 33, 25])
    greedy = ctc_greedy(log_probs, lengths)
    for beam in (1, 10):
        results = ctc_prefix_beam_search(log_probs, lengths, TOKENIZER, CTCBeamOptions(beam=beam, blank_skip=1.0))
        for b, length in enumerate(lengths.tolist()):
            best_path = float(log_probs[b, :length].max(dim=-1).values.sum())
            assert results[b][0].score >= best_path - 1e-4
            if beam == 1:
                assert results[b][0].token_ids == greedy[b] or results[b][0].score > best_path


def test_peaky_outputs_decode_to_the_spoken_text():
    text = "the cat sat on the mat"
    log_probs = peaky(text, TOKENIZER, seed=1).unsqueeze(0)
    lengths = torch.tensor([log_probs.size(1)])
    hypothesis = ctc_prefix_beam_search(log_probs, lengths, TOKENIZER)[0][0]
    assert TOKENIZER.decode(hypothesis.token_ids) == text
    # Blank skipping drops at most the (< 0.001 per frame) non-blank mass of skipped frames.
    exact = ctc_log_prob(log_probs[0], TOKENIZER.encode(text))
    assert exact - 1e-3 * log_probs.size(1) <= hypothesis.acoustic <= exact + 1e-5


# ---- batches and lengths -------------------------------------------------------------------


def test_batched_equals_one_by_one_and_lengths_are_honoured():
    texts = ["the cat", "a mat", "on the cab"]
    pieces = [peaky(text, TOKENIZER, seed=i) for i, text in enumerate(texts)]
    frames = max(piece.size(0) for piece in pieces) + 6
    spike = peaky("sat", TOKENIZER, seed=9, frames=frames)  # what the padding would spell if read
    padded = torch.stack([torch.cat([piece, spike[piece.size(0) :]]) for piece in pieces])
    lengths = torch.tensor([piece.size(0) for piece in pieces])
    options = CTCBeamOptions(beam=4)
    batched = ctc_prefix_beam_search(padded, lengths, TOKENIZER, options)
    for piece, text, hypotheses in zip(pieces, texts, batched, strict=True):
        alone = ctc_prefix_beam_search(piece.unsqueeze(0), torch.tensor([piece.size(0)]), TOKENIZER, options)[0]
        assert TOKENIZER.decode(hypotheses[0].token_ids) == text
        assert [h.token_ids for h in hypotheses] == [h.token_ids for h in alone]
        assert [h.score for h in hypotheses] == pytest.approx([h.score for h in alone], abs=1e-9)


def test_empty_utterance_gives_one_empty_hypothesis():
    log_probs = random_log_probs(2, 5, len(TOKENIZER), seed=0)
    result = ctc_prefix_beam_search(log_probs, torch.tensor([0, 5]), TOKENIZER)
    assert result[0] == [Hypothesis([], 0.0, 0.0, 0.0)]
    assert result[1]


# ---- lexicon ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_lexicon_outputs_only_lexicon_words(seed):
    words = {"the", "cat", "sat", "on", "mat", "a"}
    lexicon = Lexicon.from_words(sorted(words), TOKENIZER)
    log_probs = random_log_probs(2, 40, len(TOKENIZER), seed, sharpness=1.5)
    options = CTCBeamOptions(beam=8, lexicon=True)
    for hypotheses in ctc_prefix_beam_search(log_probs, torch.tensor([40, 31]), TOKENIZER, options, lexicon=lexicon):
        assert hypotheses
        for hypothesis in hypotheses:
            # A space only closes a word, so the only empty "word" is after a closing space at the end.
            assert set(TOKENIZER.decode(hypothesis.token_ids).split(" ")) - {""} <= words


def test_lexicon_from_file_formats_and_errors(tmp_path):
    good = tmp_path / "lexicon.txt"
    good.write_text("the\tt h e\ncat\tc a t\n\nmat\ndog\td o g\nQUIZ\n", encoding="utf-8")
    lexicon = Lexicon.from_file(good, TOKENIZER)
    assert sorted(word for word, _ in lexicon.spellings()) == ["cat", "mat", "the"]
    assert lexicon.skipped == 2  # "dog" and "QUIZ" use characters the tokenizer lacks
    assert dict(lexicon.spellings())["cat"] == TOKENIZER.encode("cat")
    for bad in ("two words\n", "word\t\n", "a\tb\tc\n"):
        path = tmp_path / "bad.txt"
        path.write_text("the\tt h e\n" + bad, encoding="utf-8")
        with pytest.raises(AsrbenchError, match=r"bad\.txt:2"):
            Lexicon.from_file(path, TOKENIZER)
    with pytest.raises(AsrbenchError, match="not found"):
        Lexicon.from_file(tmp_path / "missing.txt", TOKENIZER)
    assert Lexicon.from_words(["cat", "dog", "a b"], TOKENIZER).skipped == 2


def test_lexicon_flag_needs_words_from_somewhere():
    log_probs = random_log_probs(1, 5, len(TOKENIZER), seed=0)
    with pytest.raises(AsrbenchError, match="lexicon"):
        ctc_prefix_beam_search(log_probs, torch.tensor([5]), TOKENIZER, CTCBeamOptions(lexicon=True))


# ---- LM fusion -------------------------------------------------------------------------------


def ambiguous_cat_or_cab(seed: int = 3) -> torch.Tensor:
    """ "the ca?": the last spike is t (55%) or b (45%): acoustically "the cat", barely."""
    return peaky("the cat", TOKENIZER, seed, overrides={6: {"t": 0.55, "b": 0.45}}).unsqueeze(0)


@pytest.mark.parametrize("unit", ["word", "char"])
def test_strong_lm_flips_an_ambiguous_word(unit):
    sentences = ["the cab"] * 20 + ["the cat sat on a mat"]
    lm = train_ngram([s.split() if unit == "word" else list(s) for s in sentences], 3, unit=unit)
    log_probs = ambiguous_cat_or_cab()
    lengths = torch.tensor([log_probs.size(1)])
    without = ctc_prefix_beam_search(log_probs, lengths, TOKENIZER, CTCBeamOptions(), lm)[0][0]
    fused = ctc_prefix_beam_search(log_probs, lengths, TOKENIZER, CTCBeamOptions(lm_weight=1.0), lm)[0][0]
    assert TOKENIZER.decode(without.token_ids) == "the cat"
    assert TOKENIZER.decode(fused.token_ids) == "the cab"
    # The reported parts add up, and the LM part is the LM's own sentence log-probability.
    tokens = "the cab".split() if unit == "word" else list("the cab")
    assert fused.lm == pytest.approx(lm.sentence_logprob(tokens), abs=1e-9)
    assert fused.score == pytest.approx(fused.acoustic + 1.0 * fused.lm, abs=1e-9)
    assert fused.acoustic == pytest.approx(ctc_log_prob(log_probs[0], TOKENIZER.encode("the cab")), abs=0.02)


def test_word_bonus_counts_words_and_lexicon_comes_from_the_word_lm():
    lm = train_ngram([s.split() for s in ["the cab", "the cat sat on a mat"]], 2)
    log_probs = peaky("the cat sat", TOKENIZER, seed=4).unsqueeze(0)
    lengths = torch.tensor([log_probs.size(1)])
    options = CTCBeamOptions(lm_weight=0.5, word_bonus=2.0, lexicon=True)
    best = ctc_prefix_beam_search(log_probs, lengths, TOKENIZER, options, lm)[0][0]
    assert words_of(best) == ["the", "cat", "sat"]
    assert best.score == pytest.approx(best.acoustic + 0.5 * best.lm + 2.0 * 3, abs=1e-9)
    assert best.lm == pytest.approx(lm.sentence_logprob(["the", "cat", "sat"]), abs=1e-9)


def test_options_are_validated():
    with pytest.raises(AsrbenchError, match="beam"):
        CTCBeamOptions(beam=0)
    with pytest.raises(AsrbenchError, match="blank_skip"):
        CTCBeamOptions(blank_skip=0.2)
    with pytest.raises(AsrbenchError, match="expected log_probs"):
        ctc_prefix_beam_search(torch.zeros(1, 3, 4), torch.tensor([3]), TOKENIZER)


# ---- flashlight ------------------------------------------------------------------------------


def test_flashlight_agrees_on_peaky_inputs_without_lexicon():
    pytest.importorskip("flashlight.lib.text.decoder")
    from asrbench.decoding.flashlight import flashlight_beam_search

    texts = ["the cat sat on the mat", "a cab", "the mat sat on a cat"]
    pieces = [peaky(text, TOKENIZER, seed=10 + i) for i, text in enumerate(texts)]
    padded = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
    lengths = torch.tensor([piece.size(0) for piece in pieces])
    ours = ctc_prefix_beam_search(padded, lengths, TOKENIZER)
    theirs = flashlight_beam_search(padded, lengths, TOKENIZER)
    for text, mine, flashlight in zip(texts, ours, theirs, strict=True):
        assert TOKENIZER.decode(mine[0].token_ids) == TOKENIZER.decode(flashlight[0].token_ids) == text
        assert flashlight[0].acoustic == pytest.approx(mine[0].acoustic, abs=0.5)


def test_flashlight_with_a_word_lm_dir(tmp_path):
    pytest.importorskip("flashlight.lib.text.decoder.kenlm")
    from asrbench import fileio
    from asrbench.decoding.flashlight import flashlight_beam_search
    from asrbench.decoding.lm import LM_FORMAT

    sentences = ["the cab"] * 20 + ["the cat sat on a mat"]
    train_ngram([s.split() for s in sentences], 3).write_arpa(tmp_path / "lm.arpa")
    words = sorted({word for s in sentences for word in s.split()})
    fileio.write_text(tmp_path / "lexicon.txt", "".join(f"{w}\t{' '.join(w)}\n" for w in words))
    fileio.write_json(tmp_path / "lm.json", {"format": LM_FORMAT, "order": 3, "unit": "word"})
    ambiguous, short = ambiguous_cat_or_cab()[0], peaky("a mat", TOKENIZER, seed=5)
    log_probs = torch.nn.utils.rnn.pad_sequence([ambiguous, short], batch_first=True)
    lengths = torch.tensor([ambiguous.size(0), short.size(0)])
    plain = flashlight_beam_search(log_probs, lengths, TOKENIZER, CTCBeamOptions(), tmp_path)
    fused = flashlight_beam_search(log_probs, lengths, TOKENIZER, CTCBeamOptions(lm_weight=1.0), tmp_path)
    assert [TOKENIZER.decode(hyps[0].token_ids) for hyps in plain] == ["the cat", "a mat"]
    assert [TOKENIZER.decode(hyps[0].token_ids) for hyps in fused] == ["the cab", "a mat"]
