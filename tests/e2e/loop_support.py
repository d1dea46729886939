"""Shared steps of the closed-loop e2e tests (tests/e2e/test_loop_*.py).

The tests drive the devcluster as a user would: `kubectl apply` a serving Deployment
(examples/serving) and a ModelOptimization, run the operator, change data or spec, and read
`kubectl get`/`describe` output, Deployment fields, the server's own /healthz and the
operator's /metrics. Data and models are files under the e2e scratch root (file:// URIs,
visible to the node agent's containers like a hostPath).
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from operator_process import OperatorProcess, get_json, scratch_dir, wait_for

from devcluster.controlplane import Cluster
from optimizer_job.example import digits_tables
from optimizer_job.modelio import build_model, save_model

PROJECT = Path(__file__).resolve().parents[2]
SERVER_MANIFEST = PROJECT / "examples" / "serving" / "deployment.yaml"
RESYNC = 2.0
SLOW_FACTORY = "optimizer_job.zoo:small_cnn"
# Wide enough that pruning 80 % of its channels makes it several times faster, and slow
# enough that its p95 at batch 32 is always over a 1 ms SLO.
WIDE_CNN = {
    "in_channels": 1,
    "num_classes": 10,
    "image_size": 16,
    "channels": [128, 256, 256],
    "hidden": 128,
}


def start_loop_operator(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    log_dir: Path,
    *,
    crash_at: str | None = None,
) -> OperatorProcess:
    """The operator for one namespace, without the on-create run: the triggers start runs.
    ``crash_at``: a crash point (driftwarden.crashpoints) for this first start only."""
    operator = OperatorProcess(
        devcluster.kubeconfig,
        [namespace],
        log_dir / "operator.log",
        resync_seconds=RESYNC,
        extra_args=["--no-initial-run"],
    )
    operators.append(operator)
    return operator.start(crash_at=crash_at)


def apply_yaml(devcluster: Cluster, namespace: str, body: dict[str, Any] | str) -> None:
    text = body if isinstance(body, str) else yaml.safe_dump(body)
    devcluster.kubectl("apply", "-n", namespace, "-f", "-", input=text)


def serving_deployment(model_uri: str, *, name: str) -> dict[str, Any]:
    """examples/serving/deployment.yaml with a file:// model instead of the demo's claim
    (the devcluster's containers see the host's files), renamed to ``name``."""
    body: dict[str, Any] = yaml.safe_load(SERVER_MANIFEST.read_text())
    labels = {"app.kubernetes.io/name": name}
    body["metadata"]["name"] = name
    body["metadata"]["labels"] = dict(labels)
    body["spec"]["selector"] = {"matchLabels": dict(labels)}
    template = body["spec"]["template"]
    template["metadata"]["labels"] = dict(labels)
    pod = template["spec"]
    (container,) = pod["containers"]
    for env in container["env"]:
        if env["name"] == "MODEL_URI":
            env["value"] = model_uri
    container.pop("volumeMounts", None)
    pod.pop("volumes", None)
    return body


def slow_model_and_data() -> tuple[Path, Path]:
    """The wide CNN (freshly initialized: the latency tests are about speed) and the digits
    tables, under a fresh scratch root with an empty ``artifacts`` directory: (root, data)."""
    root = scratch_dir("loop-latency-")
    data = root / "data"
    data.mkdir()
    for name, table in digits_tables("cnn", 0).items():
        np.savez(data / f"{name}.npz", X=table.X, y=table.y)
    torch.manual_seed(0)
    save_model(
        build_model(SLOW_FACTORY, WIDE_CNN),
        SLOW_FACTORY,
        WIDE_CNN,
        root / "model",
        {"label_column": "label"},
        input_shape=[1, 16, 16],
        num_classes=10,
    )
    (root / "artifacts").mkdir()
    for path in [root, *root.rglob("*")]:
        shutil.chown(path, user=65532, group=65532)
    return root, data


TABLES = ("reference", "current", "holdout")
JOB = {"resources": {"cpu": "500m", "memory": "1Gi"}}


def loop_resource(
    name: str,
    *,
    model: str,
    data: Path,
    artifacts: Path,
    spec: dict[str, Any],
    target: str | dict[str, Any] | None = None,
    data_format: str = "parquet",
) -> dict[str, Any]:
    """A ModelOptimization of the loop tests: ``model``, the three tables under ``data``
    (``<table>.<data_format>``), ``artifacts``, an optional ``target`` (a Deployment's name
    or the whole field), and ``spec``'s fields as the CRD names them (pipeline, gates,
    triggers, monitoring, runRequest, ...); the Job asks for 500m CPU and 1Gi."""
    body: dict[str, Any] = {
        "model": {"uri": model},
        "data": {table: f"file://{data}/{table}.{data_format}" for table in TABLES},
        "artifacts": {"uri": f"file://{artifacts}"},
        "job": JOB,
    }
    if target is not None:
        body["target"] = {"deployment": target} if isinstance(target, str) else target
    body |= spec
    return {
        "apiVersion": "driftwarden.io/v1alpha1",
        "kind": "ModelOptimization",
        "metadata": {"name": name},
        "spec": body,
    }


def always_breached(
    name: str,
    root: Path,
    data: Path,
    server: str,
    *,
    fix: dict[str, Any],
    interval: str = "10s",
    cooldown: str | None = "1h",
    gates: dict[str, Any] | None = None,
    breaches: int = 1,
) -> dict[str, Any]:
    """A resource on slow_model_and_data()'s wide CNN whose SLO every evaluation breaches
    (p95 at batch 32 <= 1 ms), with the temporary fix ``fix`` and at most one latency run a
    day (an int8 quantization; ``gates`` decide whether it can be promoted)."""
    latency = {"p95Ms": 1, "batchSize": 32, "consecutiveBreaches": breaches}
    triggers: dict[str, Any] = {"latency": latency, "maxRunsPerDay": 1}
    if cooldown is not None:
        triggers["cooldown"] = cooldown
    spec: dict[str, Any] = {
        "pipeline": [{"quantize": {"mode": "int8"}}],
        "triggers": triggers,
        "temporaryFix": fix,
        "monitoring": {
            "interval": interval,
            "latency": {"batchSizes": [32], "warmup": 2, "iterations": 10},
        },
    }
    if gates is not None:
        spec["gates"] = gates
    return loop_resource(
        name,
        model=f"file://{root}/model",
        data=data,
        artifacts=root / "artifacts",
        target=server,
        data_format="npz",
        spec=spec,
    )


def copy_tree(source: Path, prefix: str) -> Path:
    """A writable copy the Jobs' user can read and write."""
    target = scratch_dir(prefix)
    shutil.copytree(source, target, dirs_exist_ok=True)
    for path in [target, *target.rglob("*")]:
        shutil.chown(path, user=65532, group=65532)
    return target


