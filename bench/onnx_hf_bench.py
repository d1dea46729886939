"""ONNX export of Hugging Face models: export time, ONNX Runtime vs PyTorch eager (issue 15).

Two Transformers classifiers with random weights, built from configs (no downloads; speed
does not depend on the weights' values):

    text:  BERT, 4 layers, hidden 256, 4 heads, MLP 1024, vocabulary 8000, sequence 128
           (the job's rows: padded token ids, a quarter of each row padding)
    image: ViT, 32x32x3, patches 4x4, 4 layers, hidden 192, 3 heads, MLP 768

Each is exported the way the export stage does it (``onnxmodel.signature_of``: input_ids,
attention_mask, token_type_ids with dynamic batch and sequence axes / pixel_values), then
run four ways through the same ``nn.Module`` call the evaluate Job and the serving app use:

    torch fp32 eager | ORT fp32 | torch int8 (our quantize stage) | ORT dynamic int8

latency in interleaved rounds (``_timing.interleaved_latency``) with the thread count
pinned. "max |diff|" is the largest absolute logit difference from torch fp32.

    .venv/bin/python bench/onnx_hf_bench.py                   # CPU, 1 thread
    .venv/bin/python bench/onnx_hf_bench.py --threads 2 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from _timing import interleaved_latency, load_average, machine
from optimizer_job import hf, onnxmodel
from optimizer_job.strategies import quantize

CPU = torch.device("cpu")
BERT: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 8000,
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "max_position_embeddings": 512,
    "num_labels": 2,
    "pad_token_id": 0,
}
VIT: dict[str, Any] = {
    "model_type": "vit",
    "image_size": 32,
    "patch_size": 4,
    "num_channels": 3,
    "hidden_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 3,
    "intermediate_size": 768,
    "num_labels": 10,
}
SEQUENCE = 128


def text_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    ids = rng.integers(5, BERT["vocab_size"], (n, SEQUENCE))
    ids[:, SEQUENCE * 3 // 4 :] = 0  # padding
    return ids.astype(np.float32)


def image_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((n, 3, 32, 32)).astype(np.float32)


def run(kind: str, threads: int, batches: tuple[int, ...], rounds: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    if kind == "text":
        model: nn.Module = hf.sequence_classifier(BERT).eval()
        rows = text_rows(64, rng)
    else:
        model = hf.image_classifier(VIT).eval()
        rows = image_rows(64, rng)
    started = time.perf_counter()
    signature = onnxmodel.signature_of(model, rows)
    data = onnxmodel.export(model, signature)
    export_seconds = time.perf_counter() - started
    started = time.perf_counter()
    int8_data = onnxmodel.quantize(data, "dynamic-int8", None, signature.feed)
    quantize_seconds = time.perf_counter() - started
    torch_int8, _ = quantize.quantize_int8(copy.deepcopy(model))
    built: dict[str, nn.Module] = {
        "torch fp32 eager": model,
        "ORT fp32": onnxmodel.OnnxModule(data, feed=signature.feed),
        "torch int8 (quantize stage)": torch_int8.eval(),
        "ORT dynamic int8": onnxmodel.OnnxModule(int8_data, feed=signature.feed),
    }
    x = torch.from_numpy(rows)
    with torch.inference_mode():
        reference = model(x)
        diffs = {name: float((m(x) - reference).abs().max()) for name, m in built.items()}
    torch.set_num_threads(threads)
    latency: dict[int, Any] = {}
    for batch in batches:
        inputs = torch.from_numpy(np.ascontiguousarray(rows[:batch]))
        calls: dict[str, Callable[[], object]] = {
            name: (lambda m=m, x=inputs: m(x)) for name, m in built.items()
        }
        latency[batch] = interleaved_latency(calls, CPU, rounds=rounds, calls_per_round=3, warmup=2)
    sizes = {"ORT fp32": len(data), "ORT dynamic int8": len(int8_data)}
    print(
        f"\n{kind}: inputs {signature.input_names}, export {export_seconds:.1f} s, "
        f"ORT int8 quantization {quantize_seconds:.1f} s, model.onnx fp32 {len(data) / 1e6:.1f} MB"
        f" -> int8 {len(int8_data) / 1e6:.1f} MB; threads {threads}"
    )
    header = f"{'variant':30} {'max |diff|':>10}"
    for batch in batches:
        header += f" {f'b{batch} ms':>9} {f'b{batch} x':>6}"
    print(header)
    table: dict[str, Any] = {}
    for name in built:
        against = (
            "torch int8 (quantize stage)" if name == "ORT dynamic int8" else "torch fp32 eager"
        )
        line = f"{name:30} {diffs[name]:10.2e}"
        row: dict[str, Any] = {"max_abs_diff": diffs[name]}
        for batch in batches:
            ms = latency[batch][name].median_ms
            ratio = latency[batch][against].median_ms / ms
            row[f"b{batch}_ms"] = ms
            row[f"b{batch}_iqr"] = [latency[batch][name].p25_ms, latency[batch][name].p75_ms]
            row[f"b{batch}_speedup_vs_{'torch_int8' if 'int8' in against else 'torch'}"] = ratio
            line += f" {ms:9.2f} {ratio:6.2f}"
        table[name] = row
        print(line)
    return {
        "export_seconds": export_seconds,
        "quantize_seconds": quantize_seconds,
        "inputs": signature.input_names,
        "bytes": sizes,
        "variants": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="text,image")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}; onnxruntime {onnxmodel.ORT_VERSION}")
    print(f"load average at start {load_average()}")
    batches = {"text": (1, 8), "image": (1, 32)}
    results = {
        kind: run(kind, args.threads, batches[kind], args.rounds) for kind in args.models.split(",")
    }
    print(f"\nload average at end {load_average()}")
    print("x columns: speedup over torch fp32 eager (ORT int8 row: over torch int8)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"threads": args.threads, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
