"""Tokenizers: the :class:`Tokenizer` contract, the character tokenizer, and the registry.

Every tokenizer puts the CTC blank at index 0 and ``<unk>`` at index 1, so decoding a new corpus
never crashes, and ends with ``<sos/eos>`` (one symbol for both, as in ESPnet): attention
decoders start from it and predict it to stop; CTC heads carry it as an output they are never
trained to emit. A tokenizer is saved with every model (``to_dict``) and rebuilt from that alone
(:func:`tokenizer_from_dict`), so a checkpoint describes itself.

Word boundaries belong to the tokenizer, not to a space character: CTC beam search, the
lexicon, flashlight and LM fusion ask it which token separates words (``word_separator_id``:
the space for characters, ``|`` for phones), which tokens start a word (``word_start_ids``:
sentencepiece's ``▁`` pieces), what text a token adds to its word (``piece``) and how a word is
written in tokens (``spellings``: every pronunciation of a word, for phones). A new tokenizer is
one class implementing :class:`Tokenizer` plus one line in :data:`TOKENIZERS`:

* ``char`` (:class:`CharTokenizer`): the characters of the training transcripts;
* ``bpe``, ``unigram`` (:mod:`asrbench.data.subword`): a sentencepiece model trained on them;
* ``phone`` (:mod:`asrbench.data.phones`): the phones of a pronunciation lexicon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch

from asrbench.data.phones import PhoneTokenizer
from asrbench.data.special_tokens import BLANK, SOS_EOS, UNK
from asrbench.data.subword import SentencePieceTokenizer
from asrbench.errors import AsrbenchError

__all__ = [
    "BLANK",
    "SOS_EOS",
    "TOKENIZERS",
    "UNK",
    "CharTokenizer",
    "TokenTable",
    "Tokenizer",
    "build_tokenizer",
    "tokenizer_from_dict",
]


@runtime_checkable
class Tokenizer(Protocol):
    """What training, decoding, the lexicon and the LMs need of a tokenizer."""

    kind: str
    tokens: list[str]  # id -> the token's text (specials included)

    @property
    def blank_id(self) -> int: ...  # 0
    @property
    def sos_id(self) -> int | None: ...  # start (and end) of sentence for attention decoders
    @property
    def eos_id(self) -> int | None: ...
    @property
    def special_ids(self) -> frozenset[int]: ...  # blank, <unk>, <sos/eos>: never part of a text
    @property
    def word_separator_id(self) -> int | None: ...  # the token between words; None if it has none
    @property
    def word_start_ids(self) -> frozenset[int]: ...  # tokens that begin a new word (may be empty)
    @property
    def unit_name(self) -> str: ...  # what unknown_characters returns: "characters" or "words"
    @property
    def writes_words_through_lexicon(self) -> bool: ...  # word output needs the lexicon (phones)
    def __len__(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...  # a normalized transcript -> token ids
    def decode(self, ids: list[int]) -> str: ...  # token ids -> text (specials dropped)
    def piece(self, token: int) -> str: ...  # the text ``token`` adds to the word it is part of
    def spell(self, word: str) -> list[int] | None: ...  # one word's tokens; None if it cannot be written
    def spellings(self, word: str) -> list[list[int]]: ...  # every way to write ``word``; [] if none
    def unknown_characters(self, text: str) -> set[str]: ...  # what ``encode`` would map to <unk>
    def lexicon_words(self) -> list[str]: ...  # the words of its own lexicon (phones); [] if it has none
    def to_dict(self) -> dict: ...


@dataclass
class CharTokenizer:
    """Characters of the training transcripts; the space is a token of its own (the word separator)."""

    tokens: list[str]
    kind: str = "char"
    SEPARATOR: ClassVar[str] = " "

    def __post_init__(self) -> None:
        if self.tokens[:2] != [BLANK, UNK]:
            raise AsrbenchError("tokenizer: the first tokens must be <blank> and <unk>")
        self._index = {token: i for i, token in enumerate(self.tokens)}
        self._special = frozenset(i for i, token in enumerate(self.tokens) if token in (BLANK, UNK, SOS_EOS))

    @classmethod
    def build(cls, texts: list[str], config=None) -> CharTokenizer:
        characters = sorted({char for text in texts for char in text} - {BLANK, UNK, SOS_EOS})
        return cls([BLANK, UNK] + characters + [SOS_EOS])

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def sos_id(self) -> int | None:
        """Start (and end) of sentence for attention decoders; None for old CTC-only tokenizers."""
        return self._index.get(SOS_EOS)

    @property
    def eos_id(self) -> int | None:
        return self._index.get(SOS_EOS)

    @property
    def special_ids(self) -> frozenset[int]:
        return self._special

    @property
    def word_separator_id(self) -> int | None:
        return self._index.get(self.SEPARATOR)

    @property
    def word_start_ids(self) -> frozenset[int]:
        return frozenset()

    @property
    def unit_name(self) -> str:
        return "characters"

    @property
    def writes_words_through_lexicon(self) -> bool:
        return False

    def __len__(self) -> int:
        return len(self.tokens)

    def piece(self, token: int) -> str:
        return self.tokens[token]

    def encode(self, text: str) -> list[int]:
        unk = self._index[UNK]
        return [self._index.get(char, unk) for char in text]

    def spell(self, word: str) -> list[int] | None:
        if not word or self.SEPARATOR in word or self.unknown_characters(word):
            return None
        return self.encode(word)

    def spellings(self, word: str) -> list[list[int]]:
        spelling = self.spell(word)
        return [spelling] if spelling is not None else []

    def unknown_characters(self, text: str) -> set[str]:
        return {char for char in text if char not in self._index}

    def lexicon_words(self) -> list[str]:
        return []

    def decode(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids if i not in self._special)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, values: dict) -> CharTokenizer:
        return cls(list(values["tokens"]))


class TokenizerKind(Protocol):
    """A tokenizer class, as :data:`TOKENIZERS` holds it: its two constructors."""

    def build(self, texts: list[str], config) -> Tokenizer: ...
    def from_dict(self, values: dict) -> Tokenizer: ...


# kind -> class with ``build(texts, config)`` and ``from_dict(values)``; recipes choose with tokenizer.kind.
TOKENIZERS: dict[str, TokenizerKind] = {
    "char": CharTokenizer,
    "bpe": SentencePieceTokenizer,
    "unigram": SentencePieceTokenizer,
    "phone": PhoneTokenizer,
}


def build_tokenizer(config, texts: list[str]) -> Tokenizer:
    """The tokenizer ``config.kind`` names (a :class:`asrbench.recipe.config.TokenizerConfig`), learned from
    the normalized training transcripts ``texts`` only."""
    if config.kind not in TOKENIZERS:
        raise AsrbenchError(f"tokenizer.kind: unknown kind {config.kind!r} (valid: {', '.join(TOKENIZERS)})")
    return TOKENIZERS[config.kind].build(texts, config)


def tokenizer_from_dict(values: dict) -> Tokenizer:
    """Rebuild a saved tokenizer (a run dir's tokenizer.json, a checkpoint's ``tokenizer``)."""
    kind = values.get("kind") if isinstance(values, dict) else None
    if kind not in TOKENIZERS:
        raise AsrbenchError(f"tokenizer: unsupported kind {kind!r} (supported: {', '.join(TOKENIZERS)})")
    return TOKENIZERS[kind].from_dict(values)


class TokenTable:
    """Token ids of many utterances in one flat int32 tensor, not a Python list per utterance
    (a list of small ints costs ~30x the memory at a million utterances); ``rows`` lets several
    utterances share one sequence (the speed-perturbed copies of an utterance share its tokens).
    ``table[i]`` is utterance i's ids as an int64 tensor."""

    def __init__(self, sequences: list[list[int]], rows: torch.Tensor | None = None):
        lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.int64)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
        self.flat = torch.tensor([token for sequence in sequences for token in sequence], dtype=torch.int32)
        self.rows = torch.arange(len(sequences)) if rows is None else rows

    def repeated(self, times: int) -> TokenTable:
        """The same sequences for ``times`` copies of the utterances, one after another (no copy)."""
        table = TokenTable.__new__(TokenTable)
        table.offsets, table.flat, table.rows = self.offsets, self.flat, self.rows.repeat(times)
        return table

    def subset(self, keep: list[int]) -> TokenTable:
        table = TokenTable.__new__(TokenTable)
        table.offsets, table.flat = self.offsets, self.flat
        table.rows = self.rows[torch.tensor(keep, dtype=torch.int64)] if keep else self.rows[:0]
        return table

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        row = int(self.rows[index])
        return self.flat[int(self.offsets[row]) : int(self.offsets[row + 1])].long()
