"""Character tokenizer (blank 0, unk 1) and greedy CTC decoding on hand-built log-probs."""

from __future__ import annotations

import pytest
import torch

from asrbench.data.tokenizer import BLANK, SOS_EOS, UNK, CharTokenizer, ctc_greedy
from asrbench.errors import AsrbenchError


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
    with pytest.raises(AsrbenchError, match="unsupported kind"):
        CharTokenizer.from_dict({"kind": "bpe", "tokens": [BLANK, UNK, "A"]})
    with pytest.raises(AsrbenchError, match="blank"):
        CharTokenizer.from_dict({"kind": "char", "tokens": ["A", BLANK, UNK]})


# --- ctc_greedy ----------------------------------------------------------------------------------


def log_probs_for(paths: list[list[int]], vocab: int = 6) -> torch.Tensor:
    """(B, T, V) log-probs whose best path is ``paths[b]`` (padded with blanks to the longest)."""
    time = max(len(path) for path in paths)
    scores = torch.full((len(paths), time, vocab), -5.0)
    for b, path in enumerate(paths):
        for t in range(time):
            scores[b, t, path[t] if t < len(path) else 0] = 0.0
    return scores.log_softmax(-1)


def test_ctc_greedy_merges_repeats_and_removes_blanks():
    log_probs = log_probs_for([[0, 2, 2, 0, 3, 3, 3, 0, 0, 2]])
    assert ctc_greedy(log_probs, torch.tensor([10])) == [[2, 3, 2]]


def test_ctc_greedy_keeps_repeats_separated_by_blank():
    log_probs = log_probs_for([[4, 0, 4, 4, 0, 0, 4]])
    assert ctc_greedy(log_probs, torch.tensor([7])) == [[4, 4, 4]]


def test_ctc_greedy_all_blank_is_empty():
    assert ctc_greedy(log_probs_for([[0, 0, 0]]), torch.tensor([3])) == [[]]


def test_ctc_greedy_respects_lengths():
    # Frames past each utterance's length are padding: whatever they say must be ignored.
    log_probs = log_probs_for([[2, 3, 4, 5, 5], [3, 0, 3, 5, 2]])
    assert ctc_greedy(log_probs, torch.tensor([5, 3])) == [[2, 3, 4, 5], [3, 3]]
    assert ctc_greedy(log_probs, torch.tensor([2, 1])) == [[2, 3], [3]]


def test_ctc_greedy_repeat_across_the_length_boundary():
    log_probs = log_probs_for([[2, 2, 2, 2]])
    assert ctc_greedy(log_probs, torch.tensor([2])) == [[2]]


def test_ctc_greedy_decodes_through_the_tokenizer(tokenizer):
    y, e, s, space, n, o = tokenizer.encode("YES NO")
    path = [y, y, 0, e, s, s, 0, space, n, 0, o, o]
    ids = ctc_greedy(log_probs_for([path], vocab=len(tokenizer)), torch.tensor([len(path)]))[0]
    assert tokenizer.decode(ids) == "YES NO"


def test_sos_eos_is_the_last_token_and_never_decoded(tokenizer):
    assert tokenizer.sos_id == tokenizer.eos_id == len(tokenizer) - 1
    assert tokenizer.decode([tokenizer.sos_id] + tokenizer.encode("NO") + [tokenizer.eos_id]) == "NO"
    assert tokenizer.space_id == tokenizer.tokens.index(" ")


def test_tokenizer_saved_without_sos_eos_still_loads():
    old = CharTokenizer.from_dict({"kind": "char", "tokens": [BLANK, UNK, " ", "A"]})
    assert old.sos_id is None and old.decode([3, 2, 3]) == "A A"
