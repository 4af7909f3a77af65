"""Stage 4, the run directory, the unit of truth: its layout, lock and checkpoints.

Enters: a run dir path (``runs/<corpus>/<model>``), a ``--checkpoint`` value. Leaves: the resolved
config, tokenizer and environment a run recorded (:mod:`asrbench.runs.rundir`), and a rebuilt
model with its CMVN and tokenizer from a self-describing checkpoint loaded with
``weights_only=True`` (:mod:`asrbench.runs.checkpoint`). Sits above models (it builds one from a
checkpoint's config) and below everything that reads a run: decoding, training, studies, deploy.
"""
