"""Pipeline stages: ``apply_stage`` runs one by ``stage.type``.

Each stage lives in its own module with an ``apply(stage, model, ctx)`` function,
imported when a pipeline uses it (torchao and Torch-Pruning are slow to import).
"""

from __future__ import annotations

import importlib

from torch import nn

from optimizer_job.contract import Stage
from optimizer_job.strategies.base import StageContext, StageOutcome

STAGE_TYPES = ("retrain", "prune", "distill", "quantize", "export")


def apply_stage(stage: Stage, model: nn.Module, ctx: StageContext) -> StageOutcome:
    if stage.type not in STAGE_TYPES:
        raise ValueError(f"unknown stage type {stage.type!r}")
    module = importlib.import_module(f"optimizer_job.strategies.{stage.type}")
    outcome: StageOutcome = module.apply(stage, model, ctx)
    return outcome


__all__ = ["STAGE_TYPES", "StageContext", "StageOutcome", "apply_stage"]
