"""What a model costs and how well it does: accuracy, latency percentiles, size, parameters, MACs.

Latency is measured per call of the model on a batch taken from the holdout (rows
repeated to fill the batch), after warm-up, with the thread count pinned, under
``torch.inference_mode`` and with CUDA synchronised around each call, so a number
means the same thing on every run and device. Models to compare are measured side by
side, interleaved, so a busy neighbour slows all of them alike. An ONNX model
(``OnnxModule``) is timed by the same code: its forward runs ONNX Runtime with torch's
pinned thread count.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from optimizer_job.contract import EvaluationSettings, ModelMetrics
from optimizer_job.dataio import Table
from optimizer_job.modelio import ONNX_MODULE, WEIGHTS_METADATA, model_dtype, state_tensors
from optimizer_job.training import accuracy

PERCENTILES = (50, 95, 99)


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure(
    model: nn.Module, holdout: Table, device: torch.device, settings: EvaluationSettings
) -> ModelMetrics:
    """Metrics of ``model`` on ``holdout`` (accuracy only when it is labelled)."""
    return measure_side_by_side([model], holdout, device, settings)[0]


def measure_side_by_side(
    models: list[nn.Module],
    holdout: Table,
    device: torch.device,
    settings: EvaluationSettings,
    rounds: int = 5,
) -> list[ModelMetrics]:
    """Metrics of several models, their latencies measured interleaved.

    Each batch size's iterations are split into ``rounds``; every round times each
    model in turn (the order alternating), so load that comes and goes on the machine
    falls on all of them alike and a comparison of their percentiles is fair.
    """
    for model in models:
        model.eval().to(device)
    samples: list[dict[int, list[np.ndarray]]] = [{} for _ in models]
    with pinned_threads(settings.threads):
        scores = [
            accuracy(model, holdout, device) if holdout.y is not None else None for model in models
        ]
        per_round = -(-settings.latency_iterations // max(rounds, 1))
        for batch_size in settings.latency_batch_sizes:
            rows = batch_rows(holdout.X, batch_size)
            for model in models:
                latency_samples(model, rows, device, settings.latency_warmup, 0)
            for round_index in range(max(rounds, 1)):
                order = list(range(len(models)))
                if round_index % 2:
                    order.reverse()
                for index in order:
                    timings = latency_samples(models[index], rows, device, 0, per_round)
                    samples[index].setdefault(batch_size, []).append(timings)
    return [
        ModelMetrics(
            accuracy=score,
            latency_ms=_percentiles(model_samples),
            size_bytes=serialized_size(model),
            parameters=count_parameters(model),
            macs=count_macs(model, holdout.X[:1], device),
            device=device.type,
        )
        for model, score, model_samples in zip(models, scores, samples, strict=True)
    ]


def _percentiles(samples: dict[int, list[np.ndarray]]) -> dict[str, float]:
    latency = {}
    for batch_size, parts in samples.items():
        values = np.percentile(np.concatenate(parts), PERCENTILES)
        for percentile, value in zip(PERCENTILES, values, strict=True):
            latency[f"b{batch_size}_p{percentile}"] = round(float(value), 4)
    return latency


def batch_rows(x: np.ndarray, batch_size: int) -> np.ndarray:
    """``batch_size`` rows of ``x``, repeating rows when it has fewer."""
    reps = -(-batch_size // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:batch_size])


@torch.inference_mode()
def latency_samples(
    model: nn.Module, rows: np.ndarray, device: torch.device, warmup: int, iterations: int
) -> np.ndarray:
    """Milliseconds of each of ``iterations`` calls on ``rows``, after ``warmup`` calls."""
    batch = torch.from_numpy(rows).to(device=device, dtype=model_dtype(model))
    sync = device.type == "cuda"
    for _ in range(warmup):
        model(batch)
    samples = np.empty(iterations, dtype=np.float64)
    for index in range(iterations):
        if sync:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(batch)
        if sync:
            torch.cuda.synchronize(device)
        samples[index] = (time.perf_counter() - start) * 1000.0
    return samples


def _onnx(model: nn.Module) -> Any:
    """The model as an ``OnnxModule`` when it is one (None otherwise), without importing ORT."""
    module = sys.modules.get(ONNX_MODULE)
    return model if module is not None and isinstance(model, module.OnnxModule) else None


def serialized_size(model: nn.Module) -> int:
    """Bytes of the weights file a model directory would hold (model.onnx for ONNX)."""
    onnx_model = _onnx(model)
    if onnx_model is not None:
        return int(onnx_model.size_bytes)
    tensors, _ = state_tensors(model)
    return len(safetensors.torch.save(tensors, metadata=WEIGHTS_METADATA))


def count_parameters(model: nn.Module) -> int:
    """Trainable-shaped values: parameters, plus weights a quantized layer keeps as buffers
    (an ONNX graph's initializers)."""
    onnx_model = _onnx(model)
    if onnx_model is not None:
        return int(onnx_model.parameter_count)
    seen: set[int] = set()
    total = 0
    for layer in model.modules():
        tensors: list[torch.Tensor] = [p for p in layer._parameters.values() if p is not None]
        tensors += [
            b for name, b in layer._buffers.items() if b is not None and name in ("weight", "bias")
        ]
        for tensor in tensors:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel()
    return total


@torch.inference_mode()
def count_macs(model: nn.Module, sample: np.ndarray, device: torch.device) -> int:
    """Multiply-accumulates of one forward pass on one row, counted by hooks on conv and
    linear layers (those dominate; activations and norms are left out). An ONNX model
    reports the count model.json recorded of the torch model it was exported from."""
    onnx_model = _onnx(model)
    if onnx_model is not None:
        return int(onnx_model.macs or 0)
    total = 0

    def conv_hook(layer: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(layer, nn.modules.conv._ConvNd)
        per_output = (layer.in_channels // layer.groups) * int(np.prod(layer.kernel_size))
        total += output.numel() * per_output

    def linear_hook(layer: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        in_features = layer.in_features
        assert isinstance(in_features, int)
        total += output.numel() * in_features

    handles = []
    for layer in model.modules():
        if isinstance(layer, nn.modules.conv._ConvNd):
            handles.append(layer.register_forward_hook(conv_hook))
        elif hasattr(layer, "in_features") and hasattr(layer, "out_features"):
            # nn.Linear and quantized stand-ins for it keep these attributes.
            handles.append(layer.register_forward_hook(linear_hook))
    try:
        model(torch.from_numpy(sample).to(device=device, dtype=model_dtype(model)))
    finally:
        for handle in handles:
            handle.remove()
    return total
