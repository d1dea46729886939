"""The distill stage: data set distillation by coreset selection.

It keeps ``fraction_percent`` of the training rows, chosen per class by herding, greedy
k-center or at random (see ``_coreset``), and hands later stages (retrain, prune's
fine-tuning) a context whose ``train`` table is that coreset. The model is unchanged.

Where herding and k-center measure distances: for tabular data, the standardized input
features. They do not depend on the model in use, which was trained before the data
drifted, and on digits they gave herding 0.8 (50 %) to 2.1 (10 %) points more holdout
accuracy than the model's embedding did, k-center the same (bench/RESULTS.md, "Coreset").
For images, where distances between raw pixels say little, the space the model's classifier
sees (the inputs of its last layer, standardized), falling back to pixels for a model
without such a layer.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from torch import nn

from optimizer_job.contract import BadInputError, DistillStage
from optimizer_job.dataio import Table
from optimizer_job.strategies import _coreset
from optimizer_job.strategies._layers import penultimate_features
from optimizer_job.strategies.base import Notes, StageContext, StageOutcome


def apply(stage: DistillStage, model: nn.Module, ctx: StageContext) -> StageOutcome:
    train = ctx.train
    if train.y is None or len(train) == 0:
        raise BadInputError("distill: needs labelled training rows")
    started = time.perf_counter()
    space = "none"
    features = np.empty((len(train), 0), dtype=np.float32)
    if stage.method != "random" and stage.fraction_percent < 100:
        space, features = selection_space(model, train, torch.device(ctx.device))
    indices = _coreset.select(
        stage.method, features, train.y, stage.fraction_percent / 100, ctx.seed
    )
    coreset = train.subset(indices)
    kept_labels = train.y[indices]
    seconds = time.perf_counter() - started
    labels, counts = np.unique(kept_labels, return_counts=True)
    notes: Notes = {
        "method": stage.method,
        "fraction_percent": stage.fraction_percent,
        "rows_before": len(train),
        "rows_after": len(coreset),
        "space": space,
        "classes": int(labels.size),
        "smallest_class_rows": int(counts.min()) if counts.size else 0,
        "selection_seconds": round(seconds, 3),
    }
    ctx.log.info(
        "distill %s %d%%: kept %d of %d training rows (%s space) in %.2fs",
        stage.method,
        stage.fraction_percent,
        len(coreset),
        len(train),
        space,
        seconds,
    )
    return StageOutcome(model=model, ctx=dataclasses.replace(ctx, train=coreset), notes=notes)


def selection_space(model: nn.Module, table: Table, device: torch.device) -> tuple[str, np.ndarray]:
    """The rows of ``table`` as points to select among, and the name of that space."""
    if table.is_image:
        embedded = penultimate_features(model, table, device)
        if embedded is not None:
            return "embedding", _coreset.standardize(embedded)
    return "features", _coreset.standardize(table.X)
