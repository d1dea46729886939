"""Multi-worker runs (job.workers > 1): the gang's headless Service and its start timeout.

A gang's Pods find the first worker by name through a headless Service owned by the Job
(created with the task ConfigMap, before the Job is resumed; 409 = adopt ours). A gang whose
workers did not all start within job.gangTimeoutSeconds is failed on purpose rather than
left waiting: the reason goes into an annotation in the same patch that cuts the Job's
activeDeadlineSeconds short, so the Job controller stops its Pods and fails it, and the run
is recorded from the Job like any failed run (services.jobs.outcome reads the annotation).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from driftwarden.builders import job as job_builder
from driftwarden.k8s import Kube
from driftwarden.services import jobs as job_state

Json = dict[str, Any]


class ServiceConflictError(Exception):
    """A Service of the gang's name exists and belongs to something else."""


def ensure_worker_service(kube: Kube, namespace: str, job: Json) -> None:
    if job_builder.workers_of(job) < 2:
        return
    body = job_builder.build_worker_service(job)
    service, created = kube.create_service(namespace, body)
    owners = {ref.get("uid") for ref in service["metadata"].get("ownerReferences") or []}
    if not created and job["metadata"]["uid"] not in owners:
        raise ServiceConflictError(
            f"Service {body['metadata']['name']} exists and does not belong to Job "
            f"{job['metadata']['name']}; the workers could not find each other by name"
        )


def enforce_gang_timeout(kube: Kube, namespace: str, job: Json, now: datetime) -> Json:
    """Fail a gang that did not come together in time; return the (patched) Job."""
    if job_builder.workers_of(job) < 2 or job_state.is_finished(job):
        return job
    meta = job["metadata"]
    if job_state.GANG_FAILURE_ANNOTATION in (meta.get("annotations") or {}):
        return job  # already failing; the Job controller finishes it
    pods = kube.list_job_pods(namespace, meta["name"], meta["uid"])
    reason = job_state.gang_stalled(job, pods, now)
    if reason is None:
        return job
    return kube.patch_job(
        namespace,
        meta["name"],
        {
            "metadata": {"annotations": {job_state.GANG_FAILURE_ANNOTATION: reason}},
            "spec": {"activeDeadlineSeconds": 1},
        },
    )
