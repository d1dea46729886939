"""The record of a temporary fix on its Deployment, and what a pass does with it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from driftwarden.policy.deployment_apply import (
    FIX_RECORD_ANNOTATION,
    DeploymentIntent,
    ResourceValues,
    TargetRef,
    build_apply,
)
from driftwarden.policy.fix_record import FixRecord, reconcile_record

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
RECORD = FixRecord(
    owner_uid="uid-1",
    owner="slow",
    deployment="web",
    container="server",
    original=ResourceValues(requests={"cpu": "500m"}, limits={"cpu": "1"}),
    applied=ResourceValues(requests={"cpu": "1"}, limits={"cpu": "2", "nvidia.com/gpu": "1"}),
    applied_at=T0,
    expires_at=T0 + timedelta(hours=2),
)


def test_the_record_round_trips_through_its_annotation() -> None:
    text = RECORD.to_annotation()
    assert FixRecord.from_annotation(text) == RECORD
    assert '"original":{"limits":{"cpu":"1"},"requests":{"cpu":"500m"}}' in text
    assert '"expiresAt":"2026-03-02T14:00:00Z"' in text
    for broken in (None, "", "{", "[]", '{"ownerUid": "u"}', text.replace("2026-03", "x")):
        assert FixRecord.from_annotation(broken) is None


def test_the_raise_carries_its_record_in_the_same_apply() -> None:
    body = build_apply(
        TargetRef("ml", "web", "server"),
        DeploymentIntent(
            resources=RECORD.applied,
            fix_expires_at="2026-03-02T14:00:00Z",
            fix_record=RECORD.to_annotation(),
            resource_version="41",
        ),
    )
    assert body["metadata"]["annotations"][FIX_RECORD_ANNOTATION] == RECORD.to_annotation()
    assert body["metadata"]["resourceVersion"] == "41"  # conditional on what was read
    (container,) = body["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == RECORD.applied.to_dict()
    # Without raised resources there is no fix, hence no record (the revert drops it).
    reverted = build_apply(
        TargetRef("ml", "web", "server"), DeploymentIntent(fix_record=RECORD.to_annotation())
    )
    assert "annotations" not in reverted["metadata"]


def test_a_pass_adopts_a_record_status_does_not_show() -> None:
    # The status write after the raise was lost (409, timeout, crash): adopt, never raise.
    assert reconcile_record(None, RECORD, "uid-1", legacy_annotation=True) == "Adopt"
    older = replace(RECORD, applied_at=T0 - timedelta(hours=3))
    assert reconcile_record(older, RECORD, "uid-1", legacy_annotation=True) == "Adopt"
    status_copy = replace(RECORD, owner="")  # status does not hold the owner's name
    assert reconcile_record(status_copy, RECORD, "uid-1", legacy_annotation=True) == "Agree"


def test_a_fix_status_shows_but_the_deployment_does_not_is_finished() -> None:
    assert reconcile_record(RECORD, None, "uid-1", legacy_annotation=False) == "Gone"
    # Applied by a version that wrote only the expiry annotation: kept, its record written.
    assert reconcile_record(RECORD, None, "uid-1", legacy_annotation=True) == "Legacy"
    assert reconcile_record(None, None, "uid-1", legacy_annotation=False) == "Nothing"


def test_another_resources_fix_is_never_ours() -> None:
    assert reconcile_record(None, RECORD, "uid-2", legacy_annotation=True) == "Foreign"
    assert reconcile_record(RECORD, RECORD, "uid-2", legacy_annotation=True) == "Foreign"
