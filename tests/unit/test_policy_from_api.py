"""From the API models to the policies' inputs: parsed, exact, read from the right fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from driftwarden.api import conditions as cond
from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.api.status import ModelOptimizationStatus
from driftwarden.policy import from_api
from driftwarden.policy.deployment_apply import ResourceValues
from driftwarden.policy.triggers import DriftStreak

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def spec(**extra: Any) -> ModelOptimizationSpec:
    body: dict[str, Any] = {
        "model": {"uri": "pvc://models/m/v1"},
        "data": {
            "reference": "pvc://data/ref.parquet",
            "current": "pvc://data/cur.parquet",
            "holdout": "pvc://data/hold.parquet",
        },
        "artifacts": {"uri": "pvc://models/runs"},
        "target": {"deployment": "server"},
        "pipeline": [{"prune": {"amountPercent": 50}}],
    }
    body.update(extra)
    return ModelOptimizationSpec.model_validate(body)


def status(body: dict[str, Any]) -> ModelOptimizationStatus:
    return ModelOptimizationStatus.model_validate(body)


def test_trigger_settings_parse_durations_and_decimals() -> None:
    settings = from_api.trigger_settings(
        spec(
            triggers={
                "drift": {"threshold": "0.15", "consecutiveWindows": 3},
                "latency": {"p95Ms": 40},
                "accuracy": {"minPercent": 90},
                "schedule": "0 3 * * *",
                "cooldown": "1h30m",
                "maxRunsPerDay": 2,
            }
        )
    )
    assert settings.drift_threshold == Decimal("0.15")
    assert settings.drift_consecutive_windows == 3
    assert settings.latency_p95_ms == 40 and settings.accuracy_min_percent == 90
    assert settings.schedule == "0 3 * * *"
    assert settings.cooldown == timedelta(hours=1, minutes=30) and settings.max_runs_per_day == 2
    assert from_api.trigger_settings(spec()).drift_threshold is None


def test_latency_batch_follows_the_trigger_else_32_else_the_largest() -> None:
    assert from_api.latency_batch(spec(triggers={"latency": {"p95Ms": 5, "batchSize": 1}})) == 1
    assert from_api.latency_batch(spec()) == 32
    assert from_api.latency_batch(spec(monitoring={"latency": {"batchSizes": [1, 8]}})) == 8


def test_drift_streak_starts_when_drift_detected_turned_true() -> None:
    conditions: list[cond.Condition] = []
    cond.set_condition(conditions, "DriftDetected", "True", "DriftOverThreshold", "m", now=T0)
    cond.set_condition(
        conditions, "DriftDetected", "True", "DriftOverThreshold", "m2", now=T0 + timedelta(hours=1)
    )
    current = status(
        {
            "consecutiveDriftWindows": 4,
            "conditions": [c.model_dump(mode="json") for c in conditions],
        }
    )
    assert from_api.drift_streak(current) == DriftStreak(4, T0)
    assert from_api.drift_streak(status({"consecutiveDriftWindows": 0})) == DriftStreak()


def test_trigger_state_reads_status() -> None:
    current = status(
        {
            "lastEvaluation": {
                "driftScore": 0.3,
                "latency": {"p95Ms": 12.5},
                "accuracyPercent": 91.0,
            },
            "activeRun": {"id": "r2-aaaaaa", "trigger": "Drift"},
            "runs": [
                {
                    "id": "r1-bbbbbb",
                    "trigger": "Latency",
                    "outcome": "Rejected",
                    "startedAt": "2026-03-02T10:00:00Z",
                    "finishedAt": "2026-03-02T10:10:00Z",
                }
            ],
            "runBudget": {"startTimes": ["2026-03-02T10:00:00Z"]},
            "lastRunRequest": "a",
            "lastScheduleTime": "2026-03-02T03:00:00Z",
        }
    )
    state = from_api.trigger_state(spec(runRequest="b", suspend=True), current, T0)
    assert state.suspended and state.run_active
    assert state.observation is not None and state.observation.latency_p95_ms == 12.5
    assert state.runs[0].trigger == "Latency" and state.runs[0].outcome == "Rejected"
    assert state.budget_start_times == [datetime(2026, 3, 2, 10, 0, tzinfo=UTC)]
    assert (state.run_request, state.last_run_request) == ("b", "a")
    assert state.last_schedule_time == datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


def test_latency_breaches_count_evaluations_of_one_model_in_a_row() -> None:
    settings = from_api.trigger_settings(
        spec(triggers={"latency": {"p95Ms": 40, "consecutiveBreaches": 3}})
    )
    assert settings.latency_consecutive_breaches == 3
    assert from_api.trigger_settings(spec()).latency_consecutive_breaches == 1
    v1, v2 = "pvc://models/m/v1", "pvc://models/m/v2"
    breached_v1 = {"lastEvaluation": {"modelUri": v1}, "consecutiveLatencyBreaches": 2}
    assert from_api.next_latency_breaches(status(breached_v1), v1, True) == 3
    # A new model in use (a promotion) starts the count again.
    assert from_api.next_latency_breaches(status(breached_v1), v2, True) == 1
    assert from_api.next_latency_breaches(status(breached_v1), v1, False) == 0
    # Nothing measured (no SLO, Prometheus unreachable) neither advances nor breaks it.
    assert from_api.next_latency_breaches(status(breached_v1), v1, None) == 2
    assert from_api.next_latency_breaches(status({}), v1, True) == 1
    # A status from before the count existed: its last evaluation counts as one breach.
    assert from_api.latency_breaches(status({"lastEvaluation": {"modelUri": v1}})) == 1
    assert from_api.latency_breaches(status(breached_v1)) == 2
    observed = from_api.observation(status({**breached_v1, "lastEvaluation": {"modelUri": v1}}))
    assert observed is not None and observed.latency_breaches == 2


def test_gate_and_fix_settings_parse_quantities() -> None:
    gates = from_api.gate_settings(
        spec(gates={"maxAccuracyDropPercent": 2, "minSpeedupPercent": 50, "maxSize": "10Mi"})
    )
    assert gates.max_size_bytes == 10 * 1024**2 and gates.min_speedup_percent == 50
    assert gates.latency_batch == 32
    fix = from_api.fix_settings(
        spec(
            triggers={"latency": {"p95Ms": 10}},
            temporaryFix={
                "maxCpu": "1500m",
                "maxMemory": "2Gi",
                "extraGpus": 1,
                "expiresAfter": "45m",
            },
        )
    )
    assert fix is not None
    assert fix.max_cpu == Decimal("1.5") and fix.max_memory == 2 * 1024**3
    assert fix.extra_gpus == 1 and fix.expires_after == timedelta(minutes=45)
    assert from_api.fix_settings(spec()) is None


def test_target_container_and_resources() -> None:
    deployment = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "sidecar"},
                        {
                            "name": "server",
                            "env": [{"name": "MODEL_URI", "value": "pvc://m/v1"}],
                            "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}},
                        },
                    ]
                }
            }
        }
    }
    first = from_api.target_container(spec(), deployment)
    assert first is not None and first["name"] == "sidecar"
    named = from_api.target_container(
        spec(target={"deployment": "d", "container": "server"}), deployment
    )
    assert named is not None
    assert from_api.resource_values(named) == ResourceValues(
        requests={"memory": "1Gi"}, limits={"cpu": "1"}
    )
    assert from_api.env_value(named, "MODEL_URI") == "pvc://m/v1"
    missing = spec(target={"deployment": "d", "container": "nope"})
    assert from_api.target_container(missing, deployment) is None


def test_intent_is_rebuilt_from_status() -> None:
    current = status(
        {
            "promoted": {"current": "pvc://m/r1", "runId": "r1", "at": "2026-03-02T12:00:00Z"},
            "temporaryFix": {
                "active": True,
                "deployment": "d",
                "appliedAt": "2026-03-02T12:00:00Z",
                "expiresAt": "2026-03-02T14:00:00Z",
                "applied": [{"container": "server", "limits": {"cpu": "2", "memory": "2Gi"}}],
                "original": [{"container": "server", "limits": {"cpu": "1", "memory": "1Gi"}}],
            },
        }
    )
    fix = from_api.fix_record(current, "uid-1", "mo")
    assert fix is not None and (fix.deployment, fix.container) == ("d", "server")
    intent = from_api.intent(current, "d", "server", fix)
    assert intent.model_uri == "pvc://m/r1" and intent.promoted_run == "r1"
    assert intent.resources == ResourceValues(limits={"cpu": "2", "memory": "2Gi"})
    assert intent.fix_expires_at == "2026-03-02T14:00:00Z"
    assert intent.fix_record == fix.to_annotation()
    # A person changed the memory limit during the fix: an apply never forces it back.
    live = ResourceValues(limits={"cpu": "2", "memory": "3Gi"})
    assert from_api.intent(current, "d", "server", fix, live).resources == ResourceValues(
        limits={"cpu": "2"}
    )
    # Another Deployment (the target moved) or container never gets this fix.
    for deployment, container in (("other", "server"), ("d", "sidecar")):
        elsewhere = from_api.intent(current, deployment, container, fix)
        assert elsewhere.resources.is_empty() and elsewhere.fix_record is None
    inactive = status({"temporaryFix": {"active": False, "applied": [{"container": "server"}]}})
    assert from_api.fix_record(inactive, "uid-1", "mo") is None
    assert from_api.intent(status({}), "d", "server", None).is_empty()


def test_passed_run_needs_passed_gates_and_a_live_outcome() -> None:
    runs = {
        "runs": [
            {
                "id": "r1",
                "trigger": "Manual",
                "outcome": "Succeeded",
                "artifactUri": "pvc://a/r1",
                "gates": [{"name": "AccuracyDrop", "passed": True}],
            },
            {
                "id": "r2",
                "trigger": "Manual",
                "outcome": "Rejected",
                "artifactUri": "pvc://a/r2",
                "gates": [{"name": "AccuracyDrop", "passed": False}],
            },
            {"id": "r3", "trigger": "Manual", "outcome": "RolledBack", "artifactUri": "pvc://a/r3"},
        ]
    }
    current = status(runs)
    assert from_api.passed_run(current, "r1") == ("pvc://a/r1", None)
    assert from_api.passed_run(current, "r2") is None
    assert from_api.passed_run(current, "r3") is None
    assert from_api.passed_run(current, "r9") is None


def test_fix_waiting_for_slo_is_the_expired_condition() -> None:
    conditions: list[cond.Condition] = []
    cond.set_condition(conditions, "TemporaryFixActive", "False", "FixExpired", "m", now=T0)
    current = status({"conditions": [c.model_dump(mode="json") for c in conditions]})
    assert from_api.fix_waiting_for_slo(current)
    cond.set_condition(conditions, "TemporaryFixActive", "False", "FixNotNeeded", "m", now=T0)
    current = status({"conditions": [c.model_dump(mode="json") for c in conditions]})
    assert not from_api.fix_waiting_for_slo(current)
