"""The node-wide services every PodWorker shares."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from devcluster.node_agent.config import AgentConfig
from devcluster.node_agent.container import ContainerPaths, Launcher
from devcluster.node_agent.container_spec import interpreter_paths
from devcluster.node_agent.events import EventRecorder
from devcluster.node_agent.gpus import GpuAllocator
from devcluster.node_agent.kube import ApiError, Kube, Obj, path_quote
from devcluster.node_agent.pod_ips import PodIPAllocator
from devcluster.node_agent.pod_worker import container_paths
from devcluster.node_agent.volumes import VolumeManager

HOST_IP = "127.0.0.1"


@dataclass
class NodeRuntime:
    config: AgentConfig
    kube: Kube
    allocatable: dict[str, str]
    events: EventRecorder
    ips: PodIPAllocator
    gpus: GpuAllocator
    volumes: VolumeManager
    launcher: Launcher = field(default_factory=Launcher)
    host_ip: str = HOST_IP
    keep_reachable: list[str] = field(default_factory=interpreter_paths)
    inherited_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, config: AgentConfig, kube: Kube, allocatable: dict[str, str]) -> NodeRuntime:
        def taken_elsewhere(address: str) -> bool:
            try:
                found = kube.get("/api/v1/pods", fieldSelector=f"status.podIP={address}", limit=1)
            except (ApiError, OSError):
                return False
            return bool(found.get("items"))

        return cls(
            config=config,
            kube=kube,
            allocatable=allocatable,
            events=EventRecorder(kube, config.node_name),
            ips=PodIPAllocator(config.node_name, taken_elsewhere, config.pod_cidr),
            gpus=GpuAllocator(config.gpu_devices),
            volumes=VolumeManager(kube, config.pods_dir, allocatable, HOST_IP),
            inherited_env={k: os.environ[k] for k in config.inherit_env if k in os.environ},
        )

    def container_paths(self, pod: Obj, container: str) -> ContainerPaths:
        return container_paths(self.config.pods_dir, self.config.logs_dir, pod, container)

    def get_object(self, namespace: str, kind: str, name: str) -> Obj | None:
        try:
            return self.kube.get(
                f"/api/v1/namespaces/{path_quote(namespace)}/{kind}/{path_quote(name)}"
            )
        except ApiError as error:
            if error.status == 404:
                return None
            raise
