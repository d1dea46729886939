"""Supervised training with AdamW and early stopping, plus batched prediction.

``fit`` is deterministic given a seed on one device: the seed fixes initialisation
left to the caller, dropout masks and the shuffling order, and deterministic kernels
are requested (``warn_only``: a kernel without a deterministic variant still runs).
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
from torch import nn
from torch.nn import functional

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
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    eta = Eta(epochs)
    best: tuple[float, float] | None = None  # (accuracy, -loss)
    best_state = copy.deepcopy(model.state_dict())
    best_epoch, best_train_loss = 0, math.nan
    best_val_acc: float | None = None
    best_val_loss: float | None = None
    stale = 0
    epoch = 0
    with deterministic(seed):
        order_rng = torch.Generator(device="cpu").manual_seed(seed)
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(train), generator=order_rng).to(device)
            total, seen = 0.0, 0
            for start in range(0, len(train), batch_size):
                rows = order[start : start + batch_size]
                if len(rows) < 2 and seen:
                    continue  # BatchNorm cannot train on one row; it is one row of an epoch
                optimizer.zero_grad(set_to_none=True)
                loss = functional.cross_entropy(
                    model(x[rows]), y[rows], label_smoothing=label_smoothing
                )
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach()) * len(rows)
                seen += len(rows)
            train_loss = total / max(seen, 1)
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
