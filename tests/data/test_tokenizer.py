"""The tokenizer contract and the character tokenizer (blank 0, unk 1, the space as word separator)."""

from __future__ import annotations

import pytest

from asrbench.data.tokenizer import (
    BLANK,
    SOS_EOS,
    UNK,
    CharTokenizer,
    Tokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import TokenizerConfig


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return CharTokenizer.build(["YES NO", "NO YES", "NO'S"])


def test_blank_is_zero_and_unk_is_one(tokenizer):
    assert tokenizer.blank_id == 0
    assert tokenizer.tokens[0] == BLANK and tokenizer.tokens[1] == UNK
    assert tokenizer.encode("\u00e9") == [1]


def test_vocabulary_is_every_character_once_sorted(tokenizer):
    assert tokenizer.tokens[2:-1] == sorted(set("YES NO'S"))
    assert tokenizer.tokens[-1] == SOS_EOS
    assert len(tokenizer) == 3 + len(set("YES NO'S"))
    assert " " in tokenizer.tokens  # the word separator is a token of its own


def test_encode_decode_round_trip(tokenizer):
    for text in ["YES NO", "NO NO NO", "S'OYE", "", "   "]:
        ids = tokenizer.encode(text)
        assert len(ids) == len(text)
        assert all(i >= 2 for i in ids)
        assert tokenizer.decode(ids) == text


def test_encode_is_deterministic_for_the_same_texts():
    first = CharTokenizer.build(["B A", "C"])
    second = CharTokenizer.build(["C", "B A"])
    assert first.tokens == second.tokens
    assert first.encode("ABC") == second.encode("ABC")


def test_unknown_characters_become_unk_and_vanish_on_decode(tokenizer):
    ids = tokenizer.encode("YES! MAYBE")
    assert ids.count(1) == 4  # !, M, A, B
    assert tokenizer.decode(ids) == "YES YE"  # the known characters, in order
    assert tokenizer.unknown_characters("YES! MAYBE") == {"!", "M", "A", "B"}


def test_decode_drops_blank_and_unk(tokenizer):
    y, e = tokenizer.encode("YE")
    assert tokenizer.decode([0, y, 1, 0, e, 0]) == "YE"


def test_to_dict_from_dict_round_trip(tokenizer):
    values = tokenizer.to_dict()
    assert values == {"kind": "char", "tokens": tokenizer.tokens}
    rebuilt = CharTokenizer.from_dict(values)
    assert rebuilt.tokens == tokenizer.tokens
    assert rebuilt.encode("NO YES") == tokenizer.encode("NO YES")
    values["tokens"].append("Z")  # the dict is a copy, not the tokenizer's own list
    assert "Z" not in tokenizer.tokens


def test_from_dict_rejects_other_kinds_and_bad_token_lists():
    with pytest.raises(AsrbenchError, match="unsupported kind 'wordpiece'"):
        tokenizer_from_dict({"kind": "wordpiece", "tokens": [BLANK, UNK, "A"]})
    with pytest.raises(AsrbenchError, match="sentencepiece tokenizer without its model"):
        tokenizer_from_dict({"kind": "bpe", "tokens": [BLANK, UNK, "A"]})
    with pytest.raises(AsrbenchError, match="blank"):
        CharTokenizer.from_dict({"kind": "char", "tokens": ["A", BLANK, UNK]})


def test_sos_eos_is_the_last_token_and_never_decoded(tokenizer):
    assert tokenizer.sos_id == tokenizer.eos_id == len(tokenizer) - 1
    assert tokenizer.decode([tokenizer.sos_id] + tokenizer.encode("NO") + [tokenizer.eos_id]) == "NO"
    assert tokenizer.word_separator_id == tokenizer.tokens.index(" ")


def test_tokenizer_saved_without_sos_eos_still_loads():
    old = CharTokenizer.from_dict({"kind": "char", "tokens": [BLANK, UNK, " ", "A"]})
    assert old.sos_id is None and old.decode([3, 2, 3]) == "A A"


def test_the_char_tokenizer_meets_the_contract_and_is_built_from_the_config(tokenizer):
    built = build_tokenizer(TokenizerConfig(kind="char"), ["YES NO", "NO YES", "NO'S"])
    assert isinstance(built, Tokenizer) and built.tokens == tokenizer.tokens
    assert tokenizer_from_dict(built.to_dict()).tokens == built.tokens
    with pytest.raises(AsrbenchError, match="tokenizer.kind: unknown kind 'wordpiece'"):
        build_tokenizer(TokenizerConfig(kind="wordpiece"), ["A"])


def test_words_are_spelled_by_the_tokenizer(tokenizer):
    assert tokenizer.spell("YES") == tokenizer.encode("YES")
    assert tokenizer.spell("YES NO") is None  # one word, not two
    assert tokenizer.spell("MAYBE") is None  # M, A, B are not in the tokenizer
    assert tokenizer.spell("") is None
    assert tokenizer.special_ids == {0, 1, len(tokenizer) - 1}
