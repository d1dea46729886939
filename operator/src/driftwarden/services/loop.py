"""The closed loop: evaluate, decide, judge, promote, roll back, fix - on top of a reconcile pass.

A reconcile pass (services.reconcile) follows the optimization Jobs of one resource and
starts the run it asks for. ``Loop`` adds the rest of the loop to that same pass, through
a few calls the pass makes at fixed points:

    loop = Loop(context)
    loop.follow_evaluation()      # a finished evaluate Job -> status.lastEvaluation,
                                  #   DriftDetected / LatencyWithinSLO, metrics, rollback
    record = loop.judge(record, result)   # a succeeded optimize run -> gates ->
                                  #   Promoted / Rejected / candidate (Manual)
    plan = loop.plan_run(sequence)        # the triggers: a RunPlan, a Hold, or None
    loop.maintain_target()        # approved Manual candidates, the temporary fix
    loop.start_evaluation()       # the next evaluate Job when it is due
    loop.publish_metrics()

Everything is decided by driftwarden.policy (pure) from spec and status; this module reads
what the policies need and writes what they decided: status (in place: the pass writes it
once, conditional on the resourceVersion it read), events, metrics, the evaluate Job, and
the target Deployment (server-side apply, see policy.deployment_apply). Every write is
idempotent, so a pass that is repeated - after a status conflict or an operator crash -
converges to the same state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal

from driftwarden import k8s, promql
from driftwarden.api import conditions as cond
from driftwarden.api.conditions import ConditionType, Reason
from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.api.status import (
    ActiveEvaluation,
    Candidate,
    ContainerResources,
    Evaluation,
    GateResult,
    LatencySummary,
    ModelOptimizationStatus,
    Outcome,
    Promoted,
    RunRecord,
    TemporaryFixStatus,
    Trigger,
)
from driftwarden.builders import names
from driftwarden.builders.job import Owner, build_job, build_task_configmap
from driftwarden.builders.task import build_task, job_settings, spec_claims
from driftwarden.config import OperatorConfig
from driftwarden.k8s import ApiError, Kube
from driftwarden.metrics import OperatorMetrics
from driftwarden.policy import from_api, ownership, promotion, temporary_fix
from driftwarden.policy.deployment_apply import DeploymentIntent, ResourceValues, build_apply
from driftwarden.policy.gates import evaluate_gates, latency_key
from driftwarden.policy.schedule import evaluation_due
from driftwarden.policy.triggers import decide
from driftwarden.services import jobs as job_state
from driftwarden.services.planning import RunPlan
from driftwarden.services.target import TargetApi, is_stale_write
from optimizer_job import contract

Json = dict[str, Any]
EventType = Literal["Normal", "Warning"]
Emit = Callable[[EventType, str, str], None]

EVALUATE: Final = "evaluate"
GUARDED_PATCH_ATTEMPTS: Final = 5
# Reasons of our own (CamelCase, for events and conditions).
APPROVAL_INVALID: Final = "ApprovalInvalid"
TARGET_WRITE_FAILED: Final = "TargetWriteFailed"
NOTHING_TO_RAISE: Final = "NothingToRaise"
# lastEvaluation.message of an evaluation without numbers.
BAD_INPUT_PREFIX: Final = "The evaluation refused its input: "
FAILED_PREFIX: Final = "The evaluation failed: "

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hold:
    """A trigger fired but no run may start now (the pass shows it in Optimizing)."""

    reason: str  # Suspended, Cooldown, BudgetExhausted, RunActive
    message: str


@dataclass
class LoopContext:
    """What one pass knows; ``status`` is the pass's working copy, changed in place."""

    kube: Kube
    target_api: TargetApi
    metrics: OperatorMetrics
    config: OperatorConfig
    owner: Owner
    created_at: datetime
    generation: int
    spec: ModelOptimizationSpec
    status: ModelOptimizationStatus
    now: datetime
    emit: Emit


