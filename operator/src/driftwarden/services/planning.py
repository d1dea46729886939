"""Whether a ModelOptimization asks for a new optimization run now, and which one.

Level-based: the answer depends only on spec and status, never on which event woke the
operator, so a restarted operator decides the same. A run is numbered
status.runCount + 1 and its id derives from that number (builders.names.run_id_for);
the run plan travels with the Job as an annotation so a Job found after a crash can be
written into status as if nothing had happened.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.api.status import ModelOptimizationStatus, Trigger


@dataclass(frozen=True)
class RunPlan:
    trigger: Trigger
    reason: str  # a sentence for a person
    # What starting this run consumes (written to status with it).
    run_request: str | None = None
    sequence: int = 0
    base_model_uri: str = ""

    def to_annotation(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_annotation(cls, text: str | None) -> RunPlan | None:
        if not text:
            return None
        try:
            raw = json.loads(text)
            return cls(
                trigger=Trigger(raw["trigger"]),
                reason=str(raw.get("reason") or ""),
                run_request=raw.get("run_request"),
                sequence=int(raw.get("sequence") or 0),
                base_model_uri=str(raw.get("base_model_uri") or ""),
            )
        except (ValueError, KeyError, TypeError):
            return None


def model_in_use(spec: ModelOptimizationSpec, status: ModelOptimizationStatus) -> str:
    """The model a run starts from: the promoted one, once there is one."""
    return status.promoted.current if status.promoted is not None else spec.model.uri


def wanted_run(
    spec: ModelOptimizationSpec, status: ModelOptimizationStatus, *, initial_run: bool
) -> RunPlan | None:
    """The run the resource asks for, ignoring whether it may start now (suspend, missing
    inputs): the caller checks those and says why it waits."""
    sequence = (status.run_count or 0) + 1
    base = model_in_use(spec, status)
    if spec.run_request is not None and spec.run_request != status.last_run_request:
        return RunPlan(
            Trigger.MANUAL,
            f"A run was requested (spec.runRequest={spec.run_request!r}).",
            run_request=spec.run_request,
            sequence=sequence,
            base_model_uri=base,
        )
    if initial_run and not status.run_count and not status.runs:
        return RunPlan(
            Trigger.INITIAL,
            "The resource was created: a first run of its pipeline.",
            sequence=sequence,
            base_model_uri=base,
        )
    return None
