"""How stable is a measured speed ratio? The same pair, measured again and again.

The pair is a 512-1024-1024-10 MLP in float32 and its int8 copy from the quantize stage.
Each repetition measures it twice, once as the machine is and once with a CPU hog (a
Python busy loop) started just before, and each of those both ways:

- new: ``optimizer_job.evaluate.measure_pair``, what the speed gate decides on (short ABBA
  rounds, each round's fastest call, median of block ratios, 95 % bootstrap interval);
- old: the timer the gates used before (5 rounds of 20 back-to-back calls per model,
  alternating order, ratio of the two p95s).

Repetitions alternate the conditions, so both see the same background load.

    .venv/bin/python bench/speed_ratio_bench.py            # 10 repetitions
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from _timing import load_average, machine
from optimizer_job import zoo
from optimizer_job.contract import EvaluationSettings
from optimizer_job.dataio import Table
from optimizer_job.evaluate import batch_rows, latency_samples, measure_pair, pinned_threads
from optimizer_job.strategies import quantize

CPU = torch.device("cpu")
BATCHES = (1, 32)


def old_p95_ratio(a: torch.nn.Module, b: torch.nn.Module, rows: np.ndarray) -> float:
    """The former timer: 5 rounds x 20 calls each, order reversed every other round."""
    samples: list[list[np.ndarray]] = [[], []]
    for model in (a, b):
        latency_samples(model, rows, CPU, 10, 0)
    for round_index in range(5):
        order = [1, 0] if round_index % 2 else [0, 1]
        for index in order:
            samples[index].append(latency_samples((a, b)[index], rows, CPU, 0, 20))
    p95 = [float(np.percentile(np.concatenate(parts), 95)) for parts in samples]
    return p95[0] / p95[1]


def spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4)
    return (
        f"{statistics.median(values):.2f}x (IQR {q[0]:.2f}–{q[2]:.2f}, "
        f"range {min(values):.2f}–{max(values):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=100)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    fp32 = zoo.mlp(512, 10, hidden=[1024, 1024]).eval()
    int8, _ = quantize.quantize_int8(fp32)
    table = Table(np.random.default_rng(0).random((64, 512), dtype=np.float32), None, [])
    settings = EvaluationSettings(
        latency_batch_sizes=list(BATCHES), latency_iterations=args.iterations, threads=1
    )
    results: dict[str, dict[int, dict[str, list[Any]]]] = {
        condition: {b: {"new": [], "low": [], "width": [], "old": []} for b in BATCHES}
        for condition in ("as is", "CPU hog")
    }
    loads = []
    for repetition in range(args.repetitions):
        for condition in ("as is", "CPU hog") if repetition % 2 == 0 else ("CPU hog", "as is"):
            hog = None
            if condition == "CPU hog":
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(0.2)
            try:
                _, _, speed = measure_pair(fp32, int8, table, CPU, settings)
                with pinned_threads(1):
                    old = {b: old_p95_ratio(fp32, int8, batch_rows(table.X, b)) for b in BATCHES}
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            for entry in speed:
                cell = results[condition][entry.batch_size]
                cell["new"].append(entry.ratio)
                cell["low"].append(entry.low)
                cell["width"].append(entry.high - entry.low)
                cell["old"].append(old[entry.batch_size])
        loads.append(load_average())
        print(f"repetition {repetition + 1}: load {loads[-1]}", flush=True)
    print(f"machine: {machine()}; load averages during the run: {', '.join(loads)}")
    print(
        "| condition | batch | new: median ratio of 10 (IQR, range) | new: lower bound (IQR, "
        "range) | new: median 95 % CI width | old p95 ratio of 10 (IQR, range) |"
    )
    print("|---|---|---|---|---|---|")
    for condition, per_batch in results.items():
        for batch, cell in per_batch.items():
            print(
                f"| {condition} | {batch} | {spread(cell['new'])} | {spread(cell['low'])} | "
                f"{statistics.median(cell['width']):.2f} | {spread(cell['old'])} |"
            )
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
