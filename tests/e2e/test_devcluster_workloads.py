"""Pods as processes: Deployments, volumes, users — checked from the outside, as a user would."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devcluster.controlplane import Cluster

pytestmark = pytest.mark.e2e


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


def process_cmdline(container_id: str) -> str:
    """The command line of a container's process ('' once it is gone)."""
    pid = container_id.removeprefix("process://")
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: web
        image: driftwarden/serving:dev
        command: ["python", "-m", "http.server", "--bind", "$(POD_IP)", "8080"]
        workingDir: /site
        env:
        - name: POD_IP
          valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
        ports: [{{containerPort: 8080, name: http}}]
        readinessProbe:
          httpGet: {{path: /index.html, port: http}}
          periodSeconds: 1
        volumeMounts:
        - {{name: site, mountPath: /site, readOnly: true}}
      volumes:
      - name: site
        configMap:
          name: site
          items: [{{key: page, path: index.html}}]
"""


def test_deployment_pods_are_processes_and_go_with_it(devcluster: Cluster, namespace: str) -> None:
    devcluster.kubectl(
        "create", "configmap", "site", "-n", namespace, "--from-literal=page=served by a pod"
    )
    devcluster.kubectl("apply", "-f", "-", input=DEPLOYMENT.format(namespace=namespace))
    devcluster.kubectl("rollout", "status", "deploy/web", "-n", namespace, "--timeout=60s")
    pods = get_json(devcluster, "pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 2
    addresses = {pod["status"]["podIP"] for pod in pods}
    assert len(addresses) == 2  # both listen on port 8080, each on its own address
    for address in addresses:
        with urllib.request.urlopen(f"http://{address}:8080/index.html", timeout=5) as answer:
            assert answer.read() == b"served by a pod"
    container_ids = [pod["status"]["containerStatuses"][0]["containerID"] for pod in pods]
    for container_id in container_ids:
        assert "http.server" in process_cmdline(container_id)

    devcluster.kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false")
    wait_until(
        "the garbage collector and the agent to remove the pods",
        lambda: not get_json(devcluster, "pods", "-n", namespace, "-l", "app=web")["items"],
    )
    for container_id in container_ids:
        assert "http.server" not in process_cmdline(container_id)


PVC_PODS = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {namespace}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: writer, namespace: {namespace}}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["python", "-c", "open('/data/model.txt', 'w').write('weights v1')"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: data}}
"""

READER_POD = """
apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: {namespace}}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command:
    - python
    - -c
    - "open('/dev/termination-log', 'w').write(open('/models/current/model.txt').read())"
    volumeMounts: [{{name: models, mountPath: /models/current, readOnly: true}}]
  volumes:
  - name: models
    persistentVolumeClaim: {{claimName: data}}
"""


def wait_pod_phase(cluster: Cluster, namespace: str, name: str, phase: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        pod: dict[str, Any] = get_json(cluster, "pod", name, "-n", namespace)
        current = pod.get("status", {}).get("phase")
        if current in ("Succeeded", "Failed"):
            assert current == phase, json.dumps(pod["status"], indent=1)
            return pod
        return None

    result: dict[str, Any] = wait_until(f"pod {name} to end {phase}", done)
    return result


def test_files_written_to_a_claim_are_read_by_a_later_pod(
    devcluster: Cluster, namespace: str
) -> None:
    devcluster.kubectl("apply", "-f", "-", input=PVC_PODS.format(namespace=namespace))
    wait_pod_phase(devcluster, namespace, "writer", "Succeeded")
    claim = get_json(devcluster, "pvc", "data", "-n", namespace)
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "devcluster-local"  # the default class

    devcluster.kubectl("apply", "-f", "-", input=READER_POD.format(namespace=namespace))
    reader = wait_pod_phase(devcluster, namespace, "reader", "Succeeded")
    message = reader["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    assert message == "weights v1"


RESTRICTED_POD = """
apiVersion: v1
kind: Pod
metadata: {{name: nonroot, namespace: {namespace}}}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    fsGroup: 65532
    seccompProfile: {{type: RuntimeDefault}}
  containers:
  - name: main
    image: distroless/python
    command:
    - python
    - -c
    - |
      import json, os
      with open('/scratch/out.txt', 'w') as handle:
          handle.write('written')
      facts = {{'uid': os.getuid(), 'gid': os.getgid(), 'read': open('/scratch/out.txt').read()}}
      try:
          open('/etc/devcluster-root-only', 'w')
          facts['root_write'] = 'allowed'
      except PermissionError:
          facts['root_write'] = 'denied'
      open('/dev/termination-log', 'w').write(json.dumps(facts))
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL]}}
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  volumes:
  - name: scratch
    emptyDir: {{}}
"""


def test_restricted_non_root_pod_writes_its_empty_dir(
    devcluster: Cluster, restricted_namespace: str
) -> None:
    namespace = restricted_namespace
    devcluster.kubectl("apply", "-f", "-", input=RESTRICTED_POD.format(namespace=namespace))
    pod = wait_pod_phase(devcluster, namespace, "nonroot", "Succeeded")
    facts = json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert facts == {"uid": 65532, "gid": 65532, "read": "written", "root_write": "denied"}


def test_restricted_namespace_refuses_a_root_pod(
    devcluster: Cluster, restricted_namespace: str
) -> None:
    pod = RESTRICTED_POD.format(namespace=restricted_namespace).replace(
        "runAsNonRoot: true", "runAsNonRoot: false"
    )
    refused = devcluster.kubectl("apply", "-f", "-", input=pod, check=False)
    assert refused.returncode != 0
    assert "violates PodSecurity" in refused.stderr


def test_agent_stops_its_containers_on_sigterm(devcluster: Cluster, namespace: str) -> None:
    devcluster.start_node("stopnode", taints=["devcluster.io/test=stop:NoSchedule"])
    try:
        devcluster.wait_node_ready("stopnode")
        devcluster.kubectl(
            "run", "sleeper", "-n", namespace, "--image=busybox", "--restart=Never",
            "--overrides", json.dumps({"spec": {"nodeName": "stopnode"}}),
            "--command", "--", "python", "-c", "import time; time.sleep(600)",
        )  # fmt: skip
        devcluster.kubectl(
            "wait", "--for=jsonpath={.status.phase}=Running", "pod/sleeper", "-n", namespace,
            "--timeout=60s",
        )  # fmt: skip
        pod = get_json(devcluster, "pod", "sleeper", "-n", namespace)
        container_id = pod["status"]["containerStatuses"][0]["containerID"]
        assert "time.sleep" in process_cmdline(container_id)

        log_path = devcluster.state.log("node-stopnode")
        log_before = log_path.stat().st_size
        devcluster.stop_component("node-stopnode")
        assert process_cmdline(container_id) == ""
        with log_path.open() as log:
            log.seek(log_before)
            assert "node agent stopped" in log.read()  # it exited by itself, not by SIGKILL
        pod = get_json(devcluster, "pod", "sleeper", "-n", namespace)
        assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", "Terminated")
        node = get_json(devcluster, "node", "stopnode")
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
    finally:
        devcluster.stop_component("node-stopnode")
        devcluster.kubectl("delete", "node", "stopnode", "--wait=false", check=False)
