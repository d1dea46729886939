"""The prune, distill and quantize stages on CUDA (skipped where there is no GPU)."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from optimizer_job import modelio, training, zoo
from optimizer_job.contract import DistillStage, PruneStage, QuantizeStage
from optimizer_job.dataio import Table
from optimizer_job.strategies import apply_stage, quantize
from optimizer_job.strategies.base import StageContext

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")
CNN: dict[str, Any] = {
    "in_channels": 1,
    "num_classes": 10,
    "image_size": 8,
    "channels": [16, 32, 32],
    "hidden": 32,
}
MLP: dict[str, Any] = {"in_features": 64, "num_classes": 10, "hidden": [256, 256]}


def digits_ctx(images: bool, kwargs: dict[str, Any], factory: str) -> StageContext:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    if images:
        x = x.reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    return StageContext(
        device=CUDA,
        seed=0,
        train=Table(x[:1100], y[:1100], []),
        validation=Table(x[1100:1400], y[1100:1400], []),
        holdout=Table(x[1400:], y[1400:], []),
        log=logging.getLogger("test_cuda"),
        factory=factory,
        kwargs=kwargs,
    )


def trained(model: nn.Module, ctx: StageContext, epochs: int) -> nn.Module:
    training.fit(
        model,
        ctx.train,
        ctx.validation,
        epochs=epochs,
        batch_size=64,
        lr=3e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=0,
        device=CUDA,
        seed=0,
        log=ctx.log,
    )
    return model.eval()


@pytest.fixture(scope="module")
def cnn_ctx() -> StageContext:
    return digits_ctx(True, CNN, zoo.SMALL_CNN_FACTORY)


@pytest.fixture(scope="module")
def mlp_ctx() -> StageContext:
    return digits_ctx(False, MLP, zoo.MLP_FACTORY)


@pytest.fixture(scope="module")
def cnn(cnn_ctx: StageContext) -> nn.Module:
    torch.manual_seed(0)
    return trained(zoo.small_cnn(**CNN), cnn_ctx, epochs=6)


@pytest.fixture(scope="module")
def mlp(mlp_ctx: StageContext) -> nn.Module:
    torch.manual_seed(0)
    return trained(zoo.mlp(**MLP), mlp_ctx, epochs=10)


def test_structured_pruning_on_cuda_shrinks_fine_tunes_and_round_trips(
    cnn_ctx: StageContext, cnn: nn.Module, tmp_path: Path
) -> None:
    stage = PruneStage(
        method="structured", amount_percent=50, importance="taylor", fine_tune_epochs=3
    )
    pruned = apply_stage(stage, copy.deepcopy(cnn), cnn_ctx).model
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [8, 16, 16]
    assert next(pruned.parameters()).device.type == "cuda"
    assert cnn_ctx.holdout is not None
    assert training.accuracy(pruned, cnn_ctx.holdout, CUDA) > 0.8

    modelio.save_model(pruned, zoo.SMALL_CNN_FACTORY, CNN, tmp_path / "model")
    loaded = modelio.load_model(tmp_path / "model").module.to(CUDA)
    x = torch.from_numpy(cnn_ctx.train.X[:64]).to(CUDA)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), pruned(x))


@pytest.mark.parametrize("rows", [64, 1])  # 64: cuBLASLt int8 GEMM; 1: the float fallback
def test_int8_on_cuda_matches_int8_on_cpu_and_stays_close_to_float(
    mlp_ctx: StageContext, mlp: nn.Module, rows: int
) -> None:
    on_gpu, _ = quantize.quantize_int8(mlp)
    on_cpu, _ = quantize.quantize_int8(copy.deepcopy(mlp).cpu())
    x = torch.from_numpy(mlp_ctx.train.X[:rows])
    with torch.inference_mode():
        gpu_out = on_gpu(x.to(CUDA)).cpu()
        cpu_out = on_cpu(x)
        reference = mlp(x.to(CUDA)).cpu()
    torch.testing.assert_close(gpu_out, cpu_out, rtol=1e-4, atol=1e-4)
    assert float((gpu_out - reference).abs().max() / reference.abs().max()) < 0.05


@pytest.mark.parametrize("mode", ["int8", "bf16", "fp16"])
def test_quantize_stage_on_cuda_keeps_accuracy_and_round_trips(
    mlp_ctx: StageContext, mlp: nn.Module, mode: str, tmp_path: Path
) -> None:
    outcome = apply_stage(QuantizeStage(mode=mode), copy.deepcopy(mlp), mlp_ctx)  # type: ignore[arg-type]
    assert mlp_ctx.holdout is not None
    float_accuracy = training.accuracy(mlp, mlp_ctx.holdout, CUDA)
    assert training.accuracy(outcome.model, mlp_ctx.holdout, CUDA) >= float_accuracy - 0.01
    assert float(outcome.notes["quick_speedup_b32"]) > 0

    modelio.save_model(outcome.model, zoo.MLP_FACTORY, MLP, tmp_path / mode)
    loaded = modelio.load_model(tmp_path / mode).module.to(CUDA)
    x = torch.from_numpy(mlp_ctx.train.X[:64]).to(CUDA)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), outcome.model(x))


def test_distill_on_cuda_selects_in_the_embedding_of_an_image_model(
    cnn_ctx: StageContext, cnn: nn.Module
) -> None:
    outcome = apply_stage(DistillStage(method="kcenter", fraction_percent=20), cnn, cnn_ctx)
    assert outcome.notes["space"] == "embedding"
    assert len(outcome.ctx.train) == 220
