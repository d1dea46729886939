"""The record of a temporary fix on the Deployment it raised: the source of truth.

A fix is raised by one server-side apply that carries, besides the raised requests/limits,
the annotation ``driftwarden.io/temporary-fix``: a compact JSON ``FixRecord`` with the
owner (the ModelOptimization's uid and name), the Deployment and container, the exact
original and applied values, and when it was applied and expires. The raise and its record
therefore reach the API together or not at all; ``status.temporaryFix`` only mirrors it.

Every pass first compares the two (``reconcile_record``): a record on the Deployment that
status does not show (the status write after the raise failed: a 409, a timeout, a crash)
is *adopted*, never raised again; a status that names a fix whose record is gone from the
Deployment (a revert whose status write failed, an annotation removed by hand) is finished
by a revert, which touches only fields still at the applied values
(``temporary_fix.plan_revert``); a record of another owner is left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from driftwarden.policy.deployment_apply import ResourceValues

_VERSION = 1


@dataclass(frozen=True)
class FixRecord:
    """One temporary fix, as the Deployment's annotation holds it."""

    owner_uid: str
    owner: str  # the ModelOptimization's name (same namespace as the Deployment)
    deployment: str
    container: str
    original: ResourceValues
    applied: ResourceValues
    applied_at: datetime
    expires_at: datetime

    def to_annotation(self) -> str:
        body: dict[str, Any] = {
            "v": _VERSION,
            "ownerUid": self.owner_uid,
            "owner": self.owner,
            "deployment": self.deployment,
            "container": self.container,
            "original": self.original.to_dict(),
            "applied": self.applied.to_dict(),
            "appliedAt": _rfc3339(self.applied_at),
            "expiresAt": _rfc3339(self.expires_at),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_annotation(cls, text: str | None) -> FixRecord | None:
        """The record in an annotation's value; None when absent or unreadable."""
        if not text:
            return None
        try:
            raw = json.loads(text)
            return cls(
                owner_uid=str(raw["ownerUid"]),
                owner=str(raw.get("owner") or ""),
                deployment=str(raw["deployment"]),
                container=str(raw["container"]),
                original=_values(raw.get("original")),
                applied=_values(raw["applied"]),
                applied_at=_parse_time(raw["appliedAt"]),
                expires_at=_parse_time(raw["expiresAt"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def same_fix(self, other: FixRecord) -> bool:
        """The same fix (the owner's name aside, which status does not hold)."""
        return (
            self.owner_uid == other.owner_uid
            and self.deployment == other.deployment
            and self.container == other.container
            and _norm(self.original) == _norm(other.original)
            and _norm(self.applied) == _norm(other.applied)
            and _seconds(self.applied_at) == _seconds(other.applied_at)
            and _seconds(self.expires_at) == _seconds(other.expires_at)
        )


RecordVerdict = Literal["Nothing", "Agree", "Adopt", "Gone", "Legacy", "Foreign"]


def reconcile_record(
    in_status: FixRecord | None,
    on_deployment: FixRecord | None,
    owner_uid: str,
    *,
    legacy_annotation: bool,
) -> RecordVerdict:
    """What a pass does with the fix status shows and the record the Deployment carries.

    - ``Nothing``: no fix anywhere.
    - ``Agree``: status mirrors the Deployment's record.
    - ``Adopt``: the Deployment carries our record and status does not show it (or shows an
      older one): status takes the record; the fix is not raised again.
    - ``Gone``: status shows an active fix, the Deployment has no record of it: finish it by
      a revert (only fields still at the applied values change).
    - ``Legacy``: status shows an active fix applied before records existed (the Deployment
      has only ``driftwarden.io/temporary-fix-expires``): keep it and write its record.
    - ``Foreign``: the Deployment carries another resource's fix: never raise on top of it.
    """
    if on_deployment is not None and on_deployment.owner_uid != owner_uid:
        return "Foreign"
    if on_deployment is not None:
        if in_status is not None and in_status.same_fix(on_deployment):
            return "Agree"
        return "Adopt"
    if in_status is None:
        return "Nothing"
    return "Legacy" if legacy_annotation else "Gone"


def _values(raw: Any) -> ResourceValues:
    raw = raw or {}
    return ResourceValues(
        requests={str(k): str(v) for k, v in (raw.get("requests") or {}).items()},
        limits={str(k): str(v) for k, v in (raw.get("limits") or {}).items()},
    )


def _norm(values: ResourceValues) -> tuple[dict[str, str], dict[str, str]]:
    return dict(values.requests), dict(values.limits)


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment
