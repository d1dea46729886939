"""Many ModelOptimizations on one operator (issue 16): they settle quickly, and an idle
operator makes few API requests.

200 resources whose PVCs do not exist (tests/e2e/scale_support.py; bench/scale.py runs the
same scenario with 1000 and records the figures). With a pass per resource every few
seconds - the old fixed resync - the idle operator made tens of requests per second here;
now a resource is looked at again when something it depends on changes (its Jobs, a PVC
being created, a spec change) or when the policies say a check is due, and otherwise only
by the safety resync, minutes apart.

SCALE_N, SCALE_IDLE_AFTER, SCALE_IDLE_WINDOW change the scenario (bench/scale.py);
SCALE_DIRECT=1 has the operator talk to the apiserver directly, not through the counting
proxy (bench/scale.py does so unless --via-proxy: a cluster of its own);
SCALE_REPORT names a file for the JSON report; SCALE_OPERATOR_SRC runs older operator
sources (put first on the operator process's path).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from operator_process import OperatorProcess, mo_status, wait_for
from scale_support import manifests, run_scale

from devcluster.controlplane import Cluster

pytestmark = pytest.mark.e2e
pytest_plugins = ["operator_fixtures"]

DEFAULT_COUNT = 200
# Generous against the goals (1000 settle in <= 60 s, <= 10 requests/s at idle): this
# machine is shared, and the numbers must hold with a core kept busy.
SETTLE_SECONDS_PER_100 = 60.0
IDLE_OPERATOR_REQUESTS_PER_SECOND = 2.0


def test_many_resources_settle_and_idle_cheaply(
    devcluster: Cluster, mo_crd: None, namespace: str, tmp_path: Path
) -> None:
    count = int(os.environ.get("SCALE_N", DEFAULT_COUNT))
    report = run_scale(
        devcluster,
        namespace,
        count,
        tmp_path,
        idle_after=float(os.environ.get("SCALE_IDLE_AFTER", "10")),
        idle_window=float(os.environ.get("SCALE_IDLE_WINDOW", "60")),
        operator_src=os.environ.get("SCALE_OPERATOR_SRC"),
        via_proxy=os.environ.get("SCALE_DIRECT") != "1",
    )
    target = os.environ.get("SCALE_REPORT")
    if target:
        Path(target).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    assert report["settle_seconds"] <= SETTLE_SECONDS_PER_100 * count / 100, report
    # The operator's requests (counted by the proxy it talks through): in the minute after
    # settling nothing changes, and the safety resync is minutes away for every resource.
    assert report["idle_operator_requests_per_second"] <= IDLE_OPERATOR_REQUESTS_PER_SECOND, report
    if report["idle_operator_requests_counted_by"] == "proxy":  # the proxy saw the settling
        assert report["operator_requests_total"] >= count, report


def test_kubectl_get_shows_rounded_measurements_in_narrow_columns(
    devcluster: Cluster, mo_crd: None, namespace: str, tmp_path: Path
) -> None:
    """`kubectl get mo` prints the last evaluation rounded (it printed 0.018390037946466986
    and 23.3474), and `kubectl get mo -A` stays one short line per resource.

    The evaluation is written into status by hand (as the operator records one; the real
    evaluations are in tests/e2e/test_loop_*.py); a spec change makes the operator pass."""
    devcluster.kubectl("apply", "-f", "-", input=manifests(namespace, 3))
    name = "scale-00001"
    operator = OperatorProcess(
        devcluster.kubeconfig, [namespace], tmp_path / "operator.log", resync_seconds=None
    )
    with operator.start():
        wait_for(
            "the resource's first pass",
            lambda: mo_status(devcluster, namespace, name).get("observedGeneration"),
            120,
            operator,
        )
        evaluation = {
            "id": "e1-manual",
            "time": "2026-01-01T00:00:00Z",
            "driftScore": 0.018390037946466986,
            "latency": {"p50Ms": 11.0, "p95Ms": 23.3474, "p99Ms": 40.0},
        }
        devcluster.kubectl(
            "patch",
            "mo",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"lastEvaluation": evaluation}}),
        )
        devcluster.kubectl(
            "patch", "mo", name, "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
        )
        wait_for(
            "status.display",
            lambda: mo_status(devcluster, namespace, name).get("display"),
            120,
            operator,
        )
    table = devcluster.kubectl("get", "mo", "-n", namespace).stdout.splitlines()
    header = table[0].split()
    assert header[:5] == ["NAME", "PHASE", "READY", "DRIFT", "P95"], table
    row = next(line.split() for line in table if line.startswith(name))
    assert row[3:5] == ["0.018", "23.3ms"], table
    assert "0.01839" not in "\n".join(table) and "23.347" not in "\n".join(table)
    wide = devcluster.kubectl("get", "mo", "-A").stdout.splitlines()
    assert wide[0].split()[:2] == ["NAMESPACE", "NAME"]
    # The namespace names of these tests are long (~50 characters); the rest stays short.
    assert all(len(line) <= 140 for line in wide), wide
    reasons = devcluster.kubectl("get", "mo", "-n", namespace, "-o", "wide").stdout
    assert "PVCNotFound" in reasons, reasons
