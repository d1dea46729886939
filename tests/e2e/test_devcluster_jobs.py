"""Jobs on the devcluster: the real job controller, scheduler and node agent together."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from devcluster.controlplane import Cluster

pytestmark = pytest.mark.e2e


def job_yaml(
    name: str,
    namespace: str,
    code: str,
    *,
    backoff_limit: int = 0,
    extra_spec: str = "",
    resources: str = "",
) -> str:
    return f"""
apiVersion: batch/v1
kind: Job
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  backoffLimit: {backoff_limit}
{extra_spec}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: driftwarden/optimizer-job:dev
        command: ["python", "-c", {json.dumps(code)}]
{resources}
"""


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def job_condition(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    job = get_json(cluster, "job", name, "-n", namespace)
    for condition in job.get("status", {}).get("conditions", []):
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return dict(condition)
    return None


def job_pods(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    found = get_json(cluster, "pods", "-n", namespace, "-l", f"job-name={name}")
    return list(found["items"])


def test_job_completes_through_the_job_controller(devcluster: Cluster, namespace: str) -> None:
    code = "import os; print('hello from', os.environ['HOSTNAME'])"
    devcluster.kubectl("apply", "-f", "-", input=job_yaml("hello", namespace, code))
    devcluster.kubectl(
        "wait", "--for=condition=Complete", "job/hello", "-n", namespace, "--timeout=60s"
    )
    (pod,) = job_pods(devcluster, namespace, "hello")
    state = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert state["exitCode"] == 0 and state["reason"] == "Completed"
    assert pod["status"]["phase"] == "Succeeded"
    logs = devcluster.kubectl("logs", "-n", namespace, "job/hello").stdout
    assert logs.strip() == f"hello from {pod['metadata']['name']}"


def test_failing_job_retries_up_to_backoff_limit(devcluster: Cluster, namespace: str) -> None:
    code = "import sys; print('failing'); sys.exit(3)"
    devcluster.kubectl(
        "apply", "-f", "-", input=job_yaml("flaky", namespace, code, backoff_limit=1)
    )
    condition = wait_until(
        "the job to fail", lambda: job_condition(devcluster, namespace, "flaky"), timeout=90
    )
    assert condition["type"] == "Failed"
    assert condition["reason"] == "BackoffLimitExceeded"
    pods = job_pods(devcluster, namespace, "flaky")
    assert len(pods) == 2  # the first try and one retry
    for pod in pods:
        assert pod["status"]["phase"] == "Failed"
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"


def test_pod_failure_policy_fails_the_job_at_once(devcluster: Cluster, namespace: str) -> None:
    policy = """  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes: {containerName: main, operator: In, values: [65]}"""
    code = "import sys; sys.exit(65)"
    devcluster.kubectl(
        "apply",
        "-f",
        "-",
        input=job_yaml("badinput", namespace, code, backoff_limit=4, extra_spec=policy),
    )
    condition = wait_until(
        "the job to fail", lambda: job_condition(devcluster, namespace, "badinput")
    )
    assert condition["type"] == "Failed"
    assert condition["reason"] == "PodFailurePolicy"
    # backoffLimit 4 would allow 5 pods; the rule stopped it after the first.
    pods = job_pods(devcluster, namespace, "badinput")
    assert len(pods) == 1
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 65


def test_termination_message_is_in_the_pod_status(devcluster: Cluster, namespace: str) -> None:
    code = (
        "import json; "
        "open('/dev/termination-log', 'w').write(json.dumps({'outcome': 'ok', 'score': 7}))"
    )
    devcluster.kubectl("apply", "-f", "-", input=job_yaml("reporter", namespace, code))
    devcluster.kubectl(
        "wait", "--for=condition=Complete", "job/reporter", "-n", namespace, "--timeout=60s"
    )
    (pod,) = job_pods(devcluster, namespace, "reporter")
    message = pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert json.loads(message) == {"outcome": "ok", "score": 7}


def test_active_deadline_fails_a_job(devcluster: Cluster, namespace: str) -> None:
    code = "import time; time.sleep(60)"
    deadline = "  activeDeadlineSeconds: 3"
    devcluster.kubectl(
        "apply", "-f", "-", input=job_yaml("slow", namespace, code, extra_spec=deadline)
    )
    condition = wait_until("the job to fail", lambda: job_condition(devcluster, namespace, "slow"))
    assert condition["reason"] == "DeadlineExceeded"
    # The job controller deletes the pod; the agent stops the process and lets it go.
    wait_until("the job's pod to go", lambda: not job_pods(devcluster, namespace, "slow"), 30)


GPU_JOB_RESOURCES = """        resources:
          limits: {"nvidia.com/gpu": 1}"""


def test_gpu_job_waits_for_a_node_with_a_gpu(devcluster: Cluster, namespace: str) -> None:
    code = "import os; open('/dev/termination-log', 'w').write(os.environ['CUDA_VISIBLE_DEVICES'])"
    devcluster.kubectl(
        "apply",
        "-f",
        "-",
        input=job_yaml("train", namespace, code, resources=GPU_JOB_RESOURCES),
    )

    def unschedulable_message() -> str:
        for pod in job_pods(devcluster, namespace, "train"):
            for condition in pod["status"].get("conditions", []):
                if condition["type"] == "PodScheduled" and condition["status"] == "False":
                    return str(condition.get("message", ""))
        return ""

    message = wait_until("the scheduler to refuse the pod", unschedulable_message)
    assert "Insufficient nvidia.com/gpu" in message
    events = devcluster.kubectl(
        "get", "events", "-n", namespace, "--field-selector", "reason=FailedScheduling"
    ).stdout
    assert "nvidia.com/gpu" in events
    (pod,) = job_pods(devcluster, namespace, "train")
    assert pod["status"]["phase"] == "Pending"

    devcluster.start_node("gpunode", gpus=1)
    try:
        devcluster.wait_node_ready("gpunode")
        devcluster.kubectl(
            "wait", "--for=condition=Complete", "job/train", "-n", namespace, "--timeout=90s"
        )
        (pod,) = job_pods(devcluster, namespace, "train")
        assert pod["spec"]["nodeName"] == "gpunode"
        # The agent handed the container its one device, as a device plugin would.
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["message"] == "0"
    finally:
        devcluster.stop_component("node-gpunode")
        devcluster.kubectl("delete", "node", "gpunode", "--wait=false", check=False)