class TargetUnavailableError(Exception):
    """The target Deployment or its container is missing: (reason, message)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Loop:
    def __init__(self, context: LoopContext) -> None:
        self.ctx = context
        self.spec = context.spec
        self.status = context.status
        self.now = context.now
        # What only the operator can see and the user must fix (the pass sets Ready=False):
        # a target that cannot be written now, or an evaluation that refused its input
        # (until the next evaluation succeeds).
        self.target_problem: tuple[str, str] | None = None

    @property
    def input_problem(self) -> tuple[str, str] | None:
        if self.target_problem is not None:
            return self.target_problem
        last = self.status.last_evaluation
        if last is not None and last.message and last.message.startswith(BAD_INPUT_PREFIX):
            return Reason.EVALUATION_FAILED, last.message
        return None

    # ---- helpers ----------------------------------------------------------------------

    @property
    def namespace(self) -> str:
        return self.ctx.owner.namespace

    @property
    def name(self) -> str:
        return self.ctx.owner.name

    def _set(self, type_: str, status: cond.ConditionStatus, reason: str, message: str) -> bool:
        return cond.set_condition(
            self.status.conditions, type_, status, reason, message, self.ctx.generation, self.now
        )

    def _emit(self, type_: EventType, reason: str, message: str) -> None:
        self.ctx.emit(type_, reason, message)

    # ---- evaluations ------------------------------------------------------------------

    def follow_evaluation(self) -> None:
        """Record the active evaluation once its Job has finished; LatencyWithinSLO follows
        the current SLO also between evaluations (the user may have just changed it)."""
        last = self.status.last_evaluation
        if last is not None and last.latency is not None:
            self._set_latency_condition(last)
        active = self.status.active_evaluation
        if active is None:
            return
        job = self.ctx.kube.get_job(self.namespace, active.job_name)
        if job is None or not self._owns(job, active.id):
            self.status.active_evaluation = None
            self._emit(
                "Warning",
                "EvaluationLost",
                f"Evaluation Job {active.job_name} disappeared before its result was read; "
                "the next evaluation starts on schedule.",
            )
            return
        if not job_state.is_finished(job):
            self._ensure_started(job)
            return
        meta = job["metadata"]
        pods = self.ctx.kube.list_job_pods(self.namespace, meta["name"], meta["uid"])
        outcome = job_state.outcome(job, pods)
        self.status.active_evaluation = None
        started = _parse_time(outcome.started_at) or active.started_at or self.now
        model_uri = _task_of(job).model_uri
        result = outcome.result
        if outcome.phase == "Succeeded" and result is not None and result.ok:
            self._record_evaluation(active, started, model_uri, result)
        else:
            self._record_failed_evaluation(active, started, model_uri, outcome)

    def _record_evaluation(
        self,
        active: ActiveEvaluation,
        started: datetime,
        model_uri: str,
        result: contract.CompactResult,
    ) -> None:
        spec, status = self.spec, self.status
        previous = status.last_evaluation
        metrics = result.baseline or contract.ModelMetrics()
        latency, latency_error = self._latency(metrics)
        accuracy = None if metrics.accuracy is None else round(metrics.accuracy * 100, 4)
        drift = spec.triggers.drift
        threshold = Decimal(drift.threshold) if drift else None
        if result.drift_score is not None and threshold is not None:
            drifting: bool | None = Decimal(repr(result.drift_score)) > threshold
        else:
            drifting = result.drift_detected
        evaluation = Evaluation(
            id=active.id,
            time=started,
            job_name=active.job_name,
            model_uri=model_uri,
            drift_metric=drift.metric if drift else None,
            drift_score=result.drift_score,
            drift_detected=drifting,
            drifted_features=result.drifted_features[:64],
            latency=latency,
            accuracy_percent=accuracy,
            message=(
                f"Serving latency: {latency_error.message}" if latency_error is not None else None
            ),
        )
        status.last_evaluation = evaluation
        status.consecutive_drift_windows = (
            (status.consecutive_drift_windows or 0) + 1 if drifting else 0
        )
        self._set_drift_condition(evaluation)
        if latency_error is not None and self.spec.triggers.latency is not None:
            self._set(
                ConditionType.LATENCY_WITHIN_SLO,
                "Unknown",
                latency_error.reason,
                f"The serving latency could not be read from Prometheus: {latency_error.message}",
            )
        else:
            self._set_latency_condition(evaluation)
        self.ctx.metrics.record_evaluation(
            self.namespace,
            self.name,
            drift_score=result.drift_score,
            drifted_features=len(result.drifted_features)
            if result.drift_score is not None
            else None,
            drift_detected=drifting,
            latency_ms={
                key: value
                for key, value in (
                    ("p50", latency.p50_ms if latency else None),
                    ("p95", latency.p95_ms if latency else None),
                    ("p99", latency.p99_ms if latency else None),
                )
                if value is not None
            },
            accuracy=metrics.accuracy,
            timestamp=started.timestamp(),
        )
        self._emit(
            "Normal", "Evaluated", f"Evaluation {active.id} of {model_uri}: {_summary(evaluation)}."
        )
        self._check_promotion(previous, evaluation)

    def _record_failed_evaluation(
        self,
        active: ActiveEvaluation,
        started: datetime,
        model_uri: str,
        outcome: job_state.JobOutcome,
    ) -> None:
        """A failed evaluation has no numbers: lastEvaluation says so instead of keeping
        older numbers under a newer time. The drift streak is neither advanced nor broken."""
        message = f"{outcome.reason}: {outcome.message}".strip(": ")
        prefix = BAD_INPUT_PREFIX if outcome.reason == "BadInput" else FAILED_PREFIX
        self.status.last_evaluation = Evaluation(
            id=active.id,
            time=started,
            job_name=active.job_name,
            model_uri=model_uri,
            message=prefix + (outcome.message if outcome.reason == "BadInput" else message),
        )
        for type_ in (ConditionType.DRIFT_DETECTED, ConditionType.LATENCY_WITHIN_SLO):
            self._set(
                type_,
                "Unknown",
                Reason.EVALUATION_FAILED,
                f"Evaluation {active.id} failed: {message}",
            )
        self._emit("Warning", Reason.EVALUATION_FAILED, f"Evaluation {active.id} failed: {message}")

    def _latency(
        self, metrics: contract.ModelMetrics
    ) -> tuple[LatencySummary | None, promql.PrometheusError | None]:
        """The latency the SLO is about: serving latency from Prometheus when the spec names
        a query, else the evaluation's own benchmark at the SLO's batch size."""
        prometheus = self.spec.monitoring.prometheus
        if prometheus is not None:
            try:
                serving = promql.serving_latency(prometheus.url, prometheus.query)
            except promql.PrometheusError as error:
                return None, error
            return (
                LatencySummary(
                    source="Prometheus",
                    p50_ms=serving.p50_ms,
                    p95_ms=serving.p95_ms,
                    p99_ms=serving.p99_ms,
                ),
                None,
            )
        batch = from_api.latency_batch(self.spec)
        values = {q: metrics.latency_ms.get(latency_key(batch, q)) for q in ("p50", "p95", "p99")}
        if values["p95"] is None:
            return None, None
        return (
            LatencySummary(
                source="Benchmark",
                batch_size=batch,
                p50_ms=values["p50"],
                p95_ms=values["p95"],
                p99_ms=values["p99"],
            ),
            None,
        )

    def _set_drift_condition(self, evaluation: Evaluation) -> None:
        score, drifting = evaluation.drift_score, evaluation.drift_detected
        if score is None or drifting is None:
            self._set(
                ConditionType.DRIFT_DETECTED,
                "Unknown",
                Reason.NOT_EVALUATED,
                "The evaluation did not measure drift (it needs data.reference and data.current).",
            )
            return
        drift = self.spec.triggers.drift
        threshold = drift.threshold if drift else "the job's default"
        features = ", ".join(evaluation.drifted_features[:10]) or "none named"
        windows = self.status.consecutive_drift_windows or 0
        if drifting:
            message = (
                f"Drift score {score:.4g} is over the threshold {threshold} "
                f"({windows} evaluation(s) in a row); drifted features: {features}."
            )
            changed = self._set(
                ConditionType.DRIFT_DETECTED, "True", Reason.DRIFT_OVER_THRESHOLD, message
            )
            if changed and windows == 1:
                self._emit("Warning", "DriftDetected", message)
        else:
            self._set(
                ConditionType.DRIFT_DETECTED,
                "False",
                Reason.NO_DRIFT,
                f"Drift score {score:.4g} is within the threshold {threshold}.",
            )

    def _set_latency_condition(self, evaluation: Evaluation) -> None:
        latency_trigger = self.spec.triggers.latency
        p95 = evaluation.latency.p95_ms if evaluation.latency else None
        if latency_trigger is None:
            self._set(
                ConditionType.LATENCY_WITHIN_SLO,
                "Unknown",
                Reason.NO_SLO,
                "No latency SLO is set (spec.triggers.latency).",
            )
            return
        slo = latency_trigger.p95_ms
        if p95 is None:
            self._set(
                ConditionType.LATENCY_WITHIN_SLO,
                "Unknown",
                Reason.NOT_EVALUATED,
                evaluation.message or "The evaluation measured no p95 latency.",
            )
            return
        source = evaluation.latency.source if evaluation.latency else None
        where = (
            "serving (Prometheus)"
            if source == "Prometheus"
            else f"benchmark at batch {from_api.latency_batch(self.spec)}"
        )
        if Decimal(repr(p95)) > slo:
            message = f"p95 latency {p95:.3f} ms ({where}) is over the SLO of {slo} ms."
            before = cond.get_condition(self.status.conditions, ConditionType.LATENCY_WITHIN_SLO)
            self._set(ConditionType.LATENCY_WITHIN_SLO, "False", Reason.SLO_BREACHED, message)
            if before is None or before.status != "False":
                self._emit("Warning", Reason.SLO_BREACHED, message)
            return
        self._set(
            ConditionType.LATENCY_WITHIN_SLO,
            "True",
            Reason.WITHIN_SLO,
            f"p95 latency {p95:.3f} ms ({where}) is within the SLO of {slo} ms.",
        )
        if from_api.fix_waiting_for_slo(self.status):
            self._set(
                ConditionType.TEMPORARY_FIX_ACTIVE,
                "False",
                Reason.FIX_NOT_NEEDED,
                "The SLO is met again; a new breach may apply the temporary fix again.",
            )

    def start_evaluation(self) -> None:
        """Start the next evaluate Job when it is due (never two at once, none suspended)."""
        spec, status = self.spec, self.status
        last = status.last_evaluation.time if status.last_evaluation else None
        due = evaluation_due(
            spec.monitoring.interval_delta,
            last,
            evaluation_active=status.active_evaluation is not None,
            suspended=spec.suspend,
            now=self.now,
        )
        if not due.due:
            return
        model_uri = from_api.model_in_use(spec, status)
        missing = [
            claim
            for claim in spec_claims(spec, model_uri)
            if self.ctx.kube.get_pvc(self.namespace, claim) is None
        ]
        if missing:  # the Pod could not start; the user must create the claim
            self.target_problem = (
                Reason.PVC_NOT_FOUND,
                f"PersistentVolumeClaim {', '.join(missing)} not found in namespace "
                f"{self.namespace}: evaluations wait until it exists",
            )
            return
        sequence = (status.evaluation_count or 0) + 1
        run_id = names.run_id_for(self.ctx.owner.uid, sequence, prefix="e")
        task = build_task(
            spec,
            namespace=self.namespace,
            name=self.name,
            run_id=run_id,
            kind=EVALUATE,
            model_uri=model_uri,
        )
        body = build_job(self.ctx.owner, task, job_settings(spec, self.ctx.config))
        job, created = self.ctx.kube.create_job(self.namespace, body)
        if not created and not self._owns(job, run_id):
            self.target_problem = (
                "JobNameConflict",
                f"Job {body['metadata']['name']} exists and was not created by DriftWarden "
                "for this resource's evaluation; delete or rename it",
            )
            return
        self._ensure_started(job)
        status.active_evaluation = ActiveEvaluation(
            id=run_id, job_name=job["metadata"]["name"], started_at=self.now
        )
        status.evaluation_count = sequence

    def _owns(self, obj: Json, run_id: str) -> bool:
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        return (
            labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY
            and labels.get(names.RUN_LABEL) == run_id
            and any(ref.get("uid") == self.ctx.owner.uid for ref in meta.get("ownerReferences", []))
        )

    def _ensure_started(self, job: Json) -> None:
        """The task ConfigMap, then resume (Jobs are created suspended; see builders.job)."""
        meta = job["metadata"]
        if not (job.get("spec") or {}).get("suspend"):
            return
        if names.RESUMED_ANNOTATION in (meta.get("annotations") or {}):
            return
        self.ctx.kube.create_configmap(self.namespace, build_task_configmap(job))
        self.ctx.kube.patch_job(
            self.namespace,
            meta["name"],
            {
                "metadata": {"annotations": {names.RESUMED_ANNOTATION: _rfc3339(self.now)}},
                "spec": {"suspend": False},
            },
        )

    # ---- triggers -----------------------------------------------------------------------

    def plan_run(self, sequence: int) -> RunPlan | Hold | None:
        """The run the triggers ask for now, or why a fired trigger must wait."""
        decision = decide(
            from_api.trigger_settings(self.spec),
            from_api.trigger_state(self.spec, self.status, self.ctx.created_at),
            self.now,
        )
        if decision.trigger is None:
            return None
        if not decision.start:
            return Hold(decision.blocked_by or "Blocked", decision.reason)
        if decision.schedule_time is not None:
            self.status.last_schedule_time = decision.schedule_time
        return RunPlan(
            trigger=Trigger(decision.trigger),
            reason=decision.reason,
            run_request=decision.run_request,
            sequence=sequence,
            base_model_uri=from_api.model_in_use(self.spec, self.status),
        )

    # ---- gates and promotion -------------------------------------------------------------

    def judge(self, record: RunRecord, result: contract.CompactResult) -> RunRecord:
        """A succeeded run's candidate against the gates: Rejected, Promoted (Automatic) or
        Succeeded with status.candidate (Manual, or a target that cannot be written)."""
        verdict = evaluate_gates(
            from_api.gate_settings(self.spec), result.baseline, result.candidate
        )
        gates = [
            GateResult(
                name=r.name, passed=r.passed, value=r.value, limit=r.limit, message=r.message
            )
            for r in verdict.results
        ]
        record = record.model_copy(update={"gates": gates})
        if not verdict.passed:
            message = f"Run {record.id}: {verdict.message} The model in use stays."
            self._set(ConditionType.PROMOTED, "False", Reason.PROMOTION_REJECTED, message)
            self._emit("Warning", Reason.PROMOTION_REJECTED, message)
            return record.model_copy(
                update={"outcome": Outcome.REJECTED, "message": verdict.message}
            )
        if not record.artifact_uri:
            return record
        if self.spec.promotion.mode == "Automatic" and self.spec.target is not None:
            try:
                self._promote(record.artifact_uri, record.id, record.manifest_sha256)
            except TargetUnavailableError as error:
                self._offer_candidate(record, f"It could not be promoted: {error.message}")
                return record
            self.status.candidate = None
            return record.model_copy(update={"outcome": Outcome.PROMOTED})
        self._offer_candidate(record, "")
        return record

    def _offer_candidate(self, record: RunRecord, why: str) -> None:
        assert record.artifact_uri is not None
        self.status.candidate = Candidate(
            run_id=record.id,
            artifact_uri=record.artifact_uri,
            manifest_sha256=record.manifest_sha256,
            created_at=record.finished_at or self.now,
        )
        message = f"Run {record.id}'s candidate {record.artifact_uri} passed the gates. " + (
            why or f"Set spec.promotion.approvedRunId: {record.id} to promote it."
        )
        self._set(ConditionType.PROMOTED, "False", Reason.AWAITING_APPROVAL, message)
        self._emit("Normal", "CandidateReady", message)

    def _promote(self, uri: str, run_id: str, sha256: str | None) -> None:
        deployment, container = self._target()
        in_use = from_api.model_in_use(self.spec, self.status)
        intent = promotion.promote(from_api.intent(self.status, container), uri, run_id)
        self._apply(container, intent)
        before = self.status.promoted
        self.status.promoted = Promoted(
            current=uri,
            run_id=run_id,
            manifest_sha256=sha256,
            at=self.now,
            previous=in_use,
            previous_run_id=before.run_id if before is not None else None,
        )
        message = (
            f"Deployment {deployment['metadata']['name']} now serves {uri} (run {run_id}) through "
            f"{self.spec.target.model_env if self.spec.target else 'its model env var'}; "
            f"the previous model {in_use} is kept for rollback."
        )
        self._set(ConditionType.PROMOTED, "True", Reason.PROMOTED, message)
        self._emit("Normal", "Promoted", message)

    def _check_promotion(self, previous: Evaluation | None, evaluation: Evaluation) -> None:
        """Judge the first evaluation of a promoted model; roll back if it is under the gates."""
        promoted = from_api.promoted(self.status)
        if promoted is None or evaluation.time is None or evaluation.model_uri is None:
            return
        first = (
            evaluation.model_uri == promoted.current
            and evaluation.time >= promoted.at
            and not (
                previous is not None
                and previous.model_uri == promoted.current
                and previous.time is not None
                and previous.time >= promoted.at
            )
        )
        if not first:
            return
        decision = promotion.rollback_decision(
            promoted,
            promotion.EvaluatedModel(
                evaluation.time, evaluation.model_uri, evaluation.accuracy_percent
            ),
            from_api.gate_settings(self.spec),
            from_api.baseline_accuracy_of(self.status, promoted.run_id),
        )
        if decision.verdict != "Rollback":
            return
        if not self.spec.promotion.rollback:
            self._emit(
                "Warning",
                "RollbackDisabled",
                decision.reason + " (spec.promotion.rollback is false: not rolled back)",
            )
            return
        try:
            _, container = self._target()
            self._apply(
                container, promotion.roll_back(from_api.intent(self.status, container), promoted)
            )
        except TargetUnavailableError as error:
            self._emit(
                "Warning", TARGET_WRITE_FAILED, f"Rollback needed but failed: {error.message}"
            )
            return
        self.status.promoted = Promoted(
            current=promoted.previous or self.spec.model.uri,
            run_id=promoted.previous_run_id,
            at=self.now,
        )
        for run in self.status.runs:
            if run.id == promoted.run_id:
                self.status.record_run(
                    run.model_copy(
                        update={"outcome": Outcome.ROLLED_BACK, "message": decision.reason}
                    )
                )
        self._set(ConditionType.PROMOTED, "False", Reason.ROLLED_BACK, decision.reason)
        self._emit("Warning", "RolledBack", decision.reason)

    # ---- the target: approvals and the temporary fix --------------------------------------

    def maintain_target(self) -> None:
        """Every pass: the target exists (else Ready=False says so), an approved Manual
        candidate is promoted, the temporary fix is applied, kept or reverted."""
        if cond.get_condition(self.status.conditions, ConditionType.PROMOTED) is None:
            self._set(ConditionType.PROMOTED, "False", Reason.NO_CANDIDATE, "No candidate yet.")
        if self.spec.target is None:
            return
        try:
            self._target()
            self._promote_approved()
            self._temporary_fix()
        except TargetUnavailableError as error:
            self.target_problem = (error.reason, error.message)

    def _promote_approved(self) -> None:
        approved = self.spec.promotion.approved_run_id
        if self.spec.promotion.mode != "Manual" or approved is None:
            return
        promoted = self.status.promoted
        if promoted is not None and promoted.run_id == approved:
            return
        if any(r.id == approved and r.outcome == Outcome.ROLLED_BACK for r in self.status.runs):
            return  # rolled back after its promotion: the Promoted condition says why
        found = from_api.passed_run(self.status, approved)
        if found is None:
            message = (
                f"spec.promotion.approvedRunId {approved} names no recorded run whose candidate "
                "passed the gates (rejected, failed, rolled back, or not finished yet): nothing "
                "is promoted."
            )
            if self._set(ConditionType.PROMOTED, "False", APPROVAL_INVALID, message):
                self._emit("Warning", APPROVAL_INVALID, message)
            return
        uri, sha256 = found
        self._promote(uri, approved, sha256)
        if self.status.candidate is not None and self.status.candidate.run_id == approved:
            self.status.candidate = None
        for run in self.status.runs:
            if run.id == approved:
                self.status.record_run(run.model_copy(update={"outcome": Outcome.PROMOTED}))

    def _temporary_fix(self) -> None:
        spec, status = self.spec, self.status
        settings = from_api.fix_settings(spec)
        if (settings is None or not settings.enabled) and from_api.active_fix(status) is None:
            self._set(
                ConditionType.TEMPORARY_FIX_ACTIVE,
                "False",
                Reason.FIX_DISABLED,
                "No temporary fix: spec.temporaryFix is not enabled.",
            )
            return
        latency = self._latency_reading()
        promoted = status.promoted
        decision = temporary_fix.decide_fix(
            settings,
            from_api.active_fix(status),
            latency,
            promoted.at if promoted is not None else None,
            promoted.current if promoted is not None else None,
            from_api.fix_waiting_for_slo(status),
            self.now,
        )
        if decision.action == "Apply" and settings is not None:
            self._apply_fix(settings, decision.reason)
        elif decision.action == "Revert":
            self._revert_fix(decision.revert_reason or "Disabled", decision.reason)
        elif decision.action == "Nothing" and latency is not None and not latency.breached:
            current = cond.get_condition(status.conditions, ConditionType.TEMPORARY_FIX_ACTIVE)
            # Keep the story of the last fix (reverted, expired); replace only "nothing yet".
            if current is None or current.reason in (Reason.NOT_EVALUATED, Reason.FIX_DISABLED):
                self._set(
                    ConditionType.TEMPORARY_FIX_ACTIVE,
                    "False",
                    Reason.FIX_NOT_NEEDED,
                    "The latency SLO is met: no temporary fix is needed.",
                )

    def _latency_reading(self) -> temporary_fix.LatencyReading | None:
        last = self.status.last_evaluation
        latency_trigger = self.spec.triggers.latency
        if last is None or last.time is None or latency_trigger is None or last.model_uri is None:
            return None
        return temporary_fix.LatencyReading(
            time=last.time,
            p95_ms=last.latency.p95_ms if last.latency else None,
            slo_ms=latency_trigger.p95_ms,
            model_uri=last.model_uri,
        )

    def _apply_fix(self, settings: temporary_fix.FixSettings, why: str) -> None:
        deployment, container = self._target()
        current = from_api.resource_values(self._container(deployment, container))
        plan = temporary_fix.plan_fix(settings, current)
        if not plan.raises_anything:
            message = (
                "The SLO is breached but the temporary fix has nothing to raise: "
                + "; ".join(plan.notes)
            )
            if self._set(ConditionType.TEMPORARY_FIX_ACTIVE, "False", NOTHING_TO_RAISE, message):
                self._emit("Warning", NOTHING_TO_RAISE, message)
            return
        expires = temporary_fix.expires_at(settings, self.now)
        intent = replace(
            from_api.intent(self.status, container),
            resources=plan.applied,
            fix_expires_at=_rfc3339(expires),
        )
        self._apply(container, intent)
        self.status.temporary_fix = TemporaryFixStatus(
            active=True,
            deployment=deployment["metadata"]["name"],
            reason=why,
            applied_at=self.now,
            expires_at=expires,
            extra_gpus=settings.extra_gpus or None,
            original=[_container_resources(container, plan.original)],
            applied=[_container_resources(container, plan.applied)],
        )
        message = (
            f"{why} Raised {plan.summary()} on Deployment {deployment['metadata']['name']} "
            f"until {_rfc3339(expires)} at the latest."
        )
        self._set(ConditionType.TEMPORARY_FIX_ACTIVE, "True", Reason.FIX_APPLIED, message)
        self._emit("Warning", "TemporaryFixApplied", message)

    def _revert_fix(self, revert_reason: temporary_fix.RevertReason, why: str) -> None:
        fix = self.status.temporary_fix
        if fix is None:
            return
        deployment, container = self._target()
        original = _values_of(fix.original, container)
        applied = _values_of(fix.applied, container)
        intent = replace(
            from_api.intent(self.status, container),
            resources=temporary_fix.revert_values(original, applied),
            fix_expires_at=None,
        )
        self._apply(container, intent)
        self._release(deployment["metadata"]["name"], ownership.resource_paths(container, applied))
        restored = from_api.resource_values(self._container(self._read_deployment(), container))
        exact = temporary_fix.restored_after_revert(restored, original, applied)
        self.status.temporary_fix = fix.model_copy(update={"active": False, "reason": why})
        reason = {"Expired": Reason.FIX_EXPIRED, "SLORestored": Reason.FIX_REVERTED}.get(
            revert_reason, Reason.FIX_DISABLED
        )
        summary = ", ".join(
            f"{name} {kind} {before.get(name, 'unset')}"
            for kind, names_, before in (
                ("request", applied.requests, original.requests),
                ("limit", applied.limits, original.limits),
            )
            for name in sorted(names_)
        )
        message = f"{why} Restored {summary} on Deployment {deployment['metadata']['name']}."
        if not exact:
            message += " Warning: the resources read back differ from the recorded originals."
        self._set(ConditionType.TEMPORARY_FIX_ACTIVE, "False", reason, message)
        self._emit("Normal" if exact else "Warning", "TemporaryFixReverted", message)

    def release(self) -> None:
        """The resource is going away: revert an active fix, then hand the target back."""
        if self.spec.target is None:
            return
        try:
            fix = from_api.active_fix(self.status)
            if fix is not None:
                self._revert_fix("Disabled", "The ModelOptimization is being deleted.")
            deployment = self.ctx.target_api.get_deployment(
                self.namespace, self.spec.target.deployment
            )
            if deployment is None:
                return
            self._guarded_patch(
                self.spec.target.deployment,
                lambda body: ownership.detach_patch(
                    body["metadata"].get("managedFields") or [],
                    body["metadata"]["resourceVersion"],
                    body["metadata"].get("annotations") or {},
                ),
            )
        except (TargetUnavailableError, ApiError) as error:
            _log.warning(
                "%s/%s: could not hand the target back: %s", self.namespace, self.name, error
            )

    # ---- target I/O ---------------------------------------------------------------------

    def _read_deployment(self) -> Json:
        target = self.spec.target
        assert target is not None
        deployment = self.ctx.target_api.get_deployment(self.namespace, target.deployment)
        if deployment is None:
            raise TargetUnavailableError(
                Reason.TARGET_NOT_FOUND,
                f"Deployment {target.deployment} (spec.target.deployment) not found in "
                f"namespace {self.namespace}",
            )
        return deployment

    def _container(self, deployment: Json, name: str) -> Json:
        for container in deployment["spec"]["template"]["spec"].get("containers") or []:
            if container.get("name") == name:
                return dict(container)
        raise TargetUnavailableError(
            Reason.CONTAINER_NOT_FOUND,
            f"Deployment {deployment['metadata']['name']} has no container {name}",
        )

    def _target(self) -> tuple[Json, str]:
        deployment = self._read_deployment()
        container = from_api.target_container(self.spec, deployment)
        if container is None:
            wanted = self.spec.target.container if self.spec.target else None
            raise TargetUnavailableError(
                Reason.CONTAINER_NOT_FOUND,
                f"Deployment {deployment['metadata']['name']} has no container "
                f"{wanted or '(none)'} (spec.target.container)",
            )
        return deployment, str(container["name"])

    def _apply(self, container: str, intent: DeploymentIntent) -> None:
        target = from_api.target_ref(self.namespace, self.spec, container)
        try:
            self.ctx.target_api.apply_deployment(build_apply(target, intent))
        except k8s.NotFoundError as error:
            raise TargetUnavailableError(Reason.TARGET_NOT_FOUND, str(error)) from error
        except ApiError as error:
            if error.status in (400, 403, 422):
                raise TargetUnavailableError(
                    TARGET_WRITE_FAILED,
                    f"Deployment {target.deployment} refused our apply: {error}",
                ) from error
            raise

    def _release(self, deployment: str, paths: list[ownership.FieldPath]) -> None:
        self._guarded_patch(
            deployment,
            lambda body: ownership.release_patch(
                body["metadata"].get("managedFields") or [],
                body["metadata"]["resourceVersion"],
                paths,
            ),
        )

    def _guarded_patch(self, deployment: str, build: Callable[[Json], list[Json] | None]) -> None:
        """A JSON patch guarded by the resourceVersion, rebuilt from a fresh read when the
        Deployment changed in between (its controller writes status all the time)."""
        for _ in range(GUARDED_PATCH_ATTEMPTS):
            body = self.ctx.target_api.get_deployment(self.namespace, deployment)
            if body is None:
                return
            patch = build(body)
            if patch is None:
                return
            try:
                self.ctx.target_api.json_patch_deployment(self.namespace, deployment, patch)
                return
            except ApiError as error:
                if not is_stale_write(error):
                    raise
        raise ApiError(409, f"Deployment {deployment} kept changing; will try again")

    # ---- metrics ------------------------------------------------------------------------

    def publish_metrics(self) -> None:
        """The per-resource settings the metrics show beside the measurements (idempotent)."""
        latency = self.spec.triggers.latency
        metrics = self.ctx.metrics
        metrics.set_slo(self.namespace, self.name, float(latency.p95_ms) if latency else None)
        metrics.set_evaluation_interval(
            self.namespace,
            self.name,
            None if self.spec.suspend else self.spec.monitoring.interval_delta.total_seconds(),
        )
        fix = self.status.temporary_fix
        active = fix is not None and fix.active
        metrics.set_temporary_fix(
            self.namespace,
            self.name,
            active,
            expires_at=fix.expires_at.timestamp() if active and fix and fix.expires_at else None,
        )


# ---- module helpers ---------------------------------------------------------------------


def _task_of(job: Json) -> contract.Task:
    annotations = job["metadata"].get("annotations") or {}
    return contract.Task.model_validate_json(annotations[names.TASK_ANNOTATION])


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _container_resources(container: str, values: ResourceValues) -> ContainerResources:
    return ContainerResources(
        container=container, requests=dict(values.requests), limits=dict(values.limits)
    )


def _values_of(entries: list[ContainerResources], container: str) -> ResourceValues:
    for entry in entries:
        if entry.container == container:
            return ResourceValues(requests=entry.requests, limits=entry.limits)
    return ResourceValues()


def _summary(evaluation: Evaluation) -> str:
    parts: list[str] = []
    if evaluation.drift_score is not None:
        parts.append(
            f"drift {evaluation.drift_score:.4g}"
            + (" (over the threshold)" if evaluation.drift_detected else "")
        )
    if evaluation.latency is not None and evaluation.latency.p95_ms is not None:
        parts.append(f"p95 {evaluation.latency.p95_ms:.3f} ms")
    if evaluation.accuracy_percent is not None:
        parts.append(f"accuracy {evaluation.accuracy_percent:.2f}%")
    if evaluation.message:
        parts.append(evaluation.message)
    return ", ".join(parts) or "no measurements"