def mo_status(devcluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get_json(devcluster, "mo", name, "-n", namespace).get("status") or {}
    return status


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for item in status.get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return {}


def container_of(workload: dict[str, Any], name: str = "server") -> dict[str, Any]:
    """A container of a Deployment (its template) or of a Pod."""
    spec = workload["spec"]
    pod = spec["template"]["spec"] if "template" in spec else spec
    for container in pod["containers"]:
        if container["name"] == name:
            return dict(container)
    raise AssertionError(f"no container {name}")


def deployment(devcluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = get_json(
        devcluster, "deployment", name, "-n", namespace, "--show-managed-fields"
    )
    return body


def describe(devcluster: Cluster, namespace: str, name: str) -> str:
    return devcluster.kubectl("describe", "mo", name, "-n", namespace).stdout


def event_reasons(devcluster: Cluster, namespace: str, name: str) -> list[str]:
    return [reason for reason, _ in events_of(devcluster, namespace, name)]


def events_of(devcluster: Cluster, namespace: str, name: str) -> list[tuple[str, str]]:
    """(reason, message) of the resource's events, oldest first."""
    found = get_json(
        devcluster,
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=ModelOptimization",
    )
    items = sorted(
        found["items"], key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["name"])
    )
    return [(str(e["reason"]), str(e.get("message") or "")) for e in items]


def serving_pods(devcluster: Cluster, namespace: str, app: str) -> list[dict[str, Any]]:
    found = get_json(devcluster, "pods", "-n", namespace, "-l", f"app.kubernetes.io/name={app}")
    return [p for p in found["items"] if not p["metadata"].get("deletionTimestamp")]


def pod_readyz(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The /readyz answer of the server in a Ready Pod (None while it is not ready)."""
    ip = pod.get("status", {}).get("podIP")
    ready = any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )
    if not ip or not ready:
        return None
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/readyz", timeout=5) as response:
            answer: dict[str, Any] = json.load(response)
            return answer
    except OSError:
        return None


def served_model(pod: dict[str, Any]) -> str | None:
    """What the server in a Ready Pod says it serves (its /readyz)."""
    answer = pod_readyz(pod)
    return None if answer is None else str(answer["model"])


def wait_serving(
    devcluster: Cluster,
    namespace: str,
    app: str,
    model_uri: str,
    operator: OperatorProcess | None,
) -> dict[str, Any]:
    """The Deployment's Pods have rolled: exactly one Pod is left and it serves model_uri."""

    def check() -> dict[str, Any] | None:
        pods = serving_pods(devcluster, namespace, app)
        if len(pods) == 1 and served_model(pods[0]) == model_uri:
            return pods[0]
        return None

    try:
        return wait_for(f"a Pod of {app} serving {model_uri}", check, 300, operator, interval=2)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{describe_pods(devcluster, namespace, app)}") from None


def describe_pods(devcluster: Cluster, namespace: str, app: str) -> str:
    """What the node agent said of an app's Pods: phase, conditions, container states and
    the Pods' events (a failed wait shows why the Pod never became ready)."""
    found = get_json(devcluster, "pods", "-n", namespace, "-l", f"app.kubernetes.io/name={app}")
    lines = []
    for pod in found["items"]:
        status = pod.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        containers = [
            {k: c.get(k) for k in ("name", "ready", "restartCount", "state", "lastState")}
            for c in status.get("containerStatuses") or []
        ]
        lines.append(
            f"pod {pod['metadata']['name']} "
            f"deleting={bool(pod['metadata'].get('deletionTimestamp'))} "
            f"phase={status.get('phase')} conditions={conditions} containers={containers}"
        )
    events = get_json(devcluster, "events", "-n", namespace)
    for event in events["items"]:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") == "Pod" and str(involved.get("name", "")).startswith(app):
            lines.append(
                f"event {involved.get('name')} {event.get('reason')} x{event.get('count', 1)}: "
                f"{event.get('message')}"
            )
    return "\n".join(lines)


def metric(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of one sample in a Prometheus text exposition, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(4))
    return None


def evaluation_number(status: dict[str, Any]) -> int:
    """The sequence number of the last *finished* evaluation (its id is "e<n>-<hash>"), 0
    before the first. status.evaluationCount counts evaluations started, not finished."""
    found = re.fullmatch(r"e(\d+)-[0-9a-f]+", (status.get("lastEvaluation") or {}).get("id") or "")
    return int(found.group(1)) if found else 0


def evaluated_since(status: dict[str, Any], earlier: dict[str, Any], count: int) -> bool:
    """``count`` evaluations that started after ``earlier`` was read have finished and been
    judged. This never waits for a moment with no evaluation active: when an evaluation
    outlasts monitoring.interval (a busy machine) the next one starts at once."""
    return evaluation_number(status) >= (earlier.get("evaluationCount") or 0) + count


def wait_status(
    what: str,
    devcluster: Cluster,
    namespace: str,
    name: str,
    check: Any,
    operator: OperatorProcess,
    timeout: float = 300,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = mo_status(devcluster, namespace, name)
        return status if check(status) else None

    return wait_for(what, probe, timeout, operator, interval=1)
