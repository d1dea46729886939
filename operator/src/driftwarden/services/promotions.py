"""Gates, promotion and rollback.

A succeeded run's candidate is judged by the gates (policy.gates) against the model in use,
both measured by the run on the same holdout. Failing: outcome Rejected, condition Promoted
False PromotionRejected with the failing gates' numbers (InconclusiveLatency when only a
speed interval could not decide; the Job already measured again). Passing: with promotion Automatic
the target is pointed at the candidate (TargetWriter.apply), else status.candidate names it
until spec.promotion.approvedRunId approves its run. The first evaluation of a promoted model
may roll it back (policy.promotion.rollback_decision).
"""

from __future__ import annotations

from typing import Final

from driftwarden.api.conditions import ConditionType, Reason
from driftwarden.api.status import Candidate, Evaluation, GateResult, Outcome, Promoted, RunRecord
from driftwarden.policy import from_api, promotion
from driftwarden.policy.gates import evaluate_gates
from driftwarden.services.loop_context import LoopContext, LoopStep
from driftwarden.services.target_writer import (
    TARGET_WRITE_FAILED,
    TargetUnavailableError,
    TargetWriter,
)
from optimizer_job import contract

APPROVAL_INVALID: Final = "ApprovalInvalid"


class Promotions(LoopStep):
    def __init__(self, context: LoopContext, writer: TargetWriter) -> None:
        super().__init__(context)
        self.writer = writer

    def judge(self, record: RunRecord, result: contract.CompactResult) -> RunRecord:
        """A succeeded run's candidate against the gates: Rejected, Promoted (Automatic) or
        Succeeded with status.candidate (Manual, or a target that cannot be written)."""
        verdict = evaluate_gates(
            from_api.gate_settings(self.spec),
            result.baseline,
            result.candidate,
            speed=result.speed,
            trigger=record.trigger.value,
        )
        gates = [
            GateResult(
                name=r.name,
                passed=r.passed,
                value=r.value,
                limit=r.limit,
                message=r.message,
                batch_size=r.batch_size,
                low=r.low,
                high=r.high,
                rounds=r.rounds,
                inconclusive=r.inconclusive or None,
            )
            for r in verdict.results
        ]
        record = record.model_copy(update={"gates": gates})
        if not verdict.passed:
            # A speed interval that could not decide is no verdict on the candidate: it is
            # not promoted, and the reason says that the latency was inconclusive.
            reason = (
                Reason.INCONCLUSIVE_LATENCY if verdict.inconclusive else Reason.PROMOTION_REJECTED
            )
            message = f"Run {record.id}: {verdict.message} The model in use stays."
            if verdict.inconclusive:
                message += " The next run measures again."
            self._set(ConditionType.PROMOTED, "False", reason, message)
            self._emit("Warning", reason, message)
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
        deployment, container = self.writer.target()
        in_use = from_api.model_in_use(self.spec, self.status)
        intent = promotion.promote(self.writer.intent(deployment, container), uri, run_id)
        self.writer.apply(container, intent)
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

    def check_first_evaluation(self, previous: Evaluation | None, evaluation: Evaluation) -> None:
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
            deployment, container = self.writer.target()
            self.writer.apply(
                container,
                promotion.roll_back(self.writer.intent(deployment, container), promoted),
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

    def promote_approved(self) -> None:
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
