"""Gates and Manual promotion on the devcluster, as a user sees them.

- A candidate that fails a gate is not promoted; `kubectl describe mo` says which gate
  failed and by how much, and the serving Deployment is never written.
- With promotion Manual a candidate that passes waits in status.candidate; approving a run
  that did not pass is refused with a reason; approving the candidate's run (what a GitOps
  pipeline commits) promotes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from loop_support import (
    apply_yaml,
    condition,
    container_of,
    deployment,
    describe,
    event_reasons,
    loop_resource,
    metric,
    serving_deployment,
    start_loop_operator,
    wait_status,
)
from operator_process import OperatorProcess, scratch_dir

from devcluster.controlplane import Cluster

pytestmark = pytest.mark.e2e
pytest_plugins = ["operator_fixtures"]

SERVER = "gated-server"


def manifest(name: str, example: Path, artifacts: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """A resource on the example model and data, serving SERVER, with its first run asked for."""
    return loop_resource(
        name,
        model=f"file://{example}/model",
        data=example / "data",
        artifacts=artifacts,
        target=SERVER,
        spec={
            "runRequest": "first",
            "monitoring": {"latency": {"batchSizes": [1, 32], "warmup": 2, "iterations": 20}},
            **spec,
        },
    )


def model_env(devcluster: Cluster, namespace: str) -> str:
    env = container_of(deployment(devcluster, namespace, SERVER))["env"]
    return str({e["name"]: e.get("value") for e in env}["MODEL_URI"])


def managers(devcluster: Cluster, namespace: str) -> set[str]:
    body: dict[str, Any] = deployment(devcluster, namespace, SERVER)
    return {m["manager"] for m in body["metadata"]["managedFields"]}


def test_a_candidate_that_fails_a_gate_is_not_promoted_and_the_reason_is_visible(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    tmp_path: Path,
) -> None:
    model = f"file://{job_example}/model"
    apply_yaml(devcluster, namespace, serving_deployment(model, name=SERVER))
    apply_yaml(
        devcluster,
        namespace,
        manifest(
            "gated",
            job_example,
            scratch_dir("loop-gates-artifacts-"),
            {
                "pipeline": [{"quantize": {"mode": "int8"}}],
                "gates": {"maxAccuracyDropPercent": 1, "minSpeedupPercent": 1000},
            },
        ),
    )
    operator = start_loop_operator(devcluster, namespace, operators, tmp_path)

    status = wait_status(
        "the run's verdict",
        devcluster,
        namespace,
        "gated",
        lambda s: any(r.get("outcome") for r in s.get("runs") or []),
        operator,
    )
    (run,) = status["runs"]
    assert run["trigger"] == "Manual" and run["outcome"] == "Rejected"
    speed = {g["name"]: g for g in run["gates"]}["Speedup"]
    assert speed["passed"] is False and speed["limit"] == 1000
    assert speed["message"].startswith(
        "Gate Speedup failed (applies because the run was started by Manual and "
        "gates.minSpeedupPercent is set): at batch 32 the candidate is "
    )
    assert "even its upper bound is under the required 11.00x (+1000%)" in speed["message"]
    assert speed["batchSize"] == 32 and speed["low"] <= speed["high"] < 11
    assert speed["rounds"] >= 20
    assert [s["batchSize"] for s in run["speed"]] == [1, 32]  # every measured batch size
    promoted = condition(status, "Promoted")
    assert promoted["status"] == "False" and promoted["reason"] == "PromotionRejected"
    assert speed["message"] in promoted["message"]
    assert "candidate" not in status and "promoted" not in status

    # The model in use stays, and DriftWarden never wrote the Deployment.
    assert model_env(devcluster, namespace) == model
    assert "driftwarden" not in managers(devcluster, namespace)

    text = describe(devcluster, namespace, "gated")
    assert "PromotionRejected" in text and "Gate Speedup failed" in text
    assert "PromotionRejected" in event_reasons(devcluster, namespace, "gated")
    labels = {"namespace": namespace, "name": "gated"}
    exposition = operator.metrics()
    assert (
        metric(exposition, "driftwarden_optimization_runs_total", {**labels, "outcome": "rejected"})
        == 1
    )
    assert (
        metric(exposition, "driftwarden_optimization_runs_total", {**labels, "outcome": "promoted"})
        == 0
    )


def test_manual_promotion_waits_for_an_approved_run(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    tmp_path: Path,
) -> None:
    model = f"file://{job_example}/model"
    apply_yaml(devcluster, namespace, serving_deployment(model, name=SERVER))
    apply_yaml(
        devcluster,
        namespace,
        manifest(
            "manual",
            job_example,
            scratch_dir("loop-manual-artifacts-"),
            {"pipeline": [{"retrain": {"epochs": 5}}], "promotion": {"mode": "Manual"}},
        ),
    )
    operator = start_loop_operator(devcluster, namespace, operators, tmp_path)

    waiting = wait_status(
        "a candidate awaiting approval",
        devcluster,
        namespace,
        "manual",
        lambda s: bool(s.get("candidate")),
        operator,
    )
    (run,) = waiting["runs"]
    assert run["outcome"] == "Succeeded"
    candidate = waiting["candidate"]
    assert candidate["runId"] == run["id"] and candidate["artifactUri"] == run["artifactUri"]
    assert condition(waiting, "Promoted")["reason"] == "AwaitingApproval"
    assert f"approvedRunId: {run['id']}" in condition(waiting, "Promoted")["message"]
    assert waiting["phase"] == "AwaitingPromotion"
    assert model_env(devcluster, namespace) == model

    def approve(run_id: str) -> None:
        patch = {"spec": {"promotion": {"mode": "Manual", "approvedRunId": run_id}}}
        devcluster.kubectl(
            "patch", "mo", "manual", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
        )

    # A run id that names no passed candidate is refused with a reason.
    approve("r9-000000")
    refused = wait_status(
        "the refusal of a bad approval",
        devcluster,
        namespace,
        "manual",
        lambda s: condition(s, "Promoted").get("reason") == "ApprovalInvalid",
        operator,
    )
    assert "r9-000000" in condition(refused, "Promoted")["message"]
    assert model_env(devcluster, namespace) == model

    # What a GitOps pipeline commits: the candidate's run id.
    approve(run["id"])
    done = wait_status(
        "the approved promotion",
        devcluster,
        namespace,
        "manual",
        lambda s: bool(s.get("promoted")),
        operator,
    )
    assert done["promoted"]["current"] == candidate["artifactUri"]
    assert done["promoted"]["runId"] == run["id"]
    assert "candidate" not in done
    assert done["runs"][0]["outcome"] == "Promoted"
    assert condition(done, "Promoted")["status"] == "True"
    assert model_env(devcluster, namespace) == candidate["artifactUri"]
    assert "driftwarden" in managers(devcluster, namespace)
