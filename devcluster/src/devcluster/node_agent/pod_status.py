"""The status a Pod reports: phase, conditions and container statuses (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass

from devcluster.node_agent.kube import Obj

OWN_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")


@dataclass(frozen=True)
class ContainerView:
    """What the status needs to know about one container."""

    name: str
    status: Obj  # a ContainerStatus
    ready: bool
    done: bool  # an init container that succeeded, or a sidecar that has started


@dataclass(frozen=True)
class PodView:
    phase: str
    sandbox_ready: bool
    init: list[ContainerView]
    main: list[ContainerView]
    pod_ip: str
    host_ip: str
    start_time: str | None
    reason: str = ""
    message: str = ""


def _condition(
    kind: str, ok: bool, reason: str, message: str, previous: dict[str, Obj], stamp: str
) -> Obj:
    status = "True" if ok else "False"
    before = previous.get(kind)
    transition = (
        before["lastTransitionTime"]
        if before and before.get("status") == status and before.get("lastTransitionTime")
        else stamp
    )
    condition: Obj = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": transition,
    }
    if not ok and reason:
        condition["reason"] = reason
        if message:
            condition["message"] = message
    return condition


def _names(views: list[ContainerView]) -> str:
    return "[" + " ".join(v.name for v in views) + "]"


def build_conditions(pod: Obj, view: PodView, stamp: str) -> list[Obj]:
    """Our conditions, plus those other components own (PodScheduled, DisruptionTarget, gates)."""
    current = pod.get("status", {}).get("conditions") or []
    previous = {c["type"]: c for c in current}
    terminal = view.phase in ("Succeeded", "Failed")
    pending_init = [v for v in view.init if not v.done]
    unready = [v for v in view.main if not v.ready]
    gates = [g["conditionType"] for g in pod.get("spec", {}).get("readinessGates") or []]
    gates_false = [g for g in gates if previous.get(g, {}).get("status") != "True"]
    if terminal:
        ready_reason, ready_message = "PodCompleted", ""
    elif unready:
        ready_reason = "ContainersNotReady"
        ready_message = f"containers with unready status: {_names(unready)}"
    else:
        ready_reason, ready_message = "", ""
    ours = [
        _condition(
            "PodReadyToStartContainers",
            view.sandbox_ready and not terminal,
            "",
            "",
            previous,
            stamp,
        ),
        _condition(
            "Initialized",
            not pending_init,
            "ContainersNotInitialized",
            f"containers with incomplete status: {_names(pending_init)}",
            previous,
            stamp,
        ),
        _condition(
            "ContainersReady",
            not terminal and not unready,
            ready_reason,
            ready_message,
            previous,
            stamp,
        ),
    ]
    ready_ok = not terminal and not unready and not gates_false
    if ready_ok or ready_reason:
        ours.append(_condition("Ready", ready_ok, ready_reason, ready_message, previous, stamp))
    else:
        ours.append(
            _condition(
                "Ready",
                False,
                "ReadinessGatesNotReady",
                f"corresponding condition of pod readiness gate {gates_false} is not True",
                previous,
                stamp,
            )
        )
    others = [c for c in current if c["type"] not in OWN_CONDITIONS]
    return others + ours


def build_status(pod: Obj, view: PodView, stamp: str) -> Obj:
    status: Obj = {
        "phase": view.phase,
        "conditions": build_conditions(pod, view, stamp),
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "containerStatuses": [v.status for v in view.main],
        "reason": view.reason or None,
        "message": view.message or None,
    }
    generation = pod.get("metadata", {}).get("generation")
    if generation is not None:
        status["observedGeneration"] = generation
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if view.start_time:
        status["startTime"] = view.start_time
    if view.init:
        status["initContainerStatuses"] = [v.status for v in view.init]
    return status
