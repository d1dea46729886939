"""The temporary fix: more CPU / memory / GPU for the serving container while it is too slow.

``plan_fix`` raises the container's present CPU and memory requests and limits by the given
percentages, rounded up (1m CPU, 1 byte), capped by ``maxCpu`` / ``maxMemory``, never below
what is there; it adds ``extraGpus`` to the ``nvidia.com/gpu`` limit (and to the request
when one is set: extended resources need request == limit). What is absent stays absent,
except the GPU limit the extra GPUs need: an absent CPU request with a present limit already
follows the limit. A value the fix would not change is not touched at all, so it stays
owned by whoever set it.

The plan records ``original`` - exactly the strings that were there for every name the fix
sets, and no entry for a name that was absent - and ``applied``. The revert is the intent
with ``revert_values``: the original strings for names that had one; a name that was absent
is left out of the apply, which makes server-side apply delete it (we were its only owner).
After the revert the restored fields are released (``ownership.release_fields``) so that
their owner - kubectl, Argo CD, Flux - can change them again without fighting us.

A person may change a raised field while the fix is active (on-call raises a limit further).
``plan_revert`` restores only the fields whose live value still equals what the fix applied;
a field a person changed is left as it is and reported (``ChangedField``). ``still_applied``
is the same rule for the applies made while the fix is on (a promotion): they carry only the
raised fields nobody changed, so a person's value is never forced back.

``decide_fix`` says when to apply or revert: apply while the latency SLO is breached (unless
an expired fix is waiting for the SLO to be met once, so expiry really ends it); revert after
a promotion when an evaluation of the promoted model meets the SLO, when ``expiresAfter``
has passed, when the fix is no longer enabled, or when ``spec.target`` no longer names the
Deployment and container the fix was applied to (``target_moved``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from driftwarden.policy.deployment_apply import ResourceValues
from driftwarden.policy.quantity import format_count, format_cpu, format_memory, parse_quantity

CPU = "cpu"
MEMORY = "memory"
GPU = "nvidia.com/gpu"


@dataclass(frozen=True)
class FixSettings:
    """``spec.temporaryFix`` with quantities and durations parsed."""

    enabled: bool = True
    cpu_percent: int = 200
    memory_percent: int = 150
    max_cpu: Decimal | None = None  # cores
    max_memory: Decimal | None = None  # bytes
    extra_gpus: int = 0
    expires_after: timedelta = timedelta(hours=2)


@dataclass(frozen=True)
class FixPlan:
    original: ResourceValues  # the values before, for the names in `applied` that had one
    applied: ResourceValues  # what the fix sets
    notes: tuple[str, ...]  # why something was not raised

    @property
    def raises_anything(self) -> bool:
        return not self.applied.is_empty()

    def summary(self) -> str:
        """'cpu limit 500m -> 1, memory request 256Mi -> 384Mi' for events and status."""
        parts: list[str] = []
        for kind, applied, original in (
            ("request", self.applied.requests, self.original.requests),
            ("limit", self.applied.limits, self.original.limits),
        ):
            for name, value in sorted(applied.items()):
                parts.append(f"{name} {kind} {original.get(name, 'unset')} -> {value}")
        return ", ".join(parts) if parts else "nothing to raise"


def plan_fix(settings: FixSettings, current: ResourceValues) -> FixPlan:
    """What the fix sets on a container whose resources are ``current``."""
    applied: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    original: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    notes: list[str] = []
    sections = {"requests": current.requests, "limits": current.limits}

    for name, percent, cap in (
        (CPU, settings.cpu_percent, settings.max_cpu),
        (MEMORY, settings.memory_percent, settings.max_memory),
    ):
        if percent <= 100:
            continue
        if name not in current.requests and name not in current.limits:
            notes.append(f"the container sets no {name} request or limit to raise")
            continue
        for section, values in sections.items():
            if name not in values:
                continue
            before = values[name]
            after = _raise(name, before, percent, cap)
            if after is None:
                notes.append(f"{name} {section[:-1]} {before} is already at or over the cap")
                continue
            applied[section][name] = after
            original[section][name] = before

    if settings.extra_gpus > 0:
        have = parse_quantity(current.limits.get(GPU, current.requests.get(GPU, "0")))
        wanted = format_count(have + settings.extra_gpus)
        for section, values in sections.items():
            # The limit is where GPUs are asked for; a request, if any, must equal it.
            if section == "limits" or GPU in values:
                applied[section][GPU] = wanted
                if GPU in values:
                    original[section][GPU] = values[GPU]

    return FixPlan(
        original=ResourceValues(original["requests"], original["limits"]),
        applied=ResourceValues(applied["requests"], applied["limits"]),
        notes=tuple(notes),
    )


def revert_values(original: ResourceValues, applied: ResourceValues) -> ResourceValues:
    """The resources the revert applies: for every name the fix set, the original string if
    there was one. Names absent before are left out, so the apply removes them."""
    return ResourceValues(
        requests={n: original.requests[n] for n in applied.requests if n in original.requests},
        limits={n: original.limits[n] for n in applied.limits if n in original.limits},
    )


def restored_after_revert(
    current: ResourceValues, original: ResourceValues, applied: ResourceValues
) -> bool:
    """Whether the container's resources, read back after the revert, are exactly what they
    were before the fix for every name the fix set (absent ones absent again)."""
    for section in ("requests", "limits"):
        now: Mapping[str, str] = getattr(current, section)
        before: Mapping[str, str] = getattr(original, section)
        for name in getattr(applied, section):
            if now.get(name) != before.get(name):
                return False
    return True


@dataclass(frozen=True)
class ChangedField:
    """A field the fix raised whose live value is no longer the raised one."""

    section: Literal["requests", "limits"]
    name: str
    applied: str
    live: str | None  # None: removed

    def describe(self) -> str:
        """'cpu limit: DriftWarden set 2, now 3' for events and conditions."""
        return (
            f"{self.name} {self.section[:-1]}: DriftWarden set {self.applied}, "
            f"now {self.live if self.live is not None else 'unset'}"
        )


@dataclass(frozen=True)
class RevertPlan:
    values: ResourceValues  # what the revert apply sets (original strings)
    restored: ResourceValues  # the fields put back to their originals (applied strings)
    changed: tuple[ChangedField, ...]  # changed by someone else: left as they are

    def summary(self, original: ResourceValues) -> str:
        """'cpu request 500m, cpu limit 1' - what the revert restored."""
        parts = [
            f"{name} {kind} {before.get(name, 'unset')}"
            for kind, names_, before in (
                ("request", self.restored.requests, original.requests),
                ("limit", self.restored.limits, original.limits),
            )
            for name in sorted(names_)
        ]
        return ", ".join(parts) if parts else "nothing"


def same_quantity(a: str | None, b: str | None) -> bool:
    """Two quantity strings name the same amount ("1000m" and "1"); None is absent."""
    if a is None or b is None:
        return a is b
    try:
        return parse_quantity(a) == parse_quantity(b)
    except ValueError:
        return a == b


def plan_revert(
    original: ResourceValues, applied: ResourceValues, live: ResourceValues
) -> RevertPlan:
    """The revert of a fix on a container whose resources are now ``live``.

    Per field the fix set: live equals the applied value -> restore the original (or remove
    it, if it was absent); live already equals the original (an earlier revert whose status
    was lost) -> apply the original again, which changes nothing; anything else -> a person
    changed it: leave it out, report it. Restored fields that had an original are in
    ``values``; a field absent before is left out of the apply, which removes it (we were
    its only owner).
    """
    values: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    restored: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    changed: list[ChangedField] = []
    sections: tuple[Literal["requests", "limits"], ...] = ("requests", "limits")
    for section in sections:
        before: Mapping[str, str] = getattr(original, section)
        now: Mapping[str, str] = getattr(live, section)
        for name, value in sorted(getattr(applied, section).items()):
            current = now.get(name)
            if same_quantity(current, value) or same_quantity(current, before.get(name)):
                restored[section][name] = value
                if name in before:
                    values[section][name] = before[name]
            else:
                changed.append(ChangedField(section, name, value, current))
    return RevertPlan(
        values=ResourceValues(values["requests"], values["limits"]),
        restored=ResourceValues(restored["requests"], restored["limits"]),
        changed=tuple(changed),
    )


def still_applied(applied: ResourceValues, live: ResourceValues) -> ResourceValues:
    """The fields of an active fix that still hold the applied values: what an apply made
    while the fix is on (a promotion) carries, so it never forces back a person's change."""
    return ResourceValues(
        requests={
            n: v for n, v in applied.requests.items() if same_quantity(live.requests.get(n), v)
        },
        limits={n: v for n, v in applied.limits.items() if same_quantity(live.limits.get(n), v)},
    )


