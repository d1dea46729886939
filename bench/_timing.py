"""Side-by-side latency of several models: interleaved rounds, medians and spread.

``interleaved_latency``: each round times every model once (a few calls each), rotating
which model goes first, so that load from other work on a shared machine falls on all
models alike. The result per model is the median over rounds of the mean call time, with
the quartiles and the extremes as its spread.

``speed_ratio``: how much faster a candidate is than a baseline, timed the way the Job
times the pair the speed gate decides on (``optimizer_job.evaluate.measure_pair``): short
rounds in ABBA order, each round's fastest call (CPU time at one CPU thread), the median of
paired block ratios and its 95 % bootstrap interval (``optimizer_job.speed``).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from optimizer_job.speed import RatioInterval, abba_first, ratio_interval


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p25_ms: float
    p75_ms: float
    min_ms: float
    max_ms: float
    rounds: int

    def text(self) -> str:
        return (
            f"{self.median_ms:.3f} ms (IQR {self.p25_ms:.3f}–{self.p75_ms:.3f}, "
            f"range {self.min_ms:.3f}–{self.max_ms:.3f}, {self.rounds} rounds)"
        )


def interleaved_latency(
    calls: dict[str, Callable[[], object]],
    device: torch.device,
    rounds: int = 21,
    calls_per_round: int = 10,
    warmup: int = 5,
) -> dict[str, Latency]:
    """Milliseconds per call of each entry of ``calls``, measured round-robin."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    with torch.inference_mode():
        for name in names:
            for _ in range(warmup):
                calls[name]()
        for round_index in range(rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                _sync(device)
                start = time.perf_counter()
                for _ in range(calls_per_round):
                    calls[name]()
                _sync(device)
                samples[name].append((time.perf_counter() - start) / calls_per_round * 1e3)
    return {name: _summary(values) for name, values in samples.items()}


def speed_ratio(
    baseline: Callable[[], object],
    candidate: Callable[[], object],
    device: torch.device,
    rounds: int = 40,
    calls_per_round: int = 3,
    warmup: int = 5,
) -> RatioInterval:
    """Baseline time / candidate time with its 95 % interval (above 1: candidate faster).

    A round's time is its fastest call, in this thread's CPU time on the CPU at one thread
    (as ``optimizer_job.evaluate.uses_cpu_clock``), else in wall-clock time."""
    cpu_clock = device.type == "cpu" and torch.get_num_threads() == 1
    clock = time.thread_time if cpu_clock else time.perf_counter
    calls = (baseline, candidate)
    times: tuple[list[float], list[float]] = ([], [])
    with torch.inference_mode():
        for call in calls:
            for _ in range(warmup):
                call()
        for round_index in range(rounds + rounds % 2):
            first = abba_first(round_index)
            for index in (first, 1 - first):
                fastest = float("inf")
                for _ in range(calls_per_round):
                    _sync(device)
                    start = clock()
                    calls[index]()
                    _sync(device)
                    fastest = min(fastest, clock() - start)
                times[index].append(fastest * 1e3)
    return ratio_interval(np.array(times[0]), np.array(times[1]))


def _summary(values: list[float]) -> Latency:
    quartiles = statistics.quantiles(values, n=4)
    return Latency(
        median_ms=statistics.median(values),
        p25_ms=quartiles[0],
        p75_ms=quartiles[2],
        min_ms=min(values),
        max_ms=max(values),
        rounds=len(values),
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine() -> str:
    """One line naming the machine, for the results."""
    cpu = platform.processor() or "unknown CPU"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
            cpu,
        )
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{os.cpu_count()} cores ({cpu}){gpu}, torch {torch.__version__}"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
