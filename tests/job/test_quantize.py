"""The quantize stage on an MLP trained on scikit-learn's digits, CPU."""

from __future__ import annotations

import copy
import dataclasses
import json
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
from optimizer_job.contract import BadInputError, PruneStage, QuantizeStage
from optimizer_job.dataio import Table
from optimizer_job.strategies import apply_stage, quantize
from optimizer_job.strategies.base import StageContext

pytestmark = pytest.mark.job

CPU = torch.device("cpu")
KWARGS: dict[str, Any] = {"in_features": 64, "num_classes": 10, "hidden": [256, 256]}


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
    return StageContext(
        device=CPU,
        seed=0,
        train=Table(x[:1100], y[:1100], names),
        validation=Table(x[1100:1400], y[1100:1400], names),
        holdout=Table(x[1400:], y[1400:], names),
        log=logging.getLogger("test_quantize"),
        factory=zoo.MLP_FACTORY,
        kwargs=KWARGS,
    )


@pytest.fixture(scope="module")
def trained(ctx: StageContext) -> nn.Module:
    return fit_seeded(zoo.mlp(**KWARGS), ctx, epochs=15).eval()


def holdout_accuracy(model: nn.Module, ctx: StageContext) -> float:
    assert ctx.holdout is not None
    return training.accuracy(model, ctx.holdout, CPU)


def saved_weight_bytes(model: nn.Module, directory: Path) -> int:
    modelio.save_model(model, zoo.MLP_FACTORY, KWARGS, directory)
    return (directory / modelio.WEIGHTS_NAME).stat().st_size


def test_int8_replaces_every_linear_and_keeps_accuracy(
    ctx: StageContext, trained: nn.Module
) -> None:
    outcome = apply_stage(QuantizeStage(mode="int8"), copy.deepcopy(trained), ctx)
    model = outcome.model
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert sum(isinstance(m, quantize.Int8DynamicLinear) for m in model.modules()) == 3
    assert outcome.notes["int8_layers"] == 3
    assert outcome.notes["size_ratio"] >= 3.5
    float_accuracy = holdout_accuracy(trained, ctx)
    assert float_accuracy > 0.9
    assert holdout_accuracy(model, ctx) >= float_accuracy - 0.01
    if float(outcome.notes["quick_speedup_b32"]) < 1.0:
        assert "slower" in str(outcome.notes["warning"])


def test_int8_outputs_match_the_float_model_closely(ctx: StageContext, trained: nn.Module) -> None:
    model, _ = quantize.quantize_int8(trained)
    x = torch.from_numpy(ctx.train.X[:200])
    with torch.inference_mode():
        reference, approximate = trained(x), model(x)
    error = (approximate - reference).abs().max() / reference.abs().max()
    assert error < 0.05
    agreement = (approximate.argmax(1) == reference.argmax(1)).float().mean()
    assert float(agreement) > 0.98


