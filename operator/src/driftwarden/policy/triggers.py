"""Whether to start an optimization run now, and why (or why not).

Pure: the caller passes the settings (``spec.triggers``), what status remembers and the
current time; the answer is a ``TriggerDecision``. Nothing here reads a clock or the API.

Triggers, strongest first (the first that holds names the run; a started run also consumes
a pending run request and a due schedule, so one run answers all of them):

- ``Manual``   - ``spec.runRequest`` differs from ``status.lastRunRequest``.
- ``Accuracy`` - the model in use scored under ``accuracy.minPercent`` on the holdout.
- ``Drift``    - the drift score was over the threshold in ``consecutiveWindows`` evaluations in
  a row. Once per drift *episode*: retraining changes the model, not the data, so the score
  stays high after a good run; another drift run waits until the streak breaks and builds up
  again. A run of the episode that failed does not count, so a failed run is retried.
- ``Latency``  - the measured p95 was over the SLO in ``consecutiveBreaches`` evaluations of
  the model in use in a row (one, by default; more ignores a single slow measurement).
- ``Schedule`` - a cron fire time passed since the last scheduled run; missed fire times
  collapse into one run.

Damping, checked in this order: suspended, a run already active, the cooldown after the last
run's end, the budget of runs started in any 24 hours. A blocked trigger stays pending and
starts when the block lifts (``next_check`` says when to look again).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from croniter import croniter

TriggerName = Literal["Manual", "Accuracy", "Drift", "Latency", "Schedule"]
Blocker = Literal["Suspended", "RunActive", "Cooldown", "BudgetExhausted"]
RunOutcome = Literal["Succeeded", "Promoted", "Rejected", "Failed", "RolledBack", "Cancelled"]

BUDGET_WINDOW = timedelta(days=1)
# croniter's get_prev(t) is strictly before t; this makes "the latest fire time <= now".
_JUST_AFTER = timedelta(microseconds=1)


@dataclass(frozen=True)
class TriggerSettings:
    """``spec.triggers`` with durations and decimals parsed; None disables a trigger."""

    drift_threshold: Decimal | None = None
    drift_consecutive_windows: int = 2
    latency_p95_ms: int | None = None
    latency_consecutive_breaches: int = 1
    accuracy_min_percent: int | None = None
    schedule: str | None = None
    cooldown: timedelta = timedelta(minutes=30)
    max_runs_per_day: int = 4


@dataclass(frozen=True)
class Observation:
    """What the latest evaluation of the model in use measured."""

    drift_score: float | None = None
    latency_p95_ms: float | None = None
    accuracy_percent: float | None = None
    # Evaluations of the model in use in a row over the SLO, this one included
    # (status.consecutiveLatencyBreaches).
    latency_breaches: int = 1


@dataclass(frozen=True)
class DriftStreak:
    """Evaluations in a row over the drift threshold, and when the streak began."""

    windows: int = 0
    started_at: datetime | None = None


@dataclass(frozen=True)
class PastRun:
    trigger: str
    started_at: datetime
    finished_at: datetime | None = None
    outcome: RunOutcome | None = None
    # Not promoted only because its speed gate could not decide (InconclusiveLatency): the
    # episode it was for is not handled yet, it is measured again by the next run.
    inconclusive: bool = False


@dataclass(frozen=True)
class TriggerState:
    """What status remembers, plus the resource's own switches."""

    created_at: datetime
    suspended: bool = False
    run_active: bool = False
    observation: Observation | None = None
    drift_streak: DriftStreak = DriftStreak()
    runs: Sequence[PastRun] = ()  # finished runs, any order
    budget_start_times: Sequence[datetime] = ()  # run starts (status.runBudget.startTimes)
    run_request: str | None = None  # spec.runRequest
    last_run_request: str | None = None  # status.lastRunRequest
    last_schedule_time: datetime | None = None  # status.lastScheduleTime


