"""Wall time of data-parallel retraining with 1, 2 and 3 workers (optimizer_job.training.fit).

Each worker count trains the same MLP on the same synthetic rows with the same effective
batch, the way a retrain stage with job.workers = W does (DDP, a DistributedSampler, gloo
on CPU, NCCL on CUDA), in W processes joined through a TCP store on 127.0.0.1. Reported per
W: the training seconds (fit alone, the slowest rank; median of the rounds, interleaved so
that load from other work on a shared machine falls on every W alike) and the start-up
seconds (spawning the processes, importing torch, joining the group). On CUDA each rank
takes its own GPU, so W is at most the number of GPUs.

    .venv/bin/python bench/distributed_bench.py [--workers 1 2 3] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import make_classification
from torch import distributed as dist
from torch import multiprocessing

from _timing import load_average, machine
from optimizer_job import zoo
from optimizer_job.dataio import Table
from optimizer_job.training import fit


def _table(rows: int, features: int) -> Table:
    x, y = make_classification(
        n_samples=rows, n_features=features, n_informative=features // 2, n_classes=10,
        random_state=0,
    )  # fmt: skip
    names = [f"f{i}" for i in range(features)]
    return Table(X=x.astype(np.float32), y=y.astype(np.int64), feature_names=names)


def _worker(rank: int, world: int, port: int, out: str, cfg: dict[str, object]) -> None:
    begun = float(cfg["spawned_at"])  # type: ignore[arg-type]
    threads = int(cfg["threads"])  # type: ignore[call-overload]
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    if cfg["device"] == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
    )
    try:
        table = _table(int(cfg["rows"]), int(cfg["features"]))  # type: ignore[call-overload]
        torch.manual_seed(0)
        model = zoo.mlp(table.X.shape[1], 10, hidden=[256, 256], dropout=0.0)
        dist.barrier()
        ready = time.time()
        fit(
            model,
            table,
            None,
            epochs=int(cfg["epochs"]),  # type: ignore[call-overload]
            batch_size=int(cfg["batch"]),  # type: ignore[call-overload]
            lr=1e-3,
            weight_decay=1e-4,
            label_smoothing=0.0,
            patience=0,
            device=device,
            seed=0,
            log=logging.getLogger("bench"),
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        done = time.time()
        Path(out, f"{rank}.json").write_text(
            json.dumps({"startup": ready - begun, "train": done - ready})
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def one_run(world: int, cfg: dict[str, object]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out:
        cfg = {**cfg, "spawned_at": time.time()}
        multiprocessing.spawn(_worker, args=(world, _free_port(), out, cfg), nprocs=world)
        ranks = [json.loads(Path(out, f"{r}.json").read_text()) for r in range(world)]
    return max(r["startup"] for r in ranks), max(r["train"] for r in ranks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256, help="the effective (global) batch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cfg: dict[str, object] = {
        "rows": args.rows,
        "features": args.features,
        "epochs": args.epochs,
        "batch": args.batch,
        "threads": args.threads,
        "device": args.device,
    }
    print(f"machine: {machine()}; load average at start {load_average()}", flush=True)
    started = time.perf_counter()
    train: dict[int, list[float]] = {w: [] for w in args.workers}
    startup: dict[int, list[float]] = {w: [] for w in args.workers}
    for round_ in range(args.rounds):
        order = (
            args.workers[round_ % len(args.workers) :] + args.workers[: round_ % len(args.workers)]
        )
        for world in order:
            up, seconds = one_run(world, cfg)
            startup[world].append(up)
            train[world].append(seconds)
            print(f"round {round_ + 1} W={world}: start-up {up:.1f} s, training {seconds:.2f} s")
    print(
        f"{args.rows} rows x {args.features}, MLP {args.features}-256-256-10, {args.epochs} "
        f"epochs, effective batch {args.batch}, {args.threads} thread(s) per worker, "
        f"{args.device}, {args.rounds} rounds; load average at end {load_average()}"
    )
    print("| workers | training s median (range) | speedup vs 1 | start-up s median |")
    print("|---|---|---|---|")
    base = statistics.median(train[args.workers[0]])
    for world in args.workers:
        median = statistics.median(train[world])
        print(
            f"| {world} | {median:.2f} ({min(train[world]):.2f}–{max(train[world]):.2f}) | "
            f"{base / median:.2f}x | {statistics.median(startup[world]):.1f} |"
        )
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine(), "train": train, "startup": startup}, indent=2)
        )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
