"""Every apply carries what DriftWarden owns on the target container (services.target_writer
.TargetWriter.intent): server-side apply deletes a field its manager owns alone and leaves
out. Found by the chaos test: a promotion after a revert whose hand-back was lost emptied
the container's requests and limits."""

from __future__ import annotations

from typing import Any

import pytest
from test_target_model_env import writer

from driftwarden.policy.deployment_apply import PROMOTED_RUN_ANNOTATION, ResourceValues

pytestmark = pytest.mark.unit

Json = dict[str, Any]
CONTAINER = 'k:{"name":"app"}'


def owned_by_us(container_fields: Json) -> Json:
    return {
        "manager": "driftwarden",
        "operation": "Apply",
        "fieldsV1": {
            "f:spec": {"f:template": {"f:spec": {"f:containers": {CONTAINER: container_fields}}}}
        },
    }


def with_container(env: list[Json], resources: Json, managed: list[Json]) -> Any:
    target = writer(env)
    deployment = target.ctx.target_api.deployment  # type: ignore[attr-defined]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["resources"] = resources
    deployment["metadata"]["managedFields"] = managed
    deployment["metadata"]["annotations"] = {PROMOTED_RUN_ANNOTATION: "r3-abcdef"}
    return target, deployment


def test_requests_and_limits_we_own_are_carried_at_their_live_values() -> None:
    resources = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1"}}
    ours = owned_by_us({"f:resources": {"f:requests": {"f:cpu": {}}, "f:limits": {"f:cpu": {}}}})
    target, deployment = with_container([], resources, [ours])
    intent = target.intent(deployment, "app")
    assert intent.resources == ResourceValues(requests={"cpu": "500m"}, limits={"cpu": "1"})


def test_nothing_is_carried_that_someone_else_owns() -> None:
    resources = {"requests": {"cpu": "500m"}}
    theirs = {**owned_by_us({"f:resources": {"f:requests": {"f:cpu": {}}}}), "manager": "kubectl"}
    target, deployment = with_container([], resources, [theirs])
    assert target.intent(deployment, "app").resources == ResourceValues()


def test_the_model_env_var_we_own_is_kept_when_status_lost_its_promotion() -> None:
    env = [{"name": "MODEL_URI", "value": "pvc://models/r3"}]
    model_env = {'k:{"name":"MODEL_URI"}': {".": {}, "f:name": {}, "f:value": {}}}
    ours = owned_by_us({"f:env": model_env})
    target, deployment = with_container(env, {}, [ours])
    intent = target.intent(deployment, "app")  # status.promoted is None
    assert intent.model_uri == "pvc://models/r3"
    assert intent.promoted_run == "r3-abcdef"
    # Someone else's value is never taken over.
    target, deployment = with_container(env, {}, [{**ours, "manager": "kubectl"}])
    assert target.intent(deployment, "app").model_uri is None
