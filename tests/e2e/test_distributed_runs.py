"""Retraining across the Pods of an Indexed Job (job.workers > 1), on the devcluster.

The operator creates one Indexed Job plus a headless Service; the Pods find the first worker
by its DNS name (CoreDNS, kubernetes plugin) and train with torchrun + DDP over gloo; only
worker 0 goes on to quantize, writes the artifacts and the termination message.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from operator_process import (
    OperatorProcess,
    example_uris,
    finished_runs,
    get_json,
    jobs_of,
    mo_manifest,
    start_operator,
    wait_for,
)

from devcluster.controlplane import Cluster
from driftwarden.builders.job import COMPLETION_INDEX_ANNOTATION
from optimizer_job import contract

pytestmark = pytest.mark.e2e
pytest_plugins = ["operator_fixtures"]

# Each worker is a Python process with torch on a shared 2-core machine: starting a gang
# takes longer than one Pod.
RUN_TIMEOUT = 420.0
PIPELINE = "[{retrain: {epochs: 2}}, {quantize: {mode: int8}}]"


def gang(workers: int, extra: str = "") -> str:
    return f"    workers: {workers}\n    gangTimeoutSeconds: 300\n{extra}"


def pods_by_index(cluster: Cluster, namespace: str, job: str) -> dict[int, dict[str, Any]]:
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"batch.kubernetes.io/job-name={job}")
    return {
        int(p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION]): p for p in pods["items"]
    }


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    (status,) = pod["status"]["containerStatuses"]
    return dict(status["state"].get("terminated") or {})


def run_of(
    devcluster: Cluster, ns: str, op: OperatorProcess, timeout: float = RUN_TIMEOUT
) -> dict[str, Any]:
    status = wait_for(
        "the run to be recorded", finished_runs(devcluster, ns, "digits", 1), timeout, op
    )
    (run,) = status["runs"]
    return dict(run)


@pytest.mark.parametrize("workers", [2, 3])
def test_a_gang_retrains_and_only_worker_0_writes(
    devcluster: Cluster,
    restricted_namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
    workers: int,
) -> None:
    ns = restricted_namespace
    op = start_operator(devcluster, ns, tmp_path, operators=operators)
    manifest = mo_manifest(
        "digits",
        ns,
        example_uris(job_example),
        f"file://{artifacts_dir}",
        pipeline=PIPELINE,
        job_extra=gang(workers),
    )
    devcluster.kubectl("apply", "-f", "-", input=manifest)
    run = run_of(devcluster, ns, op)
    assert run["outcome"] == "Succeeded", (run.get("message"), op.log_tail()[-2000:])
    (job,) = jobs_of(devcluster, ns, "digits")
    name = job["metadata"]["name"]
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == workers
    service = get_json(devcluster, "service", name, "-n", ns)
    assert service["spec"]["clusterIP"] == "None"
    assert service["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
    pods = pods_by_index(devcluster, ns, name)
    assert sorted(pods) == list(range(workers))
    logs = {
        i: devcluster.kubectl("logs", p["metadata"]["name"], "-n", ns).stdout
        for i, p in pods.items()
    }
    for index, pod in pods.items():
        state = terminated(pod)
        assert state["exitCode"] == 0, (index, state, logs[index][-3000:])
        # Every worker trained its share of the data, data-parallel.
        assert f"data-parallel rank {index} of {workers}" in logs[index], logs[index][-3000:]
        if index == 0:
            assert '"ok":true' in state.get("message", "").replace(" ", ""), state
        else:
            # The others wrote nothing: no termination message, no result, no artifacts.
            assert not state.get("message"), (index, state)
            assert f"rank {index} of {workers}: 1 data-parallel stage(s) done" in logs[index]
            assert "quantize" not in logs[index].split("data-parallel stage(s) done")[-1]
    # One run directory, published once (no leftovers of other ranks beside it; evaluations
    # publish their reports in a folder of their own).
    assert run_directories(artifacts_dir / "digits") == [run["id"]]


def run_directories(root: Path) -> list[str]:
    """The run directories under an optimization's artifacts (not its evaluations)."""
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.name != contract.EVALUATIONS_FOLDER)


def test_a_killed_worker_fails_the_run_naming_it(
    devcluster: Cluster,
    restricted_namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    ns = restricted_namespace
    op = start_operator(devcluster, ns, tmp_path, operators=operators)
    manifest = mo_manifest(
        "digits",
        ns,
        example_uris(job_example),
        f"file://{artifacts_dir}",
        # Long enough to be killed while it trains.
        pipeline="[{retrain: {epochs: 5000}}, {quantize: {mode: int8}}]",
        job_extra=gang(2),
    )
    devcluster.kubectl("apply", "-f", "-", input=manifest)

    def training_worker_1() -> dict[str, Any] | None:
        jobs = jobs_of(devcluster, ns, "digits")
        if not jobs:
            return None
        pods = pods_by_index(devcluster, ns, jobs[0]["metadata"]["name"])
        pod = pods.get(1)
        if pod is None or pod["status"].get("phase") != "Running":
            return None
        log = devcluster.kubectl("logs", pod["metadata"]["name"], "-n", ns, check=False).stdout
        return pod if "retrain epoch" in log else None

    pod = wait_for("worker 1 to train", training_worker_1, RUN_TIMEOUT, op)
    (status,) = pod["status"]["containerStatuses"]
    os.kill(int(status["containerID"].removeprefix("process://")), signal.SIGKILL)

    run = run_of(devcluster, ns, op, timeout=180)
    assert run["outcome"] == "Failed", run
    assert run["message"].startswith("Killed: "), run
    assert f"worker 1 of 2 (Pod {pod['metadata']['name']}) failed first" in run["message"], run
    assert "exit code 137" in run["message"], run
    assert run_directories(artifacts_dir / "digits") == []


def test_a_gang_that_cannot_be_scheduled_fails_within_its_timeout(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    ns = namespace
    op = start_operator(devcluster, ns, tmp_path, operators=operators)
    manifest = mo_manifest(
        "digits",
        ns,
        example_uris(job_example),
        f"file://{artifacts_dir}",
        pipeline=PIPELINE,
        job_extra="    workers: 2\n    gangTimeoutSeconds: 30\n",
    ).replace("resources: {cpu: 500m, memory: 1Gi}", "resources: {cpu: 500m, memory: 1Gi, gpu: 1}")
    devcluster.kubectl("apply", "-f", "-", input=manifest)
    # 30 s of waiting, then the operator's next pass (every 2 s) and the Job controller.
    run = run_of(devcluster, ns, op, timeout=120)
    assert run["outcome"] == "Failed", run
    assert run["message"].startswith("GangTimeout: "), run
    assert "2 of 2 workers did not start within the gang timeout of 30 s" in run["message"], run
    assert "Insufficient nvidia.com/gpu" in run["message"], run
