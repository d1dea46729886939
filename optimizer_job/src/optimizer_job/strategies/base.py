"""What every pipeline stage gets and returns.

A strategy module (``strategies/retrain.py``, ``prune.py``, ``distill.py``,
``quantize.py``) exposes ``apply(stage, model, ctx) -> StageOutcome``. Stages run in
pipeline order; each gets the previous stage's model and context. A stage may return a
changed context (distill: ``train`` becomes the coreset) that later stages use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from optimizer_job.dataio import Table

Notes = dict[str, str | float | int]


@dataclass
class StageContext:
    """Data, device and model description shared by the stages of one run.

    ``train`` and ``validation`` are labelled; rows carry ``Table.source`` (reference or
    current) when the runner built them from both tables. ``holdout`` is for metrics
    only and is never trained on. ``factory``/``kwargs`` describe the model as
    model.json will (a stage that changes an architecture argument, e.g. dropout,
    updates ``kwargs``); ``meta`` is the input model's model.json. ``threads`` is the
    thread count latency is measured with: a stage that times anything pins it too.
    """

    device: torch.device
    seed: int
    train: Table
    validation: Table
    holdout: Table | None
    log: logging.Logger
    factory: str
    kwargs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    threads: int = 1  # the thread count latency is measured with (evaluation.threads)


@dataclass
class StageOutcome:
    model: nn.Module
    ctx: StageContext
    notes: Notes = field(default_factory=dict)


class Strategy(Protocol):
    def __call__(self, stage: Any, model: nn.Module, ctx: StageContext) -> StageOutcome: ...