@dataclass(frozen=True)
class TriggerDecision:
    start: bool
    trigger: TriggerName | None  # the trigger that fired, even when blocked
    reason: str  # a sentence for the run record, an event or a condition message
    blocked_by: Blocker | None = None
    blocked_until: datetime | None = None  # for Cooldown and BudgetExhausted
    next_check: datetime | None = None  # look again then, even if nothing else happens
    # What a started run consumes: record them in status with the run.
    run_request: str | None = None  # -> status.lastRunRequest
    schedule_time: datetime | None = None  # -> status.lastScheduleTime


@dataclass(frozen=True)
class _Fired:
    trigger: TriggerName
    reason: str


def advance_drift_streak(
    streak: DriftStreak, score: float | None, threshold: Decimal, evaluated_at: datetime
) -> DriftStreak:
    """The streak after one more evaluation: +1 when the score is over the threshold, else 0.

    Call it once per evaluation (status.lastEvaluation.id tells which one was counted). A
    missing score (the evaluation could not measure drift) breaks the streak.
    """
    if score is None or not _over(score, threshold):
        return DriftStreak()
    return DriftStreak(
        windows=streak.windows + 1,
        started_at=streak.started_at if streak.windows > 0 else evaluated_at,
    )


def latest_fire_time(schedule: str, at_or_before: datetime) -> datetime:
    """The latest time <= at_or_before at which the cron schedule (UTC) fires."""
    fire: datetime = croniter(schedule, at_or_before + _JUST_AFTER).get_prev(datetime)
    return fire


def next_fire_time(schedule: str, after: datetime) -> datetime:
    """The first time > after at which the cron schedule (UTC) fires."""
    fire: datetime = croniter(schedule, after).get_next(datetime)
    return fire


def decide(settings: TriggerSettings, state: TriggerState, now: datetime) -> TriggerDecision:
    fired = _fired_triggers(settings, state, now)
    next_fire = _next_schedule_check(settings, state, now)
    if not fired:
        return TriggerDecision(
            start=False, trigger=None, reason="No trigger holds.", next_check=next_fire
        )
    primary = fired[0]
    reason = primary.reason
    if len(fired) > 1:
        reason += " Also: " + ", ".join(f.trigger for f in fired[1:]) + "."

    blocked = _blocker(settings, state, now)
    if blocked is not None:
        blocker, until = blocked
        return TriggerDecision(
            start=False,
            trigger=primary.trigger,
            reason=f"{reason} {_blocked_sentence(blocker, until)}",
            blocked_by=blocker,
            blocked_until=until,
            next_check=_earliest(until, next_fire),
        )

    names = {f.trigger for f in fired}
    return TriggerDecision(
        start=True,
        trigger=primary.trigger,
        reason=reason,
        run_request=state.run_request if "Manual" in names else None,
        schedule_time=(
            latest_fire_time(settings.schedule, now)
            if "Schedule" in names and settings.schedule
            else None
        ),
    )


def _fired_triggers(settings: TriggerSettings, state: TriggerState, now: datetime) -> list[_Fired]:
    fired: list[_Fired] = []
    if state.run_request is not None and state.run_request != state.last_run_request:
        fired.append(
            _Fired("Manual", f"A run was requested (spec.runRequest={state.run_request!r}).")
        )

    seen = state.observation
    if seen is not None and settings.accuracy_min_percent is not None:
        accuracy = seen.accuracy_percent
        if accuracy is not None and _under(accuracy, Decimal(settings.accuracy_min_percent)):
            fired.append(
                _Fired(
                    "Accuracy",
                    f"Holdout accuracy {accuracy:.2f}% is under the minimum "
                    f"{settings.accuracy_min_percent}%.",
                )
            )

    if settings.drift_threshold is not None and _drift_episode_unhandled(settings, state):
        score = seen.drift_score if seen is not None else None
        score_text = f"{score:.4g}" if score is not None else "the score"
        fired.append(
            _Fired(
                "Drift",
                f"Drift score {score_text} was over the threshold {settings.drift_threshold} "
                f"in {state.drift_streak.windows} consecutive evaluations "
                f"(required: {settings.drift_consecutive_windows}).",
            )
        )

    if seen is not None and settings.latency_p95_ms is not None:
        p95 = seen.latency_p95_ms
        required = settings.latency_consecutive_breaches
        if (
            p95 is not None
            and _over(p95, Decimal(settings.latency_p95_ms))
            and seen.latency_breaches >= required
        ):
            in_a_row = (
                f" in {seen.latency_breaches} evaluations in a row (required: {required})"
                if required > 1
                else ""
            )
            fired.append(
                _Fired(
                    "Latency",
                    f"p95 latency {p95:.2f} ms is over the SLO of {settings.latency_p95_ms} ms"
                    f"{in_a_row}.",
                )
            )

    if settings.schedule and _schedule_due(settings.schedule, state, now):
        fire = latest_fire_time(settings.schedule, now)
        fired.append(
            _Fired(
                "Schedule",
                f"The schedule {settings.schedule!r} fired at {fire.isoformat()}.",
            )
        )
    return fired


