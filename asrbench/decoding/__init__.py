"""Stage 5, decoding: a trained model and decoding options in, typed, scored results out.

Enters: a run dir (through :mod:`asrbench.runs`), a split's features, one frozen
:class:`asrbench.decoding.searchers.DecodeOptions`. Search selection lives here, not in models:
:mod:`asrbench.decoding.searchers` maps (family, mode) to a searcher and its tuning grid (CTC
greedy / prefix beam / flashlight, attention beam with CTC rescoring, transducer greedy / modified
beam), with the n-gram LM (:mod:`asrbench.decoding.lm`) and the lexicon. Leaves:
``decode/<split>/`` (hypotheses, scores, result.json, :mod:`asrbench.decoding.decode`), the tuned
weights (:mod:`asrbench.decoding.tune`), streaming figures (:mod:`asrbench.decoding.streaming`), and
:func:`asrbench.decoding.decode.recognize`, the batch loop the trainer's dev CER uses.
"""
