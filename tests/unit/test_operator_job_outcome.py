"""Reading a run's outcome from its Job and Pods (the shapes the apiserver returns)."""

from __future__ import annotations

from typing import Any

import pytest

from driftwarden.services.jobs import is_finished, outcome, parse_result
from optimizer_job import contract

pytestmark = pytest.mark.unit

JOB_UID = "job-uid"


def job(*conditions: dict[str, str], suspend: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": "digits-optimize-r1-abc", "uid": JOB_UID},
        "spec": {"suspend": suspend},
        "status": {
            "startTime": "2026-01-01T10:00:00Z",
            "conditions": [{"status": "True", **c} for c in conditions],
        },
    }


def pod(exit_code: int, message: str, finished: str = "2026-01-01T10:00:09Z") -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T10:00:00Z"},
        "status": {
            "containerStatuses": [
                {
                    "name": "optimizer",
                    "state": {
                        "terminated": {
                            "exitCode": exit_code,
                            "reason": "Completed" if exit_code == 0 else "Error",
                            "message": message,
                            "finishedAt": finished,
                        }
                    },
                }
            ]
        },
    }


def result(ok: bool = True, reason: str = "") -> contract.CompactResult:
    return contract.CompactResult(
        kind="optimize",
        run_id="r1-abc",
        ok=ok,
        reason=reason,
        baseline=contract.ModelMetrics(accuracy=0.9, size_bytes=1000),
        candidate=contract.ModelMetrics(accuracy=0.89, size_bytes=300) if ok else None,
        artifact_uri="file:///srv/runs/digits/r1-abc" if ok else None,
        manifest_sha256="ab" * 32 if ok else None,
        seconds=8.5,
    )


COMPLETE = {"type": "Complete", "lastTransitionTime": "2026-01-01T10:00:10Z"}


def test_a_running_job_is_not_finished() -> None:
    running = job()
    assert not is_finished(running)
    assert outcome(running, []).phase == "Running"
    assert outcome(job(suspend=True), []).phase == "Suspended"
    # Kubernetes >= 1.31 adds FailureTarget/SuccessCriteriaMet before the final condition.
    interim = job({"type": "FailureTarget", "reason": "PodFailurePolicy"})
    assert not is_finished(interim)


def test_success_reads_the_termination_message() -> None:
    done = job({"type": "SuccessCriteriaMet"}, COMPLETE)
    got = outcome(done, [pod(0, result().to_message())])
    assert is_finished(done)
    assert got.phase == "Succeeded"
    assert got.result == result()
    assert got.started_at == "2026-01-01T10:00:00Z"
    assert got.finished_at == "2026-01-01T10:00:10Z"


def test_completed_without_a_readable_result_is_not_a_success() -> None:
    done = job(COMPLETE)
    for pods in ([], [pod(0, "")], [pod(0, "Traceback ...\nKeyError")]):
        got = outcome(done, pods)
        assert (got.phase, got.reason) == ("Failed", "ResultUnavailable")
        assert "result.json" in got.message


def test_bad_input_names_the_problem() -> None:
    failed = job(
        {
            "type": "Failed",
            "reason": "PodFailurePolicy",
            "message": "Container optimizer for pod ns/p failed with exit code 65 matching "
            "FailJob rule at index 0",
            "lastTransitionTime": "2026-01-01T10:00:12Z",
        }
    )
    message = result(ok=False, reason="bad input: model directory not found: /m").to_message()
    got = outcome(failed, [pod(contract.EXIT_BAD_INPUT, message)])
    assert (got.phase, got.reason) == ("Failed", "BadInput")
    assert got.message == "bad input: model directory not found: /m (exit code 65)"
    assert got.finished_at == "2026-01-01T10:00:12Z"


def test_a_crash_after_retries_shows_the_last_line_of_the_newest_attempt() -> None:
    failed = job(
        {
            "type": "Failed",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
        }
    )
    older = pod(70, "Traceback\nRuntimeError: first", finished="2026-01-01T10:00:05Z")
    newer = pod(70, "Traceback\nRuntimeError: second", finished="2026-01-01T10:00:20Z")
    got = outcome(failed, [newer, older][::-1])
    assert (got.phase, got.reason) == ("Failed", "BackoffLimitExceeded")
    assert got.message == "RuntimeError: second (exit code 70)"


def test_a_deadline_keeps_the_jobs_own_words() -> None:
    failed = job(
        {
            "type": "Failed",
            "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline",
        }
    )
    got = outcome(failed, [])
    assert (got.reason, got.message) == (
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    )
    killed = outcome(failed, [pod(137, "")])
    assert killed.reason == "DeadlineExceeded"
    assert killed.message.startswith("Job was active longer than specified deadline; last attempt:")


def test_parse_result_refuses_what_is_not_a_result() -> None:
    assert parse_result(None) is None
    assert parse_result("") is None
    assert parse_result('{"kind": "optimize"}') is None
    assert parse_result(result().to_message()) == result()
