"""Is this replica the one that works? kopf's peering rules, as a pure function.

kopf decides from the keep-alive records in a peering object's status (one per replica:
``{identity: {priority, lifetime, lastseen}}``), each time that object changes
(kopf/_core/engines/peering.py, ``process_peering_event``):

- a record is dead once ``lastseen + lifetime <= now``; a record without ``lastseen``
  counts as seen now; ``priority`` defaults to 0 and ``lifetime`` to 60 s;
- this replica's own record (its identity) is not a peer;
- a live peer of higher priority: pause (that peer works);
- else a live peer of the same priority: pause every replica of that priority, this one
  included (kopf cannot tell which should work; it warns), until one of them goes;
- else: work.

Without a peering object (or its CRD) kopf stays paused when peering is mandatory
(``--peering``) and works when it is only auto-detected. The operator pauses when any of
its peering objects (one per watched namespace) says so. A paused replica works again when
the records that hold it expire: ``Standing.recheck`` says when, without a new event.

tests/unit/test_policy_standing.py runs kopf's own ``process_peering_event`` over the same
records, so a change of kopf's rules fails a test rather than this module going stale.

Pure: the caller passes the records, who it is and the time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

DEFAULT_LIFETIME: Final = 60  # seconds, kopf's default for a record without one


@dataclass(frozen=True)
class PeerRecord:
    identity: str
    priority: int
    deadline: datetime | None  # None: no lastseen, alive whenever it is judged

    def alive(self, now: datetime) -> bool:
        return self.deadline is None or now < self.deadline


@dataclass(frozen=True)
class Standing:
    active: bool
    reason: str
    # When the answer may change without a new event (a blocking record expires).
    recheck: datetime | None = None


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def records(status: Mapping[str, Any] | None) -> list[PeerRecord]:
    """The keep-alive records of a peering object's status (malformed ones are skipped:
    kopf would fail on them, and they tell nothing about a live replica)."""
    found: list[PeerRecord] = []
    for identity, info in (status or {}).items():
        if not isinstance(info, Mapping):
            continue
        try:
            priority = int(info.get("priority", 0))
            lifetime = timedelta(seconds=int(info.get("lifetime", DEFAULT_LIFETIME)))
            lastseen = info.get("lastseen")
            deadline = None if lastseen is None else _parse_time(str(lastseen)) + lifetime
        except (TypeError, ValueError):
            continue
        found.append(PeerRecord(str(identity), priority, deadline))
    return found


def standing(
    peers: Iterable[PeerRecord] | None,
    *,
    identity: str,
    priority: int,
    now: datetime,
    mandatory: bool,
) -> Standing:
    """This replica's standing under one peering object; ``peers`` None: no such object."""
    if peers is None:
        if mandatory:
            return Standing(False, "no peering object: peering is required")
        return Standing(True, "no peering object")
    live = [p for p in peers if p.identity != identity and p.alive(now)]
    higher = [p for p in live if p.priority > priority]
    same = [p for p in live if p.priority == priority]
    blocking = higher + same
    if not blocking:
        return Standing(True, "no live replica of higher or equal priority")
    deadlines = [p.deadline for p in blocking if p.deadline is not None]
    recheck = min(deadlines) if deadlines else None
    if higher:
        names = ", ".join(sorted(p.identity for p in higher))
        return Standing(False, f"replica of higher priority: {names}", recheck)
    names = ", ".join(sorted(p.identity for p in same))
    return Standing(False, f"replica of the same priority (all pause): {names}", recheck)


def combined(standings: Iterable[Standing]) -> Standing:
    """The operator works only if every peering object it uses lets it."""
    items = list(standings)
    paused = [s for s in items if not s.active]
    rechecks = [s.recheck for s in paused if s.recheck is not None]
    if not paused:
        return Standing(True, "; ".join(dict.fromkeys(s.reason for s in items)) or "standalone")
    return Standing(
        False,
        "; ".join(dict.fromkeys(s.reason for s in paused)),
        min(rechecks) if rechecks else None,
    )
