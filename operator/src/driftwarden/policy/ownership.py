"""Give up server-side-apply ownership of fields without changing their values.

After a temporary fix is reverted, DriftWarden's field manager still owns the requests and
limits it restored (it applied them). Two things would go wrong if it kept them: a later
apply without them would *delete* them (we would be their only owner), and GitOps tools that
ignore fields owned by ``driftwarden`` (Argo CD's ``managedFieldsManagers``) would stop
syncing the container's resources for good. Leaving them out of the next apply is not an
option either, for the first reason.

Kubernetes lets any write other than an apply replace ``metadata.managedFields``; a
JSON patch that swaps our Apply entry for one without those paths (guarded by a ``test`` of
the resourceVersion) leaves the values exactly as restored and owned by nobody, as they
would be for an object nobody applied. The next writer (kubectl, Argo CD, Flux) takes them
without a conflict. ``release_patch`` builds that JSON patch; ``release_fields`` is the pure
transformation of the entries. ``detach_patch`` does the same for everything we own when a
resource stops managing its target (``spec.target`` removed, the resource deleted).

A path is a tuple of fieldsV1 keys, e.g.
``("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"server"}', "f:resources",
"f:limits", "f:cpu")``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from driftwarden.policy.deployment_apply import ANNOTATION_PREFIX, FIELD_MANAGER, ResourceValues

FieldPath = tuple[str, ...]


def container_key(name: str) -> str:
    """The fieldsV1 key of a container in the containers list (keyed by name)."""
    return "k:" + json.dumps({"name": name}, separators=(",", ":"))


def _container_path(container: str) -> FieldPath:
    return ("f:spec", "f:template", "f:spec", "f:containers", container_key(container))


def resource_paths(container: str, values: ResourceValues) -> list[FieldPath]:
    """The fieldsV1 paths of the given requests/limits of a Deployment's container."""
    base = (*_container_path(container), "f:resources")
    paths: list[FieldPath] = []
    for section, names in (("f:requests", values.requests), ("f:limits", values.limits)):
        paths.extend((*base, section, f"f:{name}") for name in sorted(names))
    return paths


def _applied(
    managed_fields: Sequence[dict[str, Any]], container: str, key: str, manager: str
) -> list[dict[str, Any]]:
    """The fieldsV1 nodes at ``key`` of a container in ``manager``'s Apply entries."""
    nodes: list[dict[str, Any]] = []
    for entry in managed_fields:
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        node: Any = entry.get("fieldsV1") or {}
        for step in (*_container_path(container), key):
            node = node.get(step) if isinstance(node, dict) else None
        if isinstance(node, dict):
            nodes.append(node)
    return nodes


def owned_resources(
    managed_fields: Sequence[dict[str, Any]],
    container: str,
    live: ResourceValues,
    manager: str = FIELD_MANAGER,
) -> ResourceValues:
    """The requests/limits of a container that ``manager`` owns by apply, at their ``live``
    values. Every apply must carry these (or mean to delete them): an apply that leaves out
    a field its manager alone owns deletes it - as a promotion did after a revert whose
    hand-back never ran (the operator died in between), emptying the container's resources."""
    owned: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    for node in _applied(managed_fields, container, "f:resources", manager):
        for section, values in (("requests", live.requests), ("limits", live.limits)):
            fields = node.get(f"f:{section}")
            for key in fields if isinstance(fields, dict) else ():
                name = key[2:] if key.startswith("f:") else None
                if name is not None and name in values:
                    owned[section][name] = values[name]
    return ResourceValues(owned["requests"], owned["limits"])


def owned_env_names(
    managed_fields: Sequence[dict[str, Any]],
    container: str,
    manager: str = FIELD_MANAGER,
) -> list[str]:
    """The env vars of a container whose value ``manager`` owns by apply (the model env var
    it promoted), so a revert on a Deployment that is no longer the target keeps them."""
    names: list[str] = []
    for node in _applied(managed_fields, container, "f:env", manager):
        for key, fields in node.items():
            if key.startswith("k:") and isinstance(fields, dict) and "f:value" in fields:
                names.append(str(json.loads(key[2:])["name"]))
    return sorted(names)


def release_fields(
    managed_fields: Sequence[dict[str, Any]],
    paths: Iterable[FieldPath],
    manager: str = FIELD_MANAGER,
    operation: str = "Apply",
) -> list[dict[str, Any]]:
    """``managed_fields`` with ``manager``'s ``operation`` entry no longer owning ``paths``.

    Parents left with nothing but their own "." marker are dropped as well (owning the
    existence of an emptied ``limits`` map is not ours to keep). An entry left empty is
    removed. Other managers' entries are returned unchanged.
    """
    wanted = list(paths)
    result: list[dict[str, Any]] = []
    for entry in managed_fields:
        if entry.get("manager") != manager or entry.get("operation") != operation:
            result.append(entry)
            continue
        fields = copy.deepcopy(entry.get("fieldsV1") or {})
        for path in wanted:
            _remove(fields, path)
        if fields:
            result.append({**entry, "fieldsV1": fields})
    return result


def release_patch(
    managed_fields: Sequence[dict[str, Any]],
    resource_version: str,
    paths: Iterable[FieldPath],
) -> list[dict[str, Any]] | None:
    """A JSON patch that releases ``paths``, or None when we own none of them.

    An empty ``managedFields`` in a request means "keep the current ones", so when nothing at
    all would be left the patch writes one empty entry, which is Kubernetes' documented way
    to clear them.
    """
    released = release_fields(managed_fields, paths)
    if released == list(managed_fields):
        return None
    return [
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
        {"op": "replace", "path": "/metadata/managedFields", "value": released or [{}]},
    ]


def detach_patch(
    managed_fields: Sequence[dict[str, Any]],
    resource_version: str,
    annotations: Mapping[str, str],
    manager: str = FIELD_MANAGER,
) -> list[dict[str, Any]]:
    """A JSON patch that ends DriftWarden's management of the object: our annotations are
    removed (they would go stale) and our Apply entry leaves ``managedFields``; every other
    value - the served model env var included - stays as it is, owned by nobody until the
    next writer (kubectl, Argo CD, Flux) takes it. Call it after any temporary fix is
    reverted: it keeps whatever values are live."""
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}
    ]
    for name in sorted(annotations):
        if name.startswith(ANNOTATION_PREFIX):
            ops.append({"op": "remove", "path": "/metadata/annotations/" + _pointer(name)})
    kept = [
        e
        for e in managed_fields
        if not (e.get("manager") == manager and e.get("operation") == "Apply")
    ]
    ops.append({"op": "replace", "path": "/metadata/managedFields", "value": kept or [{}]})
    return ops


def _pointer(key: str) -> str:
    """A JSON-pointer segment (RFC 6901): "~" -> "~0", "/" -> "~1"."""
    return key.replace("~", "~0").replace("/", "~1")


def _remove(fields: dict[str, Any], path: FieldPath) -> None:
    if not path:
        return
    head, rest = path[0], path[1:]
    if head not in fields:
        return
    if rest:
        child = fields[head]
        if not isinstance(child, dict):
            return
        _remove(child, rest)
        if not child or set(child) == {"."}:
            del fields[head]
    else:
        del fields[head]
