"""The admin's policy applied to one resource: what its spec asks for, refused or not.

The decision is driftwarden.policy.admission's; this module only reads the spec (and the
operator's configuration) into its terms. A refused spec gets no Job and no Deployment
write: the reconcile pass treats it like a spec it cannot parse, with reason
PolicyViolation and a message naming each field and rule.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.builders import names
from driftwarden.config import OperatorConfig
from driftwarden.policy.admission import (
    POLICY_VIOLATION,
    Requested,
    Violation,
    artifact_refusal,
    violations,
)
from driftwarden.services.jobs import JobOutcome
from optimizer_job import contract

Json = dict[str, Any]


def requested(spec: ModelOptimizationSpec) -> Requested:
    prometheus = spec.monitoring.prometheus
    return Requested(
        job_image=spec.job.image,
        job_service_account=spec.job.service_account_name,
        model_env=spec.target.model_env if spec.target is not None else None,
        prometheus_url=prometheus.url if prometheus is not None else None,
    )


def spec_violations(spec: ModelOptimizationSpec, config: OperatorConfig) -> list[Violation]:
    return violations(requested(spec), config.admission_policy)


def refusal(spec: ModelOptimizationSpec, config: OperatorConfig) -> tuple[str, str] | None:
    """(reason, message) for Ready=False when the policy refuses the spec; else None."""
    found = spec_violations(spec, config)
    if not found:
        return None
    return POLICY_VIOLATION, "; ".join(v.message for v in found)


ARTIFACT_OUTSIDE_RUN = "ArtifactOutsideRun"


def contain_artifact(job: Json, outcome: JobOutcome, optimization: str, run_id: str) -> JobOutcome:
    """A succeeded Job's outcome, unless its reported artifact is not its own run's
    directory: then a failed run (reason ArtifactOutsideRun) with no result to promote.

    The expected directory comes from the task the operator wrote into the Job's
    annotation when it created it, not from the current spec (which may have changed)."""
    result = outcome.result
    if outcome.phase != "Succeeded" or result is None or not result.ok:
        return outcome
    annotations = job["metadata"].get("annotations") or {}
    try:
        task = contract.Task.model_validate_json(annotations.get(names.TASK_ANNOTATION) or "")
    except ValidationError:
        task = None
    if task is None or task.run_id != run_id or not task.artifacts_uri:
        why: str | None = f"Job of run {run_id} carries no task naming its artifact directory"
    else:
        why = artifact_refusal(result.artifact_uri, task.artifacts_uri, optimization, run_id)
    if why is None:
        return outcome
    return replace(outcome, phase="Failed", reason=ARTIFACT_OUTSIDE_RUN, message=why, result=None)
