"""The closed loop: evaluate, decide, judge, promote, roll back, fix - in the reconcile pass.

A reconcile pass (services.reconcile) follows the optimization Jobs of one resource and
starts the run it asks for. ``Loop`` adds the rest of the loop to that same pass, through a
few calls the pass makes at fixed points:

    loop = Loop(context)
    loop.adopt_fix()              # status agrees with the fix record on the Deployment
    loop.follow_evaluation()      # a finished evaluate Job -> status.lastEvaluation,
                                  #   DriftDetected / LatencyWithinSLO, metrics, rollback
    record = loop.judge(record, result)   # a succeeded optimize run -> gates ->
                                  #   Promoted / Rejected / candidate (Manual)
    plan = loop.plan_run(sequence)        # the triggers: a RunPlan, a Hold, or None
    loop.maintain_target()        # the target exists, approved candidates, temporary fix
    loop.start_evaluation()       # the next evaluate Job when it is due
    loop.publish_metrics()
    loop.input_problem            # (reason, message) for Ready=False, or None

Everything is decided by driftwarden.policy (pure) from spec and status; the parts here
(services.evaluations, .promotions, .temporary_fixes, .target_writer) read what the
policies need and write what they decided: status (in place), events, metrics, the evaluate
Job, and the target Deployment (server-side apply, see policy.deployment_apply). Every write
is idempotent, so a pass that is repeated - after a status conflict or an operator crash -
converges to the same state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from driftwarden.api import conditions as cond
from driftwarden.api.conditions import ConditionType, Reason
from driftwarden.api.status import RunRecord, Trigger
from driftwarden.policy import from_api
from driftwarden.policy.triggers import decide
from driftwarden.services.evaluations import Evaluations, bad_input
from driftwarden.services.loop_context import LoopContext, LoopStep
from driftwarden.services.planning import RunPlan
from driftwarden.services.promotions import Promotions
from driftwarden.services.target_writer import TargetUnavailableError, TargetWriter
from driftwarden.services.temporary_fixes import TemporaryFixes
from optimizer_job import contract

__all__ = ["Hold", "Loop", "LoopContext"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hold:
    """A trigger fired but no run may start now (the pass shows it in Optimizing)."""

    reason: str  # Suspended, Cooldown, BudgetExhausted, RunActive
    message: str


class Loop(LoopStep):
    def __init__(self, context: LoopContext) -> None:
        super().__init__(context)
        self.writer = TargetWriter(context)
        self.evaluations = Evaluations(context)
        self.promotions = Promotions(context, self.writer)
        self.fixes = TemporaryFixes(context, self.writer)

    @property
    def input_problem(self) -> tuple[str, str] | None:
        """What only the operator can see and the user must fix (Ready=False): a target or
        claim found missing in this pass, or an evaluation that refused its input."""
        if self.ctx.problems:
            return self.ctx.problems[0]
        return bad_input(self.status)

    def adopt_fix(self) -> None:
        """Before anything writes the target: status.temporaryFix agrees with the record on
        the Deployment (services.temporary_fixes.adopt). API errors propagate: no pass may
        raise a fix or promote without knowing whether one is on."""
        try:
            self.fixes.adopt()
        except TargetUnavailableError as error:
            self._problem(error.reason, error.message)

    def follow_evaluation(self) -> None:
        recorded = self.evaluations.follow()
        if recorded is not None:
            self.promotions.check_first_evaluation(recorded.previous, recorded.evaluation)

    def judge(self, record: RunRecord, result: contract.CompactResult) -> RunRecord:
        return self.promotions.judge(record, result)

    def plan_run(self, sequence: int) -> RunPlan | Hold | None:
        """The run the triggers ask for now, or why a fired trigger must wait."""
        decision = decide(
            from_api.trigger_settings(self.spec),
            from_api.trigger_state(self.spec, self.status, self.ctx.created_at),
            self.now,
        )
        self._check_at(decision.next_check)
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

    def maintain_target(self) -> None:
        """Every pass: the target exists (else Ready=False says so), an approved Manual
        candidate is promoted, the temporary fix is applied, kept or reverted."""
        if cond.get_condition(self.status.conditions, ConditionType.PROMOTED) is None:
            self._set(ConditionType.PROMOTED, "False", Reason.NO_CANDIDATE, "No candidate yet.")
        usable = False
        if self.spec.target is not None:
            try:
                self.writer.target()
                usable = True
                self.promotions.promote_approved()
            except TargetUnavailableError as error:
                self._problem(error.reason, error.message)
        # An active fix is stepped even without a usable target: it is reverted where it
        # was applied when spec.target moved or went away.
        if not usable and from_api.active_fix(self.status) is None:
            return
        try:
            self.fixes.step()
        except TargetUnavailableError as error:
            if usable:
                self._problem(error.reason, error.message)

    def start_evaluation(self) -> None:
        self.evaluations.start()

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

    def release(self) -> None:
        """The resource is going away: revert an active fix where it was applied (a raise
        whose status was lost is found by its record first), then hand the target back.

        Raises ApiError or TargetUnavailableError when that did not succeed: the caller
        keeps the finalizer and tries again. A Deployment that is gone needs nothing."""
        try:
            self.fixes.adopt()
            if from_api.active_fix(self.status) is not None:
                self.fixes.revert("Disabled", "The ModelOptimization is being deleted.")
            self.writer.detach()
        except TargetUnavailableError as error:
            if error.reason not in (Reason.TARGET_NOT_FOUND, Reason.CONTAINER_NOT_FOUND):
                raise
            _log.info("%s/%s: nothing to hand back: %s", self.namespace, self.name, error)
