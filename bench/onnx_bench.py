"""ONNX Runtime vs PyTorch eager on the zoo CNN and MLP, side by side (issue 15).

Each model is trained briefly on scikit-learn's digits (the MLP on 512 projected features,
512-1024-1024-10; the CNN on the digits upscaled to 1x32x32, channels 64-128-128, about
115 MMACs per image), then built five ways from the same weights:

    torch fp32 eager | ORT fp32 (export stage, graph optimization all)
    torch int8 (our quantize stage) | ORT dynamic int8 | ORT static int8 (QDQ, calibrated
    on 256 training rows)

Each is run through the same ``nn.Module`` call the evaluate Job and the serving app use
(an ORT model is ``optimizer_job.onnxmodel.OnnxModule``), latency in interleaved rounds at
batch 1 and 32 with the thread count pinned. "max |diff|" is the largest absolute
difference of the logits from torch fp32 over the holdout; accuracy is on the holdout.

    .venv/bin/python bench/onnx_bench.py                 # CPU, 1 thread
    .venv/bin/python bench/onnx_bench.py --threads 2 --json out.json

Goal: ORT fp32 >= 1.3x torch eager at equal outputs (max |diff| <= 1e-4).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from _timing import interleaved_latency, load_average, machine
from optimizer_job import onnxmodel, training, zoo
from optimizer_job.dataio import Table
from optimizer_job.strategies import quantize
from quantize_bench import projected_digits

CPU = torch.device("cpu")
LOG = logging.getLogger("onnx_bench")


def digit_images(seed: int) -> tuple[Table, Table, Table]:
    """Digits upscaled 4x to 1x32x32; 60/15/25 split."""
    digits = load_digits()
    x = np.kron(digits.images / 16.0, np.ones((4, 4)))[:, None].astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, stratify=y, random_state=seed
    )
    x_val, x_hold, y_val, y_hold = train_test_split(
        x_rest, y_rest, test_size=0.625, stratify=y_rest, random_state=seed
    )
    return Table(x_train, y_train, []), Table(x_val, y_val, []), Table(x_hold, y_hold, [])


def trained(kind: str, epochs: int) -> tuple[nn.Module, Table, Table]:
    torch.manual_seed(0)
    if kind == "mlp":
        train, val, hold = projected_digits(0, 512)
        model = zoo.mlp(512, 10, (1024, 1024))
    else:
        train, val, hold = digit_images(0)
        model = zoo.small_cnn(1, 10, 32)
    training.fit(
        model,
        train,
        val,
        epochs=epochs,
        batch_size=64,
        lr=1e-3 if kind == "mlp" else 3e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=0,
        device=CPU,
        seed=0,
        log=LOG,
    )
    return model.eval(), train, hold


def variants(model: nn.Module, train: Table, hold: Table) -> dict[str, nn.Module]:
    rows = np.ascontiguousarray(hold.X[:256])
    data = onnxmodel.export(model, onnxmodel.signature_for(list(rows.shape[1:]), rows))
    calibration = np.ascontiguousarray(train.X[:256])
    torch_int8, _ = quantize.quantize_int8(copy.deepcopy(model))
    return {
        "torch fp32 eager": model,
        "ORT fp32": onnxmodel.OnnxModule(data),
        "torch int8 (quantize stage)": torch_int8.eval(),
        "ORT dynamic int8": onnxmodel.OnnxModule(onnxmodel.quantize(data, "dynamic-int8", None)),
        "ORT static int8": onnxmodel.OnnxModule(
            onnxmodel.quantize(data, "static-int8", calibration)
        ),
    }


def run(kind: str, epochs: int, threads: int) -> dict[str, Any]:
    model, train, hold = trained(kind, epochs)
    built = variants(model, train, hold)
    x = torch.from_numpy(hold.X)
    with torch.inference_mode():
        reference = model(x)
        outputs = {name: candidate(x) for name, candidate in built.items()}
    quality: dict[str, dict[str, float]] = {}
    for name, logits in outputs.items():
        quality[name] = {
            "max_abs_diff": float((logits - reference).abs().max()),
            "accuracy": float((logits.argmax(1).numpy() == hold.y).mean()),
        }
    latency: dict[int, dict[str, Any]] = {}
    torch.set_num_threads(threads)
    for batch in (1, 32):
        inputs = torch.from_numpy(
            np.ascontiguousarray(np.resize(hold.X, (batch, *hold.X.shape[1:])))
        )
        calls: dict[str, Callable[[], object]] = {
            name: (lambda m=m, x=inputs: m(x)) for name, m in built.items()
        }
        latency[batch] = interleaved_latency(
            calls, CPU, rounds=21, calls_per_round=5 if kind == "cnn" and batch == 32 else 20
        )
    print(f"\n{kind}: threads {threads}")
    print(
        f"{'variant':30} {'max |diff|':>10} {'acc':>6} {'b1 ms':>8} {'b32 ms':>9} "
        f"{'b1 x':>6} {'b32 x':>6}"
    )
    base = {b: latency[b]["torch fp32 eager"].median_ms for b in latency}
    base_int8 = {b: latency[b]["torch int8 (quantize stage)"].median_ms for b in latency}
    table = {}
    for name in built:
        b1, b32 = latency[1][name].median_ms, latency[32][name].median_ms
        against = base_int8 if "int8" in name and name.startswith("ORT") else base
        row = {
            **quality[name],
            "b1_ms": b1,
            "b32_ms": b32,
            "b1_iqr": [latency[1][name].p25_ms, latency[1][name].p75_ms],
            "b32_iqr": [latency[32][name].p25_ms, latency[32][name].p75_ms],
            "speedup_b1_vs_torch": base[1] / b1,
            "speedup_b32_vs_torch": base[32] / b32,
            "speedup_b1_vs_torch_int8": base_int8[1] / b1,
            "speedup_b32_vs_torch_int8": base_int8[32] / b32,
        }
        table[name] = row
        print(
            f"{name:30} {row['max_abs_diff']:10.2e} {row['accuracy']:6.3f} {b1:8.3f} "
            f"{b32:9.3f} {against[1] / b1:6.2f} {against[32] / b32:6.2f}"
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--json")
    args = parser.parse_args()
    print(f"machine: {machine()}; onnxruntime {onnxmodel.ORT_VERSION}")
    print(f"load average at start {load_average()}")
    epochs = {"mlp": 5, "cnn": 4}
    results = {kind: run(kind, epochs[kind], args.threads) for kind in args.models.split(",")}
    print(f"\nload average at end {load_average()}")
    print("x columns: speedup over torch fp32 eager (ORT int8 rows: over torch int8)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"threads": args.threads, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
