"""Structured vs unstructured pruning at 50 % of a CNN trained on scikit-learn's digits.

The 8x8 digits are upsampled to 32x32; the zoo's small CNN, pooling after its first conv,
costs ~57 MMACs per image (>= 50 as the issue asks, half the training time of the default).
Both pruned models go through the job's own prune stage (Torch-Pruning for structured,
torch.nn.utils.prune for unstructured) and the same fine-tuning; then accuracy on a held-out
quarter of the data and latency, measured side by side in interleaved rounds.

    .venv/bin/python bench/prune_bench.py                # CPU, latency at 1 thread
    .venv/bin/python bench/prune_bench.py --device cuda  # on an accelerator machine

Goal (issue 4): structured 50 % gives >= 1.5x lower latency at batch 32 with <= 1.0 point
accuracy loss after fine-tuning; unstructured 50 % is the negative control.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.nn import functional

from _timing import interleaved_latency, load_average, machine, speed_ratio
from optimizer_job import training, zoo
from optimizer_job.contract import PruneStage
from optimizer_job.dataio import Table
from optimizer_job.strategies import apply_stage
from optimizer_job.strategies.base import StageContext
from optimizer_job.strategies.prune import count_macs_and_params, fine_tune

IMAGE_SIZE = 32


def digits_tables(seed: int) -> tuple[Table, Table, Table]:
    """Train (60 %), validation (15 %) and holdout (25 %) of digits at 32x32, stratified."""
    digits = load_digits()
    small = torch.from_numpy((digits.data / 16.0).astype(np.float32)).reshape(-1, 1, 8, 8)
    images = functional.interpolate(small, size=IMAGE_SIZE, mode="bilinear", align_corners=False)
    # Standardized pixels: the CNN's validation accuracy swings far less between epochs.
    images = (images - images.mean()) / images.std()
    x, y = images.numpy(), digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, stratify=y, random_state=seed
    )
    x_val, x_hold, y_val, y_hold = train_test_split(
        x_rest, y_rest, test_size=0.625, stratify=y_rest, random_state=seed
    )
    return Table(x_train, y_train, []), Table(x_val, y_val, []), Table(x_hold, y_hold, [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads while timing")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pool-after",
        type=int,
        default=0,
        help="conv block followed by max-pooling: 0 gives ~57 MMACs, 1 (the zoo default) ~115",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    log = logging.getLogger("prune_bench")
    device = torch.device(args.device)
    started = time.perf_counter()

    train, val, holdout = digits_tables(args.seed)
    kwargs: dict[str, Any] = {
        "in_channels": 1,
        "num_classes": 10,
        "image_size": IMAGE_SIZE,
        "pool_after": [args.pool_after],
    }
    torch.manual_seed(args.seed)
    base = zoo.small_cnn(**kwargs)
    fit = training.fit(
        base,
        train,
        val,
        epochs=args.epochs,
        batch_size=32,
        lr=1e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=4,
        device=device,
        seed=args.seed,
        log=log,
    )
    ctx = StageContext(device, args.seed, train, val, holdout, log, zoo.SMALL_CNN_FACTORY, kwargs)

    variants: dict[str, nn.Module] = {"dense": base}
    seconds: dict[str, float] = {"dense": fit.seconds}
    notes: dict[str, dict[str, Any]] = {}
    stages = {
        "structured (no fine-tune)": PruneStage(
            method="structured", importance="l2", amount_percent=50, fine_tune_epochs=0
        ),
        "structured": PruneStage(
            method="structured",
            importance="l2",
            amount_percent=50,
            fine_tune_epochs=args.fine_tune_epochs,
        ),
        "unstructured": PruneStage(
            method="unstructured",
            importance="l1",
            amount_percent=50,
            fine_tune_epochs=args.fine_tune_epochs,
        ),
    }
    # Control: the dense model fine-tuned with the same recipe and epochs as the pruned
    # ones, so that what pruning costs is not hidden by what extra training gains.
    control = copy.deepcopy(base)
    begin = time.perf_counter()
    fine_tune(control, stages["structured"], ctx)
    seconds["dense + fine-tune (control)"] = time.perf_counter() - begin
    variants["dense + fine-tune (control)"] = control.eval()
    for name, stage in stages.items():
        begin = time.perf_counter()
        outcome = apply_stage(stage, copy.deepcopy(base), ctx)
        seconds[name] = time.perf_counter() - begin
        variants[name] = outcome.model.eval()
        notes[name] = dict(outcome.notes)

    example = torch.from_numpy(holdout.X[:1]).to(device)
    rows: dict[str, dict[str, Any]] = {}
    for name, model in variants.items():
        macs, params = count_macs_and_params(model, example)
        rows[name] = {
            "accuracy": training.accuracy(model, holdout, device),
            "macs": macs,
            "params": params,
            "stage_seconds": round(seconds[name], 1),
        }

    timed = {k: variants[k] for k in ("dense", "structured", "unstructured")}
    previous_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    latency: dict[int, dict[str, Any]] = {}
    pairs: dict[int, dict[str, Any]] = {}
    for batch in (32, 1):
        x = torch.from_numpy(holdout.X[:batch]).to(device)
        calls = {name: (lambda m=model, x=x: m(x)) for name, model in timed.items()}
        latency[batch] = interleaved_latency(
            calls, device, rounds=args.rounds, calls_per_round=5 if batch == 32 else 40
        )
        # The speedup as the Job's speed gate measures it: paired ABBA rounds against dense.
        pairs[batch] = {
            name: speed_ratio(calls["dense"], calls[name], device, rounds=40)
            for name in ("structured", "unstructured")
        }
    torch.set_num_threads(previous_threads)

    dense = rows["dense"]
    control_row = rows["dense + fine-tune (control)"]
    print(f"machine: {machine()}; load average at end {load_average()}")
    print(
        f"device {device}, timing threads {args.threads if device.type == 'cpu' else '-'}, "
        f"pool after conv {args.pool_after}, {args.epochs} epochs + {args.fine_tune_epochs} "
        "fine-tuning"
    )
    print(
        "| model | holdout acc | Δ acc vs dense | Δ vs control | MMACs | MACs ↓ | params | "
        "b32 latency ms (median, IQR) | b32 speedup | speedup ÷ MACs ↓ | b1 median ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        macs_ratio = dense["macs"] / row["macs"]
        delta = 100 * (row["accuracy"] - dense["accuracy"])
        delta_control = 100 * (row["accuracy"] - control_row["accuracy"])
        if name in latency[32]:
            b32 = latency[32][name]
            speedup = latency[32]["dense"].median_ms / b32.median_ms
            timing = (
                f"{b32.median_ms:.2f} ({b32.p25_ms:.2f}–{b32.p75_ms:.2f}) | {speedup:.2f}x | "
                f"{speedup / macs_ratio:.2f} | {latency[1][name].median_ms:.3f}"
            )
            row["latency_b32"] = b32.__dict__
            row["latency_b1"] = latency[1][name].__dict__
            row["speedup_b32"] = speedup
        else:
            timing = "– | – | – | –"
        print(
            f"| {name} | {100 * row['accuracy']:.2f} % | {delta:+.2f} | {delta_control:+.2f} | "
            f"{row['macs'] / 1e6:.1f} | "
            f"{macs_ratio:.2f}x | {row['params']} | {timing} |"
        )
    for name in ("structured", "unstructured"):
        b32, b1 = pairs[32][name], pairs[1][name]
        print(
            f"paired ABBA ratio dense/{name}: batch 32 {b32.ratio:.2f}x "
            f"[{b32.low:.2f}–{b32.high:.2f}], batch 1 {b1.ratio:.2f}x [{b1.low:.2f}–{b1.high:.2f}]"
            f", MACs ratio (the result's count) {dense['macs'] / rows[name]['macs']:.2f}x, "
            f"stage notes' macs_ratio {notes[name].get('macs_ratio')}"
        )
    print(f"sparsity of unstructured: {notes['unstructured'].get('sparsity')}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {"machine": machine(), "device": str(device), "rows": rows, "notes": notes},
                out,
                indent=2,
            )


if __name__ == "__main__":
    main()
