"""Pydantic models of ModelOptimization.status, in agreement with crds/modeloptimization.yaml.

Measurements are floats here (status may use numbers; spec may not). Lists carry the CRD's
bounds; free text is cut to the CRD's maxLength instead of being refused.

    status = ModelOptimizationStatus.model_validate(body.get("status") or {})
    patch = {"status": status.to_merge_patch()}
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field

from driftwarden.api.conditions import Condition
from driftwarden.api.types import StatusModel, Time, truncated

MAX_RUNS = 20
MAX_CONDITIONS = 16
MAX_DRIFTED_FEATURES = 64
MAX_TOP_FEATURES = 5  # the domain classifier's top contributing features
MAX_BUDGET_ENTRIES = 100

Name = Annotated[str, Field(max_length=63)]
Uri = Annotated[str, Field(max_length=1024)]
Sha256 = Annotated[str, Field(max_length=64)]
Text = Annotated[str, truncated(1024)]


class Phase(StrEnum):
    """A one-word summary for `kubectl get`; the conditions are the API."""

    PENDING = "Pending"  # not evaluated yet
    MONITORING = "Monitoring"  # healthy, watching
    OPTIMIZING = "Optimizing"  # a run is active
    AWAITING_PROMOTION = "AwaitingPromotion"  # a Manual candidate waits for approval
    DEGRADED = "Degraded"  # a trigger fired but no run may start (cooldown, budget)
    SUSPENDED = "Suspended"
    FAILED = "Failed"  # input the operator cannot use (missing PVC, model, ...)


class Trigger(StrEnum):
    """Why a run started."""

    DRIFT = "Drift"
    LATENCY = "Latency"
    ACCURACY = "Accuracy"
    SCHEDULE = "Schedule"
    MANUAL = "Manual"  # a new spec.runRequest
    INITIAL = "Initial"  # the resource was created
    SPEC_CHANGE = "SpecChange"  # the pipeline changed


class Outcome(StrEnum):
    SUCCEEDED = "Succeeded"  # passed the gates; the candidate waits (Manual) or is next
    PROMOTED = "Promoted"
    REJECTED = "Rejected"  # a gate failed; the old model stays
    FAILED = "Failed"  # a Job failed
    ROLLED_BACK = "RolledBack"  # promoted, then rolled back after an evaluation
    CANCELLED = "Cancelled"


class LatencySummary(StatusModel):
    source: Literal["Benchmark", "Prometheus"] | None = None
    batch_size: int | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None


class Evaluation(StatusModel):
    id: Name | None = None
    time: Time | None = None
    job_name: Name | None = None
    model_uri: Uri | None = None
    drift_metric: Annotated[str, Field(max_length=32)] | None = None
    drift_score: float | None = None
    drift_detected: bool | None = None
    drifted_features: Annotated[
        list[Annotated[str, Field(max_length=128)]], Field(max_length=MAX_DRIFTED_FEATURES)
    ] = Field(default_factory=list)
    drifted_features_percent: float | None = None
    # metric multivariate: the domain classifier's p-value and the features it relied on
    drift_p_value: float | None = None
    drift_top_features: Annotated[
        list[Annotated[str, Field(max_length=128)]], Field(max_length=MAX_TOP_FEATURES)
    ] = Field(default_factory=list)
    latency: LatencySummary | None = None
    accuracy_percent: float | None = None
    message: Text | None = None
    # The evaluation's report.html (<artifacts>/<name>/evaluations/<id>/report.html).
    report_uri: Uri | None = None


class ActiveEvaluation(StatusModel):
    id: Name
    job_name: Name
    started_at: Time | None = None


class ActiveRun(StatusModel):
    id: Name
    trigger: Trigger
    reason: Text | None = None
    started_at: Time | None = None
    stage: Annotated[int, Field(ge=0)] | None = None
    stage_type: Literal["retrain", "prune", "distill", "quantize", "export"] | None = None
    job_name: Name | None = None
    base_model_uri: Uri | None = None


class ModelMetrics(StatusModel):
    accuracy_percent: float | None = None
    # Keys as the Job reports them ("b1_p95"): kept verbatim, not camelCased.
    latency_ms: Annotated[dict[str, float], Field(max_length=32)] = Field(default_factory=dict)
    size_bytes: int | None = None
    parameters: int | None = None
    macs: int | None = None
    device: Annotated[str, Field(max_length=64)] | None = None


class GateResult(StatusModel):
    name: Annotated[str, Field(max_length=64)]
    passed: bool
    value: float | None = None
    limit: float | None = None
    message: Annotated[str, truncated(512)] | None = None
    # Speed gates: the batch size protected and the ratio interval decided on.
    batch_size: int | None = None
    low: float | None = None
    high: float | None = None
    rounds: int | None = None
    inconclusive: bool | None = None


class SpeedRatio(StatusModel):
    """Baseline latency / candidate latency at one batch size, with its interval."""

    batch_size: int
    ratio: float
    low: float
    high: float
    rounds: int


class RunRecord(StatusModel):
    id: Name
    trigger: Trigger
    reason: Text | None = None
    outcome: Outcome
    started_at: Time | None = None
    finished_at: Time | None = None
    duration_seconds: float | None = None
    job_names: Annotated[list[Name], Field(max_length=8)] = Field(default_factory=list)
    base_model_uri: Uri | None = None
    baseline: ModelMetrics | None = None
    candidate: ModelMetrics | None = None
    speed: Annotated[list[SpeedRatio], Field(max_length=8)] = Field(default_factory=list)
    gates: Annotated[list[GateResult], Field(max_length=8)] = Field(default_factory=list)
    artifact_uri: Uri | None = None
    manifest_sha256: Sha256 | None = None
    # The run's report.html, beside its result (listed in its MANIFEST).
    report_uri: Uri | None = None
    message: Text | None = None


class LastRun(StatusModel):
    id: Name
    outcome: Outcome
    finished_at: Time | None = None


class RunBudget(StatusModel):
    start_times: Annotated[list[Time], Field(max_length=MAX_BUDGET_ENTRIES)] = Field(
        default_factory=list
    )


class Candidate(StatusModel):
    run_id: Name
    artifact_uri: Uri
    manifest_sha256: Sha256 | None = None
    created_at: Time | None = None


class Promoted(StatusModel):
    current: Uri
    run_id: Name | None = None
    manifest_sha256: Sha256 | None = None
    at: Time | None = None
    previous: Uri | None = None
    previous_run_id: Name | None = None


class ContainerResources(StatusModel):
    container: Name
    requests: Annotated[dict[str, Annotated[str, Field(max_length=64)]], Field(max_length=16)] = (
        Field(default_factory=dict)
    )
    limits: Annotated[dict[str, Annotated[str, Field(max_length=64)]], Field(max_length=16)] = (
        Field(default_factory=dict)
    )


class TemporaryFixStatus(StatusModel):
    active: bool
    deployment: Annotated[str, Field(max_length=253)] | None = None
    reason: Text | None = None
    applied_at: Time | None = None
    expires_at: Time | None = None
    extra_gpus: Annotated[int, Field(ge=0)] | None = None
    # Exactly what to restore, per container.
    original: Annotated[list[ContainerResources], Field(max_length=16)] = Field(
        default_factory=list
    )
    applied: Annotated[list[ContainerResources], Field(max_length=16)] = Field(default_factory=list)


DisplayValue = Annotated[str, Field(max_length=16)]


def rounded(value: float) -> str:
    """A measurement for a table column: three significant digits or fewer."""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


class Display(StatusModel):
    """The last evaluation rounded for `kubectl get` columns (status.lastEvaluation has
    the exact values)."""

    drift: DisplayValue | None = None
    p95: DisplayValue | None = None


class ModelOptimizationStatus(StatusModel):
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    phase: Phase | None = None
    conditions: Annotated[list[Condition], Field(max_length=MAX_CONDITIONS)] = Field(
        default_factory=list
    )
    last_evaluation: Evaluation | None = None
    active_evaluation: ActiveEvaluation | None = None
    evaluation_count: Annotated[int, Field(ge=0)] | None = None
    consecutive_drift_windows: Annotated[int, Field(ge=0)] | None = None
    consecutive_latency_breaches: Annotated[int, Field(ge=0)] | None = None
    active_run: ActiveRun | None = None
    run_count: Annotated[int, Field(ge=0)] | None = None
    runs: Annotated[list[RunRecord], Field(max_length=MAX_RUNS)] = Field(default_factory=list)
    last_run: LastRun | None = None
    last_run_request: Annotated[str, Field(max_length=253)] | None = None
    last_schedule_time: Time | None = None
    run_budget: RunBudget | None = None
    candidate: Candidate | None = None
    promoted: Promoted | None = None
    temporary_fix: TemporaryFixStatus | None = None
    display: Display | None = None

    def refresh_display(self) -> None:
        """status.display from status.lastEvaluation (idempotent)."""
        last = self.last_evaluation
        drift = last.drift_score if last is not None else None
        p95 = last.latency.p95_ms if last is not None and last.latency is not None else None
        if drift is None and p95 is None:
            self.display = None
            return
        self.display = Display(
            drift=None if drift is None else rounded(drift),
            p95=None if p95 is None else f"{rounded(p95)}ms",
        )

    def record_run(self, run: RunRecord) -> None:
        """Record a run: a known id is replaced in place (idempotent, e.g. Succeeded ->
        Promoted), a new one appended; only the newest MAX_RUNS are kept."""
        ids = [r.id for r in self.runs]
        if run.id in ids:
            self.runs = [run if r.id == run.id else r for r in self.runs]
        else:
            self.runs = [*self.runs, run][-MAX_RUNS:]
        latest = self.runs[-1]
        self.last_run = LastRun(
            id=latest.id, outcome=latest.outcome, finished_at=latest.finished_at
        )

    def to_merge_patch(self) -> dict[str, Any]:
        """The status as a JSON merge patch body: unset fields are null, so they are removed.

        (The apiserver prunes nulls the schema does not allow, e.g. inside list items.)
        """
        return self.model_dump(mode="json")

    def to_json_dict(self) -> dict[str, Any]:
        """The status as the apiserver stores it (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)
