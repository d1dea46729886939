"""int8 / fp16 / bf16 candidates for a Linear-heavy model, side by side.

A 512-1024-1024-10 MLP (other widths: --features, --hidden) is trained on scikit-learn's
digits, projected to 512 features by a fixed random matrix. Each candidate is built from
the same trained model; accuracy is on a held-out quarter, latency is interleaved rounds at
batch 32 and 1, weights are the bytes each format stores. The job's quantize stage ships
the candidates marked "(stage)".

    .venv/bin/python bench/quantize_bench.py                # CPU, latency at 1 thread
    .venv/bin/python bench/quantize_bench.py --device cuda  # on an accelerator machine

Goal (issue 4): int8 dynamic >= 1.5x lower CPU latency at batch 32, <= 1 point accuracy
loss, weights >= 3.5x smaller.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from _timing import interleaved_latency, load_average, machine, speed_ratio
from optimizer_job import modelio, training, zoo
from optimizer_job.dataio import Table
from optimizer_job.strategies import quantize

KWARGS: dict[str, Any] = {"in_features": 512, "num_classes": 10, "hidden": [1024, 1024]}


def projected_digits(seed: int, features: int) -> tuple[Table, Table, Table]:
    """Digits (64 pixels) times a fixed 64 x ``features`` Gaussian matrix, standardized;
    60/15/25 split."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    projection = rng.normal(size=(64, features)) / 8.0
    x = (digits.data / 16.0) @ projection
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, test_size=0.4, stratify=y, random_state=seed
    )
    x_val, x_hold, y_val, y_hold = train_test_split(
        x_rest, y_rest, test_size=0.625, stratify=y_rest, random_state=seed
    )
    return Table(x_train, y_train, []), Table(x_val, y_val, []), Table(x_hold, y_hold, [])


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of torch.save(state_dict): for candidates the job cannot store as safetensors."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def safetensors_bytes(model: nn.Module) -> int:
    """Bytes of the weights file the job writes for this model."""
    with tempfile.TemporaryDirectory() as tmp:
        modelio.save_model(model, zoo.MLP_FACTORY, KWARGS, Path(tmp))
        return (Path(tmp) / modelio.WEIGHTS_NAME).stat().st_size


