"""driftwarden.policy.pacing: when a resource is looked at again, and evaluation slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from driftwarden.policy import pacing

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RESYNC = timedelta(minutes=5)


def test_spread_is_deterministic_and_uniform_enough() -> None:
    keys = [f"uid-{i}" for i in range(2000)]
    values = [pacing.spread(k) for k in keys]
    assert values == [pacing.spread(k) for k in keys]
    assert all(0 <= v < 1 for v in values)
    # Ten buckets of 200 expected each: none empty, none more than twice as full.
    buckets = [0] * 10
    for v in values:
        buckets[int(v * 10)] += 1
    assert min(buckets) > 100 and max(buckets) < 400, buckets


def test_without_checks_the_safety_resync_spreads_over_its_last_quarter() -> None:
    times = [pacing.next_pass(NOW, [], resync=RESYNC, key=f"k{i}") for i in range(500)]
    assert all(NOW + RESYNC * 0.75 <= t <= NOW + RESYNC for t in times)
    assert max(times) - min(times) > RESYNC * 0.2  # spread, not one instant


def test_the_earliest_check_wins_but_never_sooner_than_a_second() -> None:
    soon = NOW + timedelta(seconds=30)
    assert (
        pacing.next_pass(NOW, [None, soon, NOW + timedelta(hours=1)], resync=RESYNC, key="k")
        == soon
    )
    past = NOW - timedelta(seconds=5)
    assert pacing.next_pass(NOW, [past], resync=RESYNC, key="k") == NOW + pacing.MIN_DELAY


def test_waiting_for_what_no_event_announces_backs_off_up_to_the_resync() -> None:
    def delay(waited: timedelta) -> timedelta:
        when = pacing.next_pass(NOW, [], resync=RESYNC, key="k", waiting_since=NOW - waited)
        return when - NOW

    assert delay(timedelta(0)) == pacing.POLL_MIN
    assert delay(timedelta(seconds=40)) == timedelta(seconds=40)
    assert delay(timedelta(hours=3)) <= RESYNC


def test_an_active_run_is_checked_every_minute() -> None:
    when = pacing.next_pass(NOW, [], resync=RESYNC, key="k", active=True)
    assert when == NOW + pacing.ACTIVE_CHECK


def test_evaluation_slots_keep_the_interval_and_the_resource_phase() -> None:
    interval = timedelta(minutes=5)
    last = NOW + timedelta(seconds=17)
    first = pacing.evaluation_slot(last, interval, "uid-a")
    assert last + interval / 2 <= first < last + interval * 1.5
    # Then one per interval, on the same phase, whatever moment the evaluation started.
    second = pacing.evaluation_slot(first + timedelta(seconds=42), interval, "uid-a")
    assert second - first == interval
    phase = pacing.spread("uid-a") * interval.total_seconds()
    assert first.timestamp() % interval.total_seconds() == pytest.approx(phase, abs=1e-3)


def test_evaluations_started_together_spread_over_the_interval() -> None:
    interval = timedelta(minutes=5)
    slots = sorted(pacing.evaluation_slot(NOW, interval, f"uid-{i}") for i in range(1000))
    assert slots[-1] - slots[0] > interval * 0.95
    per_10s: dict[int, int] = {}
    for slot in slots:
        per_10s[int(slot.timestamp()) // 10] = per_10s.get(int(slot.timestamp()) // 10, 0) + 1
    # 1000 over 300 s is ~33 per 10 s: no herd anywhere.
    assert max(per_10s.values()) < 70, max(per_10s.values())


def test_an_overdue_evaluation_is_due_at_once_then_back_on_its_phase() -> None:
    interval = timedelta(minutes=5)
    last = NOW - timedelta(hours=1)  # the operator was away, or the evaluation was slow
    assert pacing.evaluation_due_at(last, interval, "uid-a", NOW) <= NOW
    following = pacing.evaluation_due_at(NOW, interval, "uid-a", NOW)
    phase = pacing.spread("uid-a") * interval.total_seconds()
    assert following.timestamp() % interval.total_seconds() == pytest.approx(phase, abs=1e-3)


def test_the_schedule_policy_uses_the_resource_phase() -> None:
    from driftwarden.policy.schedule import evaluation_due

    interval = timedelta(minutes=5)
    last = NOW - timedelta(minutes=1)
    plain = evaluation_due(interval, last, False, False, NOW)
    assert plain.next_check == last + interval
    phased = evaluation_due(interval, last, False, False, NOW, key="uid-a")
    assert phased.next_check == pacing.evaluation_due_at(last, interval, "uid-a", NOW)


def test_finished_evaluation_jobs_are_kept_one_interval_at_least_a_minute() -> None:
    assert pacing.evaluation_job_ttl(timedelta(minutes=5), 3600) == 300
    assert pacing.evaluation_job_ttl(timedelta(seconds=10), 3600) == 60
    assert pacing.evaluation_job_ttl(timedelta(hours=2), 3600) == 3600  # never beyond spec.job's


def test_an_overdue_evaluation_stays_due_pass_after_pass() -> None:
    """A due time recomputed from "now" would move away with every pass (never due)."""
    from driftwarden.policy.schedule import evaluation_due

    interval = timedelta(seconds=10)
    last = NOW - timedelta(minutes=2)  # the previous evaluation outlasted the interval
    for step in range(0, 30, 2):
        due = evaluation_due(interval, last, False, False, NOW + timedelta(seconds=step), key="u")
        assert due.due, step
