"""The special tokens every tokenizer has (a leaf module: the tokenizers and their registry import it).

``<blank>`` is id 0 (the CTC and transducer blank), ``<unk>`` id 1, and ``<sos/eos>`` the last
id (one symbol for start and end, as in ESPnet).
"""

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"


class StandardIds:
    """The ids of a tokenizer whose tokens are ``<blank> <unk> ... <sos/eos>`` (mixin): it sets
    ``tokens``; blank, start/end and the special ids follow, and ``spellings`` from ``spell``."""

    tokens: list[str]

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def sos_id(self) -> int | None:
        return len(self.tokens) - 1

    @property
    def eos_id(self) -> int | None:
        return len(self.tokens) - 1

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset((0, 1, len(self.tokens) - 1))

    def __len__(self) -> int:
        return len(self.tokens)
