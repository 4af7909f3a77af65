"""Stage 2, scoring: reference and hypothesis texts in, error rates with their uncertainty out.

Enters: transcripts (lists of strings, ``ref``/``hyp`` files, trn), a text normalizer's name.
Leaves: :class:`asrbench.scoring.metrics.ErrorRates` and per-utterance alignments
(:mod:`asrbench.scoring.metrics`), bootstrap CIs and paired tests (:mod:`asrbench.scoring.stats`),
score reports. Pure functions of text: no models, no run dirs, so every later stage (the
trainer's dev CER, ``decode``, ``compare``) scores the same way.
"""
