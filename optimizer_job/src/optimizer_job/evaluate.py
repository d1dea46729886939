"""What a model costs and how well it does: accuracy, latency percentiles, size, parameters, MACs.

Latency is measured per call of the model on a batch taken from the holdout (rows
repeated to fill the batch), after warm-up, with the thread count pinned, under
``torch.inference_mode`` and with CUDA synchronised around each call, so a number
means the same thing on every run and device. Models to compare are measured side by
side in many short interleaved rounds (ABBA order for a pair), so a busy neighbour
slows all of them alike; for a pair, the candidate's speedup at each batch size comes
with a confidence interval (``optimizer_job.speed``) that the speed gate decides on.
An ONNX model (``OnnxModule``) is timed by the same code: its forward runs ONNX Runtime
with torch's pinned thread count (one intra-op thread runs on the calling thread, so the
thread CPU clock counts it).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from optimizer_job.contract import EvaluationSettings, ModelMetrics, SpeedDecision, SpeedRatio
from optimizer_job.dataio import Table
from optimizer_job.modelio import ONNX_MODULE, WEIGHTS_METADATA, model_dtype, state_tensors
from optimizer_job.speed import Decision, abba_first, decide, ratio_interval
from optimizer_job.training import predict_proba

PERCENTILES = (50, 95, 99)


@dataclass
class MeasureDetails:
    """What a measurement saw beyond its metrics, for report.html: each model's per-call
    latencies (ms) by batch size and its predicted classes on the holdout."""

    latencies: list[dict[int, np.ndarray]] = field(default_factory=list)
    predictions: list[np.ndarray | None] = field(default_factory=list)


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure(
    model: nn.Module,
    holdout: Table,
    device: torch.device,
    settings: EvaluationSettings,
    details: MeasureDetails | None = None,
) -> ModelMetrics:
    """Metrics of ``model`` on ``holdout`` (accuracy only when it is labelled); ``details``,
    when given, receives its per-call latencies and predictions."""
    return _measure([model], holdout, device, settings, None, details)[0][0]


def measure_side_by_side(
    models: list[nn.Module],
    holdout: Table,
    device: torch.device,
    settings: EvaluationSettings,
) -> list[ModelMetrics]:
    """Metrics of several models, their latencies measured interleaved (``_timed_rounds``)."""
    return _measure(models, holdout, device, settings, None)[0]


def measure_pair(
    baseline: nn.Module,
    candidate: nn.Module,
    holdout: Table,
    device: torch.device,
    settings: EvaluationSettings,
    decision: SpeedDecision | None = None,
    details: MeasureDetails | None = None,
) -> tuple[ModelMetrics, ModelMetrics, list[SpeedRatio]]:
    """Metrics of the model in use and a candidate, and at every batch size how much faster
    the candidate is, with its confidence interval (``optimizer_job.speed``).

    With a ``decision`` (the speed gate the candidate will face), its batch size is measured
    in more rounds while the interval straddles the required ratio, up to
    ``MAX_ROUNDS_FACTOR`` times the first rounds; what is still undecided then is reported
    as ``inconclusive``.
    """
    metrics, speed = _measure([baseline, candidate], holdout, device, settings, decision, details)
    return metrics[0], metrics[1], speed


# A round times a model for about this long: short rounds, many of them, so that load that
# comes and goes on the machine falls on both models of a pair alike. A round is at least
# three calls: its time is the median call, so one call that the scheduler interrupts
# does not count.
ROUND_TARGET_MS = 5.0
MIN_CALLS_PER_ROUND = 3
MAX_CALLS_PER_ROUND = 20
MIN_ROUNDS = 2 * 10  # ten ABBA blocks at least
MAX_ROUNDS_FACTOR = 4


def calls_per_round(call_ms: float) -> int:
    """Calls in a round of about ``ROUND_TARGET_MS`` for a model taking ``call_ms`` per call."""
    if call_ms <= 0:
        return MAX_CALLS_PER_ROUND
    return max(MIN_CALLS_PER_ROUND, min(MAX_CALLS_PER_ROUND, int(ROUND_TARGET_MS // call_ms)))


def planned_rounds(iterations: int, per_round: int) -> int:
    """Rounds per model: ``iterations`` calls at least, ``MIN_ROUNDS`` at least, even."""
    rounds = max(MIN_ROUNDS, -(-iterations // per_round))
    return rounds + rounds % 2


def _measure(
    models: list[nn.Module],
    holdout: Table,
    device: torch.device,
    settings: EvaluationSettings,
    decision: SpeedDecision | None,
    details: MeasureDetails | None = None,
) -> tuple[list[ModelMetrics], list[SpeedRatio]]:
    for model in models:
        model.eval().to(device)
    samples: list[dict[int, list[np.ndarray]]] = [{} for _ in models]
    speed: list[SpeedRatio] = []
    with pinned_threads(settings.threads):
        scores: list[float | None] = []
        predictions: list[np.ndarray | None] = []
        for model in models:
            if holdout.y is None:
                scores.append(None)
                predictions.append(None)
                continue
            predicted = predict_proba(model, holdout.X, device).argmax(axis=1)
            scores.append(float(np.mean(predicted == holdout.y)))
            predictions.append(predicted)
        for batch_size in settings.latency_batch_sizes:
            rows = batch_rows(holdout.X, batch_size)
            slowest = 0.0
            for model in models:
                warm = latency_samples(model, rows, device, settings.latency_warmup, 3)
                slowest = max(slowest, float(np.median(warm)))
            per_round = calls_per_round(slowest)
            rounds = planned_rounds(settings.latency_iterations, per_round)
            round_ms: list[list[float]] = [[] for _ in models]
            _timed_rounds(models, rows, device, settings, per_round, rounds, samples, round_ms)
            if len(models) != 2:
                continue
            interval = ratio_interval(np.array(round_ms[0]), np.array(round_ms[1]))
            verdict: Decision | None = None
            if decision is not None and decision.batch_size == batch_size:
                required = float(Decimal(decision.min_ratio))
                verdict = decide(interval, required)
                while verdict == "inconclusive" and len(round_ms[0]) < MAX_ROUNDS_FACTOR * rounds:
                    _timed_rounds(
                        models, rows, device, settings, per_round, rounds, samples, round_ms
                    )
                    interval = ratio_interval(np.array(round_ms[0]), np.array(round_ms[1]))
                    verdict = decide(interval, required)
            speed.append(
                SpeedRatio(
                    batch_size=batch_size,
                    ratio=round(interval.ratio, 4),
                    low=round(interval.low, 4),
                    high=round(interval.high, 4),
                    rounds=interval.rounds,
                    confidence=interval.confidence,
                    decision=verdict,
                )
            )
    metrics = [
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
    if details is not None:
        details.latencies = [
            {batch: np.concatenate(parts) for batch, parts in model_samples.items()}
            for model_samples in samples
        ]
        details.predictions = predictions
    return metrics, speed


def uses_cpu_clock(device: torch.device, threads: int) -> bool:
    """Whether a round's time is the calling thread's CPU time rather than wall-clock time.

    On the CPU with one thread, torch computes in the calling thread: its CPU time is what
    the call costs, and time the scheduler gave to other processes is not in it. On a
    shared, busy machine wall-clock rounds are inflated by preemption, more often for the
    longer of two models, which biases the ratio; CPU time is not. With more threads, or on
    a GPU, the wall clock is the only honest measure.
    """
    return device.type == "cpu" and threads == 1


def _timed_rounds(
    models: list[nn.Module],
    rows: np.ndarray,
    device: torch.device,
    settings: EvaluationSettings,
    per_round: int,
    rounds: int,
    samples: list[dict[int, list[np.ndarray]]],
    round_ms: list[list[float]],
) -> None:
    """``rounds`` rounds of ``per_round`` timed calls of each model, interleaved: two models
    in ABBA order (A B B A, B A A B, ...), more in an order that turns around every round.
    Appends each call's wall-clock time to ``samples`` (the latency percentiles) and each
    round's fastest call to ``round_ms`` (the speed ratio; CPU time where
    ``uses_cpu_clock``), so that a call the scheduler interrupted does not count."""
    batch_size = len(rows)
    cpu_clock = uses_cpu_clock(device, settings.threads)
    batches = [torch.from_numpy(rows).to(device=device, dtype=model_dtype(m)) for m in models]
    for round_index in range(len(round_ms[0]), len(round_ms[0]) + rounds):
        order = list(range(len(models)))
        if len(models) == 2:
            order = [abba_first(round_index), 1 - abba_first(round_index)]
        elif round_index % 2:
            order.reverse()
        for index in order:
            wall, cpu = timed_calls(models[index], batches[index], device, per_round)
            samples[index].setdefault(batch_size, []).append(wall)
            round_ms[index].append(float((cpu if cpu_clock else wall).min()))


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
    for _ in range(warmup):
        model(batch)
    return timed_calls(model, batch, device, iterations)[0]


@torch.inference_mode()
def timed_calls(
    model: nn.Module, batch: torch.Tensor, device: torch.device, iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock and this thread's CPU milliseconds of each of ``iterations`` calls."""
    sync = device.type == "cuda"
    wall = np.empty(iterations, dtype=np.float64)
    cpu = np.empty(iterations, dtype=np.float64)
    for index in range(iterations):
        if sync:
            torch.cuda.synchronize(device)
        start, start_cpu = time.perf_counter(), time.thread_time()
        model(batch)
        if sync:
            torch.cuda.synchronize(device)
        wall[index] = (time.perf_counter() - start) * 1000.0
        cpu[index] = (time.thread_time() - start_cpu) * 1000.0
    return wall, cpu


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
