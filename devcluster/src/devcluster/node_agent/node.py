"""The Node object: registration, status heartbeats and the Lease in kube-node-lease."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from devcluster.node_agent.config import AgentConfig
from devcluster.node_agent.container import now, rfc3339
from devcluster.node_agent.gpus import GPU_RESOURCE
from devcluster.node_agent.kube import ApiError, Kube, Obj, path_quote
from devcluster.node_agent.runtime import HOST_IP

log = logging.getLogger(__name__)

LEASE_DURATION_SECONDS = 40
STATE_DIR_ANNOTATION = "devcluster.io/state-dir"
AGENT_VERSION = "devcluster-node-agent/0.1"

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _micro_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def capacity(config: AgentConfig) -> dict[str, str]:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    resources = {
        "cpu": config.cpu,
        "memory": config.memory,
        "pods": str(config.pods),
        "ephemeral-storage": str(shutil.disk_usage(config.state_dir).total),
    }
    if config.gpus:
        resources[GPU_RESOURCE] = str(config.gpus)
    return resources


class NodeLifecycle:
    def __init__(self, config: AgentConfig, kube: Kube, kubelet_port: int) -> None:
        self._config = config
        self._kube = kube
        self._port = kubelet_port
        self._uid = ""
        self._transitions: dict[str, str] = {}
        self._kubelet_version = "v0.0.0"

    @property
    def _path(self) -> str:
        return f"/api/v1/nodes/{path_quote(self._config.node_name)}"

    def labels(self) -> dict[str, str]:
        arch = _ARCH.get(platform.machine(), platform.machine())
        return {
            "kubernetes.io/hostname": self._config.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch,
            **self._config.labels,
        }

    def register(self) -> None:
        """Create the Node, or bring an existing one (an agent restart) up to date."""
        try:
            self._kubelet_version = str(self._kube.get("/version").get("gitVersion", "v0.0.0"))
        except ApiError as error:
            log.warning("cannot read the API server version: %s", error)
        metadata: Obj = {
            "name": self._config.node_name,
            "labels": self.labels(),
            "annotations": {
                STATE_DIR_ANNOTATION: str(self._config.state_dir),
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            },
        }
        node: Obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": metadata,
            "spec": {"taints": self._config.taints} if self._config.taints else {},
            "status": self.status(ready=True),
        }
        try:
            created = self._kube.create("/api/v1/nodes", node)
        except ApiError as error:
            if error.status != 409:
                raise
            existing = self._kube.get(self._path)
            taints = list(existing.get("spec", {}).get("taints") or [])
            for taint in self._config.taints:
                if not any(
                    t.get("key") == taint["key"] and t.get("effect") == taint["effect"]
                    for t in taints
                ):
                    taints.append(taint)
            created = self._kube.patch(
                self._path, {"metadata": metadata, "spec": {"taints": taints or None}}
            )
        self._uid = created["metadata"]["uid"]
        self.heartbeat()

    def status(self, *, ready: bool) -> Obj:
        stamp = rfc3339(now())
        resources = capacity(self._config)

        def condition(kind: str, ok: bool, reason: str, message: str) -> Obj:
            status = "True" if ok else "False"
            key = f"{kind}={status}"
            transition = self._transitions.setdefault(key, stamp)
            for other in ("True", "False"):
                if other != status:
                    self._transitions.pop(f"{kind}={other}", None)
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": transition,
            }

        uname = os.uname()
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition(
                    "MemoryPressure",
                    False,
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    False,
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    False,
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                condition(
                    "Ready",
                    ready,
                    "KubeletReady" if ready else "KubeletNotReady",
                    "kubelet is posting ready status"
                    if ready
                    else "the devcluster node agent is shutting down",
                ),
            ],
            "addresses": [{"type": "InternalIP", "address": HOST_IP}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self._port}},
            "nodeInfo": {
                "machineID": _read("/etc/machine-id"),
                "systemUUID": _read("/sys/class/dmi/id/product_uuid") or _read("/etc/machine-id"),
                "bootID": _read("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": uname.release,
                "osImage": _os_image(),
                "containerRuntimeVersion": AGENT_VERSION,
                "kubeletVersion": self._kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": _ARCH.get(uname.machine, uname.machine),
            },
        }

    def heartbeat(self, *, ready: bool = True) -> None:
        self._kube.patch(f"{self._path}/status", {"status": self.status(ready=ready)})
        self._renew_lease()

    def _renew_lease(self) -> None:
        name = path_quote(self._config.node_name)
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {
            "holderIdentity": self._config.node_name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": _micro_time(),
        }
        try:
            self._kube.patch(path, {"spec": spec})
        except ApiError as error:
            if error.status != 404:
                raise
            self._kube.create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self._config.node_name,
                        "namespace": "kube-node-lease",
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Node",
                                "name": self._config.node_name,
                                "uid": self._uid,
                            }
                        ],
                    },
                    "spec": spec,
                },
            )

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self._config.heartbeat_seconds):
            try:
                self.heartbeat()
            except ApiError as error:
                if error.status == 404:
                    log.warning("node %s was deleted; registering again", self._config.node_name)
                    self._try(self.register)
                else:
                    log.warning("heartbeat failed: %s", error)
            except OSError as error:
                log.warning("heartbeat failed: %s", error)

    @staticmethod
    def _try(action: Callable[[], None]) -> None:
        try:
            action()
        except (ApiError, OSError) as error:
            log.warning("node registration failed: %s", error)
