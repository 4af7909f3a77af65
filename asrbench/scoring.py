"""Word and character error rates with their substitution/deletion/insertion counts (jiwer).

References and hypotheses are normalized by the same named normalizer before scoring; the
normalizer's name goes into every result. CER counts spaces as characters, as ESPnet's and
Kaldi's AN4 character counts do (2565 characters on AN4 test).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jiwer

from asrbench.text import DEFAULT_NORMALIZER, normalize


@dataclass
class ErrorRates:
    wer: float  # percent
    cer: float  # percent
    substitutions: int
    deletions: int
    insertions: int
    words: int
    char_substitutions: int
    char_deletions: int
    char_insertions: int
    characters: int
    utterances: int
    sentence_errors: int
    normalizer: str

    def to_dict(self) -> dict:
        return asdict(self)


def _percent(errors: int, total: int) -> float:
    return 100.0 * errors / total if total else 0.0


def error_rates(references: list[str], hypotheses: list[str], normalizer: str = DEFAULT_NORMALIZER) -> ErrorRates:
    """Score aligned lists of reference and hypothesis texts."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalize(text, normalizer) for text in references]
    hyps = [normalize(text, normalizer) for text in hypotheses]
    if not refs:
        return ErrorRates(0.0, 0.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, normalizer)
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    word_total = words.substitutions + words.deletions + words.hits
    char_total = chars.substitutions + chars.deletions + chars.hits
    return ErrorRates(
        wer=_percent(words.substitutions + words.deletions + words.insertions, word_total),
        cer=_percent(chars.substitutions + chars.deletions + chars.insertions, char_total),
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
        words=word_total,
        char_substitutions=chars.substitutions,
        char_deletions=chars.deletions,
        char_insertions=chars.insertions,
        characters=char_total,
        utterances=len(refs),
        sentence_errors=sum(r != h for r, h in zip(refs, hyps, strict=True)),
        normalizer=normalizer,
    )
