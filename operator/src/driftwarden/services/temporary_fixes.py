"""The temporary fix: more resources for the serving container while the SLO is breached.

policy.temporary_fix decides (apply, keep, revert) and computes the raised values and the
exact originals; this applies them to the target in DriftWarden's intent, records them in
status.temporaryFix, reverts to exactly the recorded values and releases the restored fields
(policy.ownership) so their owner manages them again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from driftwarden.api import conditions as cond
from driftwarden.api.conditions import ConditionType, Reason
from driftwarden.api.status import ContainerResources, TemporaryFixStatus
from driftwarden.policy import from_api, ownership, temporary_fix
from driftwarden.policy.deployment_apply import ResourceValues
from driftwarden.services.loop_context import LoopContext, LoopStep, rfc3339
from driftwarden.services.target_writer import TargetWriter

NOTHING_TO_RAISE: Final = "NothingToRaise"


class TemporaryFixes(LoopStep):
    def __init__(self, context: LoopContext, writer: TargetWriter) -> None:
        super().__init__(context)
        self.writer = writer

    def step(self) -> None:
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
            self.revert(decision.revert_reason or "Disabled", decision.reason)
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
        deployment, container = self.writer.target()
        current = from_api.resource_values(self.writer.container(deployment, container))
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
            fix_expires_at=rfc3339(expires),
        )
        self.writer.apply(container, intent)
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
            f"until {rfc3339(expires)} at the latest."
        )
        self._set(ConditionType.TEMPORARY_FIX_ACTIVE, "True", Reason.FIX_APPLIED, message)
        self._emit("Warning", "TemporaryFixApplied", message)

    def revert(self, revert_reason: temporary_fix.RevertReason, why: str) -> None:
        fix = self.status.temporary_fix
        if fix is None:
            return
        deployment, container = self.writer.target()
        original = _values_of(fix.original, container)
        applied = _values_of(fix.applied, container)
        intent = replace(
            from_api.intent(self.status, container),
            resources=temporary_fix.revert_values(original, applied),
            fix_expires_at=None,
        )
        self.writer.apply(container, intent)
        self.writer.release_fields(
            deployment["metadata"]["name"], ownership.resource_paths(container, applied)
        )
        restored = from_api.resource_values(
            self.writer.container(self.writer.read_deployment(), container)
        )
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


def _container_resources(container: str, values: ResourceValues) -> ContainerResources:
    return ContainerResources(
        container=container, requests=dict(values.requests), limits=dict(values.limits)
    )


def _values_of(entries: list[ContainerResources], container: str) -> ResourceValues:
    for entry in entries:
        if entry.container == container:
            return ResourceValues(requests=entry.requests, limits=entry.limits)
    return ResourceValues()
