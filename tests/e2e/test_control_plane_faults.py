"""Control-plane faults: the operator survives a restart of kube-apiserver or etcd and a
watch that silently stops delivering, without a restart of its own (issue 16).

These tests restart parts of the control plane, so they run on a devcluster of their own
(no node: the resources are suspended and start no Jobs). Load: LOAD suspended
ModelOptimizations that the operator reconciles every RESYNC seconds. "Recovered" means
what a user would see: a spec change made after the API is back is reconciled
(status.observedGeneration reaches the new generation) and a resource created after it is
picked up (the watch works again, not only the resync timer), by the same process (its
PID unchanged).

The silent watch (kopf#1276) goes through the devcluster's fault proxy, which keeps the
operator's open ModelOptimization watch connected but sends nothing more. The operator's
resync is long here, so only the watch can deliver a change: it must notice the silence
(kopf's watch inactivity timeout, set in driftwarden.settings), watch again and reconcile
the change made during the silence.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loop_support import apply_yaml
from operator_process import (
    OperatorProcess,
    example_uris,
    get_json,
    mo_manifest,
    report_timing,
    wait_for,
)

from devcluster.controlplane import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
pytest_plugins = ["operator_fixtures"]

LOAD = 30
RESYNC = 2.0
RECOVERY_LIMIT = 30.0  # seconds from "the API answers again" to "a new change is reconciled"
DOWN_FOR = 10.0  # how long the component stays down


@pytest.fixture(scope="module")
def devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster of this module's own: its apiserver and etcd get restarted."""
    cluster = Cluster(tmp_path_factory.mktemp("control-plane-faults") / "state")
    cluster.up(node=False, dns=False)
    try:
        yield cluster
    finally:
        cluster.down()


def suspended(name: str, namespace: str, job_example: Path, artifacts: Path) -> str:
    uris = example_uris(job_example)
    return mo_manifest(name, namespace, uris, f"file://{artifacts}", run_request=None, suspend=True)


def load(devcluster: Cluster, namespace: str, job_example: Path, artifacts: Path) -> None:
    manifests = "---\n".join(
        suspended(f"load-{i}", namespace, job_example, artifacts) for i in range(LOAD)
    )
    apply_yaml(devcluster, namespace, manifests)


def reconciled(devcluster: Cluster, namespace: str, name: str) -> Any:
    """The resource's current generation has been reconciled."""

    def check() -> bool:
        found = devcluster.kubectl("get", "mo", name, "-n", namespace, "-o", "json", check=False)
        if found.returncode != 0:
            return False
        body = json.loads(found.stdout)
        status = body.get("status") or {}
        return status.get("observedGeneration") == body["metadata"]["generation"]

    return check


def all_settled(devcluster: Cluster, namespace: str) -> Any:
    def check() -> bool:
        items = get_json(devcluster, "mo", "-n", namespace)["items"]
        return len(items) >= LOAD and all(
            (i.get("status") or {}).get("observedGeneration") == i["metadata"]["generation"]
            for i in items
        )

    return check


def change(devcluster: Cluster, namespace: str, name: str, request: str) -> None:
    patch = {"spec": {"runRequest": request}}  # suspended: recorded, no run starts
    devcluster.kubectl(
        "patch", "mo", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch)
    )


def start(devcluster: Cluster, namespace: str, operators: list[OperatorProcess], log: Path,
          kubeconfig: Path | None = None, resync: float = RESYNC) -> OperatorProcess:  # fmt: skip
    operator = OperatorProcess(
        kubeconfig or devcluster.kubeconfig, [namespace], log, resync_seconds=resync
    )
    operators.append(operator)
    return operator.start(ready_timeout=120)


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_the_operator_recovers_from_a_control_plane_restart_without_restarting(
    component: str,
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    load(devcluster, namespace, job_example, artifacts_dir)
    operator = start(devcluster, namespace, operators, tmp_path / "operator.log")
    wait_for("the load reconciled", all_settled(devcluster, namespace), 300, operator)
    pid = operator.pid

    # A crash, not a clean stop: SIGKILL, down for DOWN_FOR seconds, started again on the
    # same ports and data. The operator keeps reconciling LOAD resources all along.
    devcluster.restart_component(component, kill=True, down_for=DOWN_FOR)
    back = time.monotonic()
    change(devcluster, namespace, "load-0", f"after-{component}-restart")
    apply_yaml(devcluster, namespace, suspended("newcomer", namespace, job_example, artifacts_dir))
    wait_for("the change reconciled", reconciled(devcluster, namespace, "load-0"), 120, operator)
    changed = time.monotonic() - back
    wait_for(
        "the newcomer reconciled", reconciled(devcluster, namespace, "newcomer"), 120, operator
    )
    created = time.monotonic() - back
    report_timing(
        test=f"{component} restart",
        down_s=DOWN_FOR,
        load=LOAD,
        change_reconciled_s=round(changed, 1),
        new_resource_reconciled_s=round(created, 1),
    )
    assert operator.running and operator.pid == pid  # recovered by itself
    assert changed <= RECOVERY_LIMIT, changed
    assert created <= RECOVERY_LIMIT, created


def watch_requests(stats: dict[str, int], namespace: str) -> int:
    path = f"/apis/driftwarden.io/v1alpha1/namespaces/{namespace}/modeloptimizations"
    return stats.get(f"watch {path}", 0)


def test_a_silent_watch_is_detected_and_opened_again(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    proxy = devcluster.start_fault_proxy({"enabled": False})  # no faults: only the silence
    apply_yaml(devcluster, namespace, suspended("watched", namespace, job_example, artifacts_dir))
    # A resync far longer than the test: only the watch can deliver a change.
    operator = start(
        devcluster, namespace, operators, tmp_path / "operator.log", proxy.kubeconfig, 3600
    )
    wait_for("the first pass", reconciled(devcluster, namespace, "watched"), 120, operator)
    watches = watch_requests(proxy.stats(), namespace)
    assert watches >= 1

    pattern = f"/namespaces/{namespace}/modeloptimizations$"
    # The operator's watch of the resources, once it is open (kopf may be between two).
    wait_for("an open watch to silence", lambda: proxy.silence_watches(pattern), 60, operator)
    silenced = time.monotonic()
    watches = watch_requests(proxy.stats(), namespace)
    change(devcluster, namespace, "watched", "during-the-silence")
    wait_for(
        "a new watch",
        lambda: watch_requests(proxy.stats(), namespace) > watches,
        240,
        operator,
        interval=1,
    )
    rewatched = time.monotonic() - silenced
    wait_for("the change reconciled", reconciled(devcluster, namespace, "watched"), 60, operator)
    delivered = time.monotonic() - silenced
    report_timing(
        test="silent watch",
        new_watch_after_s=round(rewatched, 1),
        change_reconciled_after_s=round(delivered, 1),
    )
    assert operator.running
