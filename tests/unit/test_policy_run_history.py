"""A finished run is recorded exactly once, however long the kept history."""

from __future__ import annotations

import pytest

from driftwarden.api.status import MAX_RUNS
from driftwarden.policy.run_history import job_disposition, last_run_request

pytestmark = pytest.mark.unit


def run_id(sequence: int) -> str:
    return f"r{sequence}-abc123"


def test_thirty_runs_each_recorded_once_while_all_their_jobs_are_kept() -> None:
    """Runs 1..30 one after the other; every finished Job is kept (a week's TTL) and looked
    at on every pass, while status.runs keeps only the newest MAX_RUNS."""
    kept: list[str] = []  # status.runs
    run_count = 0
    active: str | None = None
    jobs: dict[int, bool] = {}  # sequence -> finished
    recorded_times: dict[str, int] = {}
    last_request: str | None = None

    def one_pass() -> None:
        nonlocal kept, active
        for sequence, finished in sorted(jobs.items()):
            rid = run_id(sequence)
            what = job_disposition(
                rid,
                sequence,
                finished=finished,
                recorded_ids=set(kept),
                active_id=active,
                run_count=run_count,
            )
            if what == "Record":
                recorded_times[rid] = recorded_times.get(rid, 0) + 1
                kept = [*kept, rid][-MAX_RUNS:]
                if active == rid:
                    active = None
            elif what == "Follow":
                assert rid == active, (rid, active)

    for sequence in range(1, 31):
        # The run starts: counted and named active in one status write.
        last_request = last_run_request(last_request, f"req-{sequence}", sequence, run_count)
        run_count = max(run_count, sequence)
        active = run_id(sequence)
        jobs[sequence] = False
        one_pass()
        jobs[sequence] = True  # it finishes
        for _ in range(3):  # resyncs
            one_pass()
    assert recorded_times == {run_id(s): 1 for s in range(1, 31)}
    assert kept == [run_id(s) for s in range(11, 31)]
    assert last_request == "req-30"
    # An old run replayed (e.g. counted again) never moves the request back.
    assert last_run_request(last_request, "req-3", 3, run_count) == "req-30"


def test_a_job_status_never_named_is_adopted() -> None:
    # Created just before a crash: not counted yet, so it is followed (or recorded).
    assert job_disposition(
        run_id(26), 26, finished=False, recorded_ids=set(), active_id=None, run_count=25
    ) == ("Follow")
    assert (
        job_disposition(
            run_id(26), 26, finished=True, recorded_ids=set(), active_id=None, run_count=25
        )
        == "Record"
    )
    # The active run is followed until it is recorded, whatever its number.
    assert (
        job_disposition(
            run_id(25), 25, finished=True, recorded_ids=set(), active_id=run_id(25), run_count=25
        )
        == "Record"
    )


def test_a_job_without_a_plan_falls_back_to_the_kept_ids() -> None:
    assert (
        job_disposition("x", None, finished=True, recorded_ids={"x"}, active_id=None, run_count=9)
        == "Recorded"
    )
    assert (
        job_disposition("x", None, finished=True, recorded_ids=set(), active_id=None, run_count=9)
        == "Record"
    )


def test_the_request_is_taken_from_the_newest_run_only() -> None:
    assert last_run_request(None, "a", 1, 0) == "a"
    assert last_run_request("a", None, 2, 1) == "a"  # a run no request asked for
    assert last_run_request("b", "a", 1, 2) == "b"