def target_moved(
    fix_deployment: str,
    fix_container: str,
    target_deployment: str | None,
    target_container: str | None,
) -> str | None:
    """Why the fix no longer belongs to ``spec.target`` (None: it still does). A target
    container of None means the Deployment's first container, whatever the fix recorded."""
    if target_deployment is None:
        return f"spec.target was removed; the fix on Deployment {fix_deployment} is reverted."
    if target_deployment != fix_deployment:
        return (
            f"spec.target now names Deployment {target_deployment}; the fix on Deployment "
            f"{fix_deployment} is reverted."
        )
    if target_container is not None and target_container != fix_container:
        return (
            f"spec.target now names container {target_container}; the fix on container "
            f"{fix_container} of Deployment {fix_deployment} is reverted."
        )
    return None


def _raise(name: str, before: str, percent: int, cap: Decimal | None) -> str | None:
    """The raised value, or None when raising would not change it (at or over the cap)."""
    value = parse_quantity(before)
    raised = value * percent / 100
    if cap is not None:
        raised = min(raised, cap)
    text = format_cpu(raised) if name == CPU else format_memory(raised)
    if parse_quantity(text) <= value:
        return None
    return text


# ---- when to apply and revert -------------------------------------------------------------

FixAction = Literal["Apply", "Revert", "Keep", "Nothing"]
RevertReason = Literal["SLORestored", "Expired", "Disabled", "Retargeted"]


