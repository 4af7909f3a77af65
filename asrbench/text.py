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


_WHISPER_EN: list = []  # the whisper-normalizer package's EnglishTextNormalizer, built on first use


def _whisper_en(text: str) -> str:
    """Whisper's English normalizer (Radford et al. 2022, appendix C; the Open ASR Leaderboard
    scores after it): lower case, bracketed and parenthesized spans removed, contractions and
    titles spelled out, spoken numbers and currencies as digits, British spellings made American.
    From the whisper-normalizer package (MIT, a copy of openai/whisper's EnglishTextNormalizer
    without the model), which passes openai/whisper's own normalizer tests."""
    if not _WHISPER_EN:
        try:
            from whisper_normalizer.english import EnglishTextNormalizer
        except ImportError:
            raise AsrbenchError(
                "--normalizer whisper-en needs the whisper-normalizer package: pip install 'asrbench[whisper]'"
            ) from None
        _WHISPER_EN.append(EnglishTextNormalizer())
    return _SPACES.sub(" ", _WHISPER_EN[0](text)).strip()


NORMALIZERS = {"basic-1": _basic_1, "none": _none, "whisper-en": _whisper_en}
DEFAULT_NORMALIZER = "basic-1"


def normalize(text: str, name: str = DEFAULT_NORMALIZER) -> str:
    if name not in NORMALIZERS:
        raise AsrbenchError(f"unknown text normalizer '{name}' (valid: {', '.join(NORMALIZERS)})")
    return NORMALIZERS[name](text)
