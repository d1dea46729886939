"""A too-slow model: temporary fix, prune, promotion, and the exact revert of the fix.

The serving Deployment runs a wide CNN. The user looks at its measured p95 and sets an SLO
at half of it, with a temporary fix. The next evaluation breaches the SLO: DriftWarden
raises the serving container's requests and limits (the Pods roll with them) and starts a
prune run; the pruned candidate passes the speed gate and is promoted; the first
evaluation of it meets the SLO, and the fix is reverted to exactly the original resources,
which DriftWarden then no longer owns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loop_support import (
    always_breached,
    apply_yaml,
    condition,
    container_of,
    deployment,
    describe,
    evaluated_since,
    event_reasons,
    events_of,
    loop_resource,
    metric,
    serving_deployment,
    serving_pods,
    slow_model_and_data,
    start_loop_operator,
    wait_status,
)
from operator_process import OperatorProcess, wait_for

from devcluster.controlplane import Cluster

pytestmark = pytest.mark.e2e
pytest_plugins = ["operator_fixtures"]

NAME = "slow"
SERVER = "slow-server"
# examples/serving/deployment.yaml's resources, and what the fix below makes of them.
ORIGINAL = {
    "requests": {"cpu": "500m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}
RAISED = {
    "requests": {"cpu": "1", "memory": "384Mi"},
    "limits": {"cpu": "1500m", "memory": "768Mi"},  # cpu: 2 capped by maxCpu
}


def test_slow_model_gets_a_temporary_fix_then_a_faster_model_and_the_fix_is_reverted(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    tmp_path: Path,
) -> None:
    root, data = slow_model_and_data()
    model = f"file://{root}/model"
    apply_yaml(devcluster, namespace, serving_deployment(model, name=SERVER))
    assert container_of(deployment(devcluster, namespace, SERVER))["resources"] == ORIGINAL
    apply_yaml(
        devcluster,
        namespace,
        loop_resource(
            NAME,
            model=model,
            data=data,
            artifacts=root / "artifacts",
            target=SERVER,
            data_format="npz",
            spec={
                "pipeline": [
                    {"prune": {"method": "structured", "amountPercent": 80, "fineTuneEpochs": 2}}
                ],
                "gates": {"maxAccuracyDropPercent": 1, "minSpeedupPercent": 100},
                "triggers": {"cooldown": "10s"},
                "monitoring": {
                    "interval": "10s",
                    "latency": {"batchSizes": [32], "warmup": 3, "iterations": 30},
                },
            },
        ),
    )
    operator = start_loop_operator(devcluster, namespace, operators, tmp_path)

    # 1. The user reads the measured p95 and sets the SLO at half of it, with a fix.
    first = wait_status(
        "a first latency measurement",
        devcluster,
        namespace,
        NAME,
        lambda s: ((s.get("lastEvaluation") or {}).get("latency") or {}).get("p95Ms"),
        operator,
    )
    measured = first["lastEvaluation"]["latency"]["p95Ms"]
    slo = max(1, int(measured / 2))
    patch = {
        "spec": {
            "triggers": {"latency": {"p95Ms": slo, "batchSize": 32}},
            "temporaryFix": {
                "enabled": True,
                "cpuPercent": 200,
                "memoryPercent": 150,
                "maxCpu": "1500m",
                "expiresAfter": "30m",
            },
        }
    }
    devcluster.kubectl(
        "patch", "mo", NAME, "-n", namespace, "--type=merge", "-p", json.dumps(patch)
    )

    # 2. The breach: the fix is applied and a latency run starts.
    fixed = wait_status(
        "the temporary fix",
        devcluster,
        namespace,
        NAME,
        lambda s: (s.get("temporaryFix") or {}).get("active") is True,
        operator,
    )
    assert condition(fixed, "LatencyWithinSLO")["status"] == "False"
    assert condition(fixed, "TemporaryFixActive")["reason"] == "FixApplied"
    record = fixed["temporaryFix"]
    assert record["original"] == [{"container": "server", **ORIGINAL}]
    assert record["applied"] == [{"container": "server", **RAISED}]
    raised = deployment(devcluster, namespace, SERVER)
    assert container_of(raised)["resources"] == RAISED
    assert "driftwarden.io/temporary-fix-expires" in raised["metadata"]["annotations"]
    assert (
        metric(
            operator.metrics(),
            "driftwarden_temporary_fix_active",
            {"namespace": namespace, "name": NAME},
        )
        == 1
    )

    # The Pods roll with the raised resources.
    def rolled() -> bool:
        pods = serving_pods(devcluster, namespace, SERVER)
        return len(pods) == 1 and container_of(pods[0])["resources"] == RAISED

    wait_for("a serving Pod with the raised resources", rolled, 180, operator, interval=2)

    # 3. The prune run's candidate passes the speed gate and is promoted.
    promoted = wait_status(
        "the promotion of the pruned model",
        devcluster,
        namespace,
        NAME,
        lambda s: bool(s.get("promoted")),
        operator,
        timeout=600,
    )
    (run,) = promoted["runs"]
    assert run["trigger"] == "Latency" and run["outcome"] == "Promoted"
    speedup = {g["name"]: g for g in run["gates"]}["Speedup"]
    assert speedup["passed"] and speedup["value"] >= 100
    new_model = run["artifactUri"]
    # The promotion kept the fix in the same apply: resources still raised.
    both = deployment(devcluster, namespace, SERVER)
    assert container_of(both)["resources"] == RAISED
    assert {e["name"]: e.get("value") for e in container_of(both)["env"]}["MODEL_URI"] == new_model

    # 4. The promoted model meets the SLO: the fix is reverted, exactly.
    reverted = wait_status(
        "the revert of the temporary fix",
        devcluster,
        namespace,
        NAME,
        lambda s: (s.get("temporaryFix") or {}).get("active") is False,
        operator,
        timeout=300,
    )
    assert reverted["lastEvaluation"]["modelUri"] == new_model
    assert reverted["lastEvaluation"]["latency"]["p95Ms"] <= slo
    assert condition(reverted, "TemporaryFixActive")["reason"] == "FixReverted"
    assert condition(reverted, "LatencyWithinSLO")["status"] == "True"
    back = deployment(devcluster, namespace, SERVER)
    assert container_of(back)["resources"] == ORIGINAL
    assert "driftwarden.io/temporary-fix-expires" not in back["metadata"]["annotations"]
    ours = [m for m in back["metadata"]["managedFields"] if m["manager"] == "driftwarden"]
    assert "f:resources" not in json.dumps([m["fieldsV1"] for m in ours])
    assert {e["name"]: e.get("value") for e in container_of(back)["env"]}["MODEL_URI"] == new_model
    assert (
        metric(
            operator.metrics(),
            "driftwarden_temporary_fix_active",
            {"namespace": namespace, "name": NAME},
        )
        == 0
    )

    reasons = event_reasons(devcluster, namespace, NAME)
    for reason in (
        "SLOBreached",
        "TemporaryFixApplied",
        "RunStarted",
        "Promoted",
        "TemporaryFixReverted",
    ):
        assert reason in reasons, (reason, reasons, describe(devcluster, namespace, NAME))


def test_an_expired_fix_is_reverted_and_not_applied_again_during_the_same_breach(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    tmp_path: Path,
) -> None:
    root, data = slow_model_and_data()
    model = f"file://{root}/model"
    apply_yaml(devcluster, namespace, serving_deployment(model, name=SERVER))
    fix = {"cpuPercent": 200, "memoryPercent": 100, "expiresAfter": "20s"}
    apply_yaml(
        devcluster,
        namespace,
        always_breached(
            NAME, root, data, SERVER, fix=fix, cooldown=None, gates={"minSpeedupPercent": 1000}
        ),
    )
    operator = start_loop_operator(devcluster, namespace, operators, tmp_path)
    applied = wait_status(
        "the temporary fix",
        devcluster,
        namespace,
        NAME,
        lambda s: (s.get("temporaryFix") or {}).get("active") is True,
        operator,
    )
    cpu_only = {"requests": {"cpu": "1"}, "limits": {"cpu": "2"}}
    assert applied["temporaryFix"]["applied"] == [{"container": "server", **cpu_only}]
    assert container_of(deployment(devcluster, namespace, SERVER))["resources"] == {
        "requests": {"cpu": "1", "memory": "256Mi"},
        "limits": {"cpu": "2", "memory": "512Mi"},
    }

    expired = wait_status(
        "the expiry",
        devcluster,
        namespace,
        NAME,
        lambda s: condition(s, "TemporaryFixActive").get("reason") == "FixExpired",
        operator,
    )
    assert expired["temporaryFix"]["active"] is False
    assert container_of(deployment(devcluster, namespace, SERVER))["resources"] == ORIGINAL
    # The breach goes on (the run's candidate cannot pass a 11x speed gate), yet the fix
    # stays off: it expired during this breach.
    later = wait_status(
        "two evaluations started after it finished",
        devcluster,
        namespace,
        NAME,
        lambda s: evaluated_since(s, expired, 2),
        operator,
        # Each evaluation measures the wide CNN; under load one takes minutes.
        timeout=600,
    )
    assert condition(later, "LatencyWithinSLO")["status"] == "False"
    assert condition(later, "TemporaryFixActive")["reason"] == "FixExpired"
    assert later["temporaryFix"]["active"] is False
    assert container_of(deployment(devcluster, namespace, SERVER))["resources"] == ORIGINAL
    reasons = event_reasons(devcluster, namespace, NAME)
    assert reasons.count("TemporaryFixApplied") == 1 and reasons.count("TemporaryFixReverted") == 1


def test_one_breach_starts_nothing_when_the_trigger_needs_two_in_a_row(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    tmp_path: Path,
) -> None:
    root, data = slow_model_and_data()
    apply_yaml(devcluster, namespace, serving_deployment(f"file://{root}/model", name=SERVER))
    fix = {"cpuPercent": 200, "memoryPercent": 100}
    apply_yaml(
        devcluster, namespace, always_breached(NAME, root, data, SERVER, fix=fix, breaches=2)
    )
    operator = start_loop_operator(devcluster, namespace, operators, tmp_path)
    applied = wait_status(
        "the temporary fix",
        devcluster,
        namespace,
        NAME,
        lambda s: (s.get("temporaryFix") or {}).get("active") is True,
        operator,
    )
    assert applied["consecutiveLatencyBreaches"] >= 2
    assert applied["evaluationCount"] >= 2
    events = events_of(devcluster, namespace, NAME)
    said = dict(reversed(events))  # the first message of each reason
    # The first breach is reported, and says that it starts nothing yet.
    assert "1 evaluation(s) in a row over it; 2 start a run" in said["SLOBreached"], events
    # The fix and the run came with the second breach in a row.
    assert "in 2 evaluations in a row." in said["TemporaryFixApplied"], events
    assert "in 2 evaluations in a row (required: 2)" in said["RunStarted"], events
    reasons = [reason for reason, _ in events]
    assert reasons.count("TemporaryFixApplied") == 1 and reasons.count("RunStarted") == 1


def test_deleting_the_resource_reverts_the_fix_and_hands_the_target_back(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    tmp_path: Path,
) -> None:
    root, data = slow_model_and_data()
    model = f"file://{root}/model"
    apply_yaml(devcluster, namespace, serving_deployment(model, name=SERVER))
    fix = {"cpuPercent": 200, "memoryPercent": 150, "expiresAfter": "1h"}
    apply_yaml(
        devcluster, namespace, always_breached(NAME, root, data, SERVER, fix=fix, interval="1m")
    )
    operator = start_loop_operator(devcluster, namespace, operators, tmp_path)
    wait_status(
        "the temporary fix",
        devcluster,
        namespace,
        NAME,
        lambda s: (s.get("temporaryFix") or {}).get("active") is True,
        operator,
    )
    assert container_of(deployment(devcluster, namespace, SERVER))["resources"] != ORIGINAL

    devcluster.kubectl("delete", "mo", NAME, "-n", namespace, "--timeout=120s")
    back = deployment(devcluster, namespace, SERVER)
    assert container_of(back)["resources"] == ORIGINAL
    assert "driftwarden" not in {m["manager"] for m in back["metadata"]["managedFields"]}
    assert not any(k.startswith("driftwarden.io/") for k in back["metadata"].get("annotations", {}))
    assert operator.running
