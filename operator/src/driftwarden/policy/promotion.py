"""Promotion and rollback: which model the target serves, and when to go back.

Promotion points the target container's model env var (``spec.target.modelEnv``) at the
candidate's directory and records the run in an annotation; the previous directory is kept
(artifacts are never overwritten) so rollback is the same change pointing back. Both are a
``DeploymentIntent`` change: the temporary fix, if any, stays in the intent (see
``deployment_apply`` for why one apply carries everything we own).

A rollback is needed when the first evaluation of the promoted model shows its accuracy
under the gates: more than ``maxAccuracyDropPercent`` points under what the model before it
scored in the promoting run, or under ``minAccuracyPercent``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from driftwarden.policy.deployment_apply import DeploymentIntent
from driftwarden.policy.gates import GateSettings


@dataclass(frozen=True)
class Promoted:
    """``status.promoted``: what the target serves and what it served before."""

    current: str
    run_id: str | None
    at: datetime
    previous: str | None = None
    previous_run_id: str | None = None


@dataclass(frozen=True)
class EvaluatedModel:
    """The parts of an evaluation the rollback check needs."""

    time: datetime  # when the evaluation started measuring
    model_uri: str
    accuracy_percent: float | None


RollbackVerdict = Literal["Wait", "Keep", "Rollback"]


@dataclass(frozen=True)
class RollbackDecision:
    verdict: RollbackVerdict
    reason: str


def promote(intent: DeploymentIntent, model_uri: str, run_id: str) -> DeploymentIntent:
    """The intent that serves ``model_uri`` (the candidate of ``run_id``)."""
    return dataclasses.replace(intent, model_uri=model_uri, promoted_run=run_id)


def promoted_after(
    before: Promoted | None, model_in_use: str, candidate_uri: str, run_id: str, at: datetime
) -> Promoted:
    """``status.promoted`` after a promotion: the model in use becomes ``previous``."""
    return Promoted(
        current=candidate_uri,
        run_id=run_id,
        at=at,
        previous=model_in_use,
        previous_run_id=before.run_id if before is not None else None,
    )


def roll_back(intent: DeploymentIntent, promoted: Promoted) -> DeploymentIntent:
    """The intent that serves the previous model again."""
    if promoted.previous is None:
        raise ValueError("nothing to roll back to: no previous model is recorded")
    return dataclasses.replace(
        intent, model_uri=promoted.previous, promoted_run=promoted.previous_run_id
    )


def rolled_back(promoted: Promoted, at: datetime) -> Promoted:
    """``status.promoted`` after a rollback. The bad model is not kept as ``previous``: a
    second rollback must never return to it."""
    if promoted.previous is None:
        raise ValueError("nothing to roll back to: no previous model is recorded")
    return Promoted(current=promoted.previous, run_id=promoted.previous_run_id, at=at)


def rollback_decision(
    promoted: Promoted,
    evaluation: EvaluatedModel | None,
    gates: GateSettings,
    accuracy_before_percent: float | None,
) -> RollbackDecision:
    """Judge the first evaluation of the promoted model.

    ``accuracy_before_percent`` is what the model before it scored on the holdout in the
    promoting run (the run's baseline). ``Wait`` until an evaluation of the promoted model
    that started after the promotion has finished.
    """
    if promoted.previous is None:
        return RollbackDecision("Keep", "No previous model is recorded to roll back to.")
    if (
        evaluation is None
        or evaluation.model_uri != promoted.current
        or evaluation.time < promoted.at
    ):
        return RollbackDecision("Wait", "No evaluation of the promoted model yet.")
    accuracy = evaluation.accuracy_percent
    if accuracy is None:
        return RollbackDecision(
            "Keep", "The evaluation after the promotion did not measure accuracy."
        )

    measured = Decimal(repr(accuracy))
    failures: list[str] = []
    if gates.max_accuracy_drop_percent is not None and accuracy_before_percent is not None:
        before = Decimal(repr(accuracy_before_percent))
        if measured < before - gates.max_accuracy_drop_percent:
            failures.append(
                f"accuracy {measured:.2f}% is {before - measured:.2f} points under the "
                f"previous model's {before:.2f}% "
                f"(at most {gates.max_accuracy_drop_percent} allowed)"
            )
    if gates.min_accuracy_percent is not None and measured < gates.min_accuracy_percent:
        failures.append(
            f"accuracy {measured:.2f}% is under the minimum {gates.min_accuracy_percent}%"
        )
    if failures:
        return RollbackDecision(
            "Rollback",
            f"The first evaluation after promoting {promoted.current} "
            f"(run {promoted.run_id}): "
            + "; ".join(failures)
            + f". Pointing back to {promoted.previous}.",
        )
    return RollbackDecision(
        "Keep", f"The first evaluation after the promotion measured accuracy {measured:.2f}%."
    )
