"""Data-parallel retraining (gloo, CPU) trains the same model as one process.

Two processes with DistributedDataParallel and a DistributedSampler, each taking half of
every 64-row step, against one process taking whole 64-row steps, from the same initial
weights and seed. The sampler's permutation is the same in both (seed + epoch), so each step
sees the same rows, and DDP's gradient average over two 32-row means is the 64-row mean: the
runs differ only by float32 rounding (the order the gradient is summed in).

Tolerance: after 5 epochs (50 AdamW steps at lr 3e-3) the largest weight difference must be
below 1e-5. A rounding difference of a few float32 ulps in a gradient (~1e-7 relative) moves
an Adam step (~lr) by about lr * 1e-6; summed over 50 steps that is ~1e-6 at most, so 1e-5
leaves a 10x margin, while any real difference in what is trained (other rows per step, a
missed gradient average, a doubled learning rate, dropout) moves weights by 1e-3 or more in
the first step. Dropout is off and no validation set picks a "best" epoch, so neither
randomness nor a near-tie can tell the runs apart.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import distributed as dist
from torch import multiprocessing

from optimizer_job import zoo
from optimizer_job.dataio import Table, split_stratified
from optimizer_job.example import digits_tables
from optimizer_job.training import fit

pytestmark = pytest.mark.job

ROWS = 600  # even: the sampler pads nothing; 9 full steps and one of 24 rows an epoch
BATCH = 64
EPOCHS = 5


def _data() -> Table:
    train, _ = split_stratified(digits_tables("mlp", seed=0)["reference"], 10, seed=0)
    return train.subset(np.arange(ROWS))


def _model() -> torch.nn.Module:
    torch.manual_seed(3)
    return zoo.mlp(64, 10, hidden=[64, 32], dropout=0.0)


def _train(seen: list[int] | None = None) -> torch.nn.Module:
    model = _model()
    if seen is not None:  # count the rows this process trains on
        model.register_forward_pre_hook(
            lambda module, args: seen.append(len(args[0])) if module.training else None
        )
    fit(
        model,
        _data(),
        None,
        epochs=EPOCHS,
        batch_size=BATCH,  # the effective batch: split across the ranks when there are several
        lr=3e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=0,
        device=torch.device("cpu"),
        seed=11,
        log=logging.getLogger("test"),
    )
    return model


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        seen: list[int] = []
        model = _train(seen)
        torch.save(model.state_dict(), Path(out) / f"rank{rank}.pt")
        (Path(out) / f"rank{rank}.rows").write_text(str(sum(seen)))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_two_gloo_workers_train_the_same_weights_as_one_process(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    single = _train().state_dict()
    multiprocessing.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # Each rank trained on its half of every epoch, not on all of it.
    for r in range(2):
        assert int((tmp_path / f"rank{r}.rows").read_text()) == EPOCHS * ROWS // 2
    for name, tensor in single.items():
        # The ranks agree exactly: DDP gives every rank the same averaged gradient.
        assert torch.equal(ranks[0][name], ranks[1][name]), name
        difference = float((ranks[0][name] - tensor).abs().max())
        print(f"{name}: largest difference to one process {difference:.2e}")
        assert difference < 1e-5, (name, difference)
    # And training did something: far from the initial weights.
    initial = _model().state_dict()
    moved = max(float((single[n] - initial[n]).abs().max()) for n in single)
    assert moved > 1e-2
