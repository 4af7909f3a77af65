"""Stage 1, the recipe: YAML in, validated frozen dataclasses out.

Enters: a recipe file or a bundled recipe's name (``an4``; the YAML files in this folder), dotted
``--set`` overrides. Leaves: :class:`asrbench.recipe.config.RunConfig` (data, features, model,
train sections), range-checked (:mod:`asrbench.recipe.schema`: ``Limit``, the option ranges the CLI
also checks), with unknown keys refused and the valid ones listed. Imports nothing of the package
but the leaf utilities (errors, fileio) and, lazily, the model registry to type a model's options.
"""
