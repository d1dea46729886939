"""The retrain stage on digits after a covariate shift: fresher data brings accuracy back."""

from __future__ import annotations

import logging

import pytest
import torch

from optimizer_job import zoo
from optimizer_job.contract import RetrainStage
from optimizer_job.dataio import SOURCE_CURRENT, SOURCE_REFERENCE, Table, concat, split_stratified
from optimizer_job.example import digits_tables
from optimizer_job.strategies import StageContext, apply_stage
from optimizer_job.training import accuracy, fit

pytestmark = pytest.mark.job

CPU = torch.device("cpu")
LOG = logging.getLogger("test")


@pytest.fixture(scope="module")
def tables() -> dict[str, Table]:
    return digits_tables("mlp", seed=0)


@pytest.fixture(scope="module")
def old_model(tables: dict[str, Table]) -> torch.nn.Module:
    """A model trained on the reference digits only, as make-example trains it."""
    train, val = split_stratified(tables["reference"], 20, seed=0)
    torch.manual_seed(0)
    model = zoo.mlp(64, 10, hidden=[64])
    fit(
        model,
        train,
        val,
        epochs=25,
        batch_size=32,
        lr=3e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=5,
        device=CPU,
        seed=0,
        log=LOG,
    )
    return model


def _context(tables: dict[str, Table]) -> StageContext:
    pool = concat(
        [
            tables["reference"].with_source(SOURCE_REFERENCE),
            tables["current"].with_source(SOURCE_CURRENT),
        ]
    )
    train, validation = split_stratified(pool, 20, seed=0)
    return StageContext(
        device=CPU,
        seed=0,
        train=train,
        validation=validation,
        holdout=tables["holdout"],
        log=LOG,
        factory=zoo.MLP_FACTORY,
        kwargs={"in_features": 64, "num_classes": 10, "hidden": [64]},
    )


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    fresh = zoo.mlp(64, 10, hidden=[64])
    fresh.load_state_dict(model.state_dict())
    return fresh


def test_retraining_on_reference_and_current_recovers_accuracy_on_shifted_data(
    tables: dict[str, Table], old_model: torch.nn.Module
) -> None:
    holdout = tables["holdout"]
    before = accuracy(old_model, holdout, CPU)
    stage = RetrainStage(
        epochs=15,
        learning_rate="0.002",
        dropout_percent=10,
        label_smoothing_percent=5,
        early_stopping_patience=3,
    )
    outcome = apply_stage(stage, _copy(old_model), _context(tables))
    after = accuracy(outcome.model, holdout, CPU)
    assert before < 0.75  # the shift hurts the old model...
    assert after > before + 0.2  # ...and retraining on fresher data repairs most of it
    assert accuracy(outcome.model, tables["stable"], CPU) > 0.85  # old distribution kept
    assert outcome.notes["data"] == "ReferenceAndCurrent"
    assert outcome.ctx.kwargs["dropout"] == pytest.approx(0.1)
    dropouts = [m.p for m in outcome.model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [pytest.approx(0.1)]


def test_retraining_on_current_only_uses_the_current_rows(
    tables: dict[str, Table], old_model: torch.nn.Module
) -> None:
    ctx = _context(tables)
    assert ctx.train.source is not None
    current_rows = int((ctx.train.source == SOURCE_CURRENT).sum())
    stage = RetrainStage(epochs=2, data="Current", early_stopping_patience=0)
    outcome = apply_stage(stage, _copy(old_model), ctx)
    assert outcome.notes["train_rows"] == current_rows < len(ctx.train)
    assert outcome.notes["epochs_run"] == 2
