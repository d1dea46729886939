"""Trigger decisions: each trigger, the drift streak and episodes, cooldown, budget, cron."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from driftwarden.policy.triggers import (
    DriftStreak,
    Observation,
    PastRun,
    TriggerSettings,
    TriggerState,
    advance_drift_streak,
    budget_start_times_to_keep,
    decide,
    latest_fire_time,
    next_fire_time,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)

DRIFT = TriggerSettings(drift_threshold=Decimal("0.2"), drift_consecutive_windows=3)


def state(**kwargs: object) -> TriggerState:
    return replace(TriggerState(created_at=T0 - timedelta(days=10)), **kwargs)  # type: ignore[arg-type]


def streak_of(scores: list[float | None], threshold: str = "0.2") -> DriftStreak:
    streak = DriftStreak()
    for i, score in enumerate(scores):
        streak = advance_drift_streak(streak, score, Decimal(threshold), T0 + i * 5 * MIN)
    return streak


# ---- drift streak ----------------------------------------------------------------------------


def test_streak_counts_consecutive_windows_over_the_threshold() -> None:
    assert streak_of([0.3, 0.4, 0.5]) == DriftStreak(3, T0)


def test_streak_resets_on_a_window_at_or_under_the_threshold() -> None:
    assert streak_of([0.3, 0.4, 0.2]) == DriftStreak()
    # ... and a new streak starts at the window that is over again.
    assert streak_of([0.3, 0.1, 0.3, 0.3]) == DriftStreak(2, T0 + 10 * MIN)


def test_exactly_the_threshold_is_not_over_it() -> None:
    # 0.2 as a float is 0.2000000000000000111; the comparison must still call it equal.
    assert streak_of([0.2]) == DriftStreak()
    assert streak_of([0.1 + 0.1]) == DriftStreak()
    assert streak_of([0.2000001]).windows == 1


def test_a_missing_score_breaks_the_streak() -> None:
    assert streak_of([0.3, None]) == DriftStreak()


def test_drift_fires_after_n_consecutive_windows_only() -> None:
    two = decide(DRIFT, state(drift_streak=DriftStreak(2, T0)), T0 + HOUR)
    assert not two.start and two.trigger is None
    three = decide(
        DRIFT,
        state(drift_streak=DriftStreak(3, T0), observation=Observation(drift_score=0.31)),
        T0 + HOUR,
    )
    assert three.start and three.trigger == "Drift"
    assert "0.31" in three.reason and "3 consecutive" in three.reason and "0.2" in three.reason


def test_drift_fires_once_per_episode() -> None:
    drifting = state(drift_streak=DriftStreak(5, T0), observation=Observation(drift_score=0.4))
    handled = replace(
        drifting,
        runs=[PastRun("Drift", T0 + 20 * MIN, finished_at=T0 + 30 * MIN, outcome="Promoted")],
    )
    assert not decide(DRIFT, handled, T0 + 5 * HOUR).start
    # A drift run of an *earlier* episode does not count ...
    earlier = replace(
        drifting, runs=[PastRun("Drift", T0 - HOUR, finished_at=T0 - 50 * MIN, outcome="Promoted")]
    )
    assert decide(DRIFT, earlier, T0 + 5 * HOUR).trigger == "Drift"
    # ... nor does a failed one: it is retried after the cooldown.
    failed = replace(
        drifting,
        runs=[PastRun("Drift", T0 + 20 * MIN, finished_at=T0 + 30 * MIN, outcome="Failed")],
    )
    assert decide(DRIFT, failed, T0 + 5 * HOUR).start
    # ... nor one whose speed gate could not decide: it is measured again.
    inconclusive = replace(
        drifting,
        runs=[
            PastRun(
                "Drift",
                T0 + 20 * MIN,
                finished_at=T0 + 30 * MIN,
                outcome="Rejected",
                inconclusive=True,
            )
        ],
    )
    assert decide(DRIFT, inconclusive, T0 + 5 * HOUR).start


def test_a_new_episode_after_the_streak_broke_fires_again() -> None:
    runs = [PastRun("Drift", T0 + 20 * MIN, finished_at=T0 + 30 * MIN, outcome="Promoted")]
    streak = streak_of([0.3, 0.3, 0.3, 0.1, 0.3, 0.3, 0.3])  # second streak starts at T0+20m
    assert streak == DriftStreak(3, T0 + 20 * MIN)
    # The run started exactly when the new streak began: it belongs to it.
    assert not decide(DRIFT, state(drift_streak=streak, runs=runs), T0 + 5 * HOUR).start
    later = streak_of([0.3, 0.3, 0.3, 0.1, 0.1, 0.3, 0.3, 0.3])
    assert decide(DRIFT, state(drift_streak=later, runs=runs), T0 + 5 * HOUR).start


# ---- latency, accuracy, manual -----------------------------------------------------------------


def test_latency_over_the_slo_fires_and_at_the_slo_does_not() -> None:
    settings = TriggerSettings(latency_p95_ms=50)
    over = decide(settings, state(observation=Observation(latency_p95_ms=50.01)), T0)
    assert over.start and over.trigger == "Latency"
    assert "50.01 ms" in over.reason and "SLO of 50 ms" in over.reason
    assert not decide(settings, state(observation=Observation(latency_p95_ms=50.0)), T0).start
    assert not decide(settings, state(observation=Observation()), T0).start


def test_latency_needs_the_required_breaches_in_a_row() -> None:
    settings = TriggerSettings(latency_p95_ms=50, latency_consecutive_breaches=2)
    first = decide(settings, state(observation=Observation(latency_p95_ms=80.0)), T0)
    assert not first.start and first.trigger is None
    second = Observation(latency_p95_ms=80.0, latency_breaches=2)
    fired = decide(settings, state(observation=second), T0)
    assert fired.start and fired.trigger == "Latency"
    assert "in 2 evaluations in a row (required: 2)" in fired.reason
    # A count left over from an earlier breach does not fire a reading within the SLO.
    within = Observation(latency_p95_ms=50.0, latency_breaches=5)
    assert not decide(settings, state(observation=within), T0).start


def test_accuracy_under_the_minimum_fires() -> None:
    settings = TriggerSettings(accuracy_min_percent=90)
    under = decide(settings, state(observation=Observation(accuracy_percent=89.99)), T0)
    assert under.start and under.trigger == "Accuracy" and "89.99%" in under.reason
    assert not decide(settings, state(observation=Observation(accuracy_percent=90.0)), T0).start


def test_run_request_fires_once_per_new_value() -> None:
    settings = TriggerSettings()
    new = decide(settings, state(run_request="2026-03-02", last_run_request="2026-03-01"), T0)
    assert new.start and new.trigger == "Manual" and new.run_request == "2026-03-02"
    assert "2026-03-02" in new.reason
    same = decide(settings, state(run_request="2026-03-02", last_run_request="2026-03-02"), T0)
    assert not same.start
    assert not decide(settings, state(run_request=None), T0).start


def test_the_strongest_trigger_names_the_run_and_the_others_are_listed() -> None:
    settings = TriggerSettings(latency_p95_ms=10, accuracy_min_percent=90)
    both = decide(
        settings,
        state(
            observation=Observation(latency_p95_ms=20.0, accuracy_percent=80.0),
            run_request="x",
        ),
        T0,
    )
    assert both.trigger == "Manual"
    assert both.reason.endswith("Also: Accuracy, Latency.")
    assert both.run_request == "x"


# ---- damping -----------------------------------------------------------------------------------

SLOW = Observation(latency_p95_ms=99.0)
LATENCY = TriggerSettings(latency_p95_ms=50, cooldown=30 * MIN, max_runs_per_day=2)


def test_suspended_blocks_everything() -> None:
    decision = decide(LATENCY, state(observation=SLOW, suspended=True, run_request="r"), T0)
    assert not decision.start and decision.blocked_by == "Suspended"
    assert decision.trigger == "Manual" and decision.next_check is None
    assert "suspended" in decision.reason


def test_one_run_at_a_time() -> None:
    decision = decide(LATENCY, state(observation=SLOW, run_active=True), T0)
    assert not decision.start and decision.blocked_by == "RunActive"
    assert decision.next_check is None


def test_cooldown_edges() -> None:
    runs = [PastRun("Latency", T0 - HOUR, finished_at=T0, outcome="Rejected")]
    inside = decide(
        LATENCY, state(observation=SLOW, runs=runs), T0 + 30 * MIN - timedelta(seconds=1)
    )
    assert not inside.start and inside.blocked_by == "Cooldown"
    assert inside.blocked_until == T0 + 30 * MIN == inside.next_check
    assert (T0 + 30 * MIN).isoformat() in inside.reason
    assert decide(LATENCY, state(observation=SLOW, runs=runs), T0 + 30 * MIN).start


def test_cooldown_counts_from_the_latest_end() -> None:
    runs = [
        PastRun("Latency", T0 - 3 * HOUR, finished_at=T0 - 2 * HOUR, outcome="Rejected"),
        PastRun("Manual", T0 - HOUR, finished_at=T0 - 10 * MIN, outcome="Failed"),
    ]
    decision = decide(LATENCY, state(observation=SLOW, runs=runs), T0)
    assert decision.blocked_by == "Cooldown" and decision.blocked_until == T0 + 20 * MIN


def test_budget_counts_starts_in_a_rolling_day() -> None:
    starts = [T0 - 23 * HOUR, T0 - 2 * HOUR]
    blocked = decide(LATENCY, state(observation=SLOW, budget_start_times=starts), T0)
    assert not blocked.start and blocked.blocked_by == "BudgetExhausted"
    assert blocked.blocked_until == T0 + HOUR  # the older start leaves the window then
    assert "budget" in blocked.reason
    assert not decide(
        LATENCY,
        state(observation=SLOW, budget_start_times=starts),
        T0 + HOUR - timedelta(seconds=1),
    ).start
    assert decide(LATENCY, state(observation=SLOW, budget_start_times=starts), T0 + HOUR).start
    # A start exactly 24 hours ago is out of the window.
    assert decide(
        LATENCY, state(observation=SLOW, budget_start_times=[T0 - 24 * HOUR, T0 - HOUR]), T0
    ).start


def test_budget_with_more_starts_than_allowed_waits_for_enough_to_leave() -> None:
    starts = [T0 - 20 * HOUR, T0 - 10 * HOUR, T0 - 5 * HOUR]  # 3 starts, 2 allowed
    decision = decide(LATENCY, state(observation=SLOW, budget_start_times=starts), T0)
    assert decision.blocked_until == T0 + 14 * HOUR  # two must leave: the second oldest + 24h


def test_cooldown_reported_first_but_wait_covers_the_budget_too() -> None:
    runs = [PastRun("Latency", T0 - HOUR, finished_at=T0 - 10 * MIN, outcome="Rejected")]
    starts = [T0 - 23 * HOUR, T0 - HOUR]  # budget free at T0 + 1h, cooldown ends T0 + 20m
    decision = decide(LATENCY, state(observation=SLOW, runs=runs, budget_start_times=starts), T0)
    assert decision.blocked_by == "Cooldown" and decision.blocked_until == T0 + HOUR
    after_cooldown = decide(
        LATENCY, state(observation=SLOW, runs=runs, budget_start_times=starts), T0 + 30 * MIN
    )
    assert after_cooldown.blocked_by == "BudgetExhausted"


def test_manual_requests_obey_cooldown_and_budget() -> None:
    runs = [PastRun("Latency", T0 - HOUR, finished_at=T0, outcome="Rejected")]
    decision = decide(LATENCY, state(run_request="now", runs=runs), T0 + MIN)
    assert not decision.start and decision.trigger == "Manual"
    assert decision.blocked_by == "Cooldown"
    assert decision.run_request is None  # not consumed while blocked


def test_budget_start_times_to_keep_drops_old_ones() -> None:
    kept = budget_start_times_to_keep([T0 - 25 * HOUR, T0 - HOUR, T0 - 24 * HOUR], T0)
    assert kept == [T0 - HOUR]


# ---- cron schedule -----------------------------------------------------------------------------

CRON = TriggerSettings(schedule="0 3 * * *")  # daily at 03:00 UTC


def test_cron_helpers() -> None:
    at_three = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    assert latest_fire_time("0 3 * * *", at_three) == at_three  # inclusive
    assert latest_fire_time("0 3 * * *", at_three - MIN) == at_three - timedelta(days=1)
    assert next_fire_time("0 3 * * *", at_three) == at_three + timedelta(days=1)  # exclusive


def test_schedule_not_due_before_its_first_fire_after_creation() -> None:
    created = datetime(2026, 3, 2, 3, 30, tzinfo=UTC)
    decision = decide(CRON, TriggerState(created_at=created), created + HOUR)
    assert not decision.start and decision.trigger is None
    assert decision.next_check == datetime(2026, 3, 3, 3, 0, tzinfo=UTC)


def test_schedule_fires_at_the_fire_time_and_records_it() -> None:
    created = datetime(2026, 3, 2, 3, 30, tzinfo=UTC)
    fire = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)
    assert not decide(CRON, TriggerState(created_at=created), fire - timedelta(seconds=1)).start
    decision = decide(CRON, TriggerState(created_at=created), fire)
    assert decision.start and decision.trigger == "Schedule" and decision.schedule_time == fire
    assert "0 3 * * *" in decision.reason


def test_schedule_after_its_run_waits_for_the_next_fire() -> None:
    fire = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)
    after = TriggerState(created_at=T0 - timedelta(days=30), last_schedule_time=fire)
    decision = decide(CRON, after, fire + HOUR)
    assert not decision.start
    assert decision.next_check == fire + timedelta(days=1)


def test_missed_fire_times_collapse_into_one_run() -> None:
    last = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    now = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)  # four fires missed (operator down)
    decision = decide(CRON, TriggerState(created_at=last, last_schedule_time=last), now)
    assert decision.start and decision.schedule_time == datetime(2026, 3, 5, 3, 0, tzinfo=UTC)
    recorded = TriggerState(created_at=last, last_schedule_time=decision.schedule_time)
    assert not decide(CRON, recorded, now).start


def test_a_blocked_schedule_stays_due_and_another_trigger_consumes_it() -> None:
    settings = TriggerSettings(schedule="0 3 * * *", latency_p95_ms=10, cooldown=HOUR)
    fire = datetime(2026, 3, 3, 3, 0, tzinfo=UTC)
    runs = [PastRun("Latency", fire - HOUR, finished_at=fire - 30 * MIN, outcome="Rejected")]
    base = TriggerState(
        created_at=fire - timedelta(days=2),
        last_schedule_time=fire - timedelta(days=1),
        runs=runs,
        observation=Observation(latency_p95_ms=20.0),
    )
    blocked = decide(settings, base, fire + MIN)
    assert blocked.blocked_by == "Cooldown" and blocked.trigger == "Latency"
    assert blocked.next_check == fire + 30 * MIN
    started = decide(settings, base, fire + 30 * MIN)
    assert started.start and started.trigger == "Latency" and started.schedule_time == fire
    assert "Also: Schedule." in started.reason


def test_next_check_is_the_earlier_of_block_end_and_next_fire() -> None:
    settings = TriggerSettings(schedule="*/10 * * * *", latency_p95_ms=10, cooldown=HOUR)
    runs = [PastRun("Latency", T0 - HOUR, finished_at=T0, outcome="Rejected")]
    decision = decide(
        settings,
        state(runs=runs, observation=Observation(latency_p95_ms=20.0), last_schedule_time=T0),
        T0 + MIN,
    )
    assert decision.blocked_by == "Cooldown"
    assert decision.next_check == T0 + 10 * MIN
