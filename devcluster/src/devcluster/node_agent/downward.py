"""The downward API: a Pod's own fields and resources, for env vars and volume files."""

from __future__ import annotations

import math
import re

from devcluster.node_agent.kube import Obj
from devcluster.node_agent.quantity import parse_quantity

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class DownwardError(ValueError):
    """A fieldRef or resourceFieldRef the Pod cannot answer."""


def _format_map(values: dict[str, str]) -> str:
    # The kubelet's format for whole-map files: sorted key="value" lines, values quoted.
    return "\n".join(f'{key}="{_quote(value)}"' for key, value in sorted(values.items()))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def field_value(pod: Obj, field_path: str, *, pod_ip: str, host_ip: str) -> str:
    metadata = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if field_path in simple:
        return str(simple[field_path])
    if field_path == "metadata.labels":
        return _format_map(metadata.get("labels") or {})
    if field_path == "metadata.annotations":
        return _format_map(metadata.get("annotations") or {})
    match = _SUBSCRIPT.match(field_path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    raise DownwardError(f"unsupported fieldRef fieldPath {field_path!r}")


def resource_value(
    pod: Obj, container_name: str, resource_ref: Obj, node_allocatable: dict[str, str]
) -> str:
    """resourceFieldRef: a container's request or limit, rounded up in units of the divisor.

    A missing limit reads as the node's allocatable, as with the kubelet.
    """
    name = resource_ref.get("containerName") or container_name
    resource = str(resource_ref.get("resource", ""))
    kind, _, resource_name = resource.partition(".")
    if kind not in ("limits", "requests") or not resource_name:
        raise DownwardError(f"unsupported resourceFieldRef resource {resource!r}")
    containers = pod.get("spec", {}).get("containers", []) + pod.get("spec", {}).get(
        "initContainers", []
    )
    container = next((c for c in containers if c.get("name") == name), None)
    if container is None:
        raise DownwardError(f"resourceFieldRef names unknown container {name!r}")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(resource_name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(resource_name)
    if raw is None:
        raw = node_allocatable.get(resource_name, "0")
    value = parse_quantity(str(raw))
    divisor = parse_quantity(str(resource_ref.get("divisor") or "1"))
    if divisor == 0:
        raise DownwardError("resourceFieldRef divisor is zero")
    return str(math.ceil(value / divisor))
