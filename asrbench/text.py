"""Versioned text normalization, applied identically to references and hypotheses.

The normalizer's name is recorded with every result, so two WERs are only compared when they
were scored under the same rules.
"""

from __future__ import annotations

import re
import unicodedata

from asrbench.errors import AsrbenchError

_PUNCTUATION = re.compile(r"[^\w\s']", flags=re.UNICODE)
_SPACES = re.compile(r"\s+")


def _basic_1(text: str) -> str:
    """Unicode NFKC, upper case, punctuation except apostrophes removed, whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).upper().replace("_", " ")
    text = _PUNCTUATION.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _none(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


NORMALIZERS = {"basic-1": _basic_1, "none": _none}
DEFAULT_NORMALIZER = "basic-1"


def normalize(text: str, name: str = DEFAULT_NORMALIZER) -> str:
    if name not in NORMALIZERS:
        raise AsrbenchError(f"unknown text normalizer '{name}' (valid: {', '.join(NORMALIZERS)})")
    return NORMALIZERS[name](text)
