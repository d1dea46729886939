"""One reconcile pass of a ModelOptimization: follow its Jobs, start the run it asks for,
and write what happened into status, events and metrics.

The pass is level-based and idempotent; every entry point (create, update, resume, the
resync timer, a Job event) runs the same pass:

1. Read the resource fresh, and list the optimization Jobs it owns (by label, checked
   against the owner's uid). The Jobs are the truth about runs: one whose run id is not
   in status.runs yet is followed, whatever status.activeRun says — so a Job created
   just before a crash is adopted, never duplicated.
2. A finished Job's result (the termination message of its Pod) is recorded in
   status.runs before anything else; a recorded run is never looked at again, so its Job
   may be removed by its TTL - also once it fell out of the kept history: its number is at
   most status.runCount (policy.run_history).
3. With no run in progress, the run the spec asks for (services.planning) starts: checks
   what only the operator can check (PVCs exist), creates the Job suspended (409: adopt
   it if it is ours), its task ConfigMap, resumes it.
4. Status is written with a merge patch conditional on the resourceVersion that was read
   (Conflict: the whole pass runs again on fresh data), then events are posted and
   metrics recorded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from driftwarden.api import conditions as cond
from driftwarden.api.conditions import ConditionType, Reason
from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.api.status import (
    ActiveRun,
    Candidate,
    ModelMetrics,
    ModelOptimizationStatus,
    Outcome,
    Phase,
    RunBudget,
    RunRecord,
    SpeedRatio,
    Trigger,
)
from driftwarden.api.types import now_utc
from driftwarden.builders import names
from driftwarden.builders.job import Owner, build_job, build_task_configmap
from driftwarden.builders.task import build_task, job_settings, spec_claims, storage_secret
from driftwarden.crashpoints import crash_point
from driftwarden.k8s import ApiError, ConflictError
from driftwarden.policy import from_api, pacing, run_history
from driftwarden.policy.gates import speed_gate
from driftwarden.runtime import Runtime
from driftwarden.services import admission_policy, gangs
from driftwarden.services import jobs as job_state
from driftwarden.services.loop import Hold, Loop, LoopContext
from driftwarden.services.planning import RunPlan, model_in_use, wanted_run
from driftwarden.services.target import TargetApi
from driftwarden.services.target_writer import TargetUnavailableError
from optimizer_job import contract

Json = dict[str, Any]
EventType = Literal["Normal", "Warning"]

MAX_ATTEMPTS = 5
BUDGET_WINDOW = timedelta(days=1)
INVALID_SPEC = "InvalidSpec"
JOB_NAME_CONFLICT = "JobNameConflict"
JOB_DELETED = "JobDeleted"
RELEASE_FAILED = "ReleaseFailed"
# Ready=False reasons that only a change the operator sees as an event can lift (the spec,
# the admin's policy at a restart, a Job): no poll while they hold.
_WOKEN_BY_EVENTS = frozenset({INVALID_SPEC, Reason.BAD_INPUT, "PolicyViolation"})

_log = logging.getLogger(__name__)


class ReconcileConflictError(Exception):
    """Status kept changing under the operator; the caller retries later."""


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class Blocked:
    """Why the wanted run does not start now."""

    reason: str
    message: str
    input_problem: bool  # Ready=False: the user must fix something


class ReleaseFailedError(Exception):
    """The revert or the hand-back of a resource being deleted failed; the finalizer stays
    and the caller tries again later."""


def release(rt: Runtime, namespace: str, name: str, retry_in: float) -> None:
    """The resource is being deleted: revert a temporary fix where it was applied and hand
    the target back, under the same per-resource lock as a pass, on a fresh read.

    Raises ReleaseFailedError (after a Warning event saying so and when it is tried again,
    ``retry_in`` seconds) when an API call failed: the finalizer must stay until this
    succeeded or the Deployment is gone."""
    if rt.target is None:
        return
    with rt.locks.hold(namespace, name):
        body = rt.kube.get_optimization(namespace, name)
        if body is None:
            return
        reconcile_pass = ReconcilePass(rt, body)
        reconcile_pass._parse_spec()
        if reconcile_pass.spec is None:
            return
        loop = Loop(reconcile_pass._loop_context(reconcile_pass.spec, rt.target))
        try:
            loop.release()
        except (ApiError, TargetUnavailableError) as error:
            message = (
                f"Could not revert the temporary fix and hand the target back: {error}. "
                f"Trying again in {retry_in:.0f} s; the resource stays (finalizer) until this "
                "succeeds or the Deployment is gone."
            )
            reconcile_pass._event("Warning", RELEASE_FAILED, message)
            raise ReleaseFailedError(message) from error
        finally:
            reconcile_pass.commit_quietly()


def reconcile(rt: Runtime, namespace: str, name: str) -> datetime | None:
    """Run passes until one writes its status without a conflict; when the next pass is
    due without any event (None: the resource is gone or going)."""
    started = time.perf_counter()
    try:
        with rt.locks.hold(namespace, name):
            # Jobs an earlier attempt created: a pass whose status write lost a conflict
            # (e.g. to kopf's own annotation patch after a create) is run again, and finds
            # the Job it made - which it started, not adopted.
            created: set[str] = set()
            for attempt in range(1, MAX_ATTEMPTS + 1):
                body = rt.kube.get_optimization(namespace, name)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    return None
                reconcile_pass = ReconcilePass(rt, body, created_jobs=created)
                reconcile_pass.run()
                try:
                    reconcile_pass.commit()
                except ConflictError:
                    _log.debug("%s/%s changed during pass %d; again", namespace, name, attempt)
                    continue
                return reconcile_pass.next_pass()
            raise ReconcileConflictError(f"{namespace}/{name} kept changing; will try again")
    finally:
        rt.metrics.observe_reconcile(time.perf_counter() - started)


def _plan_of(job: Json) -> RunPlan | None:
    annotations = job["metadata"].get("annotations") or {}
    return RunPlan.from_annotation(annotations.get(names.RUN_PLAN_ANNOTATION))


def _run_id(job: Json) -> str:
    return str((job["metadata"].get("labels") or {}).get(names.RUN_LABEL, ""))


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _metrics(metrics: contract.ModelMetrics | None) -> ModelMetrics | None:
    if metrics is None:
        return None
    return ModelMetrics(
        accuracy_percent=None if metrics.accuracy is None else round(metrics.accuracy * 100, 4),
        latency_ms=dict(list(metrics.latency_ms.items())[:32]),
        size_bytes=metrics.size_bytes,
        parameters=metrics.parameters,
        macs=metrics.macs,
        device=metrics.device,
    )


def _speed_decision(spec: ModelOptimizationSpec, trigger: Trigger) -> contract.SpeedDecision | None:
    """The speed gate a run started by ``trigger`` faces, told to its Job."""
    gate = speed_gate(from_api.gate_settings(spec), trigger.value)
    return gate.decision() if gate is not None else None


def _speed(result: contract.CompactResult | None) -> list[SpeedRatio]:
    if result is None:
        return []
    return [
        SpeedRatio(batch_size=s.batch_size, ratio=s.ratio, low=s.low, high=s.high, rounds=s.rounds)
        for s in result.speed[:8]
    ]


def _describe(result: contract.CompactResult | None) -> str:
    """A one-line summary of a successful result for events and messages."""
    if result is None:
        return ""
    parts: list[str] = []
    base, cand = result.baseline, result.candidate
    if base and cand and base.accuracy is not None and cand.accuracy is not None:
        parts.append(f"accuracy {base.accuracy * 100:.2f}% -> {cand.accuracy * 100:.2f}%")
    if base and cand:
        for key in sorted(set(base.latency_ms) & set(cand.latency_ms)):
            if key.endswith("_p95"):
                parts.append(f"{key} {base.latency_ms[key]:.3g} -> {cand.latency_ms[key]:.3g} ms")
                break
        if base.size_bytes and cand.size_bytes:
            parts.append(f"size {base.size_bytes} -> {cand.size_bytes} bytes")
    if result.artifact_uri:
        parts.append(f"candidate {result.artifact_uri}")
    return "; ".join(parts)


class ReconcilePass:
    def __init__(self, rt: Runtime, body: Json, *, created_jobs: set[str] | None = None) -> None:
        self.rt = rt
        self.kube = rt.kube
        self.body = body
        meta = body["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.resource_version: str = meta["resourceVersion"]
        self.generation = int(meta.get("generation") or 0)
        self.owner = Owner(self.namespace, self.name, self.uid)
        self.original = ModelOptimizationStatus.model_validate(body.get("status") or {})
        self.status = self.original.model_copy(deep=True)
        self.now = now_utc()
        self.events: list[Event] = []
        self.finished: list[tuple[Outcome, float]] = []
        self.spec: ModelOptimizationSpec | None = None
        self.spec_error = ""
        self.refused: tuple[str, str] | None = None  # (reason, message): the admin's policy
        self.active_job: Json | None = None
        self.blocked: Blocked | None = None
        self.bad_input: tuple[str, str] | None = None  # (reason, message) of a run just recorded
        self.loop: Loop | None = None  # the closed loop (services.loop), once the spec parses
        self.checks: list[datetime | None] = []  # when to look again (policy.pacing)
        self.created_jobs = created_jobs if created_jobs is not None else set()
        self.missing_claims: set[str] = set()

    # -- the pass ----------------------------------------------------------------------

    def run(self) -> None:
        self._parse_spec()
        if self.spec is not None:  # refused by the admin's policy: no Job, no target write
            self.refused = admission_policy.refusal(self.spec, self.rt.config)
            self.spec = None if self.refused else self.spec
        if self.spec is not None and self.rt.target is not None:
            self.loop = Loop(self._loop_context(self.spec, self.rt.target))
            self.loop.adopt_fix()
            self.loop.follow_evaluation()
        self._follow_jobs()
        if self.loop is not None:
            self.loop.maintain_target()
        if self.active_job is None and self.spec is not None:
            self._start_wanted_run(self.spec)
        if self.loop is not None:
            self.loop.start_evaluation()
            self.loop.publish_metrics()
        self._set_conditions()
        self.status.observed_generation = self.generation
        self.status.phase = self._phase()
        self.status.refresh_display()

    def commit(self) -> None:
        self._write_status()
        if self.missing_claims:  # the claim's creation wakes the resource (services.watches)
            self.rt.claims.wait_for(self.namespace, self.name, self.missing_claims)
        self._post_events()
        for outcome, seconds in self.finished:
            self.rt.metrics.record_run(self.namespace, self.name, outcome.value, max(seconds, 0.0))

    def commit_quietly(self) -> None:
        """commit() for a resource being deleted: the status write is a courtesy there (a
        conflict or an API error is logged, never raised), the events are posted anyway."""
        try:
            self._write_status()
        except ApiError as error:
            _log.info("%s/%s: status not written on delete: %s", self.namespace, self.name, error)
        self._post_events()

    def next_pass(self) -> datetime:
        """When to look again without an event (driftwarden.policy.pacing)."""
        checks = list(self.checks)
        missing = set(self.missing_claims)
        if self.loop is not None:
            checks += self.loop.ctx.checks
            missing |= self.loop.ctx.missing_claims
        ready = cond.get_condition(self.status.conditions, ConditionType.READY)
        waiting_since = None
        if (
            ready is not None
            and ready.status == "False"
            and ready.reason not in _WOKEN_BY_EVENTS
            and not (ready.reason == Reason.PVC_NOT_FOUND and missing)
        ):
            waiting_since = ready.last_transition_time or self.now
        return pacing.next_pass(
            self.now,
            checks,
            resync=timedelta(seconds=self.rt.config.resync_seconds),
            key=self.uid,
            waiting_since=waiting_since,
            active=self.status.active_run is not None,
        )

    def _write_status(self) -> None:
        if self.status.to_json_dict() != self.original.to_json_dict():
            self.kube.patch_optimization_status(
                self.namespace, self.name, self.status.to_merge_patch(), self.resource_version
            )

    def _post_events(self) -> None:
        for event in self.events:
            try:
                self.kube.post_event(
                    self.body, type_=event.type, reason=event.reason, message=event.message
                )
            except Exception:  # an event is a courtesy: never fail the pass for one
                _log.warning(
                    "could not post event %s for %s/%s",
                    event.reason,
                    self.namespace,
                    self.name,
                    exc_info=True,
                )

    def _event(self, type_: EventType, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))

    def _loop_context(self, spec: ModelOptimizationSpec, target: TargetApi) -> LoopContext:
        return LoopContext(
            kube=self.kube,
            target_api=target,
            metrics=self.rt.metrics,
            config=self.rt.config,
            owner=self.owner,
            created_at=_parse_time(self.body["metadata"].get("creationTimestamp")) or self.now,
            generation=self.generation,
            spec=spec,
            status=self.status,
            now=self.now,
            emit=self._event,
            claims=self.rt.claims,
        )

    def _parse_spec(self) -> None:
        try:
            self.spec = ModelOptimizationSpec.model_validate(self.body.get("spec") or {})
        except ValidationError as error:
            # The CRD refuses what the models refuse; this means an operator/CRD version
            # skew, which no retry fixes: say so, keep following running Jobs.
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            self.spec_error = f"spec.{where}: {first['msg']}"

    # -- following Jobs ----------------------------------------------------------------

    def _owned_jobs(self) -> list[Json]:
        watched = self.rt.jobs.owned(self.namespace, self.name)
        if watched is None:
            selector = (
                f"{names.OPTIMIZATION_LABEL}={names.label_value(self.name)},"
                f"{names.KIND_LABEL}=optimize"
            )
            candidates = self.kube.list_jobs(self.namespace, selector)
        else:
            candidates = [
                job
                for job in watched
                if (job["metadata"].get("labels") or {}).get(names.KIND_LABEL) == "optimize"
            ]
        owned = [
            job
            for job in candidates
            if any(ref.get("uid") == self.uid for ref in job["metadata"].get("ownerReferences", []))
        ]

        def order(job: Json) -> tuple[int, str]:
            plan = _plan_of(job)
            return (plan.sequence if plan else 0, job["metadata"].get("creationTimestamp", ""))

        return sorted(owned, key=order)

    def _follow_jobs(self) -> None:
        recorded = {run.id for run in self.status.runs}
        present: set[str] = set()
        active_id = self.status.active_run.id if self.status.active_run else None
        for job in self._owned_jobs():
            run_id = _run_id(job)
            present.add(run_id)
            plan = _plan_of(job)
            disposition = run_history.job_disposition(
                run_id,
                plan.sequence if plan is not None else None,
                finished=job_state.is_finished(job),
                recorded_ids=recorded,
                active_id=active_id,
                run_count=self.status.run_count or 0,
            )
            if disposition == "Recorded":
                continue  # done (maybe long ago, out of status.runs); the Job's TTL removes it
            if disposition == "Record":
                meta = job["metadata"]
                pods = self.kube.list_job_pods(self.namespace, meta["name"], meta["uid"])
                outcome = admission_policy.contain_artifact(
                    job, job_state.outcome(job, pods), self.name, run_id
                )
                crash_point("run-finished-unrecorded")
                self._record(job, outcome)
            elif self.active_job is None:
                try:
                    self.active_job = self._ensure_started(job)
                    self.active_job = gangs.enforce_gang_timeout(
                        self.kube, self.namespace, self.active_job, self.now
                    )
                except (NameConflictError, gangs.ServiceConflictError) as error:
                    self.blocked = Blocked(JOB_NAME_CONFLICT, str(error), input_problem=True)
                    self.active_job = job
                started_here = self.active_job["metadata"]["name"] in self.created_jobs
                self._set_active(self.active_job, created=started_here)
                self._check_secret(self.active_job)
            else:  # cannot happen while runs start one at a time; say so, do not hide it
                _log.warning(
                    "%s/%s: more than one unfinished run: %s and %s",
                    self.namespace,
                    self.name,
                    _run_id(self.active_job),
                    run_id,
                )
        active = self.status.active_run
        if active is not None and self.active_job is None:
            if active.id not in present and active.id not in recorded:
                if self._job_exists(active.job_name):
                    return  # the watch has not shown it yet: the next pass follows it
                self._record_deleted(active)
            self.status.active_run = None

    def _job_exists(self, job_name: str | None) -> bool:
        """Whether a Job that status names but the Jobs read in this pass do not show
        exists after all (the watch lags the API): asked by name, once."""
        if not job_name or self.rt.jobs.owned(self.namespace, self.name) is None:
            return False  # the Jobs were LISTed in this pass: that is the API's answer
        job = self.kube.get_job(self.namespace, job_name)
        return job is not None and any(
            ref.get("uid") == self.uid for ref in job["metadata"].get("ownerReferences", [])
        )

    def _check_secret(self, job: Json) -> None:
        """Ready=False MissingSecret while the run's Pod cannot start because the Secret of
        spec.storage.secretRef does not exist (the kubelet says so in the Pod's status; the
        operator has no right on Secrets). The run starts by itself once it exists."""
        secret = storage_secret(self.spec) if self.spec is not None else None
        if secret is None or job_state.is_finished(job):
            return
        meta = job["metadata"]
        pods = self.kube.list_job_pods(self.namespace, meta["name"], meta["uid"])
        if job_state.missing_secret(pods, secret) is not None:
            self.blocked = Blocked(
                Reason.MISSING_SECRET,
                f"Secret {secret} (spec.storage.secretRef) not found in namespace "
                f"{self.namespace}: the run waits until it exists (Job {meta['name']})",
                input_problem=True,
            )

    def _ensure_started(self, job: Json) -> Json:
        """Give a suspended Job of ours its task ConfigMap, then resume it."""
        meta = job["metadata"]
        if not (job.get("spec") or {}).get("suspend"):
            return job
        if names.RESUMED_ANNOTATION in (meta.get("annotations") or {}):
            return job  # suspended by someone after we resumed it: theirs to resume
        configmap, created = self.kube.create_configmap(self.namespace, build_task_configmap(job))
        if not created and not self._ours(configmap, _run_id(job)):
            raise NameConflictError(
                f"ConfigMap {meta['name']} exists and does not belong to run {_run_id(job)}"
            )
        crash_point("configmap-created")
        gangs.ensure_worker_service(self.kube, self.namespace, job)
        resumed = self.kube.patch_job(
            self.namespace,
            meta["name"],
            {
                "metadata": {"annotations": {names.RESUMED_ANNOTATION: _rfc3339(self.now)}},
                "spec": {"suspend": False},
            },
        )
        crash_point("job-resumed")
        return resumed

    def _ours(self, obj: Json, run_id: str) -> bool:
        labels = obj["metadata"].get("labels") or {}
        return (
            labels.get(names.MANAGED_BY_LABEL) == names.MANAGED_BY
            and labels.get(names.RUN_LABEL) == run_id
            and labels.get(names.OPTIMIZATION_LABEL) == names.label_value(self.name)
        )

    def _set_active(self, job: Json, *, created: bool) -> None:
        meta = job["metadata"]
        run_id = _run_id(job)
        plan = _plan_of(job)
        previous = self.status.active_run
        started = _parse_time((job.get("status") or {}).get("startTime")) or _parse_time(
            meta.get("creationTimestamp")
        )
        self.status.active_run = ActiveRun(
            id=run_id,
            trigger=plan.trigger if plan else Trigger.MANUAL,
            reason=plan.reason if plan else None,
            started_at=started or self.now,
            job_name=meta["name"],
            base_model_uri=(plan.base_model_uri or None) if plan else None,
        )
        if previous is not None and previous.id == run_id:
            return
        self._count_start(plan, started or self.now)
        why = f" ({plan.trigger}: {plan.reason})" if plan else ""
        if created:
            self._event("Normal", "RunStarted", f"Started run {run_id}{why} as Job {meta['name']}.")
        else:
            self._event(
                "Normal",
                "RunAdopted",
                f"Following Job {meta['name']} of run {run_id}{why}, created before the "
                "operator restarted.",
            )

    def _count_start(self, plan: RunPlan | None, started: datetime) -> None:
        """What a run's start consumes: its number, a run request, a slot of the budget."""
        if plan is None:
            return
        counted = self.status.run_count or 0
        self.status.last_run_request = run_history.last_run_request(
            self.status.last_run_request, plan.run_request, plan.sequence, counted
        )
        self.status.run_count = max(counted, plan.sequence)
        recent = [
            t
            for t in (self.status.run_budget.start_times if self.status.run_budget else [])
            if self.now - t < BUDGET_WINDOW
        ]
        if started not in recent and self.now - started < BUDGET_WINDOW:
            recent.append(started)
        self.status.run_budget = RunBudget(start_times=sorted(recent)[-100:])

    # -- recording ---------------------------------------------------------------------

    def _record(self, job: Json, outcome: job_state.JobOutcome) -> None:
        meta = job["metadata"]
        run_id = _run_id(job)
        plan = _plan_of(job)
        if self.status.active_run is None or self.status.active_run.id != run_id:
            # Finished before status ever named it (the operator was down): count its
            # start now, so run numbers and the budget stay right.
            self._count_start(plan, _parse_time(outcome.started_at) or self.now)
        result = outcome.result
        succeeded = outcome.phase == "Succeeded" and result is not None and result.ok
        started = _parse_time(outcome.started_at) or _parse_time(meta.get("creationTimestamp"))
        finished = _parse_time(outcome.finished_at) or self.now
        seconds = (
            (finished - started).total_seconds() if started else (result.seconds if result else 0.0)
        )
        message = outcome.message if not succeeded else _describe(result)
        record = RunRecord(
            id=run_id,
            trigger=plan.trigger if plan else Trigger.MANUAL,
            reason=plan.reason if plan else None,
            outcome=Outcome.SUCCEEDED if succeeded else Outcome.FAILED,
            started_at=started,
            finished_at=finished,
            duration_seconds=round(seconds, 3),
            job_names=[meta["name"]],
            base_model_uri=(plan.base_model_uri or None) if plan else None,
            baseline=_metrics(result.baseline if result else None),
            candidate=_metrics(result.candidate if result else None),
            speed=_speed(result),
            artifact_uri=result.artifact_uri if result else None,
            manifest_sha256=result.manifest_sha256 if result else None,
            report_uri=contract.own_report_uri(result.report_uri, result.artifact_uri)
            if result
            else None,
            message=(f"{outcome.reason}: {message}" if not succeeded else message) or None,
        )
        if succeeded and result is not None and self.loop is not None:
            record = self.loop.judge(record, result)  # gates -> Promoted / Rejected / candidate
        self.status.record_run(record)
        if self.status.active_run is not None and self.status.active_run.id == run_id:
            self.status.active_run = None
        self.finished.append((record.outcome, seconds))
        if succeeded and result is not None and result.artifact_uri:
            if self.loop is None:  # with the loop, judge() decides about the candidate
                self.status.candidate = Candidate(
                    run_id=run_id,
                    artifact_uri=result.artifact_uri,
                    manifest_sha256=result.manifest_sha256,
                    created_at=finished,
                )
            self._event(
                "Normal", "RunSucceeded", f"Run {run_id} succeeded in {seconds:.0f} s: {message}."
            )
        else:
            self._event("Warning", "RunFailed", f"Run {run_id} failed: {outcome.reason}: {message}")
            if outcome.reason == "BadInput":
                self.bad_input = (Reason.BAD_INPUT, message)

    def _record_deleted(self, active: ActiveRun) -> None:
        """status names a run whose Job is gone and whose result was never read: deleted
        by hand, or removed by its TTL while the operator was away. Not repeated."""
        message = (
            f"Job {active.job_name} was deleted before its result was read (by hand, or by "
            "its ttlSecondsAfterFinished while the operator was down); the run is not "
            "repeated."
        )
        record = RunRecord(
            id=active.id,
            trigger=active.trigger,
            reason=active.reason,
            outcome=Outcome.CANCELLED,
            started_at=active.started_at,
            finished_at=self.now,
            job_names=[active.job_name] if active.job_name else [],
            base_model_uri=active.base_model_uri,
            message=f"{JOB_DELETED}: {message}",
        )
        self.status.record_run(record)
        self.finished.append((Outcome.CANCELLED, 0.0))
        self._event("Warning", JOB_DELETED, f"Run {active.id}: {message}")

    # -- starting ----------------------------------------------------------------------

    def _start_wanted_run(self, spec: ModelOptimizationSpec) -> None:
        sequence = (self.status.run_count or 0) + 1
        triggered = self.loop.plan_run(sequence) if self.loop is not None else None
        if isinstance(triggered, Hold):
            self.blocked = Blocked(triggered.reason, triggered.message, input_problem=False)
            return
        plan = triggered or wanted_run(spec, self.status, initial_run=self.rt.config.initial_run)
        if plan is None:
            return
        if spec.suspend:
            self.blocked = Blocked(
                Reason.SUSPENDED,
                f"spec.suspend is true: no run starts. Waiting: {plan.reason}",
                input_problem=False,
            )
            return
        missing = [
            claim
            for claim in spec_claims(spec, model_in_use(spec, self.status))
            if not self.rt.claims.exists(self.kube, self.namespace, claim)
        ]
        self.missing_claims.update(missing)
        if missing:
            listed = ", ".join(missing)
            self.blocked = Blocked(
                Reason.PVC_NOT_FOUND,
                f"PersistentVolumeClaim {listed} not found in namespace {self.namespace}: "
                f"the run waits until it exists ({plan.reason})",
                input_problem=True,
            )
            return
        run_id = names.run_id_for(self.uid, plan.sequence)
        task = build_task(
            spec,
            namespace=self.namespace,
            name=self.name,
            run_id=run_id,
            kind="optimize",
            model_uri=plan.base_model_uri,
            speed_decision=_speed_decision(spec, plan.trigger),
        )
        body = build_job(
            self.owner,
            task,
            job_settings(spec, self.rt.config),
            annotations={names.RUN_PLAN_ANNOTATION: plan.to_annotation()},
        )
        job, created = self.kube.create_job(self.namespace, body)
        if created:
            self.created_jobs.add(body["metadata"]["name"])
        if not created:
            owners = {ref.get("uid") for ref in job["metadata"].get("ownerReferences", [])}
            if not self._ours(job, run_id) or self.uid not in owners:
                self.blocked = Blocked(
                    JOB_NAME_CONFLICT,
                    f"Job {body['metadata']['name']} exists and was not created by DriftWarden "
                    "for this resource; delete or rename it",
                    input_problem=True,
                )
                return
        else:
            crash_point("job-created")
        try:
            job = self._ensure_started(job)
        except (NameConflictError, gangs.ServiceConflictError) as error:
            self.blocked = Blocked(JOB_NAME_CONFLICT, str(error), input_problem=True)
            return
        if job_state.is_finished(job):
            return  # adopted an already finished run: the next pass records it
        self.active_job = job
        self._set_active(job, created=created)

    # -- conditions and phase ----------------------------------------------------------

    def _set(self, type_: str, status: cond.ConditionStatus, reason: str, message: str) -> bool:
        return cond.set_condition(
            self.status.conditions, type_, status, reason, message, self.generation, self.now
        )

    def _set_conditions(self) -> None:
        self._set_ready()
        self._set_optimizing()
        for type_ in (
            ConditionType.DRIFT_DETECTED,
            ConditionType.LATENCY_WITHIN_SLO,
            ConditionType.TEMPORARY_FIX_ACTIVE,
        ):
            if cond.get_condition(self.status.conditions, type_) is None:
                self._set(type_, "Unknown", Reason.NOT_EVALUATED, "Not evaluated yet.")

    def _set_ready(self) -> None:
        current = cond.get_condition(self.status.conditions, ConditionType.READY)
        problem: tuple[str, str] | None = None
        if self.refused is not None:
            problem = self.refused
        elif self.spec_error:
            problem = (INVALID_SPEC, f"The operator cannot use this spec: {self.spec_error}")
        elif self.blocked is not None and self.blocked.input_problem:
            problem = (self.blocked.reason, self.blocked.message)
        elif self.bad_input is not None:
            problem = (self.bad_input[0], f"The last run refused its input: {self.bad_input[1]}")
        elif self.loop is not None and self.loop.input_problem is not None:
            problem = self.loop.input_problem
        elif (
            current is not None
            and current.status == "False"
            and current.reason == Reason.BAD_INPUT
            and current.observed_generation == self.generation
            and self._last_run_refused_its_input()
        ):
            return  # the spec did not change since its input was refused: still not ready
        if problem is None:
            self._set(
                ConditionType.READY, "True", Reason.READY, "The spec and its inputs are usable."
            )
            return
        reason, message = problem
        if self._set(ConditionType.READY, "False", reason, message) and (
            current is None or current.reason != reason or current.status != "False"
        ):
            self._event("Warning", reason, message)

    def _last_run_refused_its_input(self) -> bool:
        """Whether Ready=False BadInput is the last run's (it stays until the spec changes),
        not an evaluation's (that one clears with the next successful evaluation)."""
        last = self.status.runs[-1] if self.status.runs else None
        return (
            last is not None
            and last.outcome == Outcome.FAILED
            and (last.message or "").startswith(f"{Reason.BAD_INPUT}:")
        )

    def _set_optimizing(self) -> None:
        active = self.status.active_run
        if active is not None:
            why = f" ({active.trigger}: {active.reason})" if active.reason else ""
            self._set(
                ConditionType.OPTIMIZING,
                "True",
                Reason.RUN_IN_PROGRESS,
                f"Run {active.id}{why} is running as Job {active.job_name}.",
            )
            return
        if self.blocked is not None:
            self._set(ConditionType.OPTIMIZING, "False", self.blocked.reason, self.blocked.message)
            return
        last = self.status.runs[-1] if self.status.runs else None
        if last is None:
            self._set(ConditionType.OPTIMIZING, "False", Reason.IDLE, "No run yet.")
        elif last.outcome == Outcome.FAILED or last.outcome == Outcome.CANCELLED:
            self._set(
                ConditionType.OPTIMIZING,
                "False",
                Reason.RUN_FAILED,
                f"Run {last.id} {last.outcome.lower()}: {last.message or ''}".rstrip(": "),
            )
        else:
            self._set(
                ConditionType.OPTIMIZING,
                "False",
                Reason.RUN_SUCCEEDED,
                f"Run {last.id} {last.outcome.lower()}: {last.message or ''}".rstrip(": "),
            )

    def _phase(self) -> Phase:
        if cond.get_condition(self.status.conditions, ConditionType.READY) and not (
            cond.is_condition_true(self.status.conditions, ConditionType.READY)
        ):
            return Phase.FAILED
        if self.status.active_run is not None:
            return Phase.OPTIMIZING
        if self.spec is not None and self.spec.suspend:
            return Phase.SUSPENDED
        if self.loop is not None:  # the phases only the closed loop reaches
            if self.blocked is not None and self.blocked.reason in ("Cooldown", "BudgetExhausted"):
                return Phase.DEGRADED
            if self.status.candidate is not None and self.loop.spec.promotion.mode == "Manual":
                return Phase.AWAITING_PROMOTION
        if self.status.last_evaluation is not None or self.status.runs:
            return Phase.MONITORING
        return Phase.PENDING


class NameConflictError(Exception):
    """An object with the name of ours exists and is not ours."""


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
