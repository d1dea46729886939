"""What a Job and its Pods say about a run: still running, succeeded with a result, or
failed for a reason a person can act on. Pure: the caller passes the objects it read.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from driftwarden.builders import job as job_builder
from optimizer_job import contract

Json = dict[str, Any]

JobPhase = Literal["Suspended", "Running", "Succeeded", "Failed"]


@dataclass(frozen=True)
class JobOutcome:
    phase: JobPhase
    # CamelCase, for conditions and events: Completed, BadInput, BackoffLimitExceeded, ...
    reason: str = ""
    message: str = ""
    result: contract.CompactResult | None = None
    started_at: str | None = None
    finished_at: str | None = None


def _condition(job: Json, type_: str) -> Json | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_ and condition.get("status") == "True":
            return dict(condition)
    return None


def is_finished(job: Json) -> bool:
    return _condition(job, "Complete") is not None or _condition(job, "Failed") is not None


def _terminated(pod: Json) -> Json | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != job_builder.CONTAINER_NAME:
            continue
        state = status.get("state") or {}
        last = status.get("lastState") or {}
        terminated = state.get("terminated") or last.get("terminated")
        if terminated:
            return dict(terminated)
    return None


CONFIG_ERROR = "CreateContainerConfigError"


def missing_secret(pods: list[Json], secret: str) -> str | None:
    """The kubelet's message when a Pod of the Job cannot start because the Secret
    ``secret`` does not exist (its container waits in CreateContainerConfigError, e.g.
    ``secret "s3-creds" not found``), else None. The Job holds the Secret by ``envFrom``,
    not optional: this is how the operator learns it is missing without reading Secrets."""
    wanted = re.compile(rf'\bsecrets? "{re.escape(secret)}" not found', re.IGNORECASE)
    for pod in pods:
        status = pod.get("status") or {}
        for container in [
            *(status.get("initContainerStatuses") or []),
            *(status.get("containerStatuses") or []),
        ]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            message = str(waiting.get("message") or "")
            if waiting.get("reason") == CONFIG_ERROR and wanted.search(message):
                return message
    return None


def parse_result(message: str | None) -> contract.CompactResult | None:
    """The Job's compact result from a termination message, or None if it holds none (a
    crash before the Job could write it leaves a traceback or nothing)."""
    if not message:
        return None
    try:
        return contract.CompactResult.model_validate_json(message)
    except ValidationError:
        return None


def _newest_first(pods: list[Json]) -> list[Json]:
    def finished(pod: Json) -> str:
        terminated = _terminated(pod) or {}
        return str(terminated.get("finishedAt") or pod["metadata"].get("creationTimestamp") or "")

    return sorted(pods, key=finished, reverse=True)


def _exit_reason(exit_code: int | None) -> str:
    if exit_code == contract.EXIT_BAD_INPUT:
        return "BadInput"
    if exit_code == contract.EXIT_INTERNAL:
        return "JobError"
    if exit_code == 137:
        return "Killed"
    return "JobFailed"


# Set by the operator, with the Job's activeDeadlineSeconds cut short, when a gang's workers
# did not all start in time: the reason travels with the change that fails the Job.
GANG_FAILURE_ANNOTATION = "driftwarden.io/gang-failure"
GANG_TIMEOUT_REASON = "GangTimeout"


def _index(pod: Json) -> str:
    annotations = pod["metadata"].get("annotations") or {}
    return str(annotations.get(job_builder.COMPLETION_INDEX_ANNOTATION, "?"))


def _first_failed_worker(pods: list[Json]) -> list[Json]:
    """A gang's Pods, the first to fail first: the others usually fail because of it (their
    peer vanished, or the Job stopped them)."""
    failed = [p for p in pods if ((_terminated(p) or {}).get("exitCode") or 0) != 0]

    def finished(pod: Json) -> str:
        return str((_terminated(pod) or {}).get("finishedAt") or "~")

    return sorted(failed, key=finished)


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def gang_stalled(job: Json, pods: list[Json], now: dt.datetime) -> str | None:
    """Why a gang cannot start, once its workers waited past the Job's gang timeout: some
    worker's Pod is still Pending (unschedulable, say) or was never created. None while the
    gang may still come together, or for a Job of one Pod."""
    workers = job_builder.workers_of(job)
    annotations = job["metadata"].get("annotations") or {}
    if workers < 2 or is_finished(job) or (job.get("spec") or {}).get("suspend"):
        return None
    started = (job.get("status") or {}).get("startTime")
    timeout = int(annotations.get(job_builder.GANG_TIMEOUT_ANNOTATION) or 0)
    if not started or timeout <= 0:
        return None
    waited = (now - _parse_time(started)).total_seconds()
    if waited < timeout:
        return None
    by_index: dict[str, Json] = {}
    for pod in pods:
        if not pod["metadata"].get("deletionTimestamp"):
            by_index[_index(pod)] = pod
    waiting: list[str] = []
    for index in range(workers):
        worker = by_index.get(str(index))
        if worker is None:
            waiting.append(f"worker {index}: no Pod")
            continue
        if (worker.get("status") or {}).get("phase") not in (None, "Pending"):
            continue
        detail = "Pending"
        for condition in (worker.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                detail = f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message')}"
        waiting.append(f"worker {index}: {detail}")
    if not waiting:
        return None
    return (
        f"{len(waiting)} of {workers} workers did not start within the gang timeout of "
        f"{timeout} s (job.gangTimeoutSeconds); " + "; ".join(waiting)
    )[:1024]


def outcome(job: Json, pods: list[Json]) -> JobOutcome:
    """Read the run's state from its Job and that Job's Pods."""
    status = job.get("status") or {}
    started = status.get("startTime")
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    if complete is None and failed is None:
        if (job.get("spec") or {}).get("suspend"):
            return JobOutcome("Suspended", "Suspended", "the Job waits to be resumed")
        return JobOutcome("Running", started_at=started)

    ordered = _newest_first(pods)
    if complete is not None:
        finished = status.get("completionTime") or complete.get("lastTransitionTime")
        for pod in ordered:
            terminated = _terminated(pod)
            if terminated and terminated.get("exitCode") == 0:
                result = parse_result(terminated.get("message"))
                if result is not None:
                    return JobOutcome(
                        "Succeeded", "Completed", result.reason, result, started, finished
                    )
        # The Pod is gone (deleted by hand or with the Job) or wrote no result.
        return JobOutcome(
            "Failed",
            "ResultUnavailable",
            "the Job completed but its Pod's termination message holds no result "
            "(was the Pod deleted?); the run's result.json is in its artifact directory",
            None,
            started,
            finished,
        )

    assert failed is not None
    finished = failed.get("lastTransitionTime")
    job_reason = str(failed.get("reason") or "JobFailed")
    job_message = str(failed.get("message") or "")
    gang_failure = (job["metadata"].get("annotations") or {}).get(GANG_FAILURE_ANNOTATION)
    if gang_failure:
        return JobOutcome("Failed", GANG_TIMEOUT_REASON, gang_failure, None, started, finished)
    gang = job_builder.workers_of(job) > 1
    if gang:
        ordered = _first_failed_worker(pods) or ordered
    for pod in ordered:
        terminated = _terminated(pod)
        if not terminated:
            continue
        exit_code = terminated.get("exitCode")
        result = parse_result(terminated.get("message"))
        if result is not None and result.reason:
            detail = result.reason
        else:
            # A crash leaves a traceback (or nothing): its last line says the most.
            lines = str(terminated.get("message") or "").strip().splitlines()
            detail = lines[-1] if lines else str(terminated.get("reason") or "")
        reason = _exit_reason(exit_code) if job_reason == "PodFailurePolicy" else job_reason
        message = f"{detail} (exit code {exit_code})" if detail else f"exit code {exit_code}"
        if job_reason not in ("PodFailurePolicy", "BackoffLimitExceeded"):
            message = f"{job_message}; last attempt: {message}" if job_message else message
        if gang:
            workers = job_builder.workers_of(job)
            message = (
                f"worker {_index(pod)} of {workers} (Pod {pod['metadata']['name']}) failed "
                f"first: {message}"
            )
        return JobOutcome("Failed", reason, message, result, started, finished)
    # No Pod to read: the Job's own words (DeadlineExceeded names the deadline).
    return JobOutcome(
        "Failed", job_reason, job_message or "the Job failed", None, started, finished
    )
