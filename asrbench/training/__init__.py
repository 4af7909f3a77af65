"""Stage 6, training: a recipe in, a run dir out.

Enters: a :class:`asrbench.recipe.config.RunConfig` (and the CLI's values applied to it), the
prepared data (:mod:`asrbench.data.pipeline`). Leaves: a run dir with the resolved config,
tokenizer, environment, ``metrics.jsonl``, checkpoints (last, n-best, the final model) and
``train_summary.json``. :mod:`asrbench.training.trainer` is the loop; ``start`` the config (the
recipe, ``--set``, then the command's typed values) and a resume's checkpoint; ``state`` what a
resume restores (TrainState, RNG streams) and Ctrl-C; ``schedule`` the learning rate and the budget
clock; ``optimization`` the optimizer, scaler and gradients; ``loader`` the batches; ``averaging``
the final model; ``report`` the metrics rows and the summary; ``distributed`` the collectives that
do nothing with one process; ``tensorboard`` the optional event log. Dev CER is
measured with decoding's batch loop, so training sits above decoding.
"""
