"""The node's GPUs, handed out to the containers that request `nvidia.com/gpu`.

Like a device plugin: a container sees only the devices it was given (CUDA_VISIBLE_DEVICES),
and one that asked for none sees no GPU at all.
"""

from __future__ import annotations

import threading

from devcluster.node_agent.kube import Obj
from devcluster.node_agent.quantity import parse_quantity

GPU_RESOURCE = "nvidia.com/gpu"


def gpus_requested(container: Obj) -> int:
    resources = container.get("resources") or {}
    raw = (resources.get("limits") or {}).get(GPU_RESOURCE) or (
        resources.get("requests") or {}
    ).get(GPU_RESOURCE)
    return int(parse_quantity(str(raw))) if raw is not None else 0


class GpuAllocator:
    def __init__(self, devices: list[str]) -> None:
        self._free = list(devices)
        self._held: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def assign(self, owner: str, count: int) -> list[str]:
        """Devices for `owner` (pod uid + container); the same ones again on a restart."""
        with self._lock:
            if owner in self._held:
                return self._held[owner]
            if count > len(self._free):
                raise RuntimeError(
                    f"{count} {GPU_RESOURCE} requested but only {len(self._free)} free on this node"
                )
            taken, self._free = self._free[:count], self._free[count:]
            self._held[owner] = taken
            return taken

    def release_prefix(self, prefix: str) -> None:
        with self._lock:
            for owner in [o for o in self._held if o.startswith(prefix)]:
                self._free.extend(self._held.pop(owner))

    @staticmethod
    def visible_devices_env(devices: list[str]) -> dict[str, str]:
        joined = ",".join(devices)
        return {"CUDA_VISIBLE_DEVICES": joined, "NVIDIA_VISIBLE_DEVICES": joined or "void"}
