"""From the resource (driftwarden.api spec and status models) to the policies' inputs.

Pure translation: durations and quantities parsed, decimals kept exact, status fields read
the way the policies expect them. Kept apart from the policies so they stay independent of
the API's shape, and apart from the services so it is tested without a cluster.

Two facts come from conditions rather than from fields of their own:

- When the current drift streak began is the ``lastTransitionTime`` of ``DriftDetected``
  while it is True (the condition turns True with the first evaluation over the threshold
  and keeps its transition time while the streak lasts).
- A temporary fix that expired waits for the SLO to be met once before it may be applied
  again while ``TemporaryFixActive`` has reason ``FixExpired``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from driftwarden.api.conditions import ConditionType, Reason, get_condition
from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.api.status import ContainerResources, ModelOptimizationStatus, Outcome
from driftwarden.api.status import Promoted as PromotedStatus
from driftwarden.policy.deployment_apply import DeploymentIntent, ResourceValues, TargetRef
from driftwarden.policy.fix_record import FixRecord
from driftwarden.policy.gates import DEFAULT_LATENCY_BATCH, GateSettings
from driftwarden.policy.promotion import Promoted
from driftwarden.policy.quantity import parse_quantity
from driftwarden.policy.temporary_fix import ActiveFix, FixSettings, still_applied
from driftwarden.policy.triggers import (
    DriftStreak,
    Observation,
    PastRun,
    TriggerSettings,
    TriggerState,
)

Json = dict[str, Any]


def model_in_use(spec: ModelOptimizationSpec, status: ModelOptimizationStatus) -> str:
    """What the target serves: the promoted model once there is one, else spec.model."""
    return status.promoted.current if status.promoted is not None else spec.model.uri


def trigger_settings(spec: ModelOptimizationSpec) -> TriggerSettings:
    triggers = spec.triggers
    return TriggerSettings(
        drift_threshold=Decimal(triggers.drift.threshold) if triggers.drift else None,
        drift_consecutive_windows=triggers.drift.consecutive_windows if triggers.drift else 1,
        latency_p95_ms=triggers.latency.p95_ms if triggers.latency else None,
        latency_consecutive_breaches=(
            triggers.latency.consecutive_breaches if triggers.latency else 1
        ),
        accuracy_min_percent=triggers.accuracy.min_percent if triggers.accuracy else None,
        schedule=triggers.schedule,
        cooldown=triggers.cooldown_delta,
        max_runs_per_day=triggers.max_runs_per_day,
    )


def latency_batch(spec: ModelOptimizationSpec) -> int:
    """The batch size whose p95 the SLO uses: the latency trigger's (the serving batch
    size), else 32 when measured, else the largest measured."""
    if spec.triggers.latency is not None:
        return spec.triggers.latency.batch_size
    sizes = spec.monitoring.latency.batch_sizes
    return DEFAULT_LATENCY_BATCH if DEFAULT_LATENCY_BATCH in sizes else max(sizes)


def observation(status: ModelOptimizationStatus) -> Observation | None:
    last = status.last_evaluation
    if last is None:
        return None
    return Observation(
        drift_score=last.drift_score,
        latency_p95_ms=last.latency.p95_ms if last.latency else None,
        accuracy_percent=last.accuracy_percent,
        latency_breaches=latency_breaches(status),
    )


def latency_breaches(status: ModelOptimizationStatus) -> int:
    """Evaluations in a row over the SLO; a status written before the count existed holds
    only the latest evaluation, which counts as one."""
    count = status.consecutive_latency_breaches
    return 1 if count is None else count


def next_latency_breaches(
    status: ModelOptimizationStatus, model_uri: str, breached: bool | None
) -> int | None:
    """The count after one more evaluation of ``model_uri``: +1 over the SLO (restarting at 1
    when the model in use changed), 0 within it; unchanged when nothing was measured."""
    if breached is None:
        return status.consecutive_latency_breaches
    if not breached:
        return 0
    last = status.last_evaluation
    same_model = last is not None and last.model_uri == model_uri
    return (status.consecutive_latency_breaches or 0) + 1 if same_model else 1


def drift_streak(status: ModelOptimizationStatus) -> DriftStreak:
    windows = status.consecutive_drift_windows or 0
    detected = get_condition(status.conditions, ConditionType.DRIFT_DETECTED)
    if windows == 0 or detected is None or detected.status != "True":
        return DriftStreak()
    return DriftStreak(windows=windows, started_at=detected.last_transition_time)


def past_runs(status: ModelOptimizationStatus) -> list[PastRun]:
    return [
        PastRun(
            trigger=run.trigger.value,
            started_at=run.started_at,
            finished_at=run.finished_at,
            outcome=run.outcome.value,
            inconclusive=any(gate.inconclusive for gate in run.gates),
        )
        for run in status.runs
        if run.started_at is not None
    ]


def trigger_state(
    spec: ModelOptimizationSpec, status: ModelOptimizationStatus, created_at: datetime
) -> TriggerState:
    return TriggerState(
        created_at=created_at,
        suspended=spec.suspend,
        run_active=status.active_run is not None,
        observation=observation(status),
        drift_streak=drift_streak(status),
        runs=past_runs(status),
        budget_start_times=list(status.run_budget.start_times) if status.run_budget else [],
        run_request=spec.run_request,
        last_run_request=status.last_run_request,
        last_schedule_time=status.last_schedule_time,
    )


def gate_settings(spec: ModelOptimizationSpec) -> GateSettings:
    gates = spec.gates
    return GateSettings(
        max_accuracy_drop_percent=gates.max_accuracy_drop_percent,
        min_accuracy_percent=gates.min_accuracy_percent,
        min_speedup_percent=gates.min_speedup_percent,
        max_slowdown_percent=gates.max_slowdown_percent,
        max_size_bytes=parse_quantity(gates.max_size) if gates.max_size is not None else None,
        latency_batch=speed_gate_batch(spec),
    )


def speed_gate_batch(spec: ModelOptimizationSpec) -> int:
    """The batch size the speed gate protects: gates.latencyBatchSize, else the SLO's."""
    if spec.gates.latency_batch_size is not None:
        return spec.gates.latency_batch_size
    return latency_batch(spec)


