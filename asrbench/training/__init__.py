"""Stage 6, training: a recipe in, a run dir out.

Enters: a :class:`asrbench.recipe.config.RunConfig` (and the CLI's values applied to it), the
prepared data (:mod:`asrbench.data.pipeline`). Leaves: a run dir with the resolved config,
tokenizer, environment, ``metrics.jsonl``, checkpoints (last, n-best, the final model) and
``train_summary.json``. :mod:`asrbench.training.trainer` is the loop; ``distributed`` the
collectives that do nothing with one process; ``tensorboard`` the optional event log. Dev CER is
measured with decoding's batch loop, so training sits above decoding.
"""
