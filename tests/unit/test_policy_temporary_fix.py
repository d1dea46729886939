"""Temporary fix: raised values, caps, GPUs, exact originals, exact revert, a person's
change left alone, when to act (also when spec.target moved)."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from driftwarden.policy.deployment_apply import ResourceValues
from driftwarden.policy.quantity import parse_quantity
from driftwarden.policy.temporary_fix import (
    GPU,
    ActiveFix,
    ChangedField,
    FixSettings,
    LatencyReading,
    decide_fix,
    expires_at,
    plan_fix,
    plan_revert,
    restored_after_revert,
    revert_values,
    still_applied,
    target_moved,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)

SETTINGS = FixSettings(cpu_percent=200, memory_percent=150)
SERVER = ResourceValues(
    requests={"cpu": "250m", "memory": "256Mi"}, limits={"cpu": "500m", "memory": "512Mi"}
)


def test_raises_requests_and_limits_by_the_factors() -> None:
    plan = plan_fix(SETTINGS, SERVER)
    assert plan.applied == ResourceValues(
        requests={"cpu": "500m", "memory": "384Mi"}, limits={"cpu": "1", "memory": "768Mi"}
    )
    assert plan.original == SERVER
    assert plan.summary() == (
        "cpu request 250m -> 500m, memory request 256Mi -> 384Mi, "
        "cpu limit 500m -> 1, memory limit 512Mi -> 768Mi"
    )


def test_caps_limit_the_raise_and_never_lower_a_value() -> None:
    capped = replace(SETTINGS, max_cpu=Decimal("0.75"), max_memory=parse_quantity("600Mi"))
    plan = plan_fix(capped, SERVER)
    assert plan.applied.limits == {"cpu": "750m", "memory": "600Mi"}
    assert plan.applied.requests == {"cpu": "500m", "memory": "384Mi"}
    over = ResourceValues(requests={"cpu": "2"}, limits={"cpu": "4"})
    plan = plan_fix(replace(SETTINGS, max_cpu=Decimal(1)), over)
    assert not plan.raises_anything and plan.original == ResourceValues()
    assert plan.notes == (
        "cpu request 2 is already at or over the cap",
        "cpu limit 4 is already at or over the cap",
        "the container sets no memory request or limit to raise",
    )


def test_absent_values_stay_absent() -> None:
    only_limits = ResourceValues(limits={"cpu": "1", "memory": "1Gi"})
    plan = plan_fix(SETTINGS, only_limits)
    assert dict(plan.applied.requests) == {}
    assert plan.applied.limits == {"cpu": "2", "memory": "1536Mi"}
    assert dict(plan.original.requests) == {}


def test_a_percentage_of_100_leaves_that_resource_alone() -> None:
    plan = plan_fix(replace(SETTINGS, memory_percent=100), SERVER)
    assert set(plan.applied.requests) == {"cpu"} and set(plan.applied.limits) == {"cpu"}
    assert set(plan.original.limits) == {"cpu"}


def test_extra_gpus_set_the_limit_even_when_absent() -> None:
    plan = plan_fix(replace(SETTINGS, cpu_percent=100, memory_percent=100, extra_gpus=1), SERVER)
    assert plan.applied == ResourceValues(requests={}, limits={GPU: "1"})
    assert plan.original == ResourceValues()  # nothing was there: revert removes it
    assert plan.summary() == "nvidia.com/gpu limit unset -> 1"


def test_extra_gpus_add_to_present_ones_and_keep_request_equal_to_limit() -> None:
    gpus = ResourceValues(requests={GPU: "1"}, limits={GPU: "1"})
    plan = plan_fix(FixSettings(cpu_percent=100, memory_percent=100, extra_gpus=2), gpus)
    assert plan.applied == ResourceValues(requests={GPU: "3"}, limits={GPU: "3"})
    assert plan.original == gpus


def test_revert_restores_exactly_the_recorded_strings_and_drops_absent_ones() -> None:
    current = ResourceValues(
        requests={"cpu": "100m", "ephemeral-storage": "1Gi"}, limits={"memory": "1G"}
    )
    settings = FixSettings(cpu_percent=300, memory_percent=200, extra_gpus=1)
    plan = plan_fix(settings, current)
    assert plan.applied == ResourceValues(
        requests={"cpu": "300m"}, limits={"memory": "2G", GPU: "1"}
    )
    back = revert_values(plan.original, plan.applied)
    assert back == ResourceValues(requests={"cpu": "100m"}, limits={"memory": "1G"})
    # Read back after the revert: the GPU limit is gone again, untouched names never moved.
    assert restored_after_revert(current, plan.original, plan.applied)
    still_raised = ResourceValues(requests=current.requests, limits={"memory": "1G", GPU: "1"})
    assert not restored_after_revert(still_raised, plan.original, plan.applied)


def test_random_resources_keep_request_under_limit_and_revert_exactly() -> None:
    rng = random.Random(11)
    for _ in range(500):
        req_m = rng.randrange(1, 4000)
        lim_m = req_m + rng.randrange(0, 4000)
        req_mem = rng.randrange(1, 4096) * 1024**2
        lim_mem = req_mem + rng.randrange(0, 4096) * 1024**2
        current = ResourceValues(
            requests={"cpu": f"{req_m}m", "memory": str(req_mem)},
            limits={"cpu": f"{lim_m}m", "memory": str(lim_mem)},
        )
        settings = FixSettings(
            cpu_percent=rng.randrange(101, 400),
            memory_percent=rng.randrange(101, 400),
            max_cpu=Decimal(rng.randrange(1, 8000)) / 1000 if rng.random() < 0.5 else None,
            max_memory=Decimal(rng.randrange(1, 8192) * 1024**2) if rng.random() < 0.5 else None,
        )
        plan = plan_fix(settings, current)
        effective = {
            section: {**getattr(current, section), **getattr(plan.applied, section)}
            for section in ("requests", "limits")
        }
        for name in ("cpu", "memory"):
            request = parse_quantity(effective["requests"][name])
            limit = parse_quantity(effective["limits"][name])
            assert request <= limit
            assert request >= parse_quantity(current.requests[name])
            cap = settings.max_cpu if name == "cpu" else settings.max_memory
            if cap is not None and name in plan.applied.limits:
                assert limit <= cap
        after_revert = ResourceValues(
            requests={**current.requests, **revert_values(plan.original, plan.applied).requests},
            limits={**current.limits, **revert_values(plan.original, plan.applied).limits},
        )
        assert after_revert == current


# ---- when to apply and revert ------------------------------------------------------------------

SLOW = LatencyReading(time=T0, p95_ms=80.0, slo_ms=50, model_uri="file:///m/v1")
FAST_NEW = LatencyReading(time=T0 + 20 * MIN, p95_ms=20.0, slo_ms=50, model_uri="file:///m/v2")
ACTIVE = ActiveFix(applied_at=T0, expires_at=expires_at(FixSettings(), T0))


def test_apply_when_the_slo_is_breached() -> None:
    decision = decide_fix(FixSettings(), None, SLOW, None, None, False, T0)
    assert decision.action == "Apply" and "80.00 ms" in decision.reason
    assert (
        decide_fix(FixSettings(enabled=False), None, SLOW, None, None, False, T0).action
        == "Nothing"
    )
    assert decide_fix(None, None, SLOW, None, None, False, T0).action == "Nothing"
    at_slo = replace(SLOW, p95_ms=50.0)
    assert decide_fix(FixSettings(), None, at_slo, None, None, False, T0).action == "Nothing"


def test_apply_waits_for_the_breaches_the_trigger_requires() -> None:
    once = replace(SLOW, required=2)
    waiting = decide_fix(FixSettings(), None, once, None, None, False, T0)
    assert waiting.action == "Nothing"
    assert "1 evaluation(s) in a row; the fix waits for 2" in waiting.reason
    twice = replace(once, breaches=2)
    applied = decide_fix(FixSettings(), None, twice, None, None, False, T0)
    assert applied.action == "Apply" and "in 2 evaluations in a row" in applied.reason


def test_not_reapplied_after_expiry_until_the_slo_was_met() -> None:
    decision = decide_fix(FixSettings(), None, SLOW, None, None, True, T0)
    assert decision.action == "Nothing" and "expired" in decision.reason


def test_expiry() -> None:
    assert ACTIVE.expires_at == T0 + timedelta(hours=2)
    keep = decide_fix(FixSettings(), ACTIVE, SLOW, None, None, False, T0 + timedelta(hours=2) - MIN)
    assert keep.action == "Keep" and keep.next_check == ACTIVE.expires_at
    expired = decide_fix(FixSettings(), ACTIVE, SLOW, None, None, False, ACTIVE.expires_at)
    assert expired.action == "Revert" and expired.revert_reason == "Expired"


def test_revert_after_a_promotion_restores_the_slo() -> None:
    promoted_at = T0 + 10 * MIN
    decision = decide_fix(
        FixSettings(), ACTIVE, FAST_NEW, promoted_at, "file:///m/v2", False, T0 + 25 * MIN
    )
    assert decision.action == "Revert" and decision.revert_reason == "SLORestored"
    assert "20.00 ms <= 50 ms" in decision.reason


def test_no_revert_on_a_good_reading_that_is_not_of_the_promoted_model() -> None:
    # The SLO met without a promotion (the fix itself helped): keep it until expiry.
    fast_old = replace(FAST_NEW, model_uri="file:///m/v1")
    assert (
        decide_fix(FixSettings(), ACTIVE, fast_old, None, None, False, T0 + 25 * MIN).action
        == "Keep"
    )
    # An evaluation that started before the promotion measured the old model.
    early = replace(FAST_NEW, time=T0 + 5 * MIN)
    assert (
        decide_fix(
            FixSettings(), ACTIVE, early, T0 + 10 * MIN, "file:///m/v2", False, T0 + 25 * MIN
        ).action
        == "Keep"
    )
    # A promotion before the fix was applied does not count.
    assert (
        decide_fix(
            FixSettings(), ACTIVE, FAST_NEW, T0 - MIN, "file:///m/v2", False, T0 + 25 * MIN
        ).action
        == "Keep"
    )


def test_revert_when_disabled() -> None:
    decision = decide_fix(FixSettings(enabled=False), ACTIVE, SLOW, None, None, False, T0 + MIN)
    assert decision.action == "Revert" and decision.revert_reason == "Disabled"
    assert decide_fix(None, ACTIVE, SLOW, None, None, False, T0 + MIN).revert_reason == "Disabled"


def test_revert_after_retargeting_or_removing_the_target() -> None:
    fix = replace(ACTIVE, deployment="web", container="server")
    assert target_moved("web", "server", "web", None) is None
    assert target_moved("web", "server", "web", "server") is None
    moved = target_moved("web", "server", "web-v2", None)
    assert moved is not None and "web-v2" in moved and "Deployment web " in moved
    gone = target_moved("web", "server", None, None)
    assert gone is not None and "spec.target was removed" in gone
    other_container = target_moved("web", "server", "web", "sidecar")
    assert other_container is not None and "container sidecar" in other_container
    # Whatever else holds (still breached, not expired): the fix goes where it was applied.
    decision = decide_fix(FixSettings(), fix, SLOW, None, None, False, T0 + MIN, moved)
    assert decision.action == "Revert" and decision.revert_reason == "Retargeted"
    assert decision.reason == moved


# ---- a revert restores only what is still ours ---------------------------------------------

ORIGINAL = ResourceValues(requests={"cpu": "500m"}, limits={"cpu": "1", "memory": "512Mi"})
APPLIED = ResourceValues(limits={"cpu": "2", "memory": "768Mi", GPU: "1"}, requests={"cpu": "1"})


def test_revert_restores_fields_still_at_the_applied_values() -> None:
    plan = plan_revert(ORIGINAL, APPLIED, APPLIED)
    assert plan.values == ORIGINAL  # the GPU limit was absent: left out, so removed
    assert plan.restored == APPLIED and plan.changed == ()
    # The same values written differently ("2000m" for "2") are still ours.
    spelled = ResourceValues(requests={"cpu": "1000m"}, limits={**APPLIED.limits, "cpu": "2000m"})
    assert plan_revert(ORIGINAL, APPLIED, spelled).restored == APPLIED


def test_a_field_a_person_changed_during_the_fix_is_left_and_named() -> None:
    # On-call raised the cpu limit from 2 to 3 and removed the memory limit.
    live = ResourceValues(requests={"cpu": "1"}, limits={"cpu": "3", GPU: "1"})
    plan = plan_revert(ORIGINAL, APPLIED, live)
    assert plan.changed == (
        ChangedField("limits", "cpu", "2", "3"),
        ChangedField("limits", "memory", "768Mi", None),  # removed: not put back either
    )
    assert plan.values == ResourceValues(requests={"cpu": "500m"})  # GPU limit: removed
    assert plan.restored == ResourceValues(requests={"cpu": "1"}, limits={GPU: "1"})
    assert plan.changed[0].describe() == "cpu limit: DriftWarden set 2, now 3"
    assert plan.changed[1].describe() == "memory limit: DriftWarden set 768Mi, now unset"
    assert plan.summary(ORIGINAL) == "cpu request 500m, nvidia.com/gpu limit unset"
    # The revert's read-back check covers what it restored, not what it left.
    after = ResourceValues(requests={"cpu": "500m"}, limits={"cpu": "3"})
    assert restored_after_revert(after, ORIGINAL, plan.restored)


def test_a_revert_repeated_after_a_lost_status_write_changes_nothing() -> None:
    # The first revert restored everything; its status write was lost. The second keeps the
    # restored values in its apply (leaving them out would delete fields we own) and reports
    # no change by a person.
    plan = plan_revert(ORIGINAL, APPLIED, ORIGINAL)
    assert plan.values == ORIGINAL and plan.changed == ()
    assert restored_after_revert(ORIGINAL, ORIGINAL, plan.restored)


def test_applies_during_a_fix_carry_only_fields_nobody_changed() -> None:
    live = ResourceValues(requests={"cpu": "1"}, limits={"cpu": "3", "memory": "768Mi"})
    assert still_applied(APPLIED, live) == ResourceValues(
        requests={"cpu": "1"}, limits={"memory": "768Mi"}
    )
    assert still_applied(APPLIED, APPLIED) == APPLIED
