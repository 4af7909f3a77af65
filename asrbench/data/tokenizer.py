"""Character tokenizer with the CTC blank at index 0, saved with every model.

Index 1 is ``<unk>`` for characters never seen in training, so decoding a new corpus never
crashes; the space is a token of its own so words can be recovered from characters. The last
token is ``<sos/eos>`` (one symbol for both, as in ESPnet): attention decoders start from it and
predict it to stop; CTC heads carry it as an output they are never trained to emit. Tokenizers
saved before it existed load unchanged (``sos_id`` is then ``None``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asrbench.errors import AsrbenchError

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"


@dataclass
class CharTokenizer:
    tokens: list[str]
    kind: str = "char"

    def __post_init__(self) -> None:
        if self.tokens[:2] != [BLANK, UNK]:
            raise AsrbenchError("tokenizer: the first tokens must be <blank> and <unk>")
        self._index = {token: i for i, token in enumerate(self.tokens)}
        self._special = {i for i, token in enumerate(self.tokens) if token in (BLANK, UNK, SOS_EOS)}

    @classmethod
    def build(cls, texts: list[str]) -> CharTokenizer:
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
    def space_id(self) -> int | None:
        return self._index.get(" ")

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        unk = self._index[UNK]
        return [self._index.get(char, unk) for char in text]

    def unknown_characters(self, text: str) -> set[str]:
        return {char for char in text if char not in self._index}

    def decode(self, ids: list[int]) -> str:
        return "".join(self.tokens[i] for i in ids if i not in self._special)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, values: dict) -> CharTokenizer:
        if values.get("kind") != "char":
            raise AsrbenchError(f"tokenizer: unsupported kind {values.get('kind')!r} (supported: char)")
        return cls(list(values["tokens"]))


def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: (B, T, V), (B,) -> token ids per utterance with repeats merged and blanks removed."""
    best = log_probs.argmax(dim=-1)  # (B, T)
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != 0
    keep &= torch.arange(best.size(1), device=best.device).unsqueeze(0) < lengths.unsqueeze(1)
    best, keep = best.cpu(), keep.cpu()
    return [best[i][keep[i]].tolist() for i in range(best.size(0))]
