"""Promotion: the SSA apply configuration's shape, rollback intents and the rollback decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from driftwarden.policy.deployment_apply import (
    DeploymentIntent,
    ResourceValues,
    TargetRef,
    build_apply,
)
from driftwarden.policy.gates import GateSettings
from driftwarden.policy.promotion import (
    EvaluatedModel,
    Promoted,
    promote,
    promoted_after,
    roll_back,
    rollback_decision,
    rolled_back,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
TARGET = TargetRef(namespace="prod", deployment="digits", container="server", model_env="MODEL_URI")
V1 = "pvc://models/digits/v1"
V2 = "pvc://artifacts/digits/run-3"


def test_promotion_apply_holds_only_the_container_name_and_the_env_var() -> None:
    body = build_apply(TARGET, promote(DeploymentIntent(), V2, "run-3"))
    assert body == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "digits",
            "namespace": "prod",
            "annotations": {
                "driftwarden.io/model-uri": V2,
                "driftwarden.io/promoted-run": "run-3",
            },
        },
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "server", "env": [{"name": "MODEL_URI", "value": V2}]}]
                }
            }
        },
    }


def test_one_apply_carries_promotion_and_fix_together() -> None:
    fix = ResourceValues(requests={"cpu": "500m"}, limits={"cpu": "1", "nvidia.com/gpu": "1"})
    intent = DeploymentIntent(resources=fix, fix_expires_at="2026-03-02T14:00:00Z")
    body = build_apply(TARGET, promote(intent, V2, "run-3"))
    (container,) = body["spec"]["template"]["spec"]["containers"]
    assert container == {
        "name": "server",
        "env": [{"name": "MODEL_URI", "value": V2}],
        "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "1", "nvidia.com/gpu": "1"}},
    }
    assert body["metadata"]["annotations"]["driftwarden.io/temporary-fix-expires"] == (
        "2026-03-02T14:00:00Z"
    )
    # No replicas, selector, image, other containers or other env vars: nothing to co-own.
    assert set(body["spec"]) == {"template"} and set(body["spec"]["template"]) == {"spec"}


def test_an_empty_intent_applies_identity_only() -> None:
    # Applying it lets go of every field we applied before (we own nothing afterwards).
    assert build_apply(TARGET, DeploymentIntent()) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "digits", "namespace": "prod"},
    }


def test_promoted_records_and_rollback_points_back() -> None:
    first = promoted_after(None, V1, V2, "run-3", T0)
    assert first == Promoted(current=V2, run_id="run-3", at=T0, previous=V1, previous_run_id=None)
    intent = promote(DeploymentIntent(), V2, "run-3")
    back = roll_back(intent, first)
    assert back.model_uri == V1 and back.promoted_run is None
    body = build_apply(TARGET, back)
    assert body["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "MODEL_URI", "value": V1}
    ]
    assert body["metadata"]["annotations"] == {"driftwarden.io/model-uri": V1}
    after = rolled_back(first, T0 + timedelta(minutes=7))
    assert after.current == V1 and after.previous is None  # never back to the bad one
    with pytest.raises(ValueError, match="nothing to roll back to"):
        roll_back(back, after)


def test_second_promotion_keeps_the_chain() -> None:
    first = promoted_after(None, V1, V2, "run-3", T0)
    second = promoted_after(
        first, V2, "pvc://artifacts/digits/run-5", "run-5", T0 + timedelta(hours=1)
    )
    assert second.previous == V2 and second.previous_run_id == "run-3"


GATES = GateSettings(max_accuracy_drop_percent=1, min_accuracy_percent=90)
PROMOTED = Promoted(current=V2, run_id="run-3", at=T0, previous=V1)


def evaluation(accuracy: float | None, *, uri: str = V2, minutes: int = 5) -> EvaluatedModel:
    return EvaluatedModel(
        time=T0 + timedelta(minutes=minutes), model_uri=uri, accuracy_percent=accuracy
    )


def test_rollback_waits_for_an_evaluation_of_the_promoted_model() -> None:
    assert rollback_decision(PROMOTED, None, GATES, 95.0).verdict == "Wait"
    assert rollback_decision(PROMOTED, evaluation(50.0, uri=V1), GATES, 95.0).verdict == "Wait"
    assert rollback_decision(PROMOTED, evaluation(50.0, minutes=-1), GATES, 95.0).verdict == "Wait"


def test_rollback_when_accuracy_falls_more_than_the_gate_allows() -> None:
    assert rollback_decision(PROMOTED, evaluation(94.0), GATES, 95.0).verdict == "Keep"
    decision = rollback_decision(PROMOTED, evaluation(93.5), GATES, 95.0)
    assert decision.verdict == "Rollback"
    assert "1.50 points under the previous model's 95.00%" in decision.reason
    assert "run-3" in decision.reason and V1 in decision.reason


def test_rollback_when_accuracy_is_under_the_minimum() -> None:
    decision = rollback_decision(PROMOTED, evaluation(89.0), GATES, None)
    assert decision.verdict == "Rollback" and "under the minimum 90%" in decision.reason


def test_no_rollback_without_a_previous_model_or_a_measurement() -> None:
    alone = Promoted(current=V2, run_id="run-3", at=T0)
    assert rollback_decision(alone, evaluation(10.0), GATES, 95.0).verdict == "Keep"
    assert rollback_decision(PROMOTED, evaluation(None), GATES, 95.0).verdict == "Keep"
