"""Phone units: reading pronunciation lexicons, the phone tokenizer, and out-of-lexicon policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asrbench.data.phones import BOUNDARY, PhoneTokenizer, read_pronunciations
from asrbench.data.pipeline import resolve_lexicon_path
from asrbench.data.special_tokens import BLANK, SOS_EOS, UNK
from asrbench.data.tokenizer import build_tokenizer, tokenizer_from_dict
from asrbench.errors import AsrbenchError
from asrbench.recipe.config import TokenizerConfig

LEXICON = """;;; a comment, as CMUdict writes them
A                    AH
A(2)                 EY
O                    OW
OH                   OW
TWO\tT UW
TO                   T UW
EIGHT                EY T
EIGHTH               EY T TH
EIGHTH(2)            EY TH
"""


@pytest.fixture
def lexicon_file(tmp_path: Path) -> Path:
    path = tmp_path / "words.dic"
    path.write_text(LEXICON)
    return path


def phones(path: Path, texts: list[str], unknown: str = "map") -> PhoneTokenizer:
    return build_tokenizer(TokenizerConfig(kind="phone", lexicon=str(path), unknown=unknown), texts)


def test_read_pronunciations_keeps_alternatives_in_file_order(lexicon_file):
    entries = read_pronunciations(lexicon_file)
    assert entries["A"] == [["AH"], ["EY"]]
    assert entries["EIGHTH"] == [["EY", "T", "TH"], ["EY", "TH"]]
    assert entries["TWO"] == [["T", "UW"]]  # a tab separates too
    assert ";;;" not in entries and len(entries) == 7


@pytest.mark.parametrize(
    "text, message",
    [
        ("A AH\nBROKEN\n", r"words.dic:2: expected 'WORD PH O N E S', got 'BROKEN'"),
        ("A AH\nB | IY\n", r"words.dic:2: '\|' is the word boundary token"),
        (";;; only comments\n", "no pronunciations"),
    ],
)
def test_malformed_lexicons_name_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "words.dic"
    path.write_text(text)
    with pytest.raises(AsrbenchError, match=message):
        read_pronunciations(path)
    with pytest.raises(AsrbenchError, match="no-such.dic: pronunciation lexicon not found"):
        read_pronunciations(tmp_path / "no-such.dic")


def test_tokens_are_the_phones_then_the_boundary(lexicon_file):
    tokenizer = phones(lexicon_file, ["A TWO", "EIGHT O"])
    assert tokenizer.tokens == [BLANK, UNK, "AH", "EY", "OW", "T", "TH", "UW", BOUNDARY, SOS_EOS]
    assert tokenizer.word_separator_id == tokenizer.tokens.index(BOUNDARY)
    assert tokenizer.special_ids == {0, 1, len(tokenizer) - 1}
    assert tokenizer.writes_words_through_lexicon and tokenizer.unit_name == "words"


def test_targets_are_first_pronunciations_with_boundaries_and_decode_back(lexicon_file):
    tokenizer = phones(lexicon_file, ["A TWO", "EIGHTH A"])
    ids = tokenizer.encode("EIGHTH A TWO")
    assert [tokenizer.tokens[i] for i in ids] == ["EY", "T", "TH", "|", "AH", "|", "T", "UW"]
    assert tokenizer.decode(ids) == "EIGHTH A TWO"
    # Any pronunciation reads back as its word: EY is A's second one, EY TH EIGHTH's second.
    index = {token: i for i, token in enumerate(tokenizer.tokens)}
    assert tokenizer.decode([index["EY"], index["|"], index["EY"], index["TH"]]) == "A EIGHTH"
    # A group of phones no word is pronounced as: its phones run together, one (wrong) word.
    assert tokenizer.decode([index["TH"], index["UW"], index["|"], index["AH"]]) == "THUW A"
    # Specials and repeated boundaries are ignored.
    assert tokenizer.decode([0, index["|"], index["AH"], index["|"], index["|"], 1]) == "A"
    assert tokenizer.spellings("EIGHTH") == [[index["EY"], index["T"], index["TH"]], [index["EY"], index["TH"]]]
    assert tokenizer.spell("EIGHTH") == [index["EY"], index["T"], index["TH"]]
    assert tokenizer.spellings("NINE") == [] and tokenizer.spell("NINE") is None


def test_homophones_read_back_as_the_most_frequent_training_word(lexicon_file):
    to = phones(lexicon_file, ["TO", "TO TWO", "OH", "OH", "O"])
    ids = to.encode("TWO")
    assert to.decode(ids) == "TO"  # TO twice in training, TWO once
    assert to.decode(to.encode("O")) == "OH"
    assert to.lexicon_words()[:2] == ["OH", "TO"]  # most frequent first
    unseen = phones(lexicon_file, ["A"])
    assert unseen.decode(unseen.encode("TO")) == "TWO"  # no counts: the first listed


def test_saved_dict_is_json_and_decodes_without_the_file(lexicon_file):
    tokenizer = phones(lexicon_file, ["TO TWO", "TO"])
    values = json.loads(json.dumps(tokenizer.to_dict()))
    lexicon_file.unlink()
    rebuilt = tokenizer_from_dict(values)
    assert rebuilt.tokens == tokenizer.tokens and rebuilt.pronunciations == tokenizer.pronunciations
    assert rebuilt.decode(tokenizer.encode("TWO A")) == "TO A"
    assert values["source"].endswith("words.dic")


def test_words_missing_from_the_lexicon(lexicon_file):
    with pytest.raises(
        AsrbenchError,
        match=r"words.dic: 2 training words are not in the lexicon: NINE TEN "
        r"\(add them, or set tokenizer.unknown=map or drop\)",
    ):
        phones(lexicon_file, ["A NINE", "TEN TWO"], unknown="fail")
    tokenizer = phones(lexicon_file, ["A NINE", "TEN TWO"])  # map: each such word is the <unk> token
    assert tokenizer.unknown_characters("A NINE TWO") == {"NINE"}
    ids = tokenizer.encode("A NINE")
    assert ids[-1] == 1 and tokenizer.decode(ids) == "A"


def test_the_lexicon_is_required_and_resolved_under_the_data_root(tmp_path, monkeypatch, lexicon_file):
    with pytest.raises(AsrbenchError, match="needs tokenizer.lexicon"):
        build_tokenizer(TokenizerConfig(kind="phone"), ["A"])
    root = tmp_path / "root"
    (root / "corpus").mkdir(parents=True)
    (root / "corpus" / "words.dic").write_text(LEXICON)
    monkeypatch.setenv("ASRBENCH_DATA_ROOT", str(root))
    monkeypatch.chdir(tmp_path)
    assert resolve_lexicon_path("corpus/words.dic") == root / "corpus" / "words.dic"
    assert resolve_lexicon_path("words.dic") == Path("words.dic")  # exists here: as given
    with pytest.raises(AsrbenchError, match=r"tokenizer.lexicon: other.dic: no such file \(nor .*root/other.dic\)"):
        resolve_lexicon_path("other.dic")


def test_a_phone_recipe_without_a_lexicon_fails_naming_the_key(tmp_path):
    from asrbench.recipe.config import resolve

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {dir: data/x}\ntokenizer: {kind: phone}\nmodels: {cnn: {}}\n")
    with pytest.raises(AsrbenchError, match=r"recipe.yaml: tokenizer.kind phone needs tokenizer.lexicon"):
        resolve(recipe, "cnn")


def test_training_words_missing_from_the_lexicon_drop_their_utterances_or_fail(tmp_path):
    """tokenizer.unknown for training text: drop (counted, the rest trains) or fail (naming them)."""
    from helpers import write_tone_corpus

    from asrbench.data.manifest import read_manifest
    from asrbench.data.pipeline import load_training_data
    from asrbench.recipe.config import resolve

    data_dir = write_tone_corpus(tmp_path)
    lexicon = tmp_path / "low-only.dic"
    lexicon.write_text("LOW L OW\n")  # HIGH is missing
    recipe = tmp_path / "recipe.yaml"

    def load(unknown: str):
        recipe.write_text(
            f"data: {{dir: {data_dir}}}\nfeatures: {{sample_rate: 8000, num_mel_bins: 23}}\n"
            f"tokenizer: {{kind: phone, lexicon: {lexicon}, unknown: {unknown}}}\n"
            "models: {cnn: {}}\n"
        )
        return load_training_data(resolve(recipe, "cnn"))

    manifest = read_manifest(data_dir / "train.jsonl")
    low_only = [utt.id for utt in manifest if "HIGH" not in utt.text.split()]
    data = load("drop")
    assert sorted(utt.id for utt in data.train.utterances) == sorted(low_only) and 0 < len(low_only) < len(manifest)
    assert all(1 not in data.train_tokens[i].tolist() for i in range(len(data.train_tokens)))  # no <unk> left
    with pytest.raises(AsrbenchError, match="1 training words are not in the lexicon: HIGH"):
        load("fail")
    mapped = load("map")  # kept, HIGH written as <unk>
    assert len(mapped.train) == len(manifest)
