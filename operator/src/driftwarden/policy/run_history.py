"""Whether an optimization Job's run still needs recording: exactly once, whatever the
length of the kept history.

``status.runs`` keeps only the newest runs (MAX_RUNS), while a finished Job may be kept much
longer (``ttlSecondsAfterFinished`` up to a week). A run id missing from ``status.runs`` is
therefore no proof that a run was never recorded. Every run carries its number (its
``RunPlan.sequence``, the same number its id derives from), and ``status.runCount`` is the
highest number whose start was counted: a run is counted when it starts (together with
``status.activeRun``, in one status write) or, if it finished before status ever named it,
when it is recorded. So a Job whose number is at most ``runCount`` and that is not the
active run was recorded before: it is never recorded, judged or promoted again.

``last_run_request`` keeps ``status.lastRunRequest`` from moving backwards: only the newest
run counted may set it, so an older run (recorded late, or replayed) never brings back an
older request, which would start a new Manual run.
"""

from __future__ import annotations

from typing import Literal

JobDisposition = Literal["Recorded", "Record", "Follow"]


def job_disposition(
    run_id: str,
    sequence: int | None,
    *,
    finished: bool,
    recorded_ids: set[str],
    active_id: str | None,
    run_count: int,
) -> JobDisposition:
    """What a pass does with one of its optimization Jobs.

    ``Recorded``: leave it (its TTL removes it). ``Record``: it finished; record its result
    now. ``Follow``: it runs (or waits to be resumed); follow it as the active run.
    ``sequence`` is the run's number from the Job's plan, None when the Job has none.
    """
    if run_id in recorded_ids:
        return "Recorded"
    if sequence is not None and 0 < sequence <= run_count and run_id != active_id:
        return "Recorded"  # counted, no longer active: recorded, then dropped from the list
    return "Record" if finished else "Follow"


def last_run_request(
    current: str | None, run_request: str | None, sequence: int, run_count: int
) -> str | None:
    """``status.lastRunRequest`` after counting the start of run ``sequence`` (asked for by
    ``run_request``, if a request asked for it) when ``run_count`` runs were counted before."""
    if run_request is None or sequence < run_count:
        return current
    return run_request