def test_an_int8_model_saves_at_least_3_5x_smaller_and_loads_to_the_same_outputs(
    ctx: StageContext, trained: nn.Module, tmp_path: Path
) -> None:
    model, _ = quantize.quantize_int8(trained)
    float_bytes = saved_weight_bytes(trained, tmp_path / "float")
    int8_bytes = saved_weight_bytes(model, tmp_path / "int8")
    assert float_bytes / int8_bytes >= 3.5

    meta = json.loads((tmp_path / "int8" / modelio.META_NAME).read_text())
    assert meta["quantization"]["mode"] == "int8"
    loaded = modelio.load_model(tmp_path / "int8").module
    assert sum(isinstance(m, quantize.Int8DynamicLinear) for m in loaded.modules()) == 3
    x = torch.from_numpy(ctx.holdout.X if ctx.holdout is not None else ctx.train.X)
    with torch.inference_mode():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize(("mode", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_takes_float32_halves_the_weights_and_round_trips(
    ctx: StageContext, trained: nn.Module, tmp_path: Path, mode: str, dtype: torch.dtype
) -> None:
    outcome = apply_stage(QuantizeStage(mode=mode), copy.deepcopy(trained), ctx)
    model = outcome.model
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert outcome.notes["size_ratio"] == pytest.approx(2.0, rel=0.01)
    x = torch.from_numpy(ctx.train.X[:100])
    with torch.inference_mode():
        y = model(x)
    assert y.dtype == torch.float32
    assert holdout_accuracy(model, ctx) >= holdout_accuracy(trained, ctx) - 0.01

    modelio.save_model(model, zoo.MLP_FACTORY, KWARGS, tmp_path / mode)
    loaded = modelio.load_model(tmp_path / mode).module
    with torch.inference_mode():
        assert torch.equal(loaded(x), y)


def test_a_float_model_exports_as_unquantized(trained: nn.Module) -> None:
    tensors, block = quantize.export_state(trained)
    assert block["mode"] == "none"
    assert set(tensors) == set(trained.state_dict())


def test_restore_refuses_a_layer_that_is_not_linear(trained: nn.Module) -> None:
    model, _ = quantize.quantize_int8(trained)
    tensors, block = quantize.export_state(model)
    with pytest.raises(ValueError, match=r"not an nn\.Linear"):
        quantize.restore(zoo.mlp(**KWARGS), tensors, {**block, "layers": ["1"]})


def test_the_float_fallback_of_int8_layers_computes_the_same_product(
    ctx: StageContext, trained: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA falls back to this path for shapes its int8 GEMM refuses; check it here."""
    model, _ = quantize.quantize_int8(trained)
    for layer in model.modules():
        if isinstance(layer, quantize.Int8DynamicLinear):
            layer.use_packed = False  # the torch._int_mm path CUDA runs
    x = torch.from_numpy(ctx.train.X[:32])
    with torch.inference_mode():
        integer = model(x)
        monkeypatch.setattr(quantize, "_int_mm_fits", lambda rows, weight: False)
        fallback = model(x)
    torch.testing.assert_close(fallback, integer, rtol=1e-4, atol=1e-5)


def test_the_cpu_kernel_agrees_with_the_int_mm_path_and_survives_save_and_copy(
    ctx: StageContext, trained: nn.Module, tmp_path: Path
) -> None:
    """On the CPU int8 layers run PyTorch's fused dynamic quantized linear on the same int8
    weights; it must agree with the per-row torch._int_mm path up to activation rounding,
    and its packed weights must follow a reload and a deep copy."""
    model, _ = quantize.quantize_int8(trained)
    x = torch.from_numpy(ctx.train.X[:64])
    with torch.inference_mode():
        packed = model(x)
        reference = trained.eval()(x)
    layers = [m for m in model.modules() if isinstance(m, quantize.Int8DynamicLinear)]
    assert layers and all(layer._packed is not None for layer in layers)  # it ran packed
    slow = copy.deepcopy(model)
    for layer in slow.modules():
        if isinstance(layer, quantize.Int8DynamicLinear):
            layer.use_packed = False
    with torch.inference_mode():
        by_int_mm = slow(x)
    scale = float(reference.abs().max())
    assert float((packed - by_int_mm).abs().max()) < 0.05 * scale
    assert float((packed.argmax(1) == reference.argmax(1)).float().mean()) >= 0.95
    modelio.save_model(model, zoo.MLP_FACTORY, KWARGS, tmp_path / "q")
    with torch.inference_mode():
        torch.testing.assert_close(modelio.load_model(tmp_path / "q").module(x), packed)
        torch.testing.assert_close(copy.deepcopy(model)(x), packed)


@pytest.mark.parametrize("second", [QuantizeStage(mode="int8"), PruneStage(fine_tune_epochs=0)])
def test_a_quantized_model_is_not_quantized_or_pruned_again(
    ctx: StageContext, trained: nn.Module, second: QuantizeStage | PruneStage
) -> None:
    quantized = apply_stage(QuantizeStage(mode="bf16"), copy.deepcopy(trained), ctx).model
    with pytest.raises(BadInputError, match=r"already quantized \(bf16\)"):
        apply_stage(second, quantized, ctx)


class _ThreadProbe(nn.Module):
    """Records the intra-op thread count each call runs with."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[int] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add(torch.get_num_threads())
        return x


def test_the_quick_speed_check_runs_with_the_evaluations_thread_count(
    ctx: StageContext, trained: nn.Module
) -> None:
    model = nn.Sequential(copy.deepcopy(trained), _ThreadProbe())
    torch.set_num_threads(2)  # the Job's default; evaluation measures with ctx.threads
    try:
        outcome = apply_stage(
            QuantizeStage(mode="int8"), model, dataclasses.replace(ctx, threads=1)
        )
    finally:
        torch.set_num_threads(1)
    probes = [m for m in (model, outcome.model) for m in m.modules() if isinstance(m, _ThreadProbe)]
    assert {n for probe in probes for n in probe.seen} == {1}
    assert outcome.notes["quick_check_threads"] == 1
