"""What one pass of the closed loop knows, and what its parts share.

The reconcile pass builds one ``LoopContext`` per pass; the loop's parts (evaluations,
promotions, temporary fixes, target writes) are ``LoopStep``s on it. ``status`` is the pass's
working copy, changed in place: the pass writes it once, conditional on the resourceVersion
it read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from driftwarden.api import conditions as cond
from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.api.status import ModelOptimizationStatus
from driftwarden.builders.job import Owner
from driftwarden.config import OperatorConfig
from driftwarden.k8s import Kube
from driftwarden.metrics import OperatorMetrics
from driftwarden.services.target import TargetApi
from driftwarden.services.watches import ClaimWatch

Json = dict[str, Any]
EventType = Literal["Normal", "Warning"]
Emit = Callable[[EventType, str, str], None]


@dataclass
class LoopContext:
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
    # What only the operator can see and the user must fix, found during this pass
    # (reason, message): the pass sets Ready=False with the first one.
    problems: list[tuple[str, str]] = field(default_factory=list)
    # When the policies want to look again without any event (driftwarden.policy.pacing).
    checks: list[datetime | None] = field(default_factory=list)
    claims: ClaimWatch = field(default_factory=ClaimWatch)
    # Claims found missing in this pass: their creation wakes the resource.
    missing_claims: set[str] = field(default_factory=set)


class LoopStep:
    """A part of the loop: the context, and conditions and events the way all parts set them."""

    def __init__(self, context: LoopContext) -> None:
        self.ctx = context
        self.spec = context.spec
        self.status = context.status
        self.now = context.now

    @property
    def namespace(self) -> str:
        return self.ctx.owner.namespace

    @property
    def name(self) -> str:
        return self.ctx.owner.name

    def _set(self, type_: str, status: cond.ConditionStatus, reason: str, message: str) -> bool:
        """Set a condition; True when it changed (post an event only then)."""
        return cond.set_condition(
            self.status.conditions, type_, status, reason, message, self.ctx.generation, self.now
        )

    def _emit(self, type_: EventType, reason: str, message: str) -> None:
        self.ctx.emit(type_, reason, message)

    def _problem(self, reason: str, message: str) -> None:
        self.ctx.problems.append((reason, message))

    def _check_at(self, when: datetime | None) -> None:
        """Look at this resource again at ``when`` even if no event comes."""
        self.ctx.checks.append(when)

    def _missing_claims(self, claims: list[str]) -> list[str]:
        missing = [
            c for c in claims if not self.ctx.claims.exists(self.ctx.kube, self.namespace, c)
        ]
        self.ctx.missing_claims.update(missing)
        return missing


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
