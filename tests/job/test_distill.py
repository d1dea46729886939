"""The distill stage (coreset selection) on scikit-learn's digits with a trained MLP, CPU."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fitting import fit_seeded
from sklearn.datasets import load_digits
from torch import nn

from optimizer_job import training, zoo
from optimizer_job.contract import DistillStage
from optimizer_job.dataio import SOURCE_CURRENT, SOURCE_REFERENCE, Table
from optimizer_job.strategies import apply_stage
from optimizer_job.strategies.base import StageContext

pytestmark = pytest.mark.job

CPU = torch.device("cpu")
KWARGS: dict[str, Any] = {"in_features": 64, "num_classes": 10, "hidden": [64, 32]}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a small shared machine more threads only contend."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def ctx() -> StageContext:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    names = [f"pixel_{i}" for i in range(64)]
    source = np.where(np.arange(1200) % 2 == 0, SOURCE_REFERENCE, SOURCE_CURRENT).astype(np.int8)
    return StageContext(
        device=CPU,
        seed=0,
        train=Table(x[:1200], y[:1200], names, source),
        validation=Table(x[1200:1500], y[1200:1500], names),
        holdout=Table(x[1500:], y[1500:], names),
        log=logging.getLogger("test_distill"),
        factory=zoo.MLP_FACTORY,
        kwargs=KWARGS,
    )


@pytest.fixture(scope="module")
def trained(ctx: StageContext) -> nn.Module:
    return fit_seeded(zoo.mlp(**KWARGS), ctx, epochs=8).eval()


def rows_of(coreset: Table, table: Table) -> np.ndarray:
    """Indices of the coreset's rows in ``table`` (digits has duplicate-free rows here)."""
    lookup = {row.tobytes(): i for i, row in enumerate(table.X)}
    return np.array([lookup[row.tobytes()] for row in coreset.X])


@pytest.mark.parametrize("method", ["herding", "kcenter", "random"])
def test_the_coreset_replaces_the_training_rows_with_a_balanced_fraction(
    ctx: StageContext, trained: nn.Module, method: str
) -> None:
    assert ctx.train.y is not None
    outcome = apply_stage(DistillStage(method=method, fraction_percent=20), trained, ctx)
    coreset = outcome.ctx.train
    assert coreset.y is not None and coreset.source is not None

    assert len(coreset) == round(0.2 * len(ctx.train)) == outcome.notes["rows_after"]
    for label in range(10):
        share = 0.2 * np.sum(ctx.train.y == label)
        assert abs(int(np.sum(coreset.y == label)) - share) <= 1
    indices = rows_of(coreset, ctx.train)
    assert len(set(indices.tolist())) == len(coreset)
    assert np.array_equal(coreset.y, ctx.train.y[indices])
    assert np.array_equal(coreset.source, ctx.train.source[indices])  # type: ignore[index]
    assert outcome.ctx.validation is ctx.validation
    assert outcome.ctx.holdout is ctx.holdout
    assert outcome.model is trained
    assert outcome.notes["space"] == ("none" if method == "random" else "features")


@pytest.mark.parametrize("method", ["herding", "kcenter"])
def test_greedy_selection_is_deterministic_and_differs_from_random(
    ctx: StageContext, trained: nn.Module, method: str
) -> None:
    stage = DistillStage(method=method, fraction_percent=10)
    first = apply_stage(stage, trained, ctx).ctx.train
    second = apply_stage(stage, trained, ctx).ctx.train
    random = apply_stage(DistillStage(method="random", fraction_percent=10), trained, ctx)
    assert np.array_equal(first.X, second.X)
    assert not np.array_equal(first.X, random.ctx.train.X)


def test_a_model_trained_on_the_herding_coreset_still_learns(
    ctx: StageContext, trained: nn.Module
) -> None:
    coreset = apply_stage(DistillStage(method="herding", fraction_percent=30), trained, ctx)
    torch.manual_seed(1)
    fresh = zoo.mlp(**KWARGS)
    training.fit(
        fresh,
        coreset.ctx.train,
        ctx.validation,
        epochs=15,
        batch_size=32,
        lr=3e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=0,
        device=CPU,
        seed=0,
        log=ctx.log,
    )
    assert ctx.holdout is not None
    assert training.accuracy(fresh, ctx.holdout, CPU) > 0.85


def image_ctx(ctx: StageContext) -> StageContext:
    """The same rows as 1x8x8 images."""
    train = ctx.train
    images = Table(train.X.reshape(-1, 1, 8, 8), train.y, [], train.source)
    return StageContext(
        CPU, 0, images, ctx.validation, ctx.holdout, ctx.log, zoo.SMALL_CNN_FACTORY, {}
    )


def test_images_are_selected_in_the_space_the_classifier_sees(ctx: StageContext) -> None:
    torch.manual_seed(0)
    cnn = zoo.small_cnn(1, 10, 8, channels=[8, 16, 16], hidden=16)
    outcome = apply_stage(DistillStage(method="herding", fraction_percent=10), cnn, image_ctx(ctx))
    assert outcome.notes["space"] == "embedding"
    assert outcome.ctx.train.sample_shape == [1, 8, 8]
    assert len(outcome.ctx.train) == 120


def test_images_fall_back_to_pixels_for_a_model_without_linear_or_conv_layers(
    ctx: StageContext,
) -> None:
    stage = DistillStage(method="kcenter", fraction_percent=10)
    outcome = apply_stage(stage, nn.Identity(), image_ctx(ctx))
    assert outcome.notes["space"] == "features"
    assert len(outcome.ctx.train) == 120
