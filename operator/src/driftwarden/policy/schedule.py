"""When the next evaluation Job of a resource is due.

An evaluation starts every ``spec.monitoring.interval``, counted from the start of the
previous one (a fixed cadence: a slow evaluation does not push every later one back, and
one that ran longer than the interval is followed at once). Never two at a time per
resource, none while suspended. Pure: the caller passes what status remembers and the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

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
) -> EvaluationDue:
    if suspended:
        return EvaluationDue(due=False, next_check=None, blocked_by="Suspended")
    if evaluation_active:
        return EvaluationDue(due=False, next_check=None, blocked_by="EvaluationActive")
    if last_started_at is None:
        return EvaluationDue(due=True, next_check=None)
    due_at = last_started_at + interval
    if now >= due_at:
        return EvaluationDue(due=True, next_check=None)
    return EvaluationDue(due=False, next_check=due_at)
