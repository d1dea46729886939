"""When the next evaluation Job of a resource is due.

An evaluation starts every ``spec.monitoring.interval``, counted from the start of the
previous one (a fixed cadence: a slow evaluation does not push every later one back, and
one that ran longer than the interval is followed at once). Never two at a time per
resource, none while suspended. Pure: the caller passes what status remembers and the time.

With a ``key`` (the resource's uid) the cadence keeps the resource's own phase of the
interval (driftwarden.policy.pacing.evaluation_due_at): many resources spread their
evaluations over the interval instead of starting them together. The first evaluation of a
resource is due at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from driftwarden.policy.pacing import evaluation_due_at

EvaluationBlocker = Literal["Suspended", "EvaluationActive"]


@dataclass(frozen=True)
class EvaluationDue:
    due: bool
    # When to look again: the due time while waiting, None while blocked (an event - the
    # active evaluation finishing, suspend turned off - is what changes the answer).
    next_check: datetime | None
    blocked_by: EvaluationBlocker | None = None


def evaluation_due(
    interval: timedelta,
    last_started_at: datetime | None,
    evaluation_active: bool,
    suspended: bool,
    now: datetime,
    key: str | None = None,
) -> EvaluationDue:
    if suspended:
        return EvaluationDue(due=False, next_check=None, blocked_by="Suspended")
    if evaluation_active:
        return EvaluationDue(due=False, next_check=None, blocked_by="EvaluationActive")
    if last_started_at is None:
        return EvaluationDue(due=True, next_check=None)
    due_at = (
        last_started_at + interval
        if key is None
        else evaluation_due_at(last_started_at, interval, key, now)
    )
    if now >= due_at:
        return EvaluationDue(due=True, next_check=None)
    return EvaluationDue(due=False, next_check=due_at)
