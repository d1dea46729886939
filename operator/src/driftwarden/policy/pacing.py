"""When the operator looks at a resource again, and how evaluations spread over time.

A pass is not repeated on a fixed short period. Something that changes the answer wakes
the resource (its spec, its Jobs, a PersistentVolumeClaim it waits for: services.scheduler
follows them), and each pass says when the policies need to look again without any event
(a cron trigger, the end of a cooldown, a temporary fix's expiry, the next evaluation).
What is left is a safety resync, minutes apart, for what no event announces.

Every resource gets a deterministic fraction in [0, 1) from its key (sha256 of its uid),
so that 1000 resources created or resumed together spread their safety passes and their
evaluations instead of coming back all at once: never a thundering herd.

Pure: the caller passes the time and what it knows.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from datetime import datetime, timedelta

# Never look again sooner than this after a pass (a check already due is done by the pass).
MIN_DELAY = timedelta(seconds=1)
# Waiting for something no event announces (a Secret, the target Deployment): look again
# after as long as it has been missing, between these bounds (then at most the resync).
POLL_MIN = timedelta(seconds=15)
# While a run is active: its Job's events wake the resource; this bounds what a missed
# event costs, and checks a gang's start timeout.
ACTIVE_CHECK = timedelta(seconds=60)
# The safety resync of a resource comes after [SAFETY_LOW, 1] x the resync period.
SAFETY_LOW = 0.75


def spread(key: str) -> float:
    """A fraction in [0, 1), the same for the same key on every replica and restart."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def safety_resync(now: datetime, resync: timedelta, key: str) -> datetime:
    return now + resync * (SAFETY_LOW + (1 - SAFETY_LOW) * spread(key))


def poll_after(now: datetime, waiting_since: datetime, resync: timedelta) -> datetime:
    """Back off while something no event announces is missing: after 15 s, then as long
    as it has been missing, at most the resync period."""
    waited = max(now - waiting_since, timedelta(0))
    return now + min(max(waited, POLL_MIN), resync)


def next_pass(
    now: datetime,
    checks: Iterable[datetime | None],
    *,
    resync: timedelta,
    key: str,
    waiting_since: datetime | None = None,
    active: bool = False,
) -> datetime:
    """The time of the next pass of a resource: the earliest check the policies asked for,
    a poll while waiting, a check while a run is active, else the safety resync."""
    candidates = [c for c in checks if c is not None]
    candidates.append(safety_resync(now, resync, key))
    if waiting_since is not None:
        candidates.append(poll_after(now, waiting_since, resync))
    if active:
        candidates.append(now + min(ACTIVE_CHECK, resync))
    return max(min(candidates), now + MIN_DELAY)


def evaluation_slot(last_started: datetime, interval: timedelta, key: str) -> datetime:
    """When the next evaluation after one started at ``last_started`` is due, on this
    resource's own phase of the interval: the first time at least half an interval after
    ``last_started`` whose offset into the interval (counted from the epoch) is this
    key's share of it. On average one per interval, never two within half an interval,
    and N resources' evaluations spread evenly over the interval whenever they began."""
    period = interval.total_seconds()
    if period <= 0:
        return last_started
    phase = spread(key) * period
    earliest = (last_started + interval / 2).timestamp()
    cycles = -((phase - earliest) // period)  # ceil((earliest - phase) / period)
    slot = phase + cycles * period
    return datetime.fromtimestamp(slot, tz=last_started.tzinfo)


def evaluation_due_at(
    last_started: datetime, interval: timedelta, key: str, now: datetime
) -> datetime:
    """``evaluation_slot``. An evaluation that is overdue (the last one outlasted the
    interval, or the operator was away) is due at once, as without phases: after an outage
    each resource catches up with one evaluation (at most as many at once as the
    scheduler has threads), and the ones after it are back on their phases."""
    del now  # overdue or not, the slot says it: a slot in the past is due now
    return evaluation_slot(last_started, interval, key)


# A finished evaluation Job is kept at least this long (the API's minimum for the field).
MIN_EVALUATION_TTL = 60


def evaluation_job_ttl(interval: timedelta, job_ttl: int) -> int:
    """ttlSecondsAfterFinished of an evaluation Job: one interval (at least a minute), never
    more than spec.job's. Its result is read when it finishes (its event wakes the
    resource); keeping it longer only piles up Jobs, Pods and ConfigMaps: with evaluations
    at least half an interval apart, a resource has at most one running evaluation Job and
    three finished ones (fewer with intervals over a minute: 1 + 2)."""
    return min(job_ttl, max(MIN_EVALUATION_TTL, math.ceil(interval.total_seconds())))
