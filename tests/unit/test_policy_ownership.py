"""Releasing SSA ownership of restored fields: only ours, only those paths, values untouched."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from driftwarden.policy.deployment_apply import ResourceValues
from driftwarden.policy.ownership import (
    container_key,
    detach_patch,
    owned_env_names,
    owned_resources,
    release_fields,
    release_patch,
    resource_paths,
)

pytestmark = pytest.mark.unit

SERVER = 'k:{"name":"server"}'


def entry(manager: str, operation: str, container_fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": "apps/v1",
        "time": "2026-03-02T12:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:spec": {"f:template": {"f:spec": {"f:containers": {SERVER: container_fields}}}}
        },
    }


OURS = entry(
    "driftwarden",
    "Apply",
    {
        ".": {},
        "f:name": {},
        "f:env": {'k:{"name":"MODEL_URI"}': {".": {}, "f:name": {}, "f:value": {}}},
        "f:resources": {"f:limits": {"f:cpu": {}, "f:memory": {}}, "f:requests": {"f:cpu": {}}},
    },
)
THEIRS = entry(
    "kubectl-client-side-apply",
    "Update",
    {".": {}, "f:name": {}, "f:image": {}, "f:resources": {"f:limits": {"f:cpu": {}}}},
)


def test_container_key_matches_the_apiserver_encoding() -> None:
    assert container_key("server") == SERVER


def test_resource_paths() -> None:
    paths = resource_paths(
        "server", ResourceValues(requests={"cpu": "1"}, limits={"memory": "1Gi"})
    )
    prefix = ("f:spec", "f:template", "f:spec", "f:containers", SERVER, "f:resources")
    assert paths == [(*prefix, "f:requests", "f:cpu"), (*prefix, "f:limits", "f:memory")]


def test_release_removes_only_our_claims_on_those_paths() -> None:
    before = [copy.deepcopy(THEIRS), copy.deepcopy(OURS)]
    paths = resource_paths(
        "server", ResourceValues(requests={"cpu": "1"}, limits={"cpu": "1", "memory": "1Gi"})
    )
    after = release_fields(before, paths)
    assert after[0] == THEIRS  # others untouched, even where they own the same path
    ours = after[1]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"][SERVER]
    assert ours == {
        ".": {},
        "f:name": {},
        "f:env": {'k:{"name":"MODEL_URI"}': {".": {}, "f:name": {}, "f:value": {}}},
    }  # emptied maps are gone: an empty {} would mean owning the whole field
    assert before == [THEIRS, OURS]  # the input is not modified


def test_release_of_a_path_we_do_not_own_changes_nothing_and_needs_no_patch() -> None:
    paths = resource_paths("server", ResourceValues(limits={"nvidia.com/gpu": "1"}))
    assert release_fields([OURS], paths) == [OURS]
    assert release_patch([OURS], "42", paths) is None


def test_release_patch_is_guarded_by_the_resource_version() -> None:
    paths = resource_paths("server", ResourceValues(requests={"cpu": "1"}))
    patch = release_patch([THEIRS, OURS], "42", paths)
    assert patch is not None
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    assert patch[1]["op"] == "replace" and patch[1]["path"] == "/metadata/managedFields"
    assert len(patch[1]["value"]) == 2


def test_an_entry_left_empty_is_dropped_and_nothing_left_writes_one_empty_entry() -> None:
    only_resources = entry("driftwarden", "Apply", {"f:resources": {"f:limits": {"f:cpu": {}}}})
    paths = resource_paths("server", ResourceValues(limits={"cpu": "1"}))
    assert release_fields([THEIRS, only_resources], paths) == [THEIRS]
    patch = release_patch([only_resources], "7", paths)
    assert patch is not None and patch[1]["value"] == [{}]


def test_detach_patch_removes_our_annotations_and_our_entry_only() -> None:
    annotations = {
        "driftwarden.io/model-uri": "file:///m/v2",
        "driftwarden.io/promoted-run": "r1",
        "deployment.kubernetes.io/revision": "3",
    }
    patch = detach_patch([THEIRS, OURS], "9", annotations)
    assert patch == [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "9"},
        {"op": "remove", "path": "/metadata/annotations/driftwarden.io~1model-uri"},
        {"op": "remove", "path": "/metadata/annotations/driftwarden.io~1promoted-run"},
        {"op": "replace", "path": "/metadata/managedFields", "value": [THEIRS]},
    ]
    alone = detach_patch([OURS], "9", {})
    assert alone[-1]["value"] == [{}]


def test_owned_env_names_are_the_values_we_applied() -> None:
    # What a revert on a Deployment that is no longer the target must keep in its apply.
    assert owned_env_names([THEIRS, OURS], "server") == ["MODEL_URI"]
    assert owned_env_names([THEIRS], "server") == []
    assert owned_env_names([OURS], "sidecar") == []


def test_owned_resources_are_the_live_values_of_the_fields_we_applied() -> None:
    # Every apply carries these: one that left them out would delete them (a promotion
    # after a revert whose hand-back never ran emptied a container's resources that way).
    live = ResourceValues(
        requests={"cpu": "500m", "memory": "256Mi"}, limits={"cpu": "1", "memory": "512Mi"}
    )
    assert owned_resources([THEIRS, OURS], "server", live) == ResourceValues(
        requests={"cpu": "500m"}, limits={"cpu": "1", "memory": "512Mi"}
    )
    assert owned_resources([THEIRS], "server", live) == ResourceValues()
    assert owned_resources([OURS], "sidecar", live) == ResourceValues()
    # Owned but gone from the object: nothing to keep.
    assert owned_resources([OURS], "server", ResourceValues(limits={"cpu": "1"})) == (
        ResourceValues(limits={"cpu": "1"})
    )


def test_resource_values_union_and_without() -> None:
    ours = ResourceValues(requests={"cpu": "1"})
    other = ResourceValues(requests={"cpu": "2", "memory": "1Gi"}, limits={"cpu": "4"})
    assert ours.union(other) == ResourceValues(
        requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "4"}
    )
    assert other.without(ours) == ResourceValues(requests={"memory": "1Gi"}, limits={"cpu": "4"})
