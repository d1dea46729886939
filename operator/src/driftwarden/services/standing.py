"""Whether this replica works or stands by, followed from the peering objects themselves.

kopf pauses its own handlers on a replica that sees a live replica of higher priority in
the peering object, but it offers no supported way to learn that it paused, and the
reconcile passes run in driftwarden.scheduler, not in kopf. So this follows the same
peering objects (one thread per object: list, then watch from that resourceVersion, again
from the last one seen when the server ends the watch; a silent stream is given up after
k8s.WATCH_INACTIVITY) and judges them by kopf's own rules
(driftwarden.policy.standing, checked against kopf's code by its unit tests). A decider
thread tells ``on_change`` each time the answer changes, including when a record that
held this replica back expires without any event (``Standing.recheck``).

While the peering object cannot be read (API trouble) the last answer stands, as kopf's
own pause does. Before the first read, and without the object or its CRD, the answer is
kopf's: standing by when peering is mandatory, working when it is only auto-detected.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from driftwarden.k8s import ApiError, Kube, NotFoundError
from driftwarden.policy import standing as policy

_log = logging.getLogger(__name__)

RETRY_BACKOFF: Final = (1.0, 2.0, 5.0, 10.0, 30.0)
# Without the peering CRD (auto-detected peering): look again this often.
ABSENT_CRD_POLL: Final = 30.0

Scope = str | None  # a namespace (KopfPeering) or None (ClusterKopfPeering)
OnChange = Callable[[bool, str], None]


class PeeringFollower:
    def __init__(
        self,
        kube: Kube,
        *,
        scopes: Sequence[Scope],
        peering: str,
        identity: str,
        priority: int,
        mandatory: bool,
        on_change: OnChange,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._kube = kube
        self._scopes = list(dict.fromkeys(scopes))
        self._peering = peering
        self._identity = identity
        self._priority = priority
        self._mandatory = mandatory
        self._on_change = on_change
        self._clock = clock
        self._cond = threading.Condition()
        self._status: dict[Scope, Mapping[str, Any] | None] = dict.fromkeys(self._scopes)
        self._changed = True
        self._stopped = threading.Event()
        self._threads = [
            threading.Thread(target=self._follow, args=(scope,), name="peering", daemon=True)
            for scope in self._scopes
        ]
        self._threads.append(threading.Thread(target=self._decide, name="standing", daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopped.set()
        with self._cond:
            self._cond.notify_all()

    def standing(self) -> policy.Standing:
        with self._cond:
            return self._judge()

    # -- what the threads do ---------------------------------------------------------

    def _update(self, scope: Scope, peering_object: Mapping[str, Any] | None) -> None:
        status = None if peering_object is None else (peering_object.get("status") or {})
        with self._cond:
            self._status[scope] = status
            self._changed = True
            self._cond.notify_all()

    def _judge(self) -> policy.Standing:
        now = self._clock()
        return policy.combined(
            policy.standing(
                None if status is None else policy.records(status),
                identity=self._identity,
                priority=self._priority,
                now=now,
                mandatory=self._mandatory,
            )
            for status in self._status.values()
        )

    def _decide(self) -> None:
        told: bool | None = None
        while not self._stopped.is_set():
            with self._cond:
                self._changed = False
                judged = self._judge()
            if judged.active is not told:
                told = judged.active
                self._on_change(judged.active, judged.reason)
            wait = None
            if judged.recheck is not None:
                wait = max((judged.recheck - self._clock()).total_seconds(), 0.0) + 0.05
            with self._cond:
                if not self._changed and not self._stopped.is_set():
                    self._cond.wait(wait)

    def _follow(self, scope: Scope) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                found, version = self._kube.list_peering(scope, self._peering)
                self._update(scope, found)
                failures = 0
                while not self._stopped.is_set():
                    version = self._watch(scope, version)
            except NotFoundError:  # no peering CRD
                self._update(scope, None)
                self._stopped.wait(ABSENT_CRD_POLL)
            except (ApiError, ValueError, KeyError) as error:
                delay = RETRY_BACKOFF[min(failures, len(RETRY_BACKOFF) - 1)]
                failures += 1
                where = scope or "the cluster"
                _log.info(
                    "peering %s in %s: %s; again in %.0f s", self._peering, where, error, delay
                )
                self._stopped.wait(delay)

    def _watch(self, scope: Scope, version: str) -> str:
        """One watch from ``version``; the version to go on from. ApiError: list again."""
        for event in self._kube.watch_peering(scope, self._peering, version):
            kind, body = event.get("type"), event.get("object") or {}
            if kind == "ERROR":  # 410 Gone: the version is too old
                raise ApiError(int(body.get("code") or 0), str(body.get("message")))
            version = str(body.get("metadata", {}).get("resourceVersion") or version)
            if kind == "DELETED":
                self._update(scope, None)
            elif kind in ("ADDED", "MODIFIED"):
                self._update(scope, body)
            if self._stopped.is_set():
                break
        return version
