"""Fixtures for tests against a real devcluster.

One cluster per test session (started in a temporary state directory on free ports,
so it never collides with a `make demo` cluster), a fresh namespace per test. Set
DEVCLUSTER_REUSE=<state-dir> to run against an already running cluster instead.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.controlplane import Cluster


@pytest.fixture(scope="session")
def devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reuse = os.environ.get("DEVCLUSTER_REUSE")
    if reuse:
        yield Cluster(Path(reuse))
        return
    cluster = Cluster(tmp_path_factory.mktemp("devcluster") / "state")
    # The audit log records what ServiceAccounts (the chart-installed operator) asked for:
    # test_chart_install compares it with the chart's RBAC.
    cluster.up(audit_log=True)
    try:
        yield cluster
    finally:
        cluster.down()


def _namespace_name(node: pytest.Item) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", node.name.lower()).strip("-")[:40].strip("-")
    return f"t-{stem}-{uuid.uuid4().hex[:5]}"


def _make_namespace(
    cluster: Cluster, request: pytest.FixtureRequest, labels: dict[str, str]
) -> Iterator[str]:
    name = _namespace_name(request.node)
    cluster.kubectl("create", "namespace", name)
    if labels:
        cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(devcluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    yield from _make_namespace(devcluster, request, {})


@pytest.fixture
def restricted_namespace(devcluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace where the real PodSecurity admission enforces `restricted`."""
    yield from _make_namespace(
        devcluster,
        request,
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        },
    )
