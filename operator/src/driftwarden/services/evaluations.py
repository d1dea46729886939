"""Evaluations: the evaluate Job every spec.monitoring.interval, and what it measured.

An evaluation measures the model in use (the promoted one, else spec.model) on the holdout,
the drift of the current data against the reference, and latency - from its own benchmark
or, with spec.monitoring.prometheus, the serving latency from Prometheus. Its result goes
to status.lastEvaluation, the DriftDetected and LatencyWithinSLO conditions, the drift
streak (status.consecutiveDriftWindows) and the metrics. One at a time, none while
suspended (policy.schedule); the Job is named after status.evaluationCount + 1, so a Job
created just before a crash is adopted (409), never duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Final

from driftwarden import promql
from driftwarden.api import conditions as cond
from driftwarden.api.conditions import ConditionType, Reason
from driftwarden.api.status import (
    ActiveEvaluation,
    Evaluation,
    LatencySummary,
    ModelOptimizationStatus,
)
from driftwarden.builders import names
from driftwarden.builders.job import build_job, build_task_configmap
from driftwarden.builders.task import build_task, job_settings, spec_claims, storage_secret
from driftwarden.policy import from_api, pacing
from driftwarden.policy.gates import latency_key
from driftwarden.policy.schedule import evaluation_due
from driftwarden.services import jobs as job_state
from driftwarden.services.loop_context import Json, LoopStep, parse_time, rfc3339
from optimizer_job import contract

EVALUATE: Final = "evaluate"
# lastEvaluation.message of an evaluation without numbers.
BAD_INPUT_PREFIX: Final = "The evaluation refused its input: "
FAILED_PREFIX: Final = "The evaluation failed: "


@dataclass(frozen=True)
class Recorded:
    """An evaluation just written to status.lastEvaluation, and the one it replaced."""

    previous: Evaluation | None
    evaluation: Evaluation


def bad_input(status: ModelOptimizationStatus) -> tuple[str, str] | None:
    """Ready=False (BadInput, like a run that refused its input) while the latest evaluation
    refused its input."""
    last = status.last_evaluation
    if last is not None and last.message and last.message.startswith(BAD_INPUT_PREFIX):
        return Reason.BAD_INPUT, last.message
    return None


class Evaluations(LoopStep):
    def follow(self) -> Recorded | None:
        """Record the active evaluation once its Job has finished; LatencyWithinSLO follows
        the current SLO also between evaluations (the user may have just changed it)."""
        last = self.status.last_evaluation
        if last is not None and last.latency is not None:
            self._set_latency_condition(last)
        active = self.status.active_evaluation
        if active is None:
            return None
        job = self.ctx.kube.get_job(self.namespace, active.job_name)
        if job is None or not self._owns(job, active.id):
            self.status.active_evaluation = None
            self._emit(
                "Warning",
                "EvaluationLost",
                f"Evaluation Job {active.job_name} disappeared before its result was read; "
                "the next evaluation starts on schedule.",
            )
            return None
        if not job_state.is_finished(job):
            self._ensure_started(job)
            self._check_secret(job)
            return None
        meta = job["metadata"]
        pods = self.ctx.kube.list_job_pods(self.namespace, meta["name"], meta["uid"])
        outcome = job_state.outcome(job, pods)
        self.status.active_evaluation = None
        started = parse_time(outcome.started_at) or active.started_at or self.now
        model_uri = _task_of(job).model_uri
        result = outcome.result
        previous = self.status.last_evaluation
        if outcome.phase == "Succeeded" and result is not None and result.ok:
            self._record_evaluation(active, started, model_uri, result, _report_uri(job, result))
        else:
            self._record_failed_evaluation(active, started, model_uri, outcome)
        assert self.status.last_evaluation is not None
        return Recorded(previous=previous, evaluation=self.status.last_evaluation)

    def _record_evaluation(
        self,
        active: ActiveEvaluation,
        started: datetime,
        model_uri: str,
        result: contract.CompactResult,
        report_uri: str | None = None,
    ) -> None:
        spec, status = self.spec, self.status
        metrics = result.baseline or contract.ModelMetrics()
        latency, latency_error = self._latency(metrics)
        accuracy = None if metrics.accuracy is None else round(metrics.accuracy * 100, 4)
        drift = spec.triggers.drift
        insufficient = result.drift_insufficient
        drifting = _drifting(
            result, drift.metric if drift else None, drift.threshold if drift else None
        )
        evaluation = Evaluation(
            id=active.id,
            time=started,
            job_name=active.job_name,
            model_uri=model_uri,
            drift_metric=(drift.metric if drift else None) or result.drift_metric,
            # Too few rows: no score to show (it would be noise: PSI of one row is 8.3).
            drift_score=result.drift_score if insufficient is None else None,
            drift_detected=drifting,
            drifted_features=result.drifted_features[:64],
            drift_p_value=result.drift_p_value,
            drift_top_features=[name[:128] for name in result.drift_top_features[:5]],
            latency=latency,
            accuracy_percent=accuracy,
            message=(
                f"Serving latency: {latency_error.message}" if latency_error is not None else None
            ),
            report_uri=report_uri,
        )
        status.consecutive_latency_breaches = from_api.next_latency_breaches(
            status, model_uri, self._breached(evaluation)
        )
        status.last_evaluation = evaluation
        if insufficient is None:
            status.consecutive_drift_windows = (
                (status.consecutive_drift_windows or 0) + 1 if drifting else 0
            )
            self._set_drift_condition(evaluation)
        else:  # too few rows says nothing either way: the streak is neither advanced nor broken
            self._set(
                ConditionType.DRIFT_DETECTED,
                "Unknown",
                Reason.INSUFFICIENT_DATA,
                f"Too few rows to judge drift: {insufficient}.",
            )
        if latency_error is not None and self.spec.triggers.latency is not None:
            self._set(
                ConditionType.LATENCY_WITHIN_SLO,
                "Unknown",
                latency_error.reason,
                f"The serving latency could not be read from Prometheus: {latency_error.message}",
            )
        else:
            self._set_latency_condition(evaluation)
        measured = result.drift_score is not None and insufficient is None
        self.ctx.metrics.record_evaluation(
            self.namespace,
            self.name,
            drift_score=result.drift_score if measured else None,
            drifted_features=len(result.drifted_features) if measured else None,
            drift_detected=drifting,
            multivariate_auroc=result.drift_score
            if measured and result.drift_metric == "multivariate"
            else None,
            drift_insufficient_data=None
            if result.drift_score is None
            else insufficient is not None,
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
                serving = promql.serving_latency(
                    prometheus.url, prometheus.query, tenant=self.namespace
                )
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

    def _breached(self, evaluation: Evaluation) -> bool | None:
        """Whether the evaluation's p95 is over the SLO; None without an SLO or a p95."""
        latency_trigger = self.spec.triggers.latency
        p95 = evaluation.latency.p95_ms if evaluation.latency else None
        if latency_trigger is None or p95 is None:
            return None
        return Decimal(repr(p95)) > latency_trigger.p95_ms

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
        metric = evaluation.drift_metric or contract.DEFAULT_DRIFT_METRIC
        alpha = drift.alpha if drift else "0.05"
        if metric in contract.TEST_DRIFT_METRICS:
            over, within = _test_verdicts(metric, score, alpha, evaluation)
        else:
            over = f"Drift score {score:.4g} is over the threshold {threshold}"
            within = f"Drift score {score:.4g} is within the threshold {threshold}."
        if drifting:
            message = f"{over} ({windows} evaluation(s) in a row); drifted features: {features}."
            changed = self._set(
                ConditionType.DRIFT_DETECTED, "True", Reason.DRIFT_OVER_THRESHOLD, message
            )
            if changed and windows == 1:
                self._emit("Warning", "DriftDetected", message)
        else:
            self._set(ConditionType.DRIFT_DETECTED, "False", Reason.NO_DRIFT, within)

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
            required = latency_trigger.consecutive_breaches
            if required > 1:
                breaches = from_api.latency_breaches(self.status)
                message += f" {breaches} evaluation(s) in a row over it; {required} start a run."
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

    def start(self) -> None:
        """Start the next evaluate Job when it is due (never two at once, none suspended)."""
        spec, status = self.spec, self.status
        last = status.last_evaluation.time if status.last_evaluation else None
        if self._failed_before_spec_change():
            last = None  # the user changed the spec, perhaps fixed it: look again now
        due = evaluation_due(
            spec.monitoring.interval_delta,
            last,
            evaluation_active=status.active_evaluation is not None,
            suspended=spec.suspend,
            now=self.now,
            key=self.ctx.owner.uid,  # spread over the interval (policy.pacing)
        )
        if not due.due:
            self._check_at(due.next_check)
            return
        model_uri = from_api.model_in_use(spec, status)
        missing = self._missing_claims(spec_claims(spec, model_uri))
        if missing:  # the Pod could not start; the user must create the claim
            self._problem(
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
        settings = job_settings(spec, self.ctx.config)
        settings = replace(
            settings,
            ttl_seconds_after_finished=pacing.evaluation_job_ttl(
                spec.monitoring.interval_delta, settings.ttl_seconds_after_finished
            ),
        )
        body = build_job(self.ctx.owner, task, settings)
        job, created = self.ctx.kube.create_job(self.namespace, body)
        if not created and not self._owns(job, run_id):
            self._problem(
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

    def _check_secret(self, job: Json) -> None:
        """Ready=False MissingSecret while the evaluation's Pod cannot start because the
        Secret of spec.storage.secretRef does not exist (read from the Pod's status: the
        operator has no right on Secrets); it starts by itself once the Secret exists."""
        secret = storage_secret(self.spec)
        if secret is None:
            return
        meta = job["metadata"]
        pods = self.ctx.kube.list_job_pods(self.namespace, meta["name"], meta["uid"])
        if job_state.missing_secret(pods, secret) is not None:
            self._problem(
                Reason.MISSING_SECRET,
                f"Secret {secret} (spec.storage.secretRef) not found in namespace "
                f"{self.namespace}: evaluations wait until it exists (Job {meta['name']})",
            )

    def _failed_before_spec_change(self) -> bool:
        """The last evaluation measured nothing (it refused its input or failed) and the
        spec changed since the last pass: waiting a whole interval to find out whether the
        change fixed it would keep Ready=False BadInput on a spec that may be fine."""
        last, seen = self.status.last_evaluation, self.status.observed_generation
        failed = last is not None and (last.message or "").startswith(
            (BAD_INPUT_PREFIX, FAILED_PREFIX)
        )
        return failed and seen is not None and seen < self.ctx.generation

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
                "metadata": {"annotations": {names.RESUMED_ANNOTATION: rfc3339(self.now)}},
                "spec": {"suspend": False},
            },
        )


