"""Which requests the fault proxy may answer with 409: those kube-apiserver itself could."""

from __future__ import annotations

import json

import pytest

from devcluster.faultproxy import can_conflict

pytestmark = pytest.mark.unit

MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"


def body(document: object) -> bytes:
    return json.dumps(document).encode()


def test_reads_never_conflict() -> None:
    assert not can_conflict("GET", None, "", b"")
    assert not can_conflict("WATCH", None, "", b"")


def test_creates_and_updates_can() -> None:
    assert can_conflict("POST", None, "application/json", body({"kind": "Event"}))
    assert can_conflict("PUT", None, "application/json", body({"metadata": {}}))


def test_a_merge_patch_only_with_a_resource_version() -> None:
    # kopf's annotation patches: the apiserver retries its own conflicts for these.
    assert not can_conflict("PATCH", None, MERGE, body({"metadata": {"annotations": {}}}))
    assert can_conflict("PATCH", None, MERGE, body({"metadata": {"resourceVersion": "7"}}))


def test_a_json_patch_only_with_a_test_of_the_resource_version() -> None:
    test = {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    replace = {"op": "replace", "path": "/metadata/managedFields", "value": []}
    assert can_conflict("PATCH", None, JSON_PATCH, body([test, replace]))
    assert not can_conflict("PATCH", None, JSON_PATCH, body([replace]))


def test_an_apply_unless_forced_or_with_a_resource_version() -> None:
    plain = body({"metadata": {"name": "x"}})
    assert can_conflict("PATCH", None, APPLY, plain)
    assert not can_conflict("PATCH", "true", APPLY, plain)
    assert can_conflict("PATCH", "true", APPLY, body({"metadata": {"resourceVersion": "7"}}))
    assert can_conflict("PATCH", None, APPLY, b"metadata:\n  name: x\n")  # YAML


def test_a_delete_only_with_preconditions() -> None:
    assert not can_conflict("DELETE", None, "application/json", b"")
    assert not can_conflict("DELETE", None, "", body({"propagationPolicy": "Background"}))
    assert can_conflict("DELETE", None, "", body({"preconditions": {"uid": "u"}}))
