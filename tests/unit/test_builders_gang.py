"""job.workers > 1: the Indexed Job, its headless Service and torchrun's environment (pure)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from test_builders_job import OWNER, container, settings, task

from driftwarden.builders import names
from driftwarden.builders.job import (
    COMPLETION_INDEX_ANNOTATION,
    GANG_TIMEOUT_ANNOTATION,
    QUEUE_LABEL,
    build_job,
    build_worker_service,
    master_port,
    workers_of,
)
from driftwarden.services.jobs import GANG_FAILURE_ANNOTATION, gang_stalled, outcome

pytestmark = pytest.mark.unit


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(job)["env"]}  # type: ignore[attr-defined]


def test_one_worker_is_the_plain_job() -> None:
    job = build_job(OWNER, task(), settings())
    assert "completionMode" not in job["spec"] and workers_of(job) == 1
    assert "subdomain" not in job["spec"]["template"]["spec"]
    assert container(job)["command"] == [
        "python",
        "-m",
        "optimizer_job",
        "--task",
        "/etc/driftwarden/task/task.json",
    ]
    assert not any(k.startswith("PET_") for k in env_of(job))


def test_workers_make_an_indexed_job_that_fails_as_a_whole() -> None:
    job = build_job(OWNER, task(), settings(workers=3, gang_timeout_seconds=120))
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["backoffLimit"] == 0 and workers_of(job) == 3
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[-1] == {
        "action": "FailJob",
        "onExitCodes": {"containerName": "optimizer", "operator": "NotIn", "values": [0]},
    }
    name = job["metadata"]["name"]
    assert spec["template"]["spec"]["subdomain"] == name
    assert job["metadata"]["annotations"][GANG_TIMEOUT_ANNOTATION] == "120"
    assert container(job)["command"][:3] == ["python", "-m", "optimizer_job.distributed"]


def test_torchrun_gets_the_standard_pet_environment() -> None:
    job = build_job(OWNER, task(), settings(workers=2, gpu=4))
    env = env_of(job)
    name = job["metadata"]["name"]
    assert env["PET_NNODES"] == "2" and env["PET_NPROC_PER_NODE"] == "4"
    assert env["PET_MASTER_ADDR"] == f"{name}-0.{name}"
    assert env["PET_MASTER_PORT"] == str(master_port(name))
    assert env["PET_NODE_RANK"] == {
        "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
    }
    assert build_job(OWNER, task(), settings(workers=2)) == build_job(
        OWNER, task(), settings(workers=2)
    )
    cpu_env = env_of(build_job(OWNER, task(), settings(workers=2)))
    assert cpu_env["PET_NPROC_PER_NODE"] == "1"


def test_long_names_leave_room_for_the_worker_index_in_the_hostname() -> None:
    owner = OWNER.__class__(namespace="ml", name="x" * 80, uid="u")
    job = build_job(owner, task(optimization="x" * 80), settings(workers=16))
    name = job["metadata"]["name"]
    assert len(f"{name}-15") <= 63 and name.endswith("-optimize-r1-abcdef")


def test_queue_name_is_the_kueue_label_of_the_job() -> None:
    job = build_job(OWNER, task(), settings(workers=2, queue_name="team-a"))
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-a"
    assert QUEUE_LABEL not in build_job(OWNER, task(), settings())["metadata"]["labels"]


def test_worker_service_is_headless_owned_by_the_job_and_selects_its_pods() -> None:
    job = build_job(OWNER, task(), settings(workers=2))
    job["metadata"]["uid"] = "job-uid"
    service = build_worker_service(job)
    name = job["metadata"]["name"]
    assert service["metadata"]["name"] == name
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {
        "batch.kubernetes.io/job-name": name,
        names.RUN_LABEL: "r1-abcdef",
        names.OPTIMIZATION_LABEL: "digits",
    }
    (owner,) = service["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Job", "job-uid", True)


NOW = dt.datetime(2026, 1, 1, 10, 10, tzinfo=dt.UTC)


def gang_job(started: str = "2026-01-01T10:00:00Z", timeout: int = 300) -> dict[str, Any]:
    job = build_job(OWNER, task(), settings(workers=3, gang_timeout_seconds=timeout))
    job["spec"]["suspend"] = False
    job["metadata"]["uid"] = "job-uid"
    job["status"] = {"startTime": started}
    return job


def worker(index: int, phase: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"w{index}",
            "annotations": {COMPLETION_INDEX_ANNOTATION: str(index)},
        },
        "status": {"phase": phase, **status},
    }


UNSCHEDULABLE = {
    "conditions": [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        }
    ]
}


def test_a_gang_with_a_pending_worker_past_its_timeout_is_stalled() -> None:
    pods = [worker(0, "Running"), worker(1, "Pending", **UNSCHEDULABLE)]
    reason = gang_stalled(gang_job(), pods, NOW)
    assert reason is not None
    assert "2 of 3 workers did not start within the gang timeout of 300 s" in reason
    assert (
        "worker 1: Unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu." in reason
    )
    assert "worker 2: no Pod" in reason


def test_a_gang_within_its_timeout_or_all_running_is_not_stalled() -> None:
    pods = [worker(0, "Running"), worker(1, "Pending", **UNSCHEDULABLE)]
    assert gang_stalled(gang_job(started="2026-01-01T10:08:00Z"), pods, NOW) is None
    running = [worker(i, "Running") for i in range(3)]
    assert gang_stalled(gang_job(), running, NOW) is None
    finished = [worker(0, "Running"), worker(1, "Succeeded"), worker(2, "Succeeded")]
    assert gang_stalled(gang_job(), finished, NOW) is None
    single = build_job(OWNER, task(), settings())
    assert gang_stalled(single, [], NOW) is None


def terminated(index: int, code: int, finished: str) -> dict[str, Any]:
    state = {"terminated": {"exitCode": code, "message": "", "finishedAt": finished}}
    return worker(
        index,
        "Failed" if code else "Succeeded",
        containerStatuses=[{"name": "optimizer", "state": state}],
    )


def test_a_failed_gang_names_the_worker_that_failed_first() -> None:
    job = gang_job()
    job["status"]["conditions"] = [
        {"type": "Failed", "status": "True", "reason": "PodFailurePolicy", "message": "x"}
    ]
    pods = [
        terminated(0, 1, "2026-01-01T10:05:03Z"),  # lost its peer afterwards
        terminated(1, 137, "2026-01-01T10:05:00Z"),  # killed first
        terminated(2, 143, "2026-01-01T10:05:04Z"),  # stopped by the Job controller
    ]
    got = outcome(job, pods)
    assert got.phase == "Failed" and got.reason == "Killed"
    assert got.message.startswith("worker 1 of 3 (Pod w1) failed first:")


def test_a_gang_failed_for_its_timeout_reports_that_reason() -> None:
    job = gang_job()
    job["metadata"]["annotations"][GANG_FAILURE_ANNOTATION] = "2 of 3 workers did not start"
    job["status"]["conditions"] = [
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "x"}
    ]
    got = outcome(job, [worker(1, "Pending", **UNSCHEDULABLE)])
    assert (got.reason, got.message) == ("GangTimeout", "2 of 3 workers did not start")


class _FakeKube:
    """The two calls enforce_gang_timeout makes."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.patches: list[dict[str, Any]] = []

    def list_job_pods(self, namespace: str, job_name: str, job_uid: str) -> list[dict[str, Any]]:
        return self.pods

    def patch_job(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(patch)
        return {"metadata": {"name": name}, "patched": True}


def test_a_stalled_gang_is_failed_in_one_patch_that_carries_its_reason() -> None:
    from driftwarden.services import gangs

    kube = _FakeKube([worker(0, "Running"), worker(1, "Pending", **UNSCHEDULABLE)])
    gangs.enforce_gang_timeout(kube, "ml", gang_job(), NOW)  # type: ignore[arg-type]
    (patch,) = kube.patches
    assert patch["spec"] == {"activeDeadlineSeconds": 1}
    assert (
        "Insufficient nvidia.com/gpu" in patch["metadata"]["annotations"][GANG_FAILURE_ANNOTATION]
    )
    # Once marked, later passes leave it to the Job controller; in time, nothing happens.
    marked = gang_job()
    marked["metadata"]["annotations"][GANG_FAILURE_ANNOTATION] = "x"
    gangs.enforce_gang_timeout(kube, "ml", marked, NOW)  # type: ignore[arg-type]
    gangs.enforce_gang_timeout(kube, "ml", gang_job(started="2026-01-01T10:09:00Z"), NOW)  # type: ignore[arg-type]
    assert len(kube.patches) == 1
