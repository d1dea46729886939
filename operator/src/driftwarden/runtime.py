"""What every handler needs, built once at startup and kept in kopf's memo."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from driftwarden.config import OperatorConfig
from driftwarden.k8s import Kube
from driftwarden.metrics import OperatorMetrics
from driftwarden.services.target import TargetApi
from driftwarden.services.watches import ClaimWatch, JobWatch


class ResourceLocks:
    """One lock per resource: the create/update handler, the resync timer and Job events
    of one resource run in different threads, and must not interleave a read-decide-write
    pass (status writes are also conditional on resourceVersion; the lock just avoids
    pointless conflicts and double API calls)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    @contextmanager
    def hold(self, namespace: str, name: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault((namespace, name), threading.Lock())
        with lock:
            yield

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._locks.pop((namespace, name), None)


@dataclass
class Runtime:
    config: OperatorConfig
    kube: Kube
    metrics: OperatorMetrics
    locks: ResourceLocks = field(default_factory=ResourceLocks)
    # The target Deployment's API: the closed loop (services.loop) runs when it is set.
    target: TargetApi | None = None
    # The Jobs and claims kopf's watches follow (indexes attached by the handlers).
    jobs: JobWatch = field(default_factory=JobWatch)
    claims: ClaimWatch = field(default_factory=ClaimWatch)