def candidates(base: nn.Module, device: torch.device, compile_torchao: bool) -> dict[str, Any]:
    """name -> (model, input dtype, bytes stored); failures are reported, not hidden."""
    built: dict[str, Any] = {}

    def add(name: str, make: Callable[[], tuple[nn.Module, int]]) -> None:
        try:
            model, size = make()
            built[name] = (model.eval(), size)
        except Exception as error:  # a candidate the device cannot run is a result too
            print(f"candidate {name}: unavailable ({type(error).__name__}: {error})")

    def ours() -> tuple[nn.Module, int]:
        model, _ = quantize.quantize_int8(base)
        return model, safetensors_bytes(model)

    def ao_dynamic() -> tuple[nn.Module, int]:
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated: that is one of the findings
            model = quantize_dynamic(copy.deepcopy(base).cpu(), {nn.Linear}, dtype=torch.qint8)
        return model, serialized_bytes(model)

    def torchao(config_name: str, compiled: bool) -> Callable[[], tuple[nn.Module, int]]:
        def make() -> tuple[nn.Module, int]:
            import torchao.quantization as tq

            model = copy.deepcopy(base)
            tq.quantize_(model, getattr(tq, config_name)())
            size = serialized_bytes(model)
            if compiled:
                model = torch.compile(model, mode="max-autotune-no-cudagraphs")
            return model, size

        return make

    def half(mode: str) -> Callable[[], tuple[nn.Module, int]]:
        def make() -> tuple[nn.Module, int]:
            model = quantize.cast_half(base, mode)
            return model, safetensors_bytes(model)

        return make

    add("fp32", lambda: (base, safetensors_bytes(base)))
    add(f"int8 {quantize.INT8_BACKEND} (stage)", ours)
    if device.type == "cpu":
        add("int8 torch.ao quantize_dynamic (deprecated)", ao_dynamic)
    add(
        "int8 torchao Int8DynamicActivationInt8Weight",
        torchao("Int8DynamicActivationInt8WeightConfig", False),
    )
    add("int8 torchao Int8WeightOnly", torchao("Int8WeightOnlyConfig", False))
    if compile_torchao:
        add(
            "int8 torchao Int8DynamicActivationInt8Weight + torch.compile",
            torchao("Int8DynamicActivationInt8WeightConfig", True),
        )
    add("bf16 (stage)", half("bf16"))
    add("fp16 (stage)", half("fp16"))
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads while timing")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--pair-rounds", type=int, default=60, help="ABBA rounds per pair")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="add torchao + torch.compile")
    parser.add_argument("--features", type=int, default=512, help="input width of the MLP")
    parser.add_argument("--hidden", default="1024,1024", help="hidden widths, comma-separated")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    started = time.perf_counter()

    KWARGS["in_features"] = args.features
    KWARGS["hidden"] = [int(width) for width in args.hidden.split(",")]
    train, val, holdout = projected_digits(args.seed, args.features)
    torch.manual_seed(args.seed)
    base = zoo.mlp(**KWARGS)
    training.fit(
        base,
        train,
        val,
        epochs=args.epochs,
        batch_size=64,
        lr=1e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=4,
        device=device,
        seed=args.seed,
        log=logging.getLogger("quantize_bench"),
    )
    base = base.to(device).eval()
    built = candidates(base, device, args.compile)

    accuracy: dict[str, float] = {}
    with torch.inference_mode():
        x_hold = torch.from_numpy(holdout.X)
        assert holdout.y is not None
        for name, (model, _) in built.items():
            on = device if "quantize_dynamic" not in name else torch.device("cpu")
            predicted = model(x_hold.to(on)).argmax(1).cpu().numpy()
            accuracy[name] = float(np.mean(predicted == holdout.y))

    previous_threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    latency = {}
    ratios: dict[int, dict[str, Any]] = {}
    for batch in (32, 1):
        x = torch.from_numpy(holdout.X[:batch]).to(device)
        calls = {name: (lambda m=model, x=x: m(x)) for name, (model, _) in built.items()}
        latency[batch] = interleaved_latency(
            calls, device, rounds=args.rounds, calls_per_round=20 if batch == 32 else 100
        )
        # The speedup as the Job's speed gate measures it: paired ABBA rounds against fp32.
        ratios[batch] = {
            name: speed_ratio(calls["fp32"], call, device, rounds=args.pair_rounds)
            for name, call in calls.items()
        }
    torch.set_num_threads(previous_threads)

    print(f"machine: {machine()}; load average at end {load_average()}")
    widths = "-".join(str(w) for w in [args.features, *KWARGS["hidden"], 10])
    print(
        f"MLP {widths}; device {device}, "
        f"timing threads {args.threads if device.type == 'cpu' else '-'}"
    )
    print(
        "| candidate | holdout acc | Δ acc (points) | weights bytes | smaller | "
        "b32 latency ms (median, IQR) | b32 speedup [95 % CI] | b1 median ms | "
        "b1 speedup [95 % CI] |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    fp32_size = built["fp32"][1]
    rows = {}
    for name, (_, size) in built.items():
        b32, b1 = latency[32][name], latency[1][name]
        r32, r1 = ratios[32][name], ratios[1][name]
        speed32, speed1 = r32.ratio, r1.ratio
        delta = 100 * (accuracy[name] - accuracy["fp32"])
        rows[name] = {
            "accuracy": accuracy[name],
            "bytes": size,
            "latency_b32": b32.__dict__,
            "latency_b1": b1.__dict__,
            "speedup_b32": speed32,
            "speedup_b1": speed1,
            "speedup_b32_interval": [r32.low, r32.high, r32.rounds],
            "speedup_b1_interval": [r1.low, r1.high, r1.rounds],
        }
        print(
            f"| {name} | {100 * accuracy[name]:.2f} % | {delta:+.2f} | {size} | "
            f"{fp32_size / size:.2f}x | {b32.median_ms:.3f} ({b32.p25_ms:.3f}–{b32.p75_ms:.3f}) | "
            f"{speed32:.2f}x [{r32.low:.2f}–{r32.high:.2f}] | {b1.median_ms:.3f} | "
            f"{speed1:.2f}x [{r1.low:.2f}–{r1.high:.2f}] |"
        )
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine(), "device": str(device), "rows": rows}, out, indent=2)


if __name__ == "__main__":
    main()
