"""The short, seeded training run the strategy tests start from."""

from __future__ import annotations

import torch
from torch import nn

from optimizer_job import training
from optimizer_job.strategies.base import StageContext


def fit_seeded(model: nn.Module, ctx: StageContext, *, epochs: int) -> nn.Module:
    """Train ``model`` on ``ctx``'s tables with one fixed recipe, deterministically."""
    torch.manual_seed(0)
    training.fit(
        model,
        ctx.train,
        ctx.validation,
        epochs=epochs,
        batch_size=64,
        lr=3e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=0,
        device=ctx.device,
        seed=0,
        log=ctx.log,
    )
    return model
