"""Killing the operator at any point of a run and starting it again: never a second Job for
the run, never a lost result (also after the Job's TTL removed it), the same status.

The points inside a reconcile pass are hit exactly with DRIFTWARDEN_TEST_CRASH_AT (the
process exits with 137, as SIGKILL would leave it: nothing written after that point);
"while the Job runs" is a real SIGKILL from outside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from operator_process import (
    OperatorProcess,
    evaluated_after_runs,
    events_of,
    example_uris,
    finished_runs,
    get_json,
    jobs_of,
    mo_manifest,
    mo_status,
    start_operator,
    wait_for,
)

from devcluster.controlplane import Cluster
from driftwarden.builders import names

pytestmark = pytest.mark.e2e
pytest_plugins = ["operator_fixtures"]

RUN_TIMEOUT = 180.0
NAME = "digits"


def settled(status: dict[str, Any], uid: str, run_request: str = "first") -> dict[str, Any]:
    """What a status says once the run is recorded, in the terms that must not depend on
    whether the operator crashed on the way (times and latencies may)."""
    run_id = names.run_id_for(uid, 1)
    (run,) = status["runs"]
    evaluation = status["lastEvaluation"]
    return {
        "phase": status["phase"],
        "runCount": status["runCount"],
        "lastRunRequest": status["lastRunRequest"],
        "activeRun": status.get("activeRun"),
        "lastRun": (status["lastRun"]["id"], status["lastRun"]["outcome"]),
        "candidate": status["candidate"]["runId"],
        "budget": len(status["runBudget"]["startTimes"]),
        "run": {
            key: run.get(key)
            for key in ("id", "trigger", "reason", "outcome", "jobNames", "baseModelUri")
        },
        "artifact": run["artifactUri"].rsplit("/", 1)[-1] == run_id,
        "sizes": (run["baseline"]["sizeBytes"], run["candidate"]["sizeBytes"]),
        "conditions": {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]},
        "drift": (evaluation.get("driftScore", 0) > 0, evaluation.get("driftDetected")),
    } | {"expected_run": run_id, "expected_request": run_request}


def expected(uid: str, job: str, model_uri: str) -> dict[str, Any]:
    """The settled status of one run and one evaluation without any crash (what
    test_operator_runs shows): promotion Manual, so the candidate waits for approval."""
    run_id = names.run_id_for(uid, 1)
    return {
        "phase": "AwaitingPromotion",
        "runCount": 1,
        "lastRunRequest": "first",
        "activeRun": None,
        "lastRun": (run_id, "Succeeded"),
        "candidate": run_id,
        "budget": 1,
        "run": {
            "id": run_id,
            "trigger": "Manual",
            "reason": "A run was requested (spec.runRequest='first').",
            "outcome": "Succeeded",
            "jobNames": [job],
            "baseModelUri": model_uri,
        },
        "artifact": True,
        "conditions": {
            "Ready": ("True", "Ready"),
            "Optimizing": ("False", "RunSucceeded"),
            # The example's current data is shifted; no latency SLO and no target are set.
            "DriftDetected": ("True", "DriftOverThreshold"),
            "LatencyWithinSLO": ("Unknown", "NoSLO"),
            "TemporaryFixActive": ("Unknown", "NotEvaluated"),
            "Promoted": ("False", "AwaitingApproval"),
        },
        "drift": (True, True),
        "expected_run": run_id,
        "expected_request": "first",
    }


def the_one_job(cluster: Cluster, namespace: str) -> dict[str, Any]:
    jobs = jobs_of(cluster, namespace, NAME)
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    return jobs[0]


def pods_of(cluster: Cluster, namespace: str, job: dict[str, Any]) -> list[dict[str, Any]]:
    found = get_json(cluster, "pods", "-n", namespace, "-l", f"job-name={job['metadata']['name']}")
    return list(found["items"])


def reasons(cluster: Cluster, namespace: str) -> list[str]:
    return [e["reason"] for e in events_of(cluster, namespace, NAME)]


@pytest.mark.parametrize(
    "point", ["job-created", "configmap-created", "job-resumed", "run-finished-unrecorded"]
)
def test_crash_at_a_point_of_the_run_then_restart(
    point: str,
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    op = start_operator(devcluster, namespace, tmp_path, crash_at=point, operators=operators)
    uris = example_uris(job_example)
    devcluster.kubectl(
        "apply", "-f", "-", input=mo_manifest(NAME, namespace, uris, f"file://{artifacts_dir}")
    )
    assert op.wait(RUN_TIMEOUT) == 137, op.log_tail()

    job = the_one_job(devcluster, namespace)
    status = mo_status(devcluster, namespace, NAME)
    assert not status.get("runs")
    configmaps = get_json(
        devcluster,
        "configmaps",
        "-n",
        namespace,
        "-l",
        f"driftwarden.io/optimization={NAME},driftwarden.io/kind=optimize",
    )["items"]
    if point == "run-finished-unrecorded":
        # status named the run; the Job finished; the crash came before its result.
        assert status["activeRun"]["jobName"] == job["metadata"]["name"]
        assert any(c["type"] == "Complete" for c in job["status"].get("conditions", []))
    else:
        # The crash came before status named the run: only the Job knows of it.
        assert "activeRun" not in status
        assert job["spec"]["suspend"] is (point != "job-resumed")
        assert len(configmaps) == (0 if point == "job-created" else 1)

    op.start()
    status = wait_for(
        "the run and an evaluation recorded",
        evaluated_after_runs(devcluster, namespace, NAME, 1),
        RUN_TIMEOUT,
        op,
    )
    after = the_one_job(devcluster, namespace)
    assert after["metadata"]["uid"] == job["metadata"]["uid"]  # adopted, never re-created
    assert len(pods_of(devcluster, namespace, after)) == 1
    mo = get_json(devcluster, "mo", NAME, "-n", namespace)
    uid = mo["metadata"]["uid"]
    assert settled(status, uid) == expected(uid, job["metadata"]["name"], uris["model"]) | {
        "sizes": settled(status, uid)["sizes"]
    }
    assert status["runs"][0]["candidate"]["sizeBytes"] < status["runs"][0]["baseline"]["sizeBytes"]
    seen = reasons(devcluster, namespace)
    assert seen.count("RunSucceeded") == 1, seen
    if point != "run-finished-unrecorded":
        assert seen.count("RunAdopted") == 1 and "RunStarted" not in seen, seen


def test_sigkill_while_the_job_runs_then_restart_after_it_finished(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    op = start_operator(devcluster, namespace, tmp_path, operators=operators)
    uris = example_uris(job_example)
    devcluster.kubectl(
        "apply", "-f", "-", input=mo_manifest(NAME, namespace, uris, f"file://{artifacts_dir}")
    )

    def running_pod() -> bool:
        jobs = jobs_of(devcluster, namespace, NAME)
        if not jobs or "activeRun" not in mo_status(devcluster, namespace, NAME):
            return False
        return any(
            p["status"].get("phase") == "Running" for p in pods_of(devcluster, namespace, jobs[0])
        )

    wait_for("the Job's Pod running", running_pod, RUN_TIMEOUT, op, interval=0.2)
    op.kill()
    job = the_one_job(devcluster, namespace)

    def complete() -> bool:
        current = the_one_job(devcluster, namespace)
        return any(c["type"] == "Complete" for c in current["status"].get("conditions", []))

    wait_for("the Job to complete without the operator", complete, RUN_TIMEOUT)
    assert not mo_status(devcluster, namespace, NAME).get("runs")

    op.start()
    status = wait_for(
        "the run and an evaluation recorded",
        evaluated_after_runs(devcluster, namespace, NAME, 1),
        RUN_TIMEOUT,
        op,
    )
    after = the_one_job(devcluster, namespace)
    assert after["metadata"]["uid"] == job["metadata"]["uid"]
    uid = get_json(devcluster, "mo", NAME, "-n", namespace)["metadata"]["uid"]
    got = settled(status, uid)
    assert got == expected(uid, job["metadata"]["name"], uris["model"]) | {"sizes": got["sizes"]}
    seen = reasons(devcluster, namespace)
    assert seen.count("RunStarted") == 1 and seen.count("RunSucceeded") == 1, seen


def test_result_survives_the_jobs_ttl_while_the_operator_is_down(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    op = start_operator(devcluster, namespace, tmp_path, operators=operators)
    uris = example_uris(job_example)
    manifest = mo_manifest(
        NAME,
        namespace,
        uris,
        f"file://{artifacts_dir}",
        ttl_seconds=60,  # the CRD's minimum
    )
    devcluster.kubectl("apply", "-f", "-", input=manifest)
    recorded = wait_for(
        "the run recorded", finished_runs(devcluster, namespace, NAME, 1), RUN_TIMEOUT, op
    )
    op.kill()
    wait_for(
        "the TTL controller to remove the Job",
        lambda: not jobs_of(devcluster, namespace, NAME),
        180,
    )

    op.start()

    # A pass rewrites nothing (the status is settled), so wait on the operator's count of
    # passes: the one on resume, then resyncs.
    wait_for("three passes", lambda: op.passes() >= 3, 60, op)
    status = mo_status(devcluster, namespace, NAME)
    assert status["runs"] == recorded["runs"]
    assert status["candidate"] == recorded["candidate"]
    assert jobs_of(devcluster, namespace, NAME) == []
    assert reasons(devcluster, namespace).count("RunStarted") == 1

    # The next request is run 2: numbering survives the Job being gone.
    devcluster.kubectl(
        "patch",
        "mo",
        NAME,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"runRequest": "second"}}',
    )
    status = wait_for("run 2", finished_runs(devcluster, namespace, NAME, 2), RUN_TIMEOUT, op)
    uid = get_json(devcluster, "mo", NAME, "-n", namespace)["metadata"]["uid"]
    assert [r["id"] for r in status["runs"]] == [names.run_id_for(uid, 1), names.run_id_for(uid, 2)]
    assert status["runs"][0] == recorded["runs"][0]
