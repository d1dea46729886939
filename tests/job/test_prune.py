"""The prune stage on a small CNN trained on scikit-learn's digits (8x8 images), CPU."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fitting import fit_seeded
from sklearn.datasets import load_digits
from torch import nn

from optimizer_job import modelio, training, zoo
from optimizer_job.contract import EvaluationSettings, PruneStage, QuantizeStage
from optimizer_job.dataio import Table
from optimizer_job.evaluate import measure
from optimizer_job.strategies import apply_stage, prune
from optimizer_job.strategies._layers import final_layer
from optimizer_job.strategies.base import StageContext
from optimizer_job.strategies.prune import count_macs_and_params

pytestmark = pytest.mark.job

CPU = torch.device("cpu")
KWARGS: dict[str, Any] = {
    "in_channels": 1,
    "num_classes": 10,
    "image_size": 8,
    "channels": [16, 32, 32],
    "hidden": 32,
}


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
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    return StageContext(
        device=CPU,
        seed=0,
        train=Table(x[:1100], y[:1100], []),
        validation=Table(x[1100:1400], y[1100:1400], []),
        holdout=Table(x[1400:], y[1400:], []),
        log=logging.getLogger("test_prune"),
        factory=zoo.SMALL_CNN_FACTORY,
        kwargs=KWARGS,
    )


@pytest.fixture(scope="module")
def trained(ctx: StageContext) -> nn.Module:
    return fit_seeded(zoo.small_cnn(**KWARGS), ctx, epochs=5)


def conv_widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def holdout_accuracy(model: nn.Module, ctx: StageContext) -> float:
    assert ctx.holdout is not None
    return training.accuracy(model, ctx.holdout, CPU)


def test_structured_pruning_removes_channels_and_the_model_still_predicts(
    ctx: StageContext, trained: nn.Module
) -> None:
    stage = PruneStage(method="structured", amount_percent=50, importance="l2", fine_tune_epochs=3)
    outcome = apply_stage(stage, copy.deepcopy(trained), ctx)
    pruned = outcome.model
    example = torch.from_numpy(ctx.train.X[:1])
    macs_before, params_before = count_macs_and_params(trained, example)
    macs_after, params_after = count_macs_and_params(pruned, example)

    assert conv_widths(pruned) == [8, 16, 16]
    assert params_after < 0.4 * params_before
    assert macs_after < 0.4 * macs_before
    assert outcome.notes["macs_before"] == macs_before
    assert outcome.notes["macs_after"] == macs_after
    assert outcome.notes["params_after"] == params_after
    head = list(pruned.modules())[-1]
    assert isinstance(head, nn.Linear) and head.out_features == 10  # classifier kept whole
    assert holdout_accuracy(pruned, ctx) > 0.8  # chance is 0.1
    # One MACs count: the notes' numbers are the ones the run's result reports.
    assert ctx.holdout is not None
    settings = EvaluationSettings(latency_batch_sizes=[1], latency_iterations=5)
    assert measure(trained, ctx.holdout, CPU, settings).macs == macs_before
    assert measure(pruned, ctx.holdout, CPU, settings).macs == macs_after
    assert outcome.notes["macs_ratio"] == round(macs_before / macs_after, 3)


@pytest.mark.parametrize("importance", ["l1", "taylor", "random"])
def test_every_importance_prunes_the_same_structure(
    ctx: StageContext, trained: nn.Module, importance: str
) -> None:
    stage = PruneStage(
        method="structured", amount_percent=25, importance=importance, fine_tune_epochs=0
    )
    pruned = apply_stage(stage, copy.deepcopy(trained), ctx).model
    assert conv_widths(pruned) == [12, 24, 24]
    assert pruned(torch.from_numpy(ctx.train.X[:4])).shape == (4, 10)


def test_random_importance_is_deterministic_for_a_seed(
    ctx: StageContext, trained: nn.Module
) -> None:
    stage = PruneStage(
        method="structured", amount_percent=50, importance="random", fine_tune_epochs=0
    )
    first = apply_stage(stage, copy.deepcopy(trained), ctx).model.state_dict()
    second = apply_stage(stage, copy.deepcopy(trained), ctx).model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_structurally_pruned_model_saves_and_loads_with_its_new_shapes(
    ctx: StageContext, trained: nn.Module, tmp_path: Path
) -> None:
    stage = PruneStage(method="structured", amount_percent=50, importance="l1", fine_tune_epochs=1)
    pruned = apply_stage(stage, copy.deepcopy(trained), ctx).model
    modelio.save_model(pruned, zoo.SMALL_CNN_FACTORY, KWARGS, tmp_path / "model")
    loaded = modelio.load_model(tmp_path / "model").module

    assert conv_widths(loaded) == conv_widths(pruned) == [8, 16, 16]
    x = torch.from_numpy(ctx.train.X[:64])
    with torch.inference_mode():
        assert torch.equal(loaded(x), pruned(x))


def test_unstructured_pruning_zeroes_weights_permanently_but_keeps_the_shapes(
    ctx: StageContext, trained: nn.Module, tmp_path: Path
) -> None:
    stage = PruneStage(
        method="unstructured", amount_percent=50, importance="l1", fine_tune_epochs=2
    )
    outcome = apply_stage(stage, copy.deepcopy(trained), ctx)
    pruned = outcome.model
    prunable = [m for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][:-1]
    zeros = sum(int((m.weight == 0).sum()) for m in prunable)
    total = sum(m.weight.numel() for m in prunable)

    assert zeros / total == pytest.approx(0.5, abs=0.01)
    assert outcome.notes["sparsity"] == pytest.approx(zeros / total, abs=1e-4)
    assert outcome.notes["params_after"] == outcome.notes["params_before"]
    assert outcome.notes["macs_after"] == outcome.notes["macs_before"]
    assert "no latency" in str(outcome.notes["latency"])
    assert not any(k.endswith(("_orig", "_mask")) for k in pruned.state_dict())
    assert conv_widths(pruned) == [16, 32, 32]
    assert holdout_accuracy(pruned, ctx) > 0.8

    modelio.save_model(pruned, zoo.SMALL_CNN_FACTORY, KWARGS, tmp_path / "model")
    loaded = modelio.load_model(tmp_path / "model").module
    x = torch.from_numpy(ctx.train.X[:64])
    with torch.inference_mode():
        assert torch.equal(loaded(x), pruned(x))


def test_unstructured_taylor_pruning_reaches_the_asked_sparsity(
    ctx: StageContext, trained: nn.Module
) -> None:
    stage = PruneStage(
        method="unstructured", amount_percent=30, importance="taylor", fine_tune_epochs=0
    )
    outcome = apply_stage(stage, copy.deepcopy(trained), ctx)
    assert outcome.notes["sparsity"] == pytest.approx(0.3, abs=0.01)


def test_batchnorm_recalibration_recovers_accuracy_lost_to_pruning(
    ctx: StageContext, trained: nn.Module
) -> None:
    model = copy.deepcopy(trained)
    example = torch.from_numpy(ctx.train.X[:1])
    stage = PruneStage(method="structured", amount_percent=30, importance="l1", fine_tune_epochs=0)
    prune.prune_structured(model, stage, ctx, example, final_layer(model, example))
    stale = holdout_accuracy(model, ctx)
    assert prune.recalibrate_batchnorm(model, ctx.train, CPU) == 3
    assert holdout_accuracy(model, ctx) > stale + 0.1


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (zoo.MLP_FACTORY, {"in_features": 64, "num_classes": 10, "hidden": [64, 32]}),
        (zoo.TABULAR_RESNET_FACTORY, {"in_features": 64, "num_classes": 10, "width": 32}),
    ],
)
def test_tabular_models_prune_then_quantize_and_round_trip(
    ctx: StageContext, factory: str, kwargs: dict[str, Any], tmp_path: Path
) -> None:
    """Residual blocks tie widths together: Torch-Pruning must prune them consistently."""
    flat = StageContext(
        CPU,
        0,
        Table(ctx.train.X.reshape(len(ctx.train), -1), ctx.train.y, []),
        Table(ctx.validation.X.reshape(len(ctx.validation), -1), ctx.validation.y, []),
        None,
        ctx.log,
        factory,
        kwargs,
    )
    torch.manual_seed(0)
    model = modelio.build_model(factory, kwargs)
    stage = PruneStage(method="structured", amount_percent=50, importance="l2", fine_tune_epochs=1)
    outcome = apply_stage(stage, model, flat)
    assert int(outcome.notes["params_after"]) < 0.5 * int(outcome.notes["params_before"])
    quantized = apply_stage(QuantizeStage(mode="int8"), outcome.model, flat).model

    modelio.save_model(quantized, factory, kwargs, tmp_path / "model")
    loaded = modelio.load_model(tmp_path / "model").module
    x = torch.from_numpy(flat.train.X[:32])
    with torch.inference_mode():
        assert torch.equal(loaded(x), quantized(x))
