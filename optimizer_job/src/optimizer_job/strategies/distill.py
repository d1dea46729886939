"""The distill stage: data set distillation by coreset selection.

It keeps ``fraction_percent`` of the training rows, chosen per class by herding, greedy
k-center or at random (see ``_coreset``), and hands later stages (retrain, prune's
fine-tuning) a context whose ``train`` table is that coreset. The model is unchanged.

Herding and k-center compare rows in the space the model's classifier sees (the inputs of
its last layer, standardized): there, distances follow what the model has learned about
the classes. Without such a layer they use the standardized input features.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from torch import nn

from optimizer_job.contract import BadInputError, DistillStage
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
        embedded = penultimate_features(model, train, torch.device(ctx.device))
        space = "embedding" if embedded is not None else "features"
        features = _coreset.standardize(embedded if embedded is not None else train.X)
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
