from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from driftwarden import peering
from driftwarden.config import OperatorConfig
from driftwarden.k8s import ApiError

pytestmark = pytest.mark.unit


class FakeKube:
    """Records announce_peer calls; namespaces in `missing` have no peering object."""

    def __init__(self, missing: set[str | None] = frozenset(), failing: bool = False) -> None:
        self.calls: list[tuple[str | None, str, str, dict[str, Any]]] = []
        self.missing, self.failing = missing, failing

    def announce_peer(
        self, namespace: str | None, name: str, identity: str, record: Mapping[str, Any]
    ) -> bool:
        if self.failing:
            raise ApiError(503, "unavailable")
        self.calls.append((namespace, name, identity, dict(record)))
        return namespace not in self.missing


def announce(config: OperatorConfig, kube: FakeKube) -> int:
    return peering.announce(config, "pod-a", kube)  # type: ignore[arg-type]


def test_a_namespaced_replica_announces_itself_in_each_watched_namespace() -> None:
    config = OperatorConfig.from_args(["-n", "a", "-n", "b", "--peering-priority", "42"], env={})
    kube = FakeKube()
    assert announce(config, kube) == 2
    assert [(ns, name, who) for ns, name, who, _ in kube.calls] == [
        ("a", "driftwarden", "pod-a"),
        ("b", "driftwarden", "pod-a"),
    ]
    record = kube.calls[0][3]
    # kopf's own keep-alive format: it reads priority, lifetime and lastseen.
    assert record["priority"] == 42 and record["lifetime"] == 60
    assert record["lastseen"].endswith("+00:00")


def test_cluster_wide_uses_the_cluster_peering_and_tolerates_trouble(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = OperatorConfig.from_args(["--peering"], env={})
    kube = FakeKube(missing={None})
    assert announce(config, kube) == 0
    assert [c[0] for c in kube.calls] == [None]
    assert "missing" in caplog.text
    assert announce(config, FakeKube(failing=True)) == 0  # logged, never fatal