def _drifting(
    result: contract.CompactResult, metric: str | None, threshold: Decimal | str | None
) -> bool | None:
    """The verdict: a test metric (ks, multivariate) is the Job's own level-alpha test;
    a score metric is the score over the spec's current threshold. Too few rows: None."""
    if result.drift_insufficient is not None:
        return None
    metric = metric or result.drift_metric or contract.DEFAULT_DRIFT_METRIC
    if metric in contract.TEST_DRIFT_METRICS or threshold is None:
        return result.drift_detected
    if result.drift_score is None:
        return result.drift_detected
    return Decimal(repr(result.drift_score)) > Decimal(threshold)


def _test_verdicts(
    metric: str, score: float, alpha: str, evaluation: Evaluation
) -> tuple[str, str]:
    """(drifting, not drifting) condition messages of a test metric."""
    if metric == "multivariate":
        p_value = evaluation.drift_p_value
        p = f"p = {p_value:.3g}" if p_value is not None else "p unknown"
        top = ", ".join(evaluation.drift_top_features) or "none named"
        return (
            f"A classifier tells current rows from reference rows: AUROC {score:.3f}, {p} "
            f"<= alpha {alpha}; top contributing features: {top}",
            f"A classifier does not tell current rows from reference rows better than "
            f"chance at alpha {alpha}: AUROC {score:.3f}, {p}.",
        )
    return (
        f"A feature's KS test rejects at alpha {alpha} after correction (mean KS {score:.4g})",
        f"No feature's KS test rejects at alpha {alpha} after correction (mean KS {score:.4g}).",
    )


def _report_uri(job: Json, result: contract.CompactResult) -> str | None:
    """The evaluation's report, when the Job reported the one under its own evaluation
    directory (from the task the operator wrote into the Job, not from the current spec)."""
    try:
        task = _task_of(job)
    except (ValueError, KeyError):
        return None
    if not task.artifacts_uri:
        return None
    directory = contract.evaluation_artifact_uri(task.artifacts_uri, task.optimization, task.run_id)
    return contract.own_report_uri(result.report_uri, directory)


def _task_of(job: Json) -> contract.Task:
    annotations = job["metadata"].get("annotations") or {}
    return contract.Task.model_validate_json(annotations[names.TASK_ANNOTATION])


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
