"""The devcluster's fault-injecting proxy (devcluster.faultproxy) in front of kube-apiserver:
requests pass as the caller, watches stream, and a seeded share of requests gets the
configured faults, counted on its control port."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from devcluster.controlplane import Cluster

pytestmark = pytest.mark.e2e


def kubectl(cluster: Cluster, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_requests_pass_as_the_caller_and_watches_stream(
    devcluster: Cluster, namespace: str
) -> None:
    proxy = devcluster.start_fault_proxy({"seed": 1})
    who = kubectl(devcluster, proxy.kubeconfig, "auth", "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    user = json.loads(who.stdout)["status"]["userInfo"]
    assert user["username"] == "admin" and "system:masters" in user["groups"]
    created = kubectl(
        devcluster,
        proxy.kubeconfig,
        "-n",
        namespace,
        "create",
        "configmap",
        "through",
        "--from-literal=a=b",
    )
    assert created.returncode == 0, created.stderr
    watch = subprocess.Popen(
        [
            str(devcluster.bin_dir / "kubectl"),
            "--kubeconfig",
            str(proxy.kubeconfig),
            "-n",
            namespace,
            "get",
            "configmaps",
            "--watch-only",
            "-o",
            "name",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)
        devcluster.kubectl("-n", namespace, "create", "configmap", "seen-by-watch")
        assert watch.stdout is not None
        assert watch.stdout.readline().strip() == "configmap/seen-by-watch"
    finally:
        watch.kill()
        watch.wait(10)
    assert proxy.stats().get("faults", 0) == 0


def test_a_seeded_share_of_requests_gets_faults_and_they_are_counted(
    devcluster: Cluster, namespace: str
) -> None:
    proxy = devcluster.start_fault_proxy(
        {
            "seed": 7,
            "conflict": 0.2,
            "throttle": 0.1,
            "error": 0.2,
            "reset": 0.1,
            "methods": ["POST"],
            "path_pattern": "/configmaps",
        }
    )
    outcomes = []
    for i in range(40):
        got = kubectl(
            devcluster,
            proxy.kubeconfig,
            "-n",
            namespace,
            "create",
            "configmap",
            f"c{i}",
            "--request-timeout=10s",
        )
        outcomes.append(got.returncode)
    counts = proxy.stats()
    # kubectl retries a 429 and some errors itself, so count what the proxy injected.
    assert counts["faults"] >= 10, counts
    assert {"conflict", "throttle"} <= set(counts), counts
    assert any(code != 0 for code in outcomes)
    # Reads were not matched: they all pass.
    listed = kubectl(
        devcluster, proxy.kubeconfig, "-n", namespace, "get", "configmaps", "-o", "name"
    )
    assert listed.returncode == 0, listed.stderr
    # Switched off at run time, everything passes.
    proxy.configure(enabled=False)
    for i in range(5):
        got = kubectl(devcluster, proxy.kubeconfig, "-n", namespace, "create", "configmap", f"d{i}")
        assert got.returncode == 0, got.stderr
    assert proxy.stats()["faults"] == counts["faults"]


def test_conflicts_are_injected_only_where_the_apiserver_could_answer_one(
    devcluster: Cluster, namespace: str
) -> None:
    # A real apiserver never answers a read with 409 (kopf's API discovery exits the
    # operator on one: the long chaos run), nor a merge patch without a resourceVersion,
    # which it retries itself (a 409 on kopf's annotation patch ends kopf's handling of
    # the object until its next watch event: a deletion that never finished in CI).
    devcluster.kubectl("-n", namespace, "create", "configmap", "kept")
    proxy = devcluster.start_fault_proxy({"seed": 3, "conflict": 1.0})
    listed = kubectl(devcluster, proxy.kubeconfig, "-n", namespace, "get", "configmaps")
    assert listed.returncode == 0, listed.stderr
    annotated = kubectl(
        devcluster, proxy.kubeconfig, "-n", namespace, "annotate", "configmap", "kept", "a=1"
    )
    assert annotated.returncode == 0, annotated.stderr
    version = devcluster.kubectl(
        "-n", namespace, "get", "configmap", "kept", "-o", "jsonpath={.metadata.resourceVersion}"
    ).stdout
    preconditioned = kubectl(
        devcluster,
        proxy.kubeconfig,
        "-n",
        namespace,
        "annotate",
        "configmap",
        "kept",
        "b=1",
        f"--resource-version={version}",
    )
    assert "injected by faultproxy" in preconditioned.stderr, preconditioned.stderr
    created = kubectl(
        devcluster, proxy.kubeconfig, "-n", namespace, "create", "configmap", "refused"
    )
    assert created.returncode != 0
    assert "injected by faultproxy" in created.stderr, created.stderr
    counts = proxy.stats()
    assert counts["conflict"] == 2 and counts["faults"] == counts["conflict"], counts