def fix_settings(spec: ModelOptimizationSpec) -> FixSettings | None:
    fix = spec.temporary_fix
    if fix is None:
        return None
    return FixSettings(
        enabled=fix.enabled,
        cpu_percent=fix.cpu_percent,
        memory_percent=fix.memory_percent,
        max_cpu=parse_quantity(fix.max_cpu) if fix.max_cpu is not None else None,
        max_memory=parse_quantity(fix.max_memory) if fix.max_memory is not None else None,
        extra_gpus=fix.extra_gpus,
        expires_after=fix.expires_after_delta,
    )


def active_fix(status: ModelOptimizationStatus) -> ActiveFix | None:
    fix = status.temporary_fix
    if fix is None or not fix.active or fix.applied_at is None or fix.expires_at is None:
        return None
    return ActiveFix(
        applied_at=fix.applied_at,
        expires_at=fix.expires_at,
        deployment=fix.deployment or "",
        container=fix.applied[0].container if fix.applied else "",
    )


def fix_waiting_for_slo(status: ModelOptimizationStatus) -> bool:
    condition = get_condition(status.conditions, ConditionType.TEMPORARY_FIX_ACTIVE)
    return condition is not None and condition.reason == Reason.FIX_EXPIRED


def promoted(status: ModelOptimizationStatus) -> Promoted | None:
    return promoted_from(status.promoted)


def promoted_from(record: PromotedStatus | None) -> Promoted | None:
    if record is None or record.at is None:
        return None
    return Promoted(
        current=record.current,
        run_id=record.run_id,
        at=record.at,
        previous=record.previous,
        previous_run_id=record.previous_run_id,
    )


