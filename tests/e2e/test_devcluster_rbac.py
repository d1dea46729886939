"""RBAC is the real thing: a ServiceAccount gets what its Role allows and nothing more."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.controlplane import Cluster

pytestmark = pytest.mark.e2e

ROLE = """
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {namespace}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-reader, namespace: {namespace}}}
rules:
- apiGroups: [""]
  resources: [pods, configmaps]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: {namespace}}}
subjects: [{{kind: ServiceAccount, name: reader, namespace: {namespace}}}]
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}
"""


def token_kubeconfig(cluster: Cluster, namespace: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount, with a `kubectl create token`."""
    token = cluster.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devcluster", "cluster": server}],
        "users": [{"name": "reader", "user": {"token": token}}],
        "contexts": [
            {
                "name": "reader",
                "context": {"cluster": "devcluster", "user": "reader", "namespace": namespace},
            }
        ],
        "current-context": "reader",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_service_account_token_gets_only_what_its_role_allows(
    devcluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    devcluster.kubectl("apply", "-f", "-", input=ROLE.format(namespace=namespace))
    devcluster.kubectl("create", "secret", "generic", "s", "-n", namespace, "--from-literal=k=v")
    kubeconfig = token_kubeconfig(devcluster, namespace, tmp_path / "reader.kubeconfig")

    def as_reader(*args: str) -> Any:
        return devcluster.kubectl("--kubeconfig", str(kubeconfig), *args, check=False)

    allowed = as_reader("get", "pods,configmaps", "-n", namespace)
    assert allowed.returncode == 0, allowed.stderr
    for refused in (
        as_reader("get", "secrets", "-n", namespace),
        as_reader("delete", "configmap", "kube-root-ca.crt", "-n", namespace),
        as_reader("get", "pods", "-n", "default"),
        as_reader("get", "nodes"),
    ):
        assert refused.returncode != 0
        assert "Forbidden" in refused.stderr, refused.stderr
    verdict = devcluster.kubectl(
        "auth",
        "can-i",
        "list",
        "secrets",
        "-n",
        namespace,
        f"--as=system:serviceaccount:{namespace}:reader",
        check=False,
    )
    assert verdict.stdout.strip() == "no"


IN_CLUSTER_POD = """
apiVersion: v1
kind: Pod
metadata: {{name: in-cluster, namespace: {namespace}}}
spec:
  serviceAccountName: reader
  restartPolicy: Never
  containers:
  - name: main
    image: driftwarden/operator:dev
    command:
    - python
    - -c
    - |
      import json
      from kubernetes import client, config
      from kubernetes.client.rest import ApiException
      config.load_incluster_config()
      api = client.CoreV1Api()
      seen = {{'pods': [p.metadata.name for p in api.list_namespaced_pod('{namespace}').items]}}
      try:
          api.list_namespaced_secret('{namespace}')
          seen['secrets'] = 'allowed'
      except ApiException as error:
          seen['secrets'] = error.status
      open('/dev/termination-log', 'w').write(json.dumps(seen))
"""


def test_pod_uses_its_service_account_token_in_cluster(devcluster: Cluster, namespace: str) -> None:
    devcluster.kubectl("apply", "-f", "-", input=ROLE.format(namespace=namespace))
    devcluster.kubectl("apply", "-f", "-", input=IN_CLUSTER_POD.format(namespace=namespace))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        pod = json.loads(
            devcluster.kubectl("get", "pod", "in-cluster", "-n", namespace, "-o", "json").stdout
        )
        if pod["status"].get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.5)
    assert pod["status"]["phase"] == "Succeeded", json.dumps(pod["status"], indent=1)
    seen = json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
    assert seen == {"pods": ["in-cluster"], "secrets": 403}
