"""From a ModelOptimization to the task a Job runs and the settings it runs with (pure)."""

from __future__ import annotations

from typing import Literal

from driftwarden.api.mapping import data_refs, evaluation_settings, to_contract_stages
from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.builders import names
from driftwarden.builders.job import JobSettings
from driftwarden.config import OperatorConfig
from optimizer_job import contract

TaskKind = Literal["optimize", "evaluate"]


def seed_for(run_id: str) -> int:
    """A fixed seed per run: a re-created Job of the same run trains the same way."""
    return int(names.short_hash(run_id, length=8), 16) % (2**31)


def build_task(
    spec: ModelOptimizationSpec,
    *,
    namespace: str,
    name: str,
    run_id: str,
    kind: TaskKind,
    model_uri: str | None = None,
    speed_decision: contract.SpeedDecision | None = None,
) -> contract.Task:
    """The task of run `run_id`. `model_uri` is the model in use (the promoted one, once
    there is one); by default the spec's. `speed_decision` is the speed gate the run's
    candidate will face, so the Job measures until it can tell."""
    return contract.Task(
        kind=kind,
        namespace=namespace,
        optimization=name,
        run_id=run_id,
        model_uri=model_uri or spec.model.uri,
        data=data_refs(spec),
        stages=to_contract_stages(spec) if kind == "optimize" else [],
        # An evaluation writes its result.json and report.html (no model) under
        # <artifacts>/<name>/evaluations/<run-id>/ (contract.evaluation_artifact_uri).
        artifacts_uri=spec.artifacts.uri,
        evaluation=evaluation_settings(spec),
        seed=seed_for(run_id),
        # Without a GPU the Job must not pick one up by accident on a GPU node; with one,
        # "auto" still runs (on CPU, slowly) where the device plugin gave none.
        device="auto" if spec.job.resources.gpu > 0 else "cpu",
        speed_decision=speed_decision if kind == "optimize" else None,
    )


def job_settings(spec: ModelOptimizationSpec, config: OperatorConfig) -> JobSettings:
    job = spec.job
    return JobSettings(
        image=job.image or config.job_image,
        service_account=job.service_account_name or config.job_service_account,
        gpu=job.resources.gpu,
        cpu=str(job.resources.cpu),
        memory=str(job.resources.memory),
        node_selector=dict(job.node_selector or {}),
        tolerations=[t.model_dump(by_alias=True, exclude_none=True) for t in job.tolerations or []],
        backoff_limit=job.backoff_limit,
        active_deadline_seconds=job.active_deadline_seconds,
        ttl_seconds_after_finished=job.ttl_seconds_after_finished,
        pvc_mount_root=config.pvc_mount_root,
        storage_secret=storage_secret(spec),
        workers=job.workers,
        gang_timeout_seconds=job.gang_timeout_seconds,
        queue_name=job.queue_name,
    )


def storage_secret(spec: ModelOptimizationSpec) -> str | None:
    """The Secret with the s3:// endpoint and credentials the Jobs get, if the spec names one."""
    if spec.storage is None or spec.storage.secret_ref is None:
        return None
    return spec.storage.secret_ref.name


def spec_claims(spec: ModelOptimizationSpec, model_uri: str | None = None) -> list[str]:
    """The PVCs a run of this spec mounts (the operator checks they exist first)."""
    uris: list[str | None] = [
        model_uri or spec.model.uri,
        spec.data.reference,
        spec.data.current,
        spec.data.holdout,
        spec.artifacts.uri,
    ]
    return contract.pvc_claims(uris)
