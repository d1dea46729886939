"""Side-by-side latency of several models: interleaved rounds, medians and spread.

Each round times every model once (a few calls each), rotating which model goes first,
so that load from other work on a shared machine falls on all models alike. The result
per model is the median over rounds of the mean call time, with the quartiles and the
extremes as its spread.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


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
