"""driftwarden.services.standing: the peering objects followed by list + watch, and the
scheduler told when this replica starts or stops working (a fake Kube feeds the events)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from driftwarden.k8s import NotFoundError
from driftwarden.services.standing import PeeringFollower

pytestmark = pytest.mark.unit

ME = "replica-a"


def keepalive(priority: int, lifetime: int = 60, seen: datetime | None = None) -> dict[str, Any]:
    return {
        "priority": priority,
        "lifetime": lifetime,
        "lastseen": (seen or datetime.now(UTC)).isoformat(),
    }


def peering_object(status: dict[str, Any], version: str) -> dict[str, Any]:
    return {"metadata": {"name": "driftwarden", "resourceVersion": version}, "status": status}


class FakeKube:
    def __init__(self, status: dict[str, Any] | None, *, crd: bool = True) -> None:
        self.status, self.crd = status, crd
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.watched_from: list[str] = []

    def list_peering(self, namespace: str | None, name: str) -> tuple[Any, str]:
        if not self.crd:
            raise NotFoundError(404, "no such resource")
        found = None if self.status is None else peering_object(self.status, "5")
        return found, "5"

    def watch_peering(self, namespace: str | None, name: str, version: str) -> Iterator[Any]:
        self.watched_from.append(version)
        while (event := self.events.get()) is not None:
            yield event


class Told:
    def __init__(self) -> None:
        self.calls: list[tuple[bool, str]] = []
        self.changed = threading.Condition()

    def __call__(self, active: bool, reason: str) -> None:
        with self.changed:
            self.calls.append((active, reason))
            self.changed.notify_all()

    def until(self, active: bool, after: int = 0, timeout: float = 5.0) -> int:
        """Wait until a call after the first ``after`` ones said ``active``; its number."""

        def said() -> int | None:
            for number, (told, _) in enumerate(self.calls[after:], start=after + 1):
                if told is active:
                    return number
            return None

        with self.changed:
            assert self.changed.wait_for(lambda: said() is not None, timeout), self.calls
            number = said()
            assert number is not None
            return number


def follower(kube: FakeKube, told: Told, *, mandatory: bool = True) -> PeeringFollower:
    return PeeringFollower(
        kube,  # type: ignore[arg-type]
        scopes=["ns"],
        peering="driftwarden",
        identity=ME,
        priority=100,
        mandatory=mandatory,
        on_change=told,
    )


def test_the_replica_stands_by_for_a_higher_one_and_works_when_its_record_expires() -> None:
    kube, told = FakeKube({ME: keepalive(100)}), Told()
    following = follower(kube, told)
    following.start()
    try:
        working = told.until(True)
        # A replica of higher priority writes its keep-alive (lifetime 1 s).
        higher = {ME: keepalive(100), "b": keepalive(200, lifetime=1)}
        kube.events.put({"type": "MODIFIED", "object": peering_object(higher, "6")})
        standby = told.until(False, after=working)
        assert standby == working + 1 and "b" in told.calls[-1][1]
        stood_by = time.monotonic()
        # No further event: b's record expires, and the replica works again by itself.
        again = told.until(True, after=standby)
        assert 0.3 < time.monotonic() - stood_by < 3.0
        # The peering object deleted: peering is mandatory, so it stands by.
        kube.events.put({"type": "DELETED", "object": peering_object({}, "7")})
        told.until(False, after=again)
        # The server ends the watch: it is opened again from the last version seen.
        kube.events.put(None)
        deadline = time.monotonic() + 5
        while len(kube.watched_from) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert kube.watched_from == ["5", "7"]
    finally:
        following.stop()
        kube.events.put(None)


def test_an_expired_higher_record_never_pauses_and_a_live_equal_one_does() -> None:
    old = datetime.now(UTC) - timedelta(seconds=120)
    told = Told()
    following = follower(FakeKube({ME: keepalive(100), "b": keepalive(200, seen=old)}), told)
    following.start()
    try:
        told.until(True)
        assert following.standing().active
    finally:
        following.stop()
    told = Told()
    following = follower(FakeKube({"c": keepalive(100)}), told)
    following.start()
    try:
        told.until(False)
        deadline = time.monotonic() + 5  # the first judgement may come before the list
        while "same priority" not in following.standing().reason:
            assert time.monotonic() < deadline, following.standing()
            time.sleep(0.01)
        assert not following.standing().active and told.calls[-1][0] is False
    finally:
        following.stop()


@pytest.mark.parametrize("mandatory", [True, False])
def test_without_the_peering_crd_only_optional_peering_works(mandatory: bool) -> None:
    told = Told()
    following = follower(FakeKube(None, crd=False), told, mandatory=mandatory)
    following.start()
    try:
        told.until(not mandatory)
        assert following.standing().active is (not mandatory)
    finally:
        following.stop()
