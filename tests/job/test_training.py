"""Training: deterministic given a seed, early stopping keeps the best epoch's weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from optimizer_job import zoo
from optimizer_job.dataio import split_stratified
from optimizer_job.example import digits_tables
from optimizer_job.training import FitReport, accuracy, fit, predict_proba

pytestmark = pytest.mark.job

CPU = torch.device("cpu")
LOG = logging.getLogger("test")


def _fit(
    seed: int, epochs: int = 3, patience: int = 0, lr: float = 3e-3
) -> tuple[torch.nn.Module, FitReport]:
    tables = digits_tables("mlp", seed=0)
    train, val = split_stratified(tables["reference"], 20, seed=0)
    torch.manual_seed(seed)
    model = zoo.mlp(64, 10, hidden=[32], dropout=0.2)
    report = fit(
        model,
        train,
        val,
        epochs=epochs,
        batch_size=32,
        lr=lr,
        weight_decay=1e-4,
        label_smoothing=0.1,
        patience=patience,
        device=CPU,
        seed=seed,
        log=LOG,
    )
    return model, report


def test_the_same_seed_gives_the_same_weights_and_another_seed_does_not() -> None:
    first, _ = _fit(seed=7)
    second, _ = _fit(seed=7)
    other, _ = _fit(seed=8)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.equal(first.state_dict()["0.weight"], other.state_dict()["0.weight"])


def test_early_stopping_restores_the_best_epoch() -> None:
    # A learning rate this high makes validation accuracy wander, so patience fires.
    model, report = _fit(seed=1, epochs=40, patience=2, lr=0.05)
    assert report.epochs_run < 40
    assert report.best_epoch == report.epochs_run - 2
    tables = digits_tables("mlp", seed=0)
    _, val = split_stratified(tables["reference"], 20, seed=0)
    assert accuracy(model, val, CPU) == pytest.approx(report.val_accuracy)


def test_predictions_are_probabilities_and_learning_happened() -> None:
    model, report = _fit(seed=0, epochs=5)
    holdout = digits_tables("mlp", seed=0)["stable"]
    proba = predict_proba(model, holdout.X, CPU, batch_size=64)
    assert proba.shape == (len(holdout), 10)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert accuracy(model, holdout, CPU) > 0.8
    assert report.val_accuracy is not None and report.val_accuracy > 0.8
