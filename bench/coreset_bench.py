"""Coreset selection (the distill stage) vs training on all rows, on scikit-learn's digits.

For each seed: split digits 60/15/25 (train / validation / holdout), train the "production"
MLP on all training rows, then let the distill stage pick 50 % and 10 % of the rows
(herding, k-center, random; herding and k-center in the standardized feature space as the
stage does for tabular data, and in the production model's embedding space for comparison)
and train a fresh MLP on each coreset with the same recipe and epochs. Reported: holdout
accuracy, median over 10 seeds with its range; training seconds of seed 0's sets, retrained
in interleaved rounds (median and IQR); the selection time; and selection time on 10^5
synthetic rows.

    .venv/bin/python bench/coreset_bench.py

Goal (issue 4): at 50 % within 1 point of full-data accuracy and >= 1.8x faster training;
at 10 % compared with random of equal size, reported as it comes out.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from _timing import load_average, machine
from optimizer_job import training, zoo
from optimizer_job.contract import DistillStage
from optimizer_job.dataio import Table
from optimizer_job.strategies import _coreset, apply_stage
from optimizer_job.strategies._layers import penultimate_features
from optimizer_job.strategies.base import StageContext

KWARGS: dict[str, Any] = {"in_features": 64, "num_classes": 10, "hidden": [128, 64]}
CPU = torch.device("cpu")
LOG = logging.getLogger("coreset_bench")


def digits_split(seed: int) -> tuple[Table, Table, Table]:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, stratify=y, random_state=seed
    )
    x_val, x_hold, y_val, y_hold = train_test_split(
        x_rest, y_rest, test_size=0.625, stratify=y_rest, random_state=seed
    )
    return Table(x_train, y_train, []), Table(x_val, y_val, []), Table(x_hold, y_hold, [])


def train_fresh(train: Table, val: Table, seed: int, epochs: int) -> tuple[nn.Module, float]:
    """A new MLP trained for a fixed number of epochs (no early stop: equal work per row)."""
    torch.manual_seed(seed)
    model = zoo.mlp(**KWARGS)
    report = training.fit(
        model,
        train,
        val,
        epochs=epochs,
        batch_size=32,
        lr=2e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=0,
        device=CPU,
        seed=seed,
        log=LOG,
    )
    return model, report.seconds


def selection_scaling(rows: int, dims: int) -> dict[str, float]:
    """Seconds to select 10 % and 50 % of ``rows`` synthetic rows in 10 classes."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, rows)
    x = (rng.normal(size=(10, dims))[y] + rng.normal(size=(rows, dims))).astype(np.float32)
    seconds = {}
    for method in ("herding", "kcenter", "random"):
        for fraction in (0.1, 0.5):
            start = time.perf_counter()
            _coreset.select(method, x, y, fraction, seed=0)  # type: ignore[arg-type]
            seconds[f"{method} {int(fraction * 100)}%"] = time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timing-rounds", type=int, default=11)
    parser.add_argument("--scale-rows", type=int, default=100_000)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    variants: list[tuple[str, int, str, bool]] = [("all rows", 100, "random", False)]
    for fraction in (50, 10):
        variants += [
            (f"herding {fraction}%", fraction, "herding", False),
            (f"kcenter {fraction}%", fraction, "kcenter", False),
            (f"herding {fraction}% (embedding)", fraction, "herding", True),
            (f"kcenter {fraction}% (embedding)", fraction, "kcenter", True),
            (f"random {fraction}%", fraction, "random", False),
        ]
    accuracy: dict[str, list[float]] = {name: [] for name, *_ in variants}
    selection: dict[str, list[float]] = {name: [] for name, *_ in variants}
    first_sets: dict[str, Table] = {}
    for seed in range(args.seeds):
        train, val, holdout = digits_split(seed)
        production, _ = train_fresh(train, val, seed, args.epochs)
        ctx = StageContext(CPU, seed, train, val, holdout, LOG, zoo.MLP_FACTORY, KWARGS)
        for name, fraction, method, embedding in variants:
            subset, picking = train, 0.0
            begin = time.perf_counter()
            if embedding:
                # What the stage does for images: distances in the classifier's input space.
                embedded = penultimate_features(production, train, CPU)
                assert embedded is not None and train.y is not None
                points = _coreset.standardize(embedded)
                chosen = _coreset.select(method, points, train.y, fraction / 100, seed)  # type: ignore[arg-type]
                subset = train.subset(chosen)
                picking = time.perf_counter() - begin
            elif fraction != 100:
                stage = DistillStage(method=method, fraction_percent=fraction)  # type: ignore[arg-type]
                subset = apply_stage(stage, production, ctx).ctx.train
                picking = time.perf_counter() - begin
            model, _ = train_fresh(subset, val, seed, args.epochs)
            accuracy[name].append(training.accuracy(model, holdout, CPU))
            selection[name].append(picking)
            first_sets.setdefault(name, subset)
    # Training time: seed 0's sets again (fit is deterministic: same models), interleaved
    # and rotated so machine load falls on all alike.
    _, val0, _ = digits_split(0)
    seconds: dict[str, list[float]] = {name: [] for name in first_sets}
    names = list(first_sets)
    for round_index in range(args.timing_rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(train_fresh(first_sets[name], val0, 0, args.epochs)[1])
    scaling = selection_scaling(args.scale_rows, 64)

    print(f"machine: {machine()}; load average at end {load_average()}")
    print(
        f"digits, MLP 64-128-64-10, {args.epochs} epochs fixed, batch 32, {args.seeds} seeds, "
        f"{args.threads} thread(s)"
    )
    print(
        "| training rows | n | holdout acc median (range) | Δ vs all rows (points) | "
        "Δ vs random of equal size | training s median (IQR) | training speedup | "
        "selection s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    full_acc = statistics.median(accuracy["all rows"])
    full_time = statistics.median(seconds["all rows"])
    results = {}
    for name, fraction, *_ in variants:
        acc = statistics.median(accuracy[name])
        baseline = accuracy.get(f"random {fraction}%")
        versus_random = (
            f"{100 * (acc - statistics.median(baseline)):+.2f}"
            if baseline is not None and fraction != 100
            else "–"
        )
        train_time = statistics.median(seconds[name])
        quartiles = statistics.quantiles(seconds[name], n=4)
        results[name] = {
            "accuracy": accuracy[name],
            "seconds": seconds[name],
            "selection_seconds": selection[name],
            "rows": len(first_sets[name]),
        }
        print(
            f"| {name} | {len(first_sets[name])} | {100 * acc:.2f} % "
            f"({100 * min(accuracy[name]):.2f}–{100 * max(accuracy[name]):.2f}) | "
            f"{100 * (acc - full_acc):+.2f} | {versus_random} | "
            f"{train_time:.2f} ({quartiles[0]:.2f}–{quartiles[2]:.2f}) | "
            f"{full_time / train_time:.2f}x | {statistics.median(selection[name]):.3f} |"
        )
    print(f"selection seconds on {args.scale_rows} x 64 synthetic rows, 10 classes:")
    print(", ".join(f"{k}: {v:.2f} s" for k, v in scaling.items()))
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine(), "results": results, "scaling": scaling}, out, indent=2)


if __name__ == "__main__":
    main()