def _drift_episode_unhandled(settings: TriggerSettings, state: TriggerState) -> bool:
    streak = state.drift_streak
    if streak.windows < settings.drift_consecutive_windows or streak.started_at is None:
        return False
    started = streak.started_at
    return not any(
        run.trigger == "Drift"
        and run.started_at >= started
        and run.outcome != "Failed"
        and not run.inconclusive
        for run in state.runs
    )


def _schedule_after(state: TriggerState) -> datetime:
    return state.last_schedule_time or state.created_at


def _schedule_due(schedule: str, state: TriggerState, now: datetime) -> bool:
    return latest_fire_time(schedule, now) > _schedule_after(state)


def _next_schedule_check(
    settings: TriggerSettings, state: TriggerState, now: datetime
) -> datetime | None:
    if not settings.schedule:
        return None
    return next_fire_time(settings.schedule, max(now, _schedule_after(state)))


def _blocker(
    settings: TriggerSettings, state: TriggerState, now: datetime
) -> tuple[Blocker, datetime | None] | None:
    if state.suspended:
        return "Suspended", None
    if state.run_active:
        return "RunActive", None
    cooldown_until = _cooldown_until(settings, state)
    budget_until = _budget_free_at(settings, state, now)
    # Report the first block, but wait until every time-based block has lifted.
    until = _latest(
        cooldown_until if cooldown_until and cooldown_until > now else None, budget_until
    )
    if cooldown_until is not None and now < cooldown_until:
        return "Cooldown", until
    if budget_until is not None:
        return "BudgetExhausted", until
    return None


def _cooldown_until(settings: TriggerSettings, state: TriggerState) -> datetime | None:
    ends = [run.finished_at for run in state.runs if run.finished_at is not None]
    if not ends:
        return None
    return max(ends) + settings.cooldown


def _budget_free_at(
    settings: TriggerSettings, state: TriggerState, now: datetime
) -> datetime | None:
    """None while the budget allows a run; else when enough starts leave the 24 h window."""
    recent = sorted(t for t in state.budget_start_times if now - t < BUDGET_WINDOW)
    surplus = len(recent) - settings.max_runs_per_day
    if surplus < 0:
        return None
    return recent[surplus] + BUDGET_WINDOW


def budget_start_times_to_keep(start_times: Sequence[datetime], now: datetime) -> list[datetime]:
    """The run starts status must keep for the budget: those within the last 24 hours."""
    return sorted(t for t in start_times if now - t < BUDGET_WINDOW)


def _blocked_sentence(blocker: Blocker, until: datetime | None) -> str:
    if blocker == "Suspended":
        return "No run starts: the resource is suspended."
    if blocker == "RunActive":
        return "It waits for the active run to finish."
    stamp = until.isoformat() if until else "later"
    if blocker == "Cooldown":
        return f"It waits for the cooldown after the last run, until {stamp}."
    return f"The budget of runs per day is spent; the next run may start at {stamp}."


def _over(value: float, limit: Decimal) -> bool:
    # repr of a float is its shortest exact-enough decimal: 0.2 stays 0.2, not 0.2000000000000000111
    return Decimal(repr(value)) > limit


def _under(value: float, limit: Decimal) -> bool:
    return Decimal(repr(value)) < limit


def _earliest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


def _latest(*times: datetime | None) -> datetime | None:
    present = [t for t in times if t is not None]
    return max(present) if present else None
