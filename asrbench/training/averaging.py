"""The final model: the n best epochs kept, averaged, their batch-norm statistics redone.

With ``train.average_best`` N > 1 the trainer keeps the N best epochs on dev (checkpoints/nbest/),
averages their weights at the end, re-estimates batch-norm statistics for the averaged weights
and scores the average on dev; it becomes checkpoints/best.pt only when it beats the best single
epoch there (:data:`FINAL_MODEL_RULE`), as ESPnet's ``--keep_nbest_models`` averages, checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
from torch import nn

from asrbench.models.base import ASRModel
from asrbench.runs import checkpoint, rundir

FINAL_MODEL_RULE = (
    "the average of the train.average_best best epochs when its dev (CER, loss) is lower than "
    "the best single epoch's, else that epoch"
)
BATCH_NORM_BATCHES = 50  # training batches (without augmentation) that re-estimate an average's statistics


def keep_nbest(nbest: list[list], entry: list, size: int) -> list[list]:
    """Put ``entry`` ([dev CER, dev loss, epoch]) into the ``size`` best, best first (lower CER, then
    lower loss, then the earlier epoch); returns the entries that fell out. ``size`` 1 keeps none:
    the single best is checkpoints/best.pt already."""
    if size <= 1:
        return []
    nbest.append(entry)
    nbest.sort()
    dropped = nbest[size:]
    del nbest[size:]
    return dropped


def recompute_batch_norm(model: nn.Module, batches) -> int:
    """Re-estimate every batch-norm layer's running statistics from ``batches`` (cumulative means,
    the weights unchanged and nothing else in training mode: no dropout); -> the layers redone.

    Averaging checkpoints averages their running means and variances too, but those describe each
    checkpoint's own activations, not the averaged weights' (SWA's ``update_bn`` does the same)."""
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    model.eval()
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    loss_model = cast(ASRModel, model)  # every family's contract (asrbench.models.base)
    with torch.no_grad():
        for batch in batches:
            loss_model.compute_loss(batch.features, batch.feature_lengths, batch.targets, batch.target_lengths)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
    return len(norms)


def load_average(model: nn.Module, run_dir: Path, epochs: list[int], batches) -> int:
    """Load the average of the ``epochs``' n-best checkpoints into ``model`` and re-estimate its
    batch-norm statistics from ``batches``; -> the batch-norm layers redone."""
    model.load_state_dict(checkpoint.average_weights([run_dir / rundir.nbest_checkpoint(e) for e in epochs]))
    # An average of running statistics is not the statistics of the averaged weights' activations.
    return recompute_batch_norm(model, batches)


def final_model(averaged: dict | None, best_epoch: int | None, best_dev_cer: float) -> dict:
    """What checkpoints/best.pt holds by :data:`FINAL_MODEL_RULE`, for train_summary.json."""
    if averaged and averaged["kept"]:
        return {"kept": "average", "epochs": averaged["epochs"], "dev_cer": averaged["dev_cer"]}
    return {"kept": "best epoch", "epochs": [best_epoch], "dev_cer": best_dev_cer}
