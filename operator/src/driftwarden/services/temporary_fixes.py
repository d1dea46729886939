"""The temporary fix: more resources for the serving container while the SLO is breached.

policy.temporary_fix decides (apply, keep, revert) and computes the raised values, the
exact originals and what a revert may restore; this applies them to the target in
DriftWarden's intent, reverts and releases the restored fields (policy.ownership) so their
owner manages them again.

The Deployment is the source of truth (policy.fix_record): the raise carries the fix's
record as an annotation in the same server-side apply, conditional on the resourceVersion
that was read, and ``status.temporaryFix`` mirrors it. ``adopt`` runs first in every pass
and makes status agree with the Deployment, so a raise whose status write was lost (a 409,
a timeout, a crash) is adopted, never raised again. A revert acts on the Deployment and
container recorded at apply time - whatever ``spec.target`` says now - and restores only
fields still at the values the fix applied; a field a person changed meanwhile is left and
named in an event and in the TemporaryFixActive condition.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from driftwarden.api import conditions as cond
from driftwarden.api.conditions import ConditionType, Reason
from driftwarden.api.status import ContainerResources, TemporaryFixStatus
from driftwarden.crashpoints import crash_point
from driftwarden.k8s import ApiError, ConflictError
from driftwarden.policy import from_api, ownership, temporary_fix
from driftwarden.policy.deployment_apply import (
    FIX_RECORD_ANNOTATION,
    PROMOTED_RUN_ANNOTATION,
    TEMPORARY_FIX_ANNOTATION,
    DeploymentIntent,
    ResourceValues,
    TargetRef,
)
from driftwarden.policy.fix_record import FixRecord, reconcile_record
from driftwarden.services.loop_context import Json, LoopContext, LoopStep, rfc3339
from driftwarden.services.target_writer import TargetUnavailableError, TargetWriter

NOTHING_TO_RAISE: Final = "NothingToRaise"
# TemporaryFixActive reason: the target carries another ModelOptimization's fix.
FIX_HELD_BY_OTHER: Final = "FixHeldByOther"
# Event reason: a revert left a field a person changed during the fix.
FIX_FIELD_KEPT: Final = "TemporaryFixFieldKept"
RAISE_ATTEMPTS: Final = 3

# A revert for one of these reasons (policy.temporary_fix.RevertReason, or the record was
# found gone from the Deployment) leaves TemporaryFixActive with this reason.
_REVERT_REASONS: Final = {
    "Expired": Reason.FIX_EXPIRED,
    "SLORestored": Reason.FIX_REVERTED,
    "Retargeted": Reason.FIX_REVERTED,
    "RecordGone": Reason.FIX_REVERTED,
    "Disabled": Reason.FIX_DISABLED,
}


class TemporaryFixes(LoopStep):
    def __init__(self, context: LoopContext, writer: TargetWriter) -> None:
        super().__init__(context)
        self.writer = writer
        self.record_gone = False  # adopt(): status shows a fix the Deployment has no record of

    # -- the record on the Deployment ----------------------------------------------------

    def adopt(self) -> None:
        """Make status agree with the fix record on the Deployment (policy.fix_record):
        the first thing a pass does, before anything writes the target."""
        active = from_api.active_fix(self.status)
        where = active.deployment if active is not None and active.deployment else None
        if where is None and self.spec.target is not None:
            where = self.spec.target.deployment
        if where is None:
            return
        body = self.writer.read_named(where)
        if body is None:
            if active is not None:
                self._ended(f"Deployment {where}, which had the temporary fix, is gone.")
            return
        annotations = body["metadata"].get("annotations") or {}
        found = FixRecord.from_annotation(annotations.get(FIX_RECORD_ANNOTATION))
        verdict = reconcile_record(
            from_api.fix_record(self.status, self.ctx.owner.uid, self.name),
            found,
            self.ctx.owner.uid,
            legacy_annotation=TEMPORARY_FIX_ANNOTATION in annotations,
        )
        if verdict == "Adopt" and found is not None:
            self._adopt(found)
        elif verdict == "Foreign":
            if active is not None and active.deployment == where:
                self._ended(
                    f"Deployment {where} carries the temporary fix of another "
                    f"ModelOptimization ({found.owner if found else 'unknown'}), not ours."
                )
        elif verdict == "Legacy" and active is not None:
            # Applied by a version without records: write the record, nothing else changes.
            # (A fix on a Deployment that is no longer the target is reverted by step.)
            target = self.spec.target
            if target is not None and target.deployment == where:
                self.writer.apply(active.container, self.writer.intent(body, active.container))
        elif verdict == "Gone" and active is not None:
            # Finished by step(): with its own reason when it reverts anyway (a pass re-run
            # after its status write conflicted finds the record its revert removed), else
            # as RecordGone.
            self.record_gone = True

    def _adopt(self, record: FixRecord) -> None:
        plan = temporary_fix.FixPlan(record.original, record.applied, ())
        settings = from_api.fix_settings(self.spec)
        self.status.temporary_fix = TemporaryFixStatus(
            active=True,
            deployment=record.deployment,
            reason="Adopted from the Deployment's record of the fix.",
            applied_at=record.applied_at,
            expires_at=record.expires_at,
            extra_gpus=(settings.extra_gpus or None) if settings is not None else None,
            original=[_container_resources(record.container, record.original)],
            applied=[_container_resources(record.container, record.applied)],
        )
        message = (
            f"Found the temporary fix recorded on Deployment {record.deployment} "
            f"({plan.summary()}, applied {rfc3339(record.applied_at)}, until "
            f"{rfc3339(record.expires_at)} at the latest) and adopted it; it is not raised again."
        )
        self._set(ConditionType.TEMPORARY_FIX_ACTIVE, "True", Reason.FIX_APPLIED, message)
        self._emit("Warning", "TemporaryFixApplied", message)

    def _ended(self, message: str) -> None:
        fix = self.status.temporary_fix
        if fix is not None:
            self.status.temporary_fix = fix.model_copy(update={"active": False, "reason": message})
        self._set(ConditionType.TEMPORARY_FIX_ACTIVE, "False", Reason.FIX_REVERTED, message)
        self._emit("Warning", "TemporaryFixReverted", message)

    # -- apply, keep, revert ---------------------------------------------------------------

    def step(self) -> None:
        spec, status = self.spec, self.status
        settings = from_api.fix_settings(spec)
        active = from_api.active_fix(status)
        if (settings is None or not settings.enabled) and active is None:
            current = cond.get_condition(status.conditions, ConditionType.TEMPORARY_FIX_ACTIVE)
            if current is not None and current.reason == Reason.FIX_DISABLED:
                return  # keep the story of the revert that disabling the fix made
            self._set(
                ConditionType.TEMPORARY_FIX_ACTIVE,
                "False",
                Reason.FIX_DISABLED,
                "No temporary fix: spec.temporaryFix is not enabled.",
            )
            return
        latency = self._latency_reading()
        promoted = status.promoted
        moved = None
        if active is not None:
            target = spec.target
            moved = temporary_fix.target_moved(
                active.deployment,
                active.container,
                target.deployment if target is not None else None,
                target.container if target is not None else None,
            )
        decision = temporary_fix.decide_fix(
            settings,
            active,
            latency,
            promoted.at if promoted is not None else None,
            promoted.current if promoted is not None else None,
            from_api.fix_waiting_for_slo(status),
            self.now,
            moved,
        )
        self._check_at(decision.next_check)  # the expiry of an active fix
        if decision.action == "Revert":
            self.revert(decision.revert_reason or "Disabled", decision.reason)
        elif self.record_gone and active is not None:
            where = active.deployment
            self.revert(
                "Expired" if self.now >= active.expires_at else "RecordGone",
                f"The temporary fix is no longer recorded on Deployment {where} (a revert "
                "whose status was not written, or its annotation was removed).",
            )
        elif decision.action == "Apply" and settings is not None and spec.target is not None:
            self._apply_fix(settings, decision.reason)
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
            breaches=from_api.latency_breaches(self.status),
            required=latency_trigger.consecutive_breaches,
        )

    def _apply_fix(self, settings: temporary_fix.FixSettings, why: str) -> None:
        """Raise, with the record in the same apply, conditional on the resourceVersion read:
        a record that appeared since (another pass, another replica) is adopted instead."""
        for _ in range(RAISE_ATTEMPTS):
            deployment, container = self.writer.target()
            name = deployment["metadata"]["name"]
            annotations = deployment["metadata"].get("annotations") or {}
            found = FixRecord.from_annotation(annotations.get(FIX_RECORD_ANNOTATION))
            if found is not None and found.owner_uid == self.ctx.owner.uid:
                self._adopt(found)
                return
            if found is not None:
                self._held_by_other(name, found)
                return
            current = from_api.resource_values(self.writer.container(deployment, container))
            plan = temporary_fix.plan_fix(settings, current)
            if not plan.raises_anything:
                message = (
                    "The SLO is breached but the temporary fix has nothing to raise: "
                    + "; ".join(plan.notes)
                )
                fix_active = ConditionType.TEMPORARY_FIX_ACTIVE
                if self._set(fix_active, "False", NOTHING_TO_RAISE, message):
                    self._emit("Warning", NOTHING_TO_RAISE, message)
                return
            expires = temporary_fix.expires_at(settings, self.now)
            record = FixRecord(
                owner_uid=self.ctx.owner.uid,
                owner=self.name,
                deployment=name,
                container=container,
                original=plan.original,
                applied=plan.applied,
                applied_at=self.now,
                expires_at=expires,
            )
            intent = replace(
                self.writer.intent(deployment, container),
                resources=plan.applied,
                fix_expires_at=rfc3339(expires),
                fix_record=record.to_annotation(),
                resource_version=deployment["metadata"].get("resourceVersion"),
            )
            try:
                self.writer.apply(container, intent)
            except ConflictError:
                continue  # the Deployment changed since it was read: read it again
            crash_point("fix-applied")
            self._applied(record, plan, why, settings)
            return
        raise ApiError(409, "the target Deployment kept changing; the fix waits for the next pass")

    def _applied(
        self,
        record: FixRecord,
        plan: temporary_fix.FixPlan,
        why: str,
        settings: temporary_fix.FixSettings,
    ) -> None:
        self.status.temporary_fix = TemporaryFixStatus(
            active=True,
            deployment=record.deployment,
            reason=why,
            applied_at=record.applied_at,
            expires_at=record.expires_at,
            extra_gpus=settings.extra_gpus or None,
            original=[_container_resources(record.container, plan.original)],
            applied=[_container_resources(record.container, plan.applied)],
        )
        message = (
            f"{why} Raised {plan.summary()} on Deployment {record.deployment} "
            f"until {rfc3339(record.expires_at)} at the latest."
        )
        self._set(ConditionType.TEMPORARY_FIX_ACTIVE, "True", Reason.FIX_APPLIED, message)
        self._emit("Warning", "TemporaryFixApplied", message)

    def _held_by_other(self, deployment: str, found: FixRecord) -> None:
        message = (
            f"Deployment {deployment} carries a temporary fix of another ModelOptimization "
            f"({found.owner or found.owner_uid}, until {rfc3339(found.expires_at)}): none is "
            "raised on top of it."
        )
        if self._set(ConditionType.TEMPORARY_FIX_ACTIVE, "False", FIX_HELD_BY_OTHER, message):
            self._emit("Warning", FIX_HELD_BY_OTHER, message)

    def revert(self, revert_reason: str, why: str) -> None:
        """Revert the active fix on the Deployment and container it was applied to, restoring
        only fields still at the applied values, then hand the restored fields back (all of
        the Deployment, when it is no longer the target)."""
        fix = self.status.temporary_fix
        active = from_api.active_fix(self.status)
        if fix is None or active is None:
            return
        name = active.deployment or (self.spec.target.deployment if self.spec.target else "")
        container = active.container
        original = from_api.fix_values(fix.original, container)
        applied = from_api.fix_values(fix.applied, container)
        body = self.writer.read_named(name) if name else None
        live_container = _find_container(body, container) if body is not None else None
        if body is None or live_container is None:
            self._ended(
                f"{why} Deployment {name} (container {container}), which had the temporary fix, "
                "is gone: nothing to revert."
            )
            return
        plan = temporary_fix.plan_revert(
            original, applied, from_api.resource_values(live_container)
        )
        ref, intent = self._revert_intent(body, container, plan.values, applied)
        try:
            self.writer.apply_to(ref, intent)
        except TargetUnavailableError as error:
            if error.reason != Reason.TARGET_NOT_FOUND:
                raise
            self._ended(f"{why} Deployment {name} is gone: nothing to revert.")
            return
        crash_point("fix-reverted")
        target = self.spec.target
        still_target = (
            target is not None
            and target.deployment == name
            and target.container in (None, container)
        )
        if still_target:
            self.writer.release_fields(name, ownership.resource_paths(container, applied))
        else:
            self.writer.detach(name)  # no longer our target: hand all of it back
        after = self.writer.read_named(name)
        back = _find_container(after, container) if after is not None else None
        exact = back is not None and temporary_fix.restored_after_revert(
            from_api.resource_values(back), original, plan.restored
        )
        self.status.temporary_fix = fix.model_copy(update={"active": False, "reason": why})
        message = f"{why} Restored {plan.summary(original)} on Deployment {name}."
        if plan.changed:
            kept = "; ".join(field.describe() for field in plan.changed)
            message += f" Left as changed during the fix (not reverted): {kept}."
        if not exact:
            message += " Warning: the resources read back differ from the recorded originals."
        reason = _REVERT_REASONS.get(revert_reason, Reason.FIX_DISABLED)
        self._set(ConditionType.TEMPORARY_FIX_ACTIVE, "False", reason, message)
        self._emit("Normal" if exact else "Warning", "TemporaryFixReverted", message)
        if plan.changed:
            self._emit(
                "Warning",
                FIX_FIELD_KEPT,
                f"The revert on Deployment {name} left what someone changed during the fix: "
                + "; ".join(field.describe() for field in plan.changed)
                + ".",
            )

    def _revert_intent(
        self, body: Json, container: str, values: ResourceValues, applied: ResourceValues
    ) -> tuple[TargetRef, DeploymentIntent]:
        """The revert's apply: the restored values, and everything else DriftWarden owns on
        that container as it is now (the model env var it promoted), so the apply - which
        replaces our whole field set - changes nothing but the fix's fields."""
        meta = body["metadata"]
        owned = ownership.owned_env_names(meta.get("managedFields") or [], container)
        wanted = self.spec.target.model_env if self.spec.target is not None else None
        env = wanted if wanted in owned else (owned[0] if owned else None)
        live = _find_container(body, container) or {}
        model_uri = from_api.env_value(live, env) if env is not None else None
        ref = TargetRef(
            namespace=self.namespace,
            deployment=meta["name"],
            container=container,
            model_env=env or "MODEL_URI",
        )
        annotations = meta.get("annotations") or {}
        # Fields of the fix not in ``values`` are meant to go (absent before the fix) or
        # are a person's now; anything else we own stays at its live value.
        kept = ownership.owned_resources(
            meta.get("managedFields") or [], container, from_api.resource_values(live)
        ).without(applied)
        intent = DeploymentIntent(
            model_uri=model_uri,
            promoted_run=annotations.get(PROMOTED_RUN_ANNOTATION) if model_uri else None,
            resources=values.union(kept),
        )
        return ref, intent


def _find_container(deployment: Json, name: str) -> Json | None:
    for container in deployment["spec"]["template"]["spec"].get("containers") or []:
        if container.get("name") == name:
            return dict(container)
    return None


def _container_resources(container: str, values: ResourceValues) -> ContainerResources:
    return ContainerResources(
        container=container, requests=dict(values.requests), limits=dict(values.limits)
    )
