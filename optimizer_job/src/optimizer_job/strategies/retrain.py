"""The retrain stage: continue training the model in use on better, fresher labelled data.

Training starts from the current weights (a warm start: the old distribution is still
partly there and it converges in a few epochs) with AdamW, weight decay, the dropout
rate set on the model's Dropout modules, label smoothing, and early stopping on the
validation rows, keeping the best epoch's weights.
"""

from __future__ import annotations

import dataclasses
import inspect
from decimal import Decimal, InvalidOperation

import numpy as np
from torch import nn

from optimizer_job.contract import BadInputError, RetrainStage
from optimizer_job.dataio import SOURCE_CURRENT, SOURCE_REFERENCE, Table
from optimizer_job.modelio import import_factory
from optimizer_job.strategies.base import Notes, StageContext, StageOutcome
from optimizer_job.training import fit
from optimizer_job.zoo import set_dropout

_SOURCES = {"Current": SOURCE_CURRENT, "Reference": SOURCE_REFERENCE}


def decimal_setting(value: str, name: str) -> float:
    """A decimal string from the task (the CRD has no floats) as a float >= 0."""
    try:
        number = Decimal(value)
    except InvalidOperation as error:
        raise BadInputError(f"retrain: {name} {value!r} is not a decimal number") from error
    if not number.is_finite() or number < 0:
        raise BadInputError(f"retrain: {name} {value!r} must be a finite number >= 0")
    return float(number)


def select_rows(table: Table, data: str) -> Table:
    """The rows of ``table`` that came from the tables ``data`` names."""
    if data == "ReferenceAndCurrent" or table.source is None:
        return table
    return table.subset(np.flatnonzero(table.source == _SOURCES[data]))


def _accepts_dropout(factory: str, kwargs: dict[str, object]) -> bool:
    if "dropout" in kwargs:
        return True
    try:
        parameters = inspect.signature(import_factory(factory)).parameters
    except (TypeError, ValueError):
        return False
    return "dropout" in parameters


def apply(stage: RetrainStage, model: nn.Module, ctx: StageContext) -> StageOutcome:
    train = select_rows(ctx.train, stage.data)
    validation = select_rows(ctx.validation, stage.data)
    if len(train) == 0 or train.y is None:
        raise BadInputError(
            f"retrain data={stage.data}: no labelled training rows "
            "(the tables it names need the label column)"
        )
    lr = decimal_setting(stage.learning_rate, "learningRate")
    weight_decay = decimal_setting(stage.weight_decay, "weightDecay")
    dropout = stage.dropout_percent / 100
    notes: Notes = {
        "data": stage.data,
        "train_rows": len(train),
        "validation_rows": len(validation),
        "warm_start": "yes",
    }
    kwargs = dict(ctx.kwargs)
    dropout_layers = set_dropout(model, dropout)
    notes["dropout_layers"] = dropout_layers
    if dropout_layers and _accepts_dropout(ctx.factory, kwargs):
        kwargs["dropout"] = dropout  # so model.json describes the model as trained
    elif dropout > 0 and not dropout_layers:
        notes["warning"] = "the model has no Dropout layers: dropoutPercent had no effect"
    report = fit(
        model,
        train,
        validation if len(validation) else None,
        epochs=stage.epochs,
        batch_size=stage.batch_size,
        lr=lr,
        weight_decay=weight_decay,
        label_smoothing=stage.label_smoothing_percent / 100,
        patience=stage.early_stopping_patience,
        device=ctx.device,
        seed=ctx.seed,
        log=ctx.log,
        stage="retrain",
    )
    notes.update(
        {
            "epochs_run": report.epochs_run,
            "best_epoch": report.best_epoch,
            "train_loss": round(report.train_loss, 6),
            "train_seconds": round(report.seconds, 3),
        }
    )
    if report.val_accuracy is not None:
        notes["validation_accuracy"] = round(report.val_accuracy, 6)
    return StageOutcome(model=model, ctx=dataclasses.replace(ctx, kwargs=kwargs), notes=notes)
