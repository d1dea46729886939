"""Supervised training with AdamW and early stopping, plus batched prediction.

``fit`` is deterministic given a seed on one device: the seed fixes initialisation
left to the caller, dropout masks and the shuffling order, and deterministic kernels
are requested (``warn_only``: a kernel without a deterministic variant still runs).

Data-parallel: when a torch.distributed process group is up (torchrun, see
``optimizer_job.distributed``), ``fit`` trains a DistributedDataParallel wrapper and each
rank takes its share of every epoch from a DistributedSampler. ``batch_size`` stays the
*effective* (global) batch: each of W ranks takes ceil(batch_size / W) rows a step and DDP
averages the gradients, so a step sees the same rows as one process with the whole batch
(the sampler's permutation is the same in both: seed + epoch). The weights stay identical on
every rank, so validation (run in full on each) picks the same best epoch everywhere.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional
from torch.utils.data import DistributedSampler

from optimizer_job.contract import BadInputError
from optimizer_job.dataio import Table
from optimizer_job.modelio import model_dtype
from optimizer_job.progress import Eta


@dataclass(frozen=True)
class FitReport:
    epochs_run: int
    best_epoch: int  # 1-based; the weights of this epoch are the ones kept
    train_loss: float  # mean training loss of the best epoch
    val_accuracy: float | None  # validation accuracy of the best epoch
    seconds: float
    val_loss: float | None = None


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and request deterministic kernels, restoring the previous mode after."""
    # cuBLAS is deterministic only with a fixed workspace; read when its handle is made.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)


def _tensors(
    table: Table, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    if table.y is None:
        raise BadInputError("training needs labelled data")
    return (
        torch.from_numpy(table.X).to(device=device, dtype=dtype),
        torch.from_numpy(table.y).to(device=device, dtype=torch.long),
    )


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Rows:
    """What DistributedSampler needs of a dataset: its length (rows are indexed directly)."""

    def __init__(self, count: int) -> None:
        self._count = count

    def __len__(self) -> int:
        return self._count


def _epoch_order(
    sampler: DistributedSampler[int], epoch: int, device: torch.device
) -> torch.Tensor:
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long).to(device)


def _data_parallel(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    if world < 2:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # BatchNorm statistics are computed per rank (no SyncBatchNorm: it would replace the
    # model's modules, and the stages after retraining expect the model's own classes); its
    # buffers are broadcast from rank 0 at every step, so all ranks still agree.
    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device])
    return DistributedDataParallel(model)


def _global_mean(total: float, seen: int, world: int, device: torch.device) -> float:
    if world < 2:
        return total / max(seen, 1)
    sums = torch.tensor([total, float(seen)], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    return float(sums[0] / sums[1].clamp(min=1))


def fit(
    model: nn.Module,
    train: Table,
    val: Table | None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    label_smoothing: float,
    patience: int,
    device: torch.device,
    seed: int,
    log: logging.Logger,
    stage: str = "train",
) -> FitReport:
    """Train ``model`` in place; with ``val``, keep the weights of the best validation epoch.

    Best = highest validation accuracy, ties broken by lower validation loss.
    ``patience`` epochs without improvement stop training early (0: never stop early).
    """
    if len(train) == 0:
        raise BadInputError(f"{stage}: no training rows")
    started = time.perf_counter()
    model.to(device)
    dtype = model_dtype(model)
    x, y = _tensors(train, device, dtype)
    xv, yv = _tensors(val, device, dtype) if val is not None and len(val) else (None, None)
    rank, world = rank_and_world()
    net = _data_parallel(model, device, world)
    step_rows = max(1, math.ceil(batch_size / world))
    sampler: DistributedSampler[int] = DistributedSampler(
        _Rows(len(train)),  # type: ignore[arg-type]
        num_replicas=world,
        rank=rank,
        shuffle=True,
        seed=seed,
    )
    if world > 1:
        log.info("%s: data-parallel rank %d of %d, %d rows a step", stage, rank, world, step_rows)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    eta = Eta(epochs)
    best: tuple[float, float] | None = None  # (accuracy, -loss)
    best_state = copy.deepcopy(model.state_dict())
    best_epoch, best_train_loss = 0, math.nan
    best_val_acc: float | None = None
    best_val_loss: float | None = None
    stale = 0
    epoch = 0
    with deterministic(seed):
        for epoch in range(1, epochs + 1):
            net.train()
            order = _epoch_order(sampler, epoch, device)
            total, seen = 0.0, 0
            for start in range(0, len(order), step_rows):
                rows = order[start : start + step_rows]
                if len(rows) < 2 and seen:
                    # BatchNorm cannot train on one row; it is one row of an epoch. Every
                    # rank has as many rows as the others, so all of them skip it together.
                    continue
                optimizer.zero_grad(set_to_none=True)
                loss = functional.cross_entropy(
                    net(x[rows]), y[rows], label_smoothing=label_smoothing
                )
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach()) * len(rows)
                seen += len(rows)
            train_loss = _global_mean(total, seen, world, device)
            if xv is None or yv is None:
                best_epoch, best_train_loss = epoch, train_loss
                best_state = copy.deepcopy(model.state_dict())
                log.info(
                    "%s epoch %d/%d loss=%.4f eta=%s",
                    stage,
                    epoch,
                    epochs,
                    train_loss,
                    eta.text(epoch),
                )
                continue
            val_acc, val_loss = _evaluate(model, xv, yv, batch_size)
            score = (val_acc, -val_loss)
            improved = best is None or score > best
            if improved:
                best, stale = score, 0
                best_epoch, best_train_loss = epoch, train_loss
                best_val_acc, best_val_loss = val_acc, val_loss
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            log.info(
                "%s epoch %d/%d loss=%.4f val_loss=%.4f val_acc=%.4f%s eta=%s",
                stage,
                epoch,
                epochs,
                train_loss,
                val_loss,
                val_acc,
                " *" if improved else "",
                eta.text(epoch),
            )
            if patience and stale >= patience:
                log.info("%s early stop at epoch %d, best epoch %d", stage, epoch, best_epoch)
                break
    model.load_state_dict(best_state)
    model.eval()
    return FitReport(
        epochs_run=epoch,
        best_epoch=best_epoch,
        train_loss=best_train_loss,
        val_accuracy=best_val_acc,
        seconds=time.perf_counter() - started,
        val_loss=best_val_loss,
    )


@torch.inference_mode()
def _evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(x), max(batch_size, 256)):
        logits = model(x[start : start + max(batch_size, 256)]).float()
        target = y[start : start + len(logits)]
        loss += float(functional.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=1) == target).sum())
    return correct / len(x), loss / len(x)


@torch.inference_mode()
def predict_proba(
    model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """Class probabilities (float32, shape (n, classes)) in eval mode."""
    model.eval()
    model.to(device)
    dtype = model_dtype(model)
    outputs = []
    for start in range(0, len(x), batch_size):
        batch = torch.from_numpy(x[start : start + batch_size]).to(device=device, dtype=dtype)
        outputs.append(torch.softmax(model(batch).float(), dim=1).cpu().numpy())
    if not outputs:
        return np.empty((0, 0), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32, copy=False)


def accuracy(model: nn.Module, table: Table, device: torch.device, batch_size: int = 256) -> float:
    """Share of rows whose most probable class is the label."""
    if table.y is None:
        raise BadInputError("accuracy needs labelled data")
    probabilities = predict_proba(model, table.X, device, batch_size)
    return float(np.mean(probabilities.argmax(axis=1) == table.y))
