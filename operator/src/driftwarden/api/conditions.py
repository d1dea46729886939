"""status.conditions: metav1.Condition, the condition types and reasons DriftWarden uses, and
the helper that sets one the way Kubernetes controllers do (lastTransitionTime moves only when
the status changes)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from driftwarden.api.types import StatusModel, Time, now_utc, truncated

ConditionStatus = Literal["True", "False", "Unknown"]

MESSAGE_MAX_LENGTH = 32768
# metav1.Condition's pattern for reason: CamelCase, no spaces.
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class Condition(StatusModel):
    type: Annotated[str, Field(max_length=316)]
    status: ConditionStatus
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    last_transition_time: Time
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=REASON_PATTERN)]
    message: Annotated[str, truncated(MESSAGE_MAX_LENGTH)] = ""


class ConditionType(StrEnum):
    READY = "Ready"
    DRIFT_DETECTED = "DriftDetected"
    LATENCY_WITHIN_SLO = "LatencyWithinSLO"
    OPTIMIZING = "Optimizing"
    TEMPORARY_FIX_ACTIVE = "TemporaryFixActive"
    PROMOTED = "Promoted"


class Reason(StrEnum):
    """CamelCase reasons; each condition's message says the details in words."""

    # Ready
    READY = "Ready"
    AWAITING_FIRST_EVALUATION = "AwaitingFirstEvaluation"
    MODEL_NOT_FOUND = "ModelNotFound"
    DATA_NOT_FOUND = "DataNotFound"
    PVC_NOT_FOUND = "PVCNotFound"
    MISSING_SECRET = "MissingSecret"  # noqa: S105 - a condition reason, not a secret
    UNKNOWN_MODEL_FACTORY = "UnknownModelFactory"
    BAD_INPUT = "BadInput"
    TARGET_NOT_FOUND = "TargetNotFound"
    CONTAINER_NOT_FOUND = "ContainerNotFound"
    EVALUATION_FAILED = "EvaluationFailed"
    SUSPENDED = "Suspended"
    # DriftDetected
    DRIFT_OVER_THRESHOLD = "DriftOverThreshold"
    NO_DRIFT = "NoDrift"
    NOT_EVALUATED = "NotEvaluated"
    INSUFFICIENT_DATA = "InsufficientData"  # too few current rows for the drift metric
    # LatencyWithinSLO
    WITHIN_SLO = "WithinSLO"
    SLO_BREACHED = "SLOBreached"
    NO_SLO = "NoSLO"
    # Optimizing
    RUN_IN_PROGRESS = "RunInProgress"
    IDLE = "Idle"
    COOLDOWN = "Cooldown"
    BUDGET_EXHAUSTED = "BudgetExhausted"
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_FAILED = "RunFailed"
    # TemporaryFixActive
    FIX_APPLIED = "FixApplied"
    FIX_REVERTED = "FixReverted"
    FIX_EXPIRED = "FixExpired"
    FIX_NOT_NEEDED = "FixNotNeeded"
    FIX_DISABLED = "FixDisabled"
    # Promoted
    PROMOTED = "Promoted"
    PROMOTION_REJECTED = "PromotionRejected"
    INCONCLUSIVE_LATENCY = "InconclusiveLatency"  # the speed interval could not decide
    AWAITING_APPROVAL = "AwaitingApproval"
    ROLLED_BACK = "RolledBack"
    NO_CANDIDATE = "NoCandidate"


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_condition_true(conditions: list[Condition], type_: str) -> bool:
    condition = get_condition(conditions, type_)
    return condition is not None and condition.status == "True"


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> bool:
    """Set a condition in place, keeping lastTransitionTime when the status is unchanged.

    Returns whether anything changed, so a caller can skip a no-op status patch.
    """
    moment = now or now_utc()
    new = Condition(
        type=type_,
        status=status,
        observed_generation=observed_generation,
        last_transition_time=moment,
        reason=reason,
        message=message,
    )
    for index, old in enumerate(conditions):
        if old.type != type_:
            continue
        if old.status == status:
            new = new.model_copy(update={"last_transition_time": old.last_transition_time})
        if new == old:
            return False
        conditions[index] = new
        return True
    conditions.append(new)
    return True
