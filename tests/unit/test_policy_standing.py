"""driftwarden.policy.standing: which replica works, by kopf's peering rules.

Each case is also run through kopf's own ``process_peering_event`` (a private kopf
function, used here and only here): if kopf changes its rules, these tests fail instead of
the operator's scheduler quietly disagreeing with kopf about who works.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._cogs.structs import references
from kopf._core.engines import peering as kopf_peering

from driftwarden.policy import standing as policy

pytestmark = pytest.mark.unit

ME, PRIORITY = "replica-a", 100


def record(priority: int, seen_ago: float | None, lifetime: int = 60) -> dict[str, Any]:
    """A keep-alive record as kopf writes it, last seen ``seen_ago`` seconds ago."""
    out: dict[str, Any] = {"priority": priority, "lifetime": lifetime}
    if seen_ago is not None:
        out["lastseen"] = (datetime.now(UTC) - timedelta(seconds=seen_ago)).isoformat()
    return out


def ours(status: dict[str, Any], *, mandatory: bool = True) -> policy.Standing:
    return policy.standing(
        policy.records(status),
        identity=ME,
        priority=PRIORITY,
        now=datetime.now(UTC),
        mandatory=mandatory,
    )


def kopf_pauses(status: dict[str, Any], *, initially_paused: bool) -> bool:
    """What kopf's own peering decides for the same records: paused or not."""

    async def decide() -> bool:
        settings = kopf.OperatorSettings()
        settings.peering.name = "driftwarden"
        settings.peering.priority = PRIORITY
        toggle = aiotoggles.Toggle(initially_paused)
        pressure = asyncio.Event()
        pressure.set()  # kopf would sleep until a blocking record expires: not here
        resource = references.Resource("kopf.dev", "v1", "kopfpeerings", namespaced=True)
        event: Any = {
            "type": "MODIFIED",
            "object": {"metadata": {"name": "driftwarden"}, "status": status},
        }
        await kopf_peering.process_peering_event(
            raw_event=event,
            namespace="ns",
            resource=resource,
            identity=kopf_peering.Identity(ME),
            settings=settings,
            autoclean=False,
            stream_pressure=pressure,
            conflicts_found=toggle,
        )
        return toggle.is_on()

    return asyncio.run(decide())


def cases() -> dict[str, tuple[dict[str, Any], bool]]:
    """Made when a test runs: the records' ages count from now, not from collection."""
    return {
        "alone": ({ME: record(PRIORITY, 1)}, True),
        "empty status": ({}, True),
        "a live peer of higher priority": ({ME: record(PRIORITY, 1), "b": record(200, 5)}, False),
        "a higher peer whose record expired": ({"b": record(200, 61)}, True),
        "a higher peer exactly at its deadline": ({"b": record(200, 60, lifetime=60)}, True),
        "a higher peer with a short lifetime, expired": ({"b": record(200, 11, lifetime=10)}, True),
        "a higher peer without lastseen (alive)": ({"b": record(200, None)}, False),
        "a live peer of lower priority": ({"b": record(50, 5)}, True),
        "a live peer of the same priority: all pause": ({"b": record(PRIORITY, 5)}, False),
        "a same-priority peer whose record expired": ({"b": record(PRIORITY, 90)}, True),
        "lower live, higher dead": ({"b": record(50, 5), "c": record(300, 120)}, True),
        "lower live, higher live": ({"b": record(50, 5), "c": record(300, 5)}, False),
        "my own record with another priority is not a peer": ({ME: record(999, 1)}, True),
        "priority and lifetime default to 0 and 60": ({"b": {"lastseen": None}}, True),
    }


@pytest.mark.parametrize("case", list(cases()))
def test_the_standing_follows_kopfs_rules(case: str) -> None:
    status, active = cases()[case]
    got = ours(status)
    assert got.active is active, got
    for initially_paused in (True, False):
        assert kopf_pauses(status, initially_paused=initially_paused) is (not active), case


def test_a_paused_replica_knows_when_to_look_again() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    seen = now - timedelta(seconds=20)
    status = {
        "b": {"priority": 200, "lifetime": 60, "lastseen": seen.isoformat()},
        "c": {"priority": PRIORITY, "lifetime": 30, "lastseen": seen.isoformat()},
        "d": {"priority": 1, "lifetime": 5, "lastseen": seen.isoformat()},  # lower: no matter
    }
    peers = policy.records(status)
    got = policy.standing(peers, identity=ME, priority=PRIORITY, now=now, mandatory=True)
    assert not got.active and "b" in got.reason
    assert got.recheck == seen + timedelta(seconds=30)  # c's record ends first
    # At that moment c is gone, b still holds it; when b expires too, it works.
    later = policy.standing(peers, identity=ME, priority=PRIORITY, now=got.recheck, mandatory=True)
    assert not later.active and later.recheck == seen + timedelta(seconds=60)
    assert later.recheck is not None
    last = policy.standing(peers, identity=ME, priority=PRIORITY, now=later.recheck, mandatory=True)
    assert last.active and last.recheck is None


def test_without_a_peering_object_only_mandatory_peering_pauses() -> None:
    now = datetime.now(UTC)
    required = policy.standing(None, identity=ME, priority=1, now=now, mandatory=True)
    optional = policy.standing(None, identity=ME, priority=1, now=now, mandatory=False)
    assert not required.active and "required" in required.reason
    assert optional.active


def test_the_operator_works_only_if_every_peering_object_lets_it() -> None:
    soon, later = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    works = policy.Standing(True, "alone")
    held = policy.Standing(False, "b works", later)
    held_sooner = policy.Standing(False, "c works", soon)
    assert policy.combined([works, works]).active
    both = policy.combined([works, held, held_sooner])
    assert not both.active and both.recheck == soon and "b works" in both.reason
    assert policy.combined([]).active


def test_malformed_records_are_skipped_and_z_times_are_read() -> None:
    status: dict[str, Any] = {
        "junk": "not a record",
        "bad": {"priority": "high"},
        "z": {"priority": 5, "lifetime": 10, "lastseen": "2026-01-01T00:00:00Z"},
    }
    (only,) = policy.records(status)
    assert only.identity == "z" and only.priority == 5
    assert only.deadline == datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
