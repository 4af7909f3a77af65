"""Stage 2, the data pipeline: corpus -> manifest (JSONL) -> features (sharded store) -> batches.

Enters: a corpus on disk (``$ASRBENCH_DATA_ROOT``, a Kaldi or lhotse dir, a download with its
checksum) and the recipe's data/features sections. Leaves: prepared data dirs (manifests,
``features/<split>`` stores, CMVN), tokenizers (characters, subwords, phones), length-bucketed
batches of ``(features (B, T, F), feature_lengths (B,), targets)``, and the training-only
transforms (SpecAugment, speed perturbation, noise: :mod:`asrbench.data.noise_augment`,
:mod:`asrbench.data.corruption`). :mod:`asrbench.data.pipeline` gives the trainer its data.
Knows nothing of models, decoding, run dirs or training.
"""