@dataclass(frozen=True)
class ActiveFix:
    applied_at: datetime
    expires_at: datetime
    deployment: str = ""  # where it was applied
    container: str = ""


@dataclass(frozen=True)
class FixDecision:
    action: FixAction
    reason: str
    revert_reason: RevertReason | None = None
    next_check: datetime | None = None  # the expiry while a fix is active


@dataclass(frozen=True)
class LatencyReading:
    """The latest evaluation's p95 against the SLO, and when that evaluation started."""

    time: datetime
    p95_ms: float | None
    slo_ms: int
    model_uri: str
    breaches: int = 1  # evaluations of this model in a row over the SLO, this one included
    required: int = 1  # spec.triggers.latency.consecutiveBreaches

    @property
    def breached(self) -> bool:
        return self.p95_ms is not None and Decimal(repr(self.p95_ms)) > self.slo_ms

    @property
    def sustained(self) -> bool:
        """Breached in as many evaluations in a row as the trigger requires."""
        return self.breached and self.breaches >= self.required


def expires_at(settings: FixSettings, applied_at: datetime) -> datetime:
    return applied_at + settings.expires_after


def decide_fix(
    settings: FixSettings | None,
    active: ActiveFix | None,
    latency: LatencyReading | None,
    promoted_at: datetime | None,
    promoted_uri: str | None,
    waiting_for_slo: bool,
    now: datetime,
    moved: str | None = None,
) -> FixDecision:
    """Apply, revert, keep, or nothing.

    ``waiting_for_slo``: a fix expired during this breach; none is applied again until an
    evaluation meets the SLO (the caller clears it then). ``promoted_at``/``promoted_uri``:
    the latest promotion, if any. ``moved``: why spec.target no longer names what the
    active fix was applied to (``target_moved``), if it does not.
    """
    enabled = settings is not None and settings.enabled
    if active is not None:
        if moved is not None:
            return FixDecision("Revert", moved, "Retargeted")
        if not enabled:
            return FixDecision("Revert", "The temporary fix is no longer enabled.", "Disabled")
        if now >= active.expires_at:
            return FixDecision(
                "Revert",
                f"The temporary fix expired at {active.expires_at.isoformat()}.",
                "Expired",
            )
        if (
            latency is not None
            and not latency.breached
            and latency.p95_ms is not None
            and promoted_at is not None
            and promoted_at > active.applied_at
            and latency.time >= promoted_at
            and latency.model_uri == promoted_uri
        ):
            return FixDecision(
                "Revert",
                f"The promoted model meets the SLO: p95 {latency.p95_ms:.2f} ms <= "
                f"{latency.slo_ms} ms.",
                "SLORestored",
            )
        return FixDecision(
            "Keep",
            f"The temporary fix stays until a promotion restores the SLO or it expires at "
            f"{active.expires_at.isoformat()}.",
            next_check=active.expires_at,
        )
    if not enabled or latency is None or not latency.breached:
        return FixDecision("Nothing", "The latency SLO is met or the fix is not enabled.")
    if not latency.sustained:
        return FixDecision(
            "Nothing",
            f"p95 latency {latency.p95_ms:.2f} ms is over the SLO of {latency.slo_ms} ms in "
            f"{latency.breaches} evaluation(s) in a row; the fix waits for {latency.required}.",
        )
    if waiting_for_slo:
        return FixDecision(
            "Nothing",
            "A temporary fix already expired during this SLO breach; none is applied again "
            "until the SLO is met.",
        )
    in_a_row = f" in {latency.breaches} evaluations in a row" if latency.required > 1 else ""
    return FixDecision(
        "Apply",
        f"p95 latency {latency.p95_ms:.2f} ms is over the SLO of {latency.slo_ms} ms{in_a_row}.",
    )
