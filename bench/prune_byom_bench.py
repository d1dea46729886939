"""Structured pruning of users' models at 50 %: speed at full size, accuracy on the tiny tasks.

Issue 14's numbers, each through the job's own prune stage (``strategies.apply_stage`` with
``PruneStage(amount_percent=50)``, Torch-Pruning underneath), timed side by side in
interleaved rounds (``_timing.interleaved_latency``) on the threads torch gives the process:

    speed   BERT-base size (12 layers, hidden 768, 12 heads, MLP 3072), sequence 128, batch 8:
              MLP width 50 % (BERT's config cannot describe fewer heads of the same size, so
              the stage keeps its heads and says so)
            ViT-base size (224x224, patch 16, same encoder): heads + MLP width 50 %
            timm resnet18 at 224x224, batch 8: channels 50 %; "latency/MACs" is the
              latency speedup divided by the MACs ratio (1.0: time falls as fast as work)
            (random weights: speed does not depend on their values; no fine-tuning)
    accuracy  the tiny text task of optimizer_job.example_hf (a 2-layer BERT, WordPiece
              tokenizer trained locally, synthetic sentences): a run retrained for 8 epochs
              against the same run followed by prune 50 % + 3 epochs of fine-tuning, and by
              the int8 quantize stage (the job's runner, holdout accuracy as the run
              reports it); and the tiny ViT task of tests/job/test_prune_transformers.py
              (heads + MLP 50 %, 3 epochs fine-tuning)

    .venv/bin/python bench/prune_byom_bench.py                      # all
    .venv/bin/python bench/prune_byom_bench.py --only speed --rounds 9
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from _timing import interleaved_latency, load_average, machine
from optimizer_job import hf, training
from optimizer_job.contract import DataRefs, PruneStage, QuantizeStage, RetrainStage, Task
from optimizer_job.dataio import Table
from optimizer_job.example_hf import make_text_example
from optimizer_job.modelio import build_model
from optimizer_job.runner import run_task
from optimizer_job.strategies import apply_stage
from optimizer_job.strategies.base import StageContext

CPU = torch.device("cpu")
LOG = logging.getLogger("prune_byom_bench")


def context(x: np.ndarray, y: np.ndarray, factory: str, kwargs: dict[str, Any]) -> StageContext:
    cut = max(1, int(len(y) * 0.7))
    train, rest = Table(x[:cut], y[:cut], []), Table(x[cut:], y[cut:], [])
    return StageContext(
        device=CPU, seed=0, train=train, validation=rest, holdout=rest, log=LOG,
        factory=factory, kwargs=kwargs, meta={"factory": factory, "kwargs": kwargs},
    )  # fmt: skip


def pruned(
    model: nn.Module, ctx: StageContext, importance: str
) -> tuple[nn.Module, dict[str, Any]]:
    stage = PruneStage(amount_percent=50, fine_tune_epochs=0, importance=importance)
    started = time.perf_counter()
    outcome = apply_stage(stage, model, ctx)
    notes = dict(outcome.notes)
    notes["prune_seconds"] = round(time.perf_counter() - started, 1)
    return outcome.model.eval(), notes


def time_pair(name: str, full: nn.Module, small: nn.Module, x: torch.Tensor, rounds: int,
              notes: dict[str, Any]) -> None:  # fmt: skip
    result = interleaved_latency(
        {"full": lambda: full(x), "pruned": lambda: small(x)},
        CPU, rounds=rounds, calls_per_round=1, warmup=2,
    )  # fmt: skip
    speedup = result["full"].median_ms / result["pruned"].median_ms
    macs = float(notes["macs_ratio"])
    print(f"{name}: batch {x.shape[0]}, threads {torch.get_num_threads()}, "
          f"prune took {notes['prune_seconds']} s")  # fmt: skip
    for key in ("num_attention_heads", "intermediate_size", "heads_kept"):
        if key in notes:
            print(f"  {key}: {notes[key]}")
    print(f"  params {notes['params_before']} -> {notes['params_after']}, MACs ratio {macs:.2f}x")
    for label, latency in result.items():
        print(f"  {label:7} {latency.text()}")
    print(f"  speedup (median) {speedup:.2f}x; latency/MACs {speedup / macs:.2f}")


def speed_cases(seq: int, only: set[str]) -> list[tuple[str, str, dict[str, Any], np.ndarray]]:
    """(title, factory, kwargs, 32 input rows) of each model to time."""
    from transformers import BertConfig, ViTConfig

    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 3, 224, 224)).astype(np.float32)
    cases: dict[str, tuple[str, str, dict[str, Any], np.ndarray]] = {
        "bert": (
            "BERT-base size, MLP 50 %",
            hf.SEQUENCE_FACTORY,
            {"config": BertConfig(num_labels=2).to_dict()},
            rng.integers(5, 30522, (32, seq)).astype(np.float32),
        ),
        "vit": (
            "ViT-base size (224x224), heads + MLP 50 %",
            hf.IMAGE_FACTORY,
            {"config": ViTConfig(num_labels=2).to_dict()},
            images,
        ),
        "resnet18": (
            "timm resnet18 (224x224), channels 50 %",
            hf.TIMM_FACTORY,
            {"name": "resnet18", "num_classes": 10},
            images,
        ),
    }
    return [case for name, case in cases.items() if name in only]


def bench_speed(rounds: int, batch: int, seq: int, only: set[str]) -> None:
    labels = np.random.default_rng(1).integers(0, 2, 32).astype(np.int64)
    for title, factory, kwargs, rows in speed_cases(seq, only):
        torch.manual_seed(0)
        full = build_model(factory, kwargs).eval()
        ctx = context(rows, labels, factory, kwargs)
        small, notes = pruned(build_model(factory, kwargs), ctx, "l2")
        time_pair(title, full, small, torch.from_numpy(rows[:batch]), rounds, notes)


def text_accuracy() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        example = make_text_example(Path(tmp) / "text")
        data = Path(example["data"])
        refs = DataRefs(
            reference=str(data / "reference.parquet"),
            current=str(data / "current.parquet"),
            holdout=str(data / "holdout.parquet"),
            text_column="text",
            max_length=example["max_length"],
        )
        retrain = RetrainStage(epochs=8, learning_rate="0.003")
        prune = PruneStage(amount_percent=50, fine_tune_epochs=3)
        results: dict[str, Any] = {}
        for name, stages in (
            ("retrained", [retrain]),
            ("retrained + pruned 50 %", [retrain, prune]),
            ("retrained + int8", [retrain, QuantizeStage(mode="int8")]),
        ):
            task = Task(
                kind="optimize", namespace="bench", optimization="text", run_id=f"r-{len(results)}",
                model_uri=example["model"], data=refs, stages=stages,
                artifacts_uri=str(Path(tmp) / "artifacts"), device="cpu",
            )  # fmt: skip
            result = run_task(task)
            assert result.ok and result.candidate is not None, result
            results[name] = result
        print("tiny text task (2-layer BERT, holdout accuracy as the run reports it):")
        for name, result in results.items():
            assert result.candidate is not None
            notes = result.stages[-1].notes
            extra = (
                f", MLP {notes['intermediate_size']}, MACs {notes['macs_ratio']}x"
                if "macs_ratio" in notes
                else ""
            )
            print(f"  {name:24} accuracy {result.candidate.accuracy:.4f}{extra}")


def vit_accuracy() -> None:
    from transformers import ViTConfig

    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, image_size=16, patch_size=4, num_labels=2)  # fmt: skip
    kwargs = {"config": config.to_dict()}
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 240).astype(np.int64)
    x = (rng.normal(size=(240, 3, 16, 16)) + (2 * y - 1)[:, None, None, None]).astype(np.float32)
    ctx = context(x, y, hf.IMAGE_FACTORY, kwargs)
    torch.manual_seed(0)
    model = build_model(hf.IMAGE_FACTORY, kwargs)
    trained = apply_stage(RetrainStage(epochs=3), model, ctx)
    assert ctx.holdout is not None
    before = training.accuracy(trained.model, ctx.holdout, CPU)
    outcome = apply_stage(
        PruneStage(amount_percent=50, fine_tune_epochs=3), trained.model, trained.ctx
    )
    after = training.accuracy(outcome.model, ctx.holdout, CPU)
    print("tiny ViT task (2 layers, 4 heads, brightness sign):")
    print(f"  retrained              accuracy {before:.4f}")
    print(f"  + pruned heads {outcome.notes['num_attention_heads']}, MLP "
          f"{outcome.notes['intermediate_size']}: accuracy {after:.4f} "
          f"(MACs {outcome.notes['macs_ratio']}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", default=["speed", "accuracy"],
                        choices=["speed", "accuracy", "bert", "vit", "resnet18"])  # fmt: skip
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    only = set(args.only)
    if "speed" in only:
        only |= {"bert", "vit", "resnet18"}
    print(machine(), "| load", load_average())
    if only & {"bert", "vit", "resnet18"}:
        bench_speed(args.rounds, args.batch, args.seq, only)
    if "accuracy" in only:
        text_accuracy()
        vit_accuracy()
    print("load at end", load_average())


if __name__ == "__main__":
    main()
