"""Phone units: a pronunciation lexicon and the tokenizer whose tokens are its phones.

The lexicon is CMUdict / Sphinx format, one pronunciation per line: ``WORD  PH O N E S`` with
alternatives written ``WORD(2)``, as in AN4's ``etc/an4.dic``; ``;;;`` and ``#`` lines are
comments; a tab may separate the word from its phones. Stress digits (CMUdict's ``AH0``) are
kept: a phone is whatever token the file writes.

Training targets are each word's **first** pronunciation (the one listed first), the word
boundary token ``|`` between words, so a phone sequence still says where words end (as
wav2vec2's phoneme models do). Word output comes from the lexicon: beam search constrained to
the lexicon's pronunciations (every alternative), or, for greedy decoding, each ``|``-delimited
group of phones looked up among all pronunciations (homophones: the word most frequent in the
training transcripts, then the first listed). A group no word is pronounced as is written as its
phones run together (``HHAHL``), one word that counts as an error.

Words of the training transcripts that the lexicon lacks follow ``tokenizer.unknown``: ``map``
writes each as the ``<unk>`` token (Kaldi's spoken-noise word, noted with the list of words),
``drop`` drops those training utterances (counted), ``fail`` stops naming them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from asrbench.data.special_tokens import BLANK, SOS_EOS, UNK, StandardIds
from asrbench.errors import AsrbenchError

BOUNDARY = "|"
_ALTERNATIVE = re.compile(r"^(.+?)\(\d+\)$")  # WORD(2) -> WORD


def read_pronunciations(path: str | Path) -> dict[str, list[list[str]]]:
    """word -> its pronunciations (lists of phones) in file order; words as written (``(2)`` removed)."""
    path = Path(path)
    if not path.is_file():
        raise AsrbenchError(f"{path}: pronunciation lexicon not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise AsrbenchError(f"{path}: not a UTF-8 text lexicon ({err.reason} at byte {err.start})") from None
    lexicon: dict[str, list[list[str]]] = {}
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped.startswith((";;;", "#")):
            continue
        fields = stripped.split()
        if len(fields) < 2:
            raise AsrbenchError(f"{path}:{number}: expected 'WORD PH O N E S', got {stripped[:80]!r}")
        match = _ALTERNATIVE.match(fields[0])
        word = match.group(1) if match else fields[0]
        if BOUNDARY in fields[1:]:
            raise AsrbenchError(f"{path}:{number}: {BOUNDARY!r} is the word boundary token; no phone may be named so")
        pronunciation = fields[1:]
        entries = lexicon.setdefault(word, [])
        if pronunciation not in entries:
            entries.append(pronunciation)
    if not lexicon:
        raise AsrbenchError(f"{path}: no pronunciations in the lexicon")
    return lexicon


@dataclass
class PhoneTokenizer(StandardIds):
    """Tokens: ``<blank> <unk>``, the lexicon's phones (sorted), ``|`` (word boundary), ``<sos/eos>``.

    ``pronunciations`` holds only the words of the lexicon file the tokenizer was built with, all
    of them (not only the training words): it is saved with the tokenizer, so a checkpoint decodes
    without the file. ``counts``: how often each word occurs in the training transcripts (picks
    among homophones).
    """

    tokens: list[str]
    pronunciations: dict[str, list[list[str]]]
    counts: dict[str, int] = field(default_factory=dict)
    source: str = ""  # the lexicon file it came from, for the record
    kind: str = "phone"
    SEPARATOR: ClassVar[str] = BOUNDARY

    def __post_init__(self) -> None:
        if self.tokens[:2] != [BLANK, UNK] or self.tokens[-1] != SOS_EOS or BOUNDARY not in self.tokens:
            raise AsrbenchError("tokenizer: a phone tokenizer's tokens are <blank> <unk> phones | <sos/eos>")
        self._index = {token: i for i, token in enumerate(self.tokens)}
        self._special = self.special_ids
        self._unk = 1
        self._encoded = {
            word: [self._index[phone] for phone in entries[0]] for word, entries in self.pronunciations.items()
        }
        # phone ids -> word, every pronunciation; the most frequent training word wins a homophone.
        order = sorted(self.pronunciations, key=lambda word: -self.counts.get(word, 0))
        self._words: dict[tuple[int, ...], str] = {}
        for word in order:
            for entry in self.pronunciations[word]:
                self._words.setdefault(tuple(self._index[phone] for phone in entry), word)

    @classmethod
    def build(cls, texts: list[str], config) -> PhoneTokenizer:
        if not config.lexicon:
            raise AsrbenchError(
                "tokenizer.kind phone needs tokenizer.lexicon: a pronunciation lexicon file "
                "(CMUdict / Sphinx format, e.g. an4/etc/an4.dic)"
            )
        path = Path(config.lexicon)  # resolved by the caller (asrbench.data.pipeline)
        pronunciations = read_pronunciations(path)
        counts = Counter(word for text in texts for word in text.split())
        missing = sorted(word for word in counts if word not in pronunciations)
        if missing and config.unknown == "fail":
            raise AsrbenchError(
                f"{path}: {len(missing)} training words are not in the lexicon: "
                f"{' '.join(missing[:20])}{' ...' if len(missing) > 20 else ''} "
                "(add them, or set tokenizer.unknown=map or drop)"
            )
        phones = sorted({phone for entries in pronunciations.values() for entry in entries for phone in entry})
        return cls(
            [BLANK, UNK] + phones + [BOUNDARY, SOS_EOS],
            pronunciations,
            {word: counts[word] for word in pronunciations if counts[word]},
            str(path),
        )

    # -- the Tokenizer contract --------------------------------------------------------------------

    @property
    def word_separator_id(self) -> int:
        return self._index[BOUNDARY]

    @property
    def word_start_ids(self) -> frozenset[int]:
        return frozenset()

    @property
    def unit_name(self) -> str:
        return "words"

    @property
    def writes_words_through_lexicon(self) -> bool:
        """Word output needs the lexicon: beam search always constrains to it."""
        return True

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for word in text.split():
            if ids:
                ids.append(self.word_separator_id)
            ids.extend(self._encoded.get(word, [self._unk]))
        return ids

    def decode(self, ids: list[int]) -> str:
        words: list[str] = []
        group: list[int] = []
        separator = self.word_separator_id
        for token in [*ids, separator]:
            if token == separator:
                if group:
                    words.append(self._words.get(tuple(group), "".join(self.tokens[i] for i in group)))
                group = []
            elif token not in self._special:
                group.append(token)
        return " ".join(words)

    def piece(self, token: int) -> str:
        return self.tokens[token]

    def spell(self, word: str) -> list[int] | None:
        spellings = self.spellings(word)
        return spellings[0] if spellings else None

    def spellings(self, word: str) -> list[list[int]]:
        return [[self._index[phone] for phone in entry] for entry in self.pronunciations.get(word, [])]

    def unknown_characters(self, text: str) -> set[str]:
        """Words the lexicon lacks (they encode as <unk>)."""
        return {word for word in text.split() if word not in self.pronunciations}

    def lexicon_words(self) -> list[str]:
        """The words beam search may output, most frequent in training first."""
        return sorted(self.pronunciations, key=lambda word: (-self.counts.get(word, 0), word))

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "tokens": list(self.tokens),
            "pronunciations": self.pronunciations,
            "counts": dict(self.counts),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, values: dict) -> PhoneTokenizer:
        return cls(
            list(values["tokens"]),
            {word: [list(entry) for entry in entries] for word, entries in values["pronunciations"].items()},
            dict(values.get("counts", {})),
            str(values.get("source", "")),
        )
