"""What the operator follows from kopf's watches instead of asking the API in every pass.

- ``JobWatch``: the Jobs labelled managed-by=driftwarden, by owning resource, from a kopf
  index (the watch the operator keeps anyway for Job events). A pass reads its Jobs from
  here instead of a LIST. The index may lag a Job the pass itself just created; that is
  harmless (the create is idempotent: 409 -> adopt), and a Job that status names but the
  index does not show is looked up by name before the run is called deleted.
- ``ClaimWatch``: which PersistentVolumeClaims exist, by namespace, from a kopf index, and
  which resources wait for which claim, so that the claim's creation wakes them at once
  instead of a poll.

Without an index attached (unit tests, or before kopf passed one) both fall back to API
calls through driftwarden.k8s.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from driftwarden.k8s import Kube

Json = dict[str, Any]


class JobWatch:
    def __init__(self) -> None:
        self._index: Mapping[Any, Iterable[Json]] | None = None

    def attach(self, index: Mapping[Any, Iterable[Json]]) -> None:
        self._index = index

    def owned(self, namespace: str, name: str) -> list[Json] | None:
        """The managed Jobs whose owner is this resource, or None without an index."""
        if self._index is None:
            return None
        return [dict(job) for job in self._index.get((namespace, name), ())]


class ClaimWatch:
    def __init__(self) -> None:
        self._index: Mapping[str, Iterable[str]] | None = None
        self._guard = threading.Lock()
        self._waiters: dict[tuple[str, str], set[str]] = {}

    def attach(self, index: Mapping[str, Iterable[str]]) -> None:
        self._index = index

    def exists(self, kube: Kube, namespace: str, claim: str) -> bool:
        if self._index is None:
            return kube.get_pvc(namespace, claim) is not None
        return claim in set(self._index.get(namespace, ()))

    def wait_for(self, namespace: str, name: str, claims: Iterable[str]) -> None:
        with self._guard:
            for claim in claims:
                self._waiters.setdefault((namespace, claim), set()).add(name)

    def appeared(self, namespace: str, claim: str) -> set[str]:
        """The resources that waited for this claim (each is told once)."""
        with self._guard:
            return self._waiters.pop((namespace, claim), set())

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            for key in [k for k, names in self._waiters.items() if k[0] == namespace]:
                self._waiters[key].discard(name)
                if not self._waiters[key]:
                    del self._waiters[key]
