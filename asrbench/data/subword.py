"""Subword units: a sentencepiece model (``bpe`` or ``unigram``) learned from the training transcripts.

The model is trained on the normalized training transcripts only (``tokenizer.vocab_size``
pieces, ``<unk>`` included), with sentencepiece's ``identity`` normalization (asrbench's text
normalizer already ran, and decode(encode(text)) must give the text back) and full character
coverage. Its serialized model proto, not a path, is saved in the tokenizer (run dir and
checkpoint), so a checkpoint still describes itself.

Ids: ``<blank>`` 0, then sentencepiece's ids shifted by one (its ``<unk>`` is 0, so ours is 1),
then ``<sos/eos>``: ``vocab_size + 2`` tokens in all. Words: sentencepiece marks a piece that
starts a word with ``▁``; those pieces are :attr:`word_start_ids` (there is no separator token),
and :meth:`piece` is a token's text without the mark.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass

import sentencepiece

from asrbench.data.special_tokens import BLANK, SOS_EOS, UNK, StandardIds
from asrbench.errors import AsrbenchError, excerpt

WORD_START = "\u2581"  # sentencepiece's word-boundary mark, "▁"
KINDS = ("bpe", "unigram")


def train_sentencepiece(texts: list[str], kind: str, vocab_size: int) -> bytes:
    """The serialized model proto of a ``kind`` model with ``vocab_size`` pieces learned from ``texts``."""
    if kind not in KINDS:
        raise AsrbenchError(f"tokenizer.kind: {kind!r} is not a sentencepiece model type ({', '.join(KINDS)})")
    if vocab_size < 2:
        raise AsrbenchError(
            f"tokenizer.vocab_size: set it for tokenizer.kind {kind} (got {vocab_size}; e.g. 30 or 500)"
        )
    sentences = [text for text in texts if text.strip()]
    if not sentences:
        raise AsrbenchError("tokenizer: no training text to learn subword units from")
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type=kind,
            vocab_size=vocab_size,
            character_coverage=1.0,
            normalization_rule_name="identity",
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            num_threads=1,
            shuffle_input_sentence=False,
            input_sentence_size=0,
            minloglevel=2,
        )
    except RuntimeError as err:
        message = str(err).strip().splitlines()[-1]
        limit = re.search(r"value <= (\d+)", message)
        if limit:
            raise AsrbenchError(
                f"tokenizer.vocab_size: {vocab_size} is more {kind} pieces than the training "
                f"transcripts allow (at most {limit.group(1)})"
            ) from None
        raise AsrbenchError(f"tokenizer: sentencepiece training failed ({message})") from None
    return model.getvalue()


@dataclass
class SentencePieceTokenizer(StandardIds):
    """A sentencepiece model behind the :class:`asrbench.data.tokenizer.Tokenizer` contract."""

    model_proto: bytes
    kind: str = "unigram"

    def __post_init__(self) -> None:
        self._processor = sentencepiece.SentencePieceProcessor()
        try:
            self._processor.LoadFromSerializedProto(self.model_proto)
        except (RuntimeError, TypeError) as err:
            raise AsrbenchError(f"tokenizer: not a sentencepiece model ({excerpt(err, 120)})") from None
        pieces = [self._processor.id_to_piece(i) for i in range(self._processor.get_piece_size())]
        self.tokens = [BLANK, UNK] + pieces[1:] + [SOS_EOS]
        self._special = self.special_ids
        self._starts = frozenset(i + 1 for i, piece in enumerate(pieces) if i and piece.startswith(WORD_START))
        self._pieces = [
            token.lstrip(WORD_START) if i not in self._special else "" for i, token in enumerate(self.tokens)
        ]
        self._characters = {char for piece in pieces[1:] for char in piece if char != WORD_START}

    @classmethod
    def build(cls, texts: list[str], config) -> SentencePieceTokenizer:
        return cls(train_sentencepiece(texts, config.kind, config.vocab_size), config.kind)

    @property
    def word_separator_id(self) -> int | None:
        return None

    @property
    def word_start_ids(self) -> frozenset[int]:
        return self._starts

    @property
    def unit_name(self) -> str:
        return "characters"

    @property
    def writes_words_through_lexicon(self) -> bool:
        return False

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self._processor.encode(text, out_type=int)]

    def decode(self, ids: list[int]) -> str:
        return self._processor.decode([i - 1 for i in ids if i not in self._special])

    def piece(self, token: int) -> str:
        return self._pieces[token]

    def spell(self, word: str) -> list[int] | None:
        if not word or " " in word or self.unknown_characters(word):
            return None
        return self.encode(word)

    def spellings(self, word: str) -> list[list[int]]:
        spelling = self.spell(word)
        return [spelling] if spelling is not None else []

    def unknown_characters(self, text: str) -> set[str]:
        return {char for char in text if char != " " and char not in self._characters}

    def lexicon_words(self) -> list[str]:
        return []

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "model": base64.b64encode(self.model_proto).decode("ascii"),
            "tokens": list(self.tokens),
        }

    @classmethod
    def from_dict(cls, values: dict) -> SentencePieceTokenizer:
        try:
            proto = base64.b64decode(values["model"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise AsrbenchError("tokenizer: a sentencepiece tokenizer without its model (key 'model')") from None
        tokenizer = cls(proto, values["kind"])
        if "tokens" in values and list(values["tokens"]) != tokenizer.tokens:
            raise AsrbenchError("tokenizer: the saved tokens do not match the saved sentencepiece model")
        return tokenizer
