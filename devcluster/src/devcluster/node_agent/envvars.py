"""A container's environment, resolved the way the kubelet does it."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping

from devcluster.node_agent.downward import field_value, resource_value
from devcluster.node_agent.kube import Obj


class EnvError(ValueError):
    """A referenced ConfigMap, Secret or key is missing (CreateContainerConfigError)."""


def expand(text: str, values: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion.

    `$(NAME)` becomes the value of NAME when it is defined and stays as written otherwise;
    `$$` is an escaped `$`; any other `$` is kept.
    """
    out: list[str] = []
    i = 0
    length = len(text)
    while i < length:
        char = text[i]
        if char != "$" or i + 1 >= length:
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(":
            close = text.find(")", i + 2)
            if close == -1:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : close]
                out.append(values.get(name, f"$({name})"))
                i = close + 1
        else:
            out.append("$" + following)
            i += 2
    return "".join(out)


ObjectGetter = Callable[[str, str], Obj | None]
"""(kind "configmaps"|"secrets", name) -> the object, or None when it does not exist."""


def _source_data(obj: Obj, kind: str) -> dict[str, str]:
    if kind == "secrets":
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
    data = dict(obj.get("data") or {})
    for key, value in (obj.get("binaryData") or {}).items():
        data[key] = base64.b64decode(value).decode(errors="replace")
    return data


def _key_ref(get: ObjectGetter, kind: str, ref: Obj) -> str | None:
    name = ref.get("name", "")
    optional = bool(ref.get("optional", False))
    obj = get(kind, name)
    if obj is None:
        if optional:
            return None
        raise EnvError(f'{kind[:-1]} "{name}" not found')
    data = _source_data(obj, kind)
    key = ref.get("key", "")
    if key not in data:
        if optional:
            return None
        raise EnvError(f'couldn\'t find key {key} in {kind[:-1].capitalize()} "{name}"')
    return data[key]


def resolve_env(
    pod: Obj,
    container: Obj,
    service_env: Mapping[str, str],
    *,
    get: ObjectGetter,
    pod_ip: str,
    host_ip: str,
    node_allocatable: dict[str, str],
) -> dict[str, str]:
    """The variables the kubelet passes: service variables < envFrom < env.

    Each env value is expanded against the variables before it, as `$(VAR)` references are.
    The image's own defaults (PATH, HOME) are not part of this, as with a container runtime.
    """
    declared: dict[str, str] = dict(service_env)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, ref in (
            ("configmaps", source.get("configMapRef")),
            ("secrets", source.get("secretRef")),
        ):
            if not ref:
                continue
            obj = get(kind, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'{kind[:-1]} "{ref.get("name", "")}" not found')
            for key, value in _source_data(obj, kind).items():
                declared[prefix + key] = value
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            declared[name] = expand(str(var.get("value", "")), declared)
            continue
        source = var["valueFrom"]
        resolved: str | None
        if "fieldRef" in source:
            resolved = field_value(
                pod, source["fieldRef"]["fieldPath"], pod_ip=pod_ip, host_ip=host_ip
            )
        elif "resourceFieldRef" in source:
            resolved = resource_value(
                pod, container["name"], source["resourceFieldRef"], node_allocatable
            )
        elif "configMapKeyRef" in source:
            resolved = _key_ref(get, "configmaps", source["configMapKeyRef"])
        elif "secretKeyRef" in source:
            resolved = _key_ref(get, "secrets", source["secretKeyRef"])
        else:
            raise EnvError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if resolved is not None:
            declared[name] = resolved
    return declared


def expand_command(container: Obj, env: Mapping[str, str]) -> list[str]:
    """command + args with $(VAR) expanded; an image has no entrypoint here, so one is needed."""
    command = [expand(str(part), env) for part in container.get("command") or []]
    args = [expand(str(part), env) for part in container.get("args") or []]
    argv = command + args
    if not argv:
        raise EnvError(
            "container has neither command nor args: a devcluster image has no entrypoint"
        )
    return argv
