"""Metrics of a model: MACs against hand counts, size against the written file, latency keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from optimizer_job import zoo
from optimizer_job.contract import EvaluationSettings
from optimizer_job.dataio import Table
from optimizer_job.evaluate import count_macs, count_parameters, measure, measure_side_by_side
from optimizer_job.modelio import save_model

pytestmark = pytest.mark.job

CPU = torch.device("cpu")


def _conv_macs(c_in: int, c_out: int, size: int) -> int:
    return c_out * size * size * c_in * 9


def test_macs_of_the_zoo_models_match_the_hand_count() -> None:
    mlp = zoo.mlp(64, 10, hidden=[128, 64])
    assert count_macs(mlp, np.zeros((1, 64), np.float32), CPU) == 64 * 128 + 128 * 64 + 64 * 10
    cnn = zoo.small_cnn(1, 10, 32)
    expected = (
        _conv_macs(1, 64, 32)
        + _conv_macs(64, 128, 32)
        + _conv_macs(128, 128, 16)
        + 128 * 128
        + 128 * 10
    )
    assert count_macs(cnn, np.zeros((1, 1, 32, 32), np.float32), CPU) == expected
    assert expected >= 50_000_000  # big enough for structured pruning to show on a CPU


def test_measure_reports_accuracy_latency_size_parameters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.mlp(8, 3, hidden=[16])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    with torch.inference_mode():
        predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    labels = predicted.copy()
    labels[:10] = (labels[:10] + 1) % 3  # exactly 10 of 50 wrong
    holdout = Table(x, labels.astype(np.int64), [f"f{i}" for i in range(8)])
    settings = EvaluationSettings(
        latency_batch_sizes=[1, 4], latency_iterations=20, latency_warmup=2
    )
    metrics = measure(model, holdout, CPU, settings)
    assert metrics.accuracy == pytest.approx(0.8)
    assert set(metrics.latency_ms) == {f"b{b}_p{p}" for b in (1, 4) for p in (50, 95, 99)}
    assert all(v > 0 for v in metrics.latency_ms.values())
    assert metrics.latency_ms["b1_p50"] <= metrics.latency_ms["b1_p99"]
    assert metrics.parameters == 8 * 16 + 16 + 16 * 3 + 3 == count_parameters(model)
    save_model(
        model, zoo.MLP_FACTORY, {"in_features": 8, "num_classes": 3, "hidden": [16]}, tmp_path
    )
    assert metrics.size_bytes == (tmp_path / "model.safetensors").stat().st_size
    assert metrics.device == "cpu"


def test_measure_without_labels_reports_no_accuracy() -> None:
    model = zoo.mlp(4, 2, hidden=[4])
    table = Table(np.zeros((3, 4), np.float32), None, list("abcd"))
    metrics = measure(model, table, CPU, EvaluationSettings(latency_iterations=5, latency_warmup=0))
    assert metrics.accuracy is None and metrics.macs == 4 * 4 + 4 * 2


def test_side_by_side_measurement_tells_a_heavy_model_from_a_light_one() -> None:
    light = zoo.mlp(64, 10, hidden=[16])
    heavy = zoo.mlp(64, 10, hidden=[1024, 1024])
    table = Table(np.random.default_rng(0).random((40, 64), dtype=np.float32), None, [])
    settings = EvaluationSettings(latency_batch_sizes=[32], latency_iterations=30, latency_warmup=2)
    light_metrics, heavy_metrics = measure_side_by_side([light, heavy], table, CPU, settings)
    assert heavy_metrics.macs is not None and light_metrics.macs is not None
    assert heavy_metrics.macs > 100 * light_metrics.macs
    assert heavy_metrics.latency_ms["b32_p50"] > 3 * light_metrics.latency_ms["b32_p50"]
