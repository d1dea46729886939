"""Bring your own model: int8 on a BERT-base-sized classifier, and S3 download + verify.

1. A BERT-base-sized sequence classifier (12 layers, hidden 768, 12 heads, MLP 3072;
   random weights — latency does not depend on them) in float32 and after the job's int8
   quantize stage (``optimizer_job.strategies.quantize.quantize_int8``), timed side by side
   (interleaved rounds) at sequence 128, batch 8, on the threads torch gives the process.
2. Download + verify throughput: a model directory of ``--mb`` MB (several safetensors
   files) published to a local versitygw (built by the devcluster tooling) and fetched with
   ``optimizer_job.storage.fetch_directory`` (stream to disk, sha256 on the fly, MANIFEST
   check), against a plain local copy + sha256 of the same files.

    .venv/bin/python bench/byom_bench.py                 # both
    .venv/bin/python bench/byom_bench.py --skip-int8 --mb 400
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _timing import interleaved_latency, load_average, machine
from devcluster import s3
from optimizer_job import hf, storage
from optimizer_job.manifest import write_manifest
from optimizer_job.strategies import quantize


def bench_int8(rounds: int, batch: int, seq: int) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(num_labels=2)  # bert-base sizes
    fp32 = hf.SequenceClassifier(BertForSequenceClassification(config)).eval()
    int8, replaced = quantize.quantize_int8(
        hf.SequenceClassifier(BertForSequenceClassification(config)).eval()
    )
    # For comparison: PyTorch's own (deprecated) dynamic int8 of the same float model.
    dynamic = torch.ao.quantization.quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8)
    ids = torch.randint(5, config.vocab_size, (batch, seq)).to(torch.float32)
    calls = {
        "float32": lambda: fp32(ids),
        "int8 (stage)": lambda: int8(ids),
        "quantize_dynamic": lambda: dynamic(ids),
    }
    result = interleaved_latency(
        calls, torch.device("cpu"), rounds=rounds, calls_per_round=1, warmup=2
    )
    print(f"int8: {len(replaced)} Linear layers replaced; threads {torch.get_num_threads()}")
    for name, latency in result.items():
        print(f"  {name:14} {latency.text()}")
    for name in ("int8 (stage)", "quantize_dynamic"):
        ratio = result["float32"].median_ms / result[name].median_ms
        print(f"  {name} speedup (median) {ratio:.2f}x at batch {batch}, sequence {seq}")


def bench_download(mb: int, files: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        local = root / "model"
        local.mkdir()
        rng = np.random.default_rng(0)
        per_file = mb * (1 << 20) // files
        for index in range(files):
            (local / f"model-{index:05d}.safetensors").write_bytes(rng.bytes(per_file))
        write_manifest(local)
        total = sum(p.stat().st_size for p in local.iterdir())
        with s3.serve(root / "s3") as endpoint:
            s3.create_bucket(root / "s3", "bench")
            os.environ.update(endpoint.env())
            started = time.perf_counter()
            storage.publish_directory(local, "s3://bench/model/v1")
            upload = time.perf_counter() - started
            timings = []
            for attempt in range(3):
                target = root / f"fetched-{attempt}"
                started = time.perf_counter()
                storage.fetch_directory("s3://bench/model/v1", target)
                timings.append(time.perf_counter() - started)
                shutil.rmtree(target)
        copies = []
        for attempt in range(3):
            target = root / f"copy-{attempt}"
            target.mkdir()
            started = time.perf_counter()
            for path in local.iterdir():
                digest = hashlib.sha256()
                with path.open("rb") as source, (target / path.name).open("wb") as sink:
                    while chunk := source.read(8 << 20):
                        digest.update(chunk)
                        sink.write(chunk)
            copies.append(time.perf_counter() - started)
            shutil.rmtree(target)
    size = total / (1 << 20)
    best, median = min(timings), sorted(timings)[1]
    print(f"download+verify: {size:.0f} MiB in {files} files + MANIFEST")
    print(f"  publish (MANIFEST last, conditional): {upload:.2f} s = {size / upload:.0f} MiB/s")
    print(f"  fetch_directory: median {median:.2f} s = {size / median:.0f} MiB/s")
    print(f"    (best {size / best:.0f} MiB/s of 3)")
    copy = sorted(copies)[1]
    print(f"  local copy + sha256 of the same files: {copy:.2f} s = {size / copy:.0f} MiB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--mb", type=int, default=400)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--skip-int8", action="store_true")
    parser.add_argument("--skip-download", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}; load average at start {load_average()}")
    if not args.skip_int8:
        bench_int8(args.rounds, args.batch, args.seq)
    if not args.skip_download:
        bench_download(args.mb, args.files)
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()
