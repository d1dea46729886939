"""`make demo` in its reduced mode (`python -m devcluster.demo --ci`), on its own devcluster.

The demo brings up a cluster in its own state directory, so this test does not use the
session's devcluster. After it ends, the test reads the cluster itself: what the demo
printed must be what happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import demo_manifests as m
from devcluster.controlplane import Cluster

PROJECT = Path(__file__).resolve().parents[2]
# Seconds. The reduced demo takes about 2 minutes on two quiet cores, 3-4 under load; the
# demo gives each of its steps up to 7 minutes before it reports the step missing.
DEMO_TIMEOUT = 1500

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(DEMO_TIMEOUT + 300)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str, int]]:
    state = tmp_path_factory.mktemp("demo") / "state"
    cluster = Cluster(state)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "devcluster.demo", "--ci", "--state-dir", str(state)],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=DEMO_TIMEOUT,
            check=False,
        )
        output = result.stdout + result.stderr
        print(output)  # shown by pytest when an assertion below fails
        yield cluster, output, result.returncode
    finally:
        cluster.down()


def _get(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("-n", m.NAMESPACE, "get", *args, "-o", "json").stdout)


def _container(cluster: Cluster) -> dict[str, Any]:
    deployment = _get(cluster, "deployment", m.SERVING)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_demo_shows_every_step(demo: tuple[Cluster, str, int]) -> None:
    _, output, code = demo
    assert code == 0, output[-4000:]
    assert "NOT SHOWN" not in output
    for step in range(1, 13):
        assert f"==> [{step}/12]" in output
    assert "exactly the original values" in output
    assert "Tear down: .venv/bin/devcluster down --state-dir" in output


def test_the_cluster_shows_what_the_demo_said(demo: tuple[Cluster, str, int]) -> None:
    cluster, output, code = demo
    assert code == 0, output[-4000:]
    status = _get(cluster, "mo", m.MO_NAME)["status"]
    outcomes = {run["trigger"]: run["outcome"] for run in status["runs"]}
    assert outcomes.get("Latency") == "Promoted", status["runs"]
    assert outcomes.get("Drift") == "Promoted", status["runs"]
    drift_run = next(r for r in status["runs"] if r["trigger"] == "Drift")
    # The retrained model is better on the shifted holdout than the one it replaced.
    assert drift_run["candidate"]["accuracyPercent"] > drift_run["baseline"]["accuracyPercent"]
    # Promotion pointed the Deployment at the promoted model (the drift run's, unless the
    # loop promoted a newer one since).
    container = _container(cluster)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODEL_URI"] == status["promoted"]["current"]
    assert drift_run["artifactUri"] in {
        status["promoted"]["current"],
        status["promoted"]["previous"],
    }
    # The fix came back off with exactly the resources of examples/serving/deployment.yaml
    # (on a busy machine a later breach may have applied it again: then the Deployment has
    # exactly what status records, and status recorded the originals).
    manifest = yaml.safe_load((PROJECT / "examples/serving/deployment.yaml").read_text())
    (original,) = manifest["spec"]["template"]["spec"]["containers"]
    fix = status["temporaryFix"]
    (recorded,) = fix["original"]
    assert {k: recorded.get(k) for k in ("requests", "limits")} == original["resources"]
    if fix["active"]:
        (applied,) = fix["applied"]
        assert container["resources"] == {k: applied[k] for k in ("requests", "limits")}
    else:
        assert container["resources"] == original["resources"]
    events = _get(
        cluster,
        "events",
        "--field-selector",
        f"involvedObject.name={m.MO_NAME},involvedObject.kind=ModelOptimization",
    )
    reasons = {e["reason"] for e in events["items"]}
    assert {"TemporaryFixApplied", "TemporaryFixReverted", "Promoted"} <= reasons, reasons
