"""Cluster DNS on the devcluster: Indexed Job pods find each other by name, as on a cluster.

CoreDNS (kubernetes plugin) answers from the EndpointSlices the real endpointslice controller
writes for a headless Service; the node agent gives each Pod a resolv.conf naming it.
"""

from __future__ import annotations

import json

import pytest
from test_devcluster_jobs import job_condition, job_pods, wait_until

from devcluster.controlplane import Cluster

pytestmark = pytest.mark.e2e

# Index 0 listens on its Pod IP; index 1 resolves index 0 by each name form (retrying: the
# EndpointSlice may lag the Pod) and connects to the address it got.
WORKER = r"""
import os, socket, time
index = int(os.environ["JOB_COMPLETION_INDEX"])
ns = os.environ["NS"]
print("resolv.conf:", open("/etc/resolv.conf").read(), "hostname:", socket.gethostname())
if index == 0:
    server = socket.create_server((os.environ["POD_IP"], 29400))
    server.settimeout(120)
    conn, peer = server.accept()
    print("accepted from", peer, conn.recv(16))
    raise SystemExit(0)
names = [f"dns-0.workers.{ns}.svc.cluster.local", f"dns-0.workers.{ns}.svc", "dns-0.workers"]
found = {}
deadline = time.monotonic() + 90
for name in names:
    while True:
        try:
            found[name] = socket.gethostbyname(name)
            break
        except socket.gaierror as error:
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} did not resolve: {error}")
            time.sleep(0.5)
print("resolved", found)
assert len(set(found.values())) == 1, found
address = found[names[0]]
while True:
    try:
        socket.create_connection((address, 29400), timeout=5).sendall(b"hello")
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.5)
print("RESOLVED", address)
"""


def indexed_job_with_service(namespace: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: workers, namespace: {namespace}}}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {{job-name: dns}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: dns, namespace: {namespace}}}
spec:
  completionMode: Indexed
  completions: 2
  parallelism: 2
  backoffLimit: 0
  template:
    spec:
      subdomain: workers
      restartPolicy: Never
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: driftwarden/optimizer-job:dev
        command: ["python", "-c", {json.dumps(WORKER)}]
        env:
        - {{name: NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
        - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
"""


def test_indexed_job_pods_resolve_each_other(devcluster: Cluster, namespace: str) -> None:
    devcluster.kubectl("apply", "-f", "-", input=indexed_job_with_service(namespace))
    condition = wait_until(
        "the Job to finish", lambda: job_condition(devcluster, namespace, "dns"), timeout=180
    )
    pods = {
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]: p
        for p in job_pods(devcluster, namespace, "dns")
    }
    logs = {
        index: devcluster.kubectl("logs", pod["metadata"]["name"], "-n", namespace).stdout
        for index, pod in pods.items()
    }
    assert condition["type"] == "Complete", (condition, logs)
    pod_ip = pods["0"]["status"]["podIP"]
    assert f"RESOLVED {pod_ip}" in logs["1"], logs
    assert f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local" in logs["1"]
    # The hostname is the Job's <name>-<index>, not the Pod's generated name.
    assert "hostname: dns-1" in logs["1"]
