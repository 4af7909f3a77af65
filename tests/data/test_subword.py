"""Sentencepiece (bpe, unigram) tokenizers: ids, round trips, word starts, self-describing saves."""

from __future__ import annotations

import json

import pytest

from asrbench.data.special_tokens import BLANK, SOS_EOS, UNK
from asrbench.data.subword import WORD_START, SentencePieceTokenizer
from asrbench.data.tokenizer import build_tokenizer, tokenizer_from_dict
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import TokenizerConfig

NUMBERS = [
    "ONE",
    "TWO",
    "THREE",
    "FOUR",
    "FIVE",
    "SIX",
    "SEVEN",
    "EIGHT",
    "NINE",
    "TEN",
    "ELEVEN",
    "TWELVE",
    "TWENTY",
    "THIRTY",
    "HUNDRED",
    "THOUSAND",
    "AND",
    "ERASE",
    "RUBOUT",
    "ENTER",
]
TEXTS = [" ".join(NUMBERS[(i * 7 + j * 3) % len(NUMBERS)] for j in range(1 + i % 6)) for i in range(200)]


@pytest.fixture(scope="module", params=[("unigram", 40), ("bpe", 40), ("unigram", 25)])
def tokenizer(request) -> SentencePieceTokenizer:
    kind, size = request.param
    return build_tokenizer(TokenizerConfig(kind=kind, vocab_size=size), TEXTS)


def test_ids_blank_unk_pieces_then_sos_eos(tokenizer):
    assert isinstance(tokenizer, SentencePieceTokenizer)
    assert tokenizer.tokens[:2] == [BLANK, UNK] and tokenizer.tokens[-1] == SOS_EOS
    assert len(tokenizer) == tokenizer._processor.get_piece_size() + 2
    assert tokenizer.blank_id == 0 and tokenizer.sos_id == tokenizer.eos_id == len(tokenizer) - 1
    assert tokenizer.special_ids == {0, 1, len(tokenizer) - 1}
    assert tokenizer.word_separator_id is None


def test_every_training_text_round_trips_and_uses_no_special(tokenizer):
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids and not set(ids) & tokenizer.special_ids
        assert tokenizer.decode(ids) == text
    # Pieces are shorter than words: subwords, not whole transcripts.
    assert max(len(tokenizer.piece(i)) for i in range(2, len(tokenizer) - 1)) < max(len(text) for text in TEXTS)


def test_word_starts_are_the_marked_pieces_and_each_word_begins_with_one(tokenizer):
    marked = {i for i, token in enumerate(tokenizer.tokens) if token.startswith(WORD_START)}
    assert tokenizer.word_start_ids == marked and marked
    for word in NUMBERS:
        spelling = tokenizer.spell(word)
        assert spelling[0] in tokenizer.word_start_ids
        assert not set(spelling[1:]) & tokenizer.word_start_ids
        assert "".join(tokenizer.piece(i) for i in spelling) == word
        assert tokenizer.spellings(word) == [spelling]
    assert tokenizer.spell("ONE TWO") is None  # one word only
    assert tokenizer.spell("QUIZ") is None and tokenizer.spellings("QUIZ") == []  # Q, Z never seen
    assert tokenizer.unknown_characters("QUIZ ONE") == {"Q", "Z"}


def test_unknown_characters_encode_as_unk_and_decode_to_nothing(tokenizer):
    ids = tokenizer.encode("ONE Q TWO")
    assert 1 in ids
    assert tokenizer.decode(ids).split() == ["ONE", "TWO"]


def test_saved_dict_is_json_and_rebuilds_the_same_tokenizer(tokenizer):
    values = json.loads(json.dumps(tokenizer.to_dict()))  # tokenizer.json and checkpoints hold this
    rebuilt = tokenizer_from_dict(values)
    assert rebuilt.tokens == tokenizer.tokens and rebuilt.kind == tokenizer.kind
    assert all(rebuilt.encode(text) == tokenizer.encode(text) for text in TEXTS[:50])
    tampered = dict(values, tokens=values["tokens"][:-2] + ["@tampered", SOS_EOS])
    with pytest.raises(AsrbenchError, match="do not match the saved sentencepiece model"):
        tokenizer_from_dict(tampered)
    with pytest.raises(AsrbenchError, match="not a sentencepiece model"):
        tokenizer_from_dict(dict(values, model="bm90IGEgbW9kZWw=", tokens=None))


def test_training_is_deterministic_and_depends_only_on_the_texts():
    config = TokenizerConfig(kind="unigram", vocab_size=40)
    first, second = build_tokenizer(config, TEXTS), build_tokenizer(config, list(TEXTS))
    assert first.model_proto == second.model_proto
    other = build_tokenizer(config, TEXTS[:120])
    assert other.model_proto != first.model_proto


def test_bpe_and_unigram_differ():
    bpe = build_tokenizer(TokenizerConfig(kind="bpe", vocab_size=40), TEXTS)
    unigram = build_tokenizer(TokenizerConfig(kind="unigram", vocab_size=40), TEXTS)
    assert bpe.tokens != unigram.tokens
    assert tokenizer_from_dict(bpe.to_dict()).kind == "bpe"


def test_a_vocabulary_larger_than_the_text_allows_is_one_clear_error():
    with pytest.raises(
        AsrbenchError,
        match=r"tokenizer.vocab_size: 5000 is more unigram pieces than the training "
        r"transcripts allow \(at most \d+\)",
    ):
        build_tokenizer(TokenizerConfig(kind="unigram", vocab_size=5000), TEXTS)
    with pytest.raises(AsrbenchError, match="tokenizer.vocab_size: set it"):
        build_tokenizer(TokenizerConfig(kind="bpe", vocab_size=0), TEXTS)
    with pytest.raises(AsrbenchError, match="no training text"):
        build_tokenizer(TokenizerConfig(kind="bpe", vocab_size=10), ["", " "])


def test_a_recipe_without_vocab_size_fails_naming_the_key(tmp_path):
    from asrbench.recipe.config import resolve

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {dir: data/x}\ntokenizer: {kind: unigram}\nmodels: {cnn: {}}\n")
    with pytest.raises(AsrbenchError, match=r"recipe.yaml: tokenizer.kind unigram needs tokenizer.vocab_size"):
        resolve(recipe, "cnn")
