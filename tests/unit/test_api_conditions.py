from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from driftwarden.api.conditions import (
    Condition,
    ConditionType,
    Reason,
    get_condition,
    is_condition_true,
    set_condition,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_is_appended_with_the_time_given() -> None:
    conditions: list[Condition] = []
    assert set_condition(conditions, ConditionType.READY, "True", Reason.READY, "ok", 1, T0)
    ready = get_condition(conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason, ready.observed_generation) == ("True", "Ready", 1)
    assert ready.last_transition_time == T0
    assert is_condition_true(conditions, ConditionType.READY)


def test_same_status_keeps_the_transition_time_but_updates_reason_and_message() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, "DriftDetected", "True", Reason.DRIFT_OVER_THRESHOLD, "0.3", 1, T0)
    changed = set_condition(
        conditions, "DriftDetected", "True", Reason.DRIFT_OVER_THRESHOLD, "0.4", 2, T1
    )
    assert changed
    drift = get_condition(conditions, "DriftDetected")
    assert drift is not None
    assert drift.last_transition_time == T0
    assert (drift.message, drift.observed_generation) == ("0.4", 2)


def test_a_status_change_moves_the_transition_time() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, "DriftDetected", "True", Reason.DRIFT_OVER_THRESHOLD, "x", 1, T0)
    set_condition(conditions, "DriftDetected", "False", Reason.NO_DRIFT, "y", 1, T1)
    drift = get_condition(conditions, "DriftDetected")
    assert drift is not None
    assert (drift.status, drift.last_transition_time) == ("False", T1)
    assert len(conditions) == 1


def test_nothing_changed_reports_false() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, "Optimizing", "False", Reason.IDLE, "idle", 3, T0)
    before = list(conditions)
    assert not set_condition(conditions, "Optimizing", "False", Reason.IDLE, "idle", 3, T1)
    assert conditions == before


def test_other_conditions_are_left_alone() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, "Ready", "True", Reason.READY, "ok", 1, T0)
    set_condition(conditions, "Optimizing", "True", Reason.RUN_IN_PROGRESS, "r-1", 1, T0)
    set_condition(conditions, "Ready", "False", Reason.PVC_NOT_FOUND, "no claim data", 1, T1)
    assert [c.type for c in conditions] == ["Ready", "Optimizing"]
    assert is_condition_true(conditions, "Optimizing")
    assert not is_condition_true(conditions, "Ready")
    assert not is_condition_true(conditions, "TemporaryFixActive")


def test_json_shape_is_metav1() -> None:
    conditions: list[Condition] = []
    set_condition(conditions, "Ready", "Unknown", Reason.AWAITING_FIRST_EVALUATION, "", 4, T0)
    assert conditions[0].model_dump(mode="json") == {
        "type": "Ready",
        "status": "Unknown",
        "observedGeneration": 4,
        "lastTransitionTime": "2026-03-01T12:00:00Z",
        "reason": "AwaitingFirstEvaluation",
        "message": "",
    }


def test_reasons_are_camel_case_and_long_messages_are_cut() -> None:
    with pytest.raises(ValueError, match="reason"):
        set_condition([], "Ready", "False", "not camel case", "x", 1, T0)
    conditions: list[Condition] = []
    set_condition(conditions, "Ready", "False", Reason.BAD_INPUT, "x" * 40_000, 1, T0)
    assert len(conditions[0].message) == 32768
    assert conditions[0].message.endswith("...")