def baseline_accuracy_of(status: ModelOptimizationStatus, run_id: str | None) -> float | None:
    """What the model before a promotion scored in the promoting run (its baseline)."""
    for run in status.runs:
        if run.id == run_id and run.baseline is not None:
            return run.baseline.accuracy_percent
    return None


def passed_run(status: ModelOptimizationStatus, run_id: str) -> tuple[str, str | None] | None:
    """(artifact URI, manifest digest) of a recorded run whose candidate passed the gates."""
    for run in status.runs:
        if (
            run.id == run_id
            and run.outcome in (Outcome.SUCCEEDED, Outcome.PROMOTED)
            and run.artifact_uri
            and all(gate.passed for gate in run.gates)
        ):
            return run.artifact_uri, run.manifest_sha256
    return None


# ---- the target Deployment ------------------------------------------------------------------


def target_container(spec: ModelOptimizationSpec, deployment: Json) -> Json | None:
    """The serving container: spec.target.container, or the Deployment's first one."""
    containers: list[Json] = (
        deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    )
    wanted = spec.target.container if spec.target is not None else None
    for container in containers:
        if wanted is None or container.get("name") == wanted:
            return container
    return None


def target_ref(namespace: str, spec: ModelOptimizationSpec, container: str) -> TargetRef:
    if spec.target is None:
        raise ValueError("spec.target is not set")
    return TargetRef(
        namespace=namespace,
        deployment=spec.target.deployment,
        container=container,
        model_env=spec.target.model_env,
    )


def resource_values(container: Json) -> ResourceValues:
    resources: Mapping[str, Mapping[str, str]] = container.get("resources") or {}
    return ResourceValues(
        requests={k: str(v) for k, v in (resources.get("requests") or {}).items()},
        limits={k: str(v) for k, v in (resources.get("limits") or {}).items()},
    )


def env_value(container: Json, name: str) -> str | None:
    for env in container.get("env") or []:
        if env.get("name") == name:
            value = env.get("value")
            return str(value) if value is not None else None
    return None


def fix_record(status: ModelOptimizationStatus, owner_uid: str, owner: str) -> FixRecord | None:
    """The active temporary fix of status as the record the Deployment carries."""
    fix = status.temporary_fix
    if fix is None or not fix.active or fix.applied_at is None or fix.expires_at is None:
        return None
    container = fix.applied[0].container if fix.applied else ""
    return FixRecord(
        owner_uid=owner_uid,
        owner=owner,
        deployment=fix.deployment or "",
        container=container,
        original=fix_values(fix.original, container),
        applied=fix_values(fix.applied, container),
        applied_at=fix.applied_at,
        expires_at=fix.expires_at,
    )


def fix_values(entries: list[ContainerResources], container: str) -> ResourceValues:
    for entry in entries:
        if entry.container == container:
            return ResourceValues(requests=entry.requests, limits=entry.limits)
    return ResourceValues()


def intent(
    status: ModelOptimizationStatus,
    deployment: str,
    container: str,
    fix: FixRecord | None,
    live: ResourceValues | None = None,
) -> DeploymentIntent:
    """What DriftWarden has set on the target, rebuilt from status: the promoted model and,
    when ``fix`` is on this Deployment's container, the fix with its record - only the raised
    fields still at their applied values when ``live`` (the container's resources now) is
    given, so a person's change is never forced back."""
    resources = ResourceValues()
    expires: str | None = None
    text: str | None = None
    if fix is not None and fix.deployment == deployment and fix.container == container:
        resources = fix.applied if live is None else still_applied(fix.applied, live)
        expires = fix.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        text = fix.to_annotation()
    record = status.promoted
    return DeploymentIntent(
        model_uri=record.current if record is not None else None,
        promoted_run=record.run_id if record is not None else None,
        resources=resources,
        fix_expires_at=expires,
        fix_record=text,
    )
