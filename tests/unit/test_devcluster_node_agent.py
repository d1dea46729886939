"""The node agent's kubelet logic that needs no cluster: env expansion, downward API, status."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from devcluster.node_agent.config import parse_taint
from devcluster.node_agent.container_spec import identity_of, interpreter_paths
from devcluster.node_agent.envvars import EnvError, expand, expand_command, resolve_env
from devcluster.node_agent.gpus import GpuAllocator, gpus_requested
from devcluster.node_agent.informer import Informer
from devcluster.node_agent.kube import WatchExpiredError
from devcluster.node_agent.launch_spec import BindMount, LaunchSpec
from devcluster.node_agent.pod_ips import PodIPAllocator
from devcluster.node_agent.pod_status import ContainerView, PodView, build_status
from devcluster.node_agent.quantity import parse_quantity

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "a"),
        ("x$(A)y$(B)z", "xaybz"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$a"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("cost $5", "cost $5"),
        ("end$", "end$"),
        ("$()", "$()"),
        ("$(A)$(A)", "aa"),
    ],
)
def test_expansion_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"A": "a", "B": "b"}) == expected


POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
    "spec": {"nodeName": "devnode", "serviceAccountName": "sa"},
}


def getter(kind: str, name: str) -> dict[str, Any] | None:
    objects = {
        ("configmaps", "cfg"): {"data": {"mode": "fast", "level": "3"}},
        ("secrets", "creds"): {"data": {"user": base64.b64encode(b"alice").decode()}},
    }
    return objects.get((kind, name))


def test_env_resolves_sources_in_kubelet_order() -> None:
    container = {
        "name": "main",
        "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "cfg"}}],
        "env": [
            {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
            {"name": "GREETING", "value": "hi $(USER) on $(NODE)"},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "CFG_mode", "value": "slow"},
            {
                "name": "OPT",
                "valueFrom": {"configMapKeyRef": {"name": "none", "key": "k", "optional": True}},
            },
        ],
        "command": ["run", "$(GREETING)", "$(KUBERNETES_SERVICE_HOST)"],
    }
    env = resolve_env(
        POD,
        container,
        {"KUBERNETES_SERVICE_HOST": "127.0.0.1"},
        get=getter,
        pod_ip="127.9.0.1",
        host_ip="127.0.0.1",
        node_allocatable={},
    )
    # NODE is defined after GREETING, so GREETING keeps the reference as written.
    assert env["GREETING"] == "hi alice on $(NODE)"
    assert env["CFG_mode"] == "slow" and env["CFG_level"] == "3"
    assert (env["NODE"], env["APP"], env["IP"]) == ("devnode", "x", "127.9.0.1")
    assert "OPT" not in env
    assert expand_command(container, env) == ["run", "hi alice on $(NODE)", "127.0.0.1"]


def test_missing_secret_key_is_a_config_error() -> None:
    container = {
        "name": "main",
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope"}}}],
    }
    with pytest.raises(EnvError, match="couldn't find key nope"):
        resolve_env(POD, container, {}, get=getter, pod_ip="", host_ip="", node_allocatable={})


def test_resource_field_ref_rounds_up_and_defaults_to_allocatable() -> None:
    pod = {
        **POD,
        "spec": {"containers": [{"name": "main", "resources": {"limits": {"cpu": "250m"}}}]},
    }
    container = {
        "name": "main",
        "env": [
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
        ],
    }
    env = resolve_env(
        pod,
        container,
        {},
        get=getter,
        pod_ip="",
        host_ip="",
        node_allocatable={"memory": "16Gi"},
    )
    assert env == {"CPU": "1", "MEM": "16384"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", "0.5"), ("16Gi", str(16 * 2**30)), ("1e3", "1000"), ("2", "2"), ("1k", "1000")],
)
def test_quantities(text: str, value: str) -> None:
    assert parse_quantity(text) == Decimal(value)


def test_taints_parse_like_kubectl() -> None:
    assert parse_taint("gpu=true:NoSchedule") == {
        "key": "gpu",
        "value": "true",
        "effect": "NoSchedule",
    }
    assert parse_taint("dedicated:NoExecute") == {"key": "dedicated", "effect": "NoExecute"}


def test_run_as_non_root_without_a_user_is_refused() -> None:
    container = {"name": "main", "securityContext": {"runAsNonRoot": True}}
    with pytest.raises(EnvError, match="runAsNonRoot"):
        identity_of(POD, container)
    pod = {**POD, "spec": {"securityContext": {"runAsUser": 1000, "fsGroup": 2000}}}
    identity = identity_of(pod, container)
    assert (identity.uid, identity.gid, identity.groups) == (1000, None, [2000])


def test_pod_addresses_are_unique_loopback_addresses() -> None:
    taken = {"127.1.0.2"}
    allocator = PodIPAllocator("n", lambda address: address in taken)
    allocator._block = 1  # pin the node's block for a readable assertion
    first = allocator.allocate("a")
    second = allocator.allocate("b")
    assert (first, second) == ("127.1.0.1", "127.1.0.3")
    assert allocator.allocate("a") == first
    allocator.release("a")
    assert allocator.allocate("c", preferred=first) == first


def test_gpus_go_to_containers_that_request_them() -> None:
    gpus = GpuAllocator(["0", "1"])
    container = {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
    assert gpus_requested(container) == 1
    assert gpus.assign("pod-a/main", 1) == ["0"]
    assert gpus.assign("pod-a/main", 1) == ["0"]  # a restart keeps its device
    with pytest.raises(RuntimeError):
        gpus.assign("pod-b/main", 2)
    gpus.release_prefix("pod-a/")
    assert gpus.assign("pod-b/main", 2) == ["1", "0"]
    assert GpuAllocator.visible_devices_env([])["CUDA_VISIBLE_DEVICES"] == ""


def _view(phase: str, ready: bool, *, waiting_init: bool = False) -> PodView:
    status = {"name": "main", "state": {"running": {}}}
    return PodView(
        phase=phase,
        sandbox_ready=True,
        init=[ContainerView("setup", {"name": "setup"}, False, not waiting_init)],
        main=[ContainerView("main", status, ready, True)],
        pod_ip="127.5.0.1",
        host_ip="127.0.0.1",
        start_time="2026-01-01T00:00:00Z",
    )


def test_status_conditions_keep_other_owners_and_transition_times() -> None:
    pod = {
        "spec": {},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "t0"},
                {"type": "Ready", "status": "False", "lastTransitionTime": "t1"},
            ]
        },
    }
    status = build_status(pod, _view("Running", ready=False), "t2")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["PodScheduled"]["lastTransitionTime"] == "t0"
    assert conditions["Ready"]["lastTransitionTime"] == "t1"  # unchanged status
    assert conditions["Ready"]["reason"] == "ContainersNotReady"
    ready = build_status(pod, _view("Running", ready=True), "t3")
    conditions = {c["type"]: c for c in ready["conditions"]}
    assert conditions["Ready"] == {
        "type": "Ready",
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": "t3",
    }
    assert ready["podIP"] == "127.5.0.1" and ready["podIPs"] == [{"ip": "127.5.0.1"}]


def test_status_of_a_pod_waiting_for_init_and_of_a_finished_pod() -> None:
    pod: dict[str, Any] = {"spec": {}, "status": {}}
    pending = build_status(pod, _view("Pending", False, waiting_init=True), "t")
    initialized = next(c for c in pending["conditions"] if c["type"] == "Initialized")
    assert initialized["status"] == "False"
    assert initialized["message"] == "containers with incomplete status: [setup]"
    done = build_status(pod, _view("Succeeded", False), "t")
    ready = next(c for c in done["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PodCompleted")


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")
def test_container_init_mounts_then_drops_to_the_pods_user(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "input").write_text("from the host")
    # Mount paths that do not exist on the host, at the top and deeper down.
    top = f"/devcluster-unit-{os.getpid()}"
    nested = f"/var/tmp/devcluster-unit-{os.getpid()}/config"
    code = (
        "import json, os, socket; "
        f"print(json.dumps([os.getuid(), os.getgid(), socket.gethostname(), "
        f"open('{top}/input').read(), open('{nested}/input').read(), "
        f"os.access('{top}', os.W_OK), os.getcwd(), os.path.isdir('/usr/bin')]))"
    )
    scratch = tmp_path / "root"
    scratch.mkdir()
    spec = LaunchSpec(
        argv=["python", "-c", code],
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
        working_dir="/tmp",
        hostname="unit-pod",
        mounts=[
            BindMount(str(volume), top, read_only=True),
            BindMount(str(volume), nested, read_only=True),
        ],
        uid=65532,
        gid=65532,
        keep_reachable=interpreter_paths(),
        no_new_privileges=True,
        scratch_dir=str(scratch),
    )
    spec_path = tmp_path / "spec.json"
    spec.write(spec_path)
    result = subprocess.run(
        [sys.executable, "-I", "-m", "devcluster.node_agent.container_init", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        65532,
        65532,
        "unit-pod",
        "from the host",
        "from the host",
        False,
        "/tmp",
        True,
    ]
    assert not spec_path.exists()  # it may hold secrets: read once, then removed
    # The mount points were made inside the container's namespace only.
    assert not Path(top).exists()
    assert not Path(nested).parent.exists()


class ScriptedKube:
    """Answers the informer's list and watch calls from a script, like an API server would."""

    def __init__(self) -> None:
        self.lists = 0
        self.watched_from: list[str] = []
        self.stop = threading.Event()

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        self.lists += 1
        items = [{"metadata": {"uid": "a", "name": "a", "resourceVersion": "1"}}]
        if self.lists > 1:
            items = [{"metadata": {"uid": "c", "name": "c", "resourceVersion": "9"}}]
        return {"metadata": {"resourceVersion": str(self.lists * 10)}, "items": items}

    def watch(self, path: str, *, timeout_seconds: int, **query: Any) -> Any:
        self.watched_from.append(query["resourceVersion"])
        if len(self.watched_from) == 1:
            yield {"type": "ADDED", "object": {"metadata": {"uid": "b", "resourceVersion": "11"}}}
            yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}
            return  # the server ended the watch: resume from the bookmark
        if len(self.watched_from) == 2:
            yield {"type": "DELETED", "object": {"metadata": {"uid": "a", "resourceVersion": "16"}}}
            raise WatchExpiredError("too old resource version")
        self.stop.set()
        return


def test_informer_resumes_watches_and_lists_again_after_410() -> None:
    kube = ScriptedKube()
    seen: list[set[str]] = []
    informer = Informer(
        kube,  # type: ignore[arg-type]
        "/api/v1/pods",
        on_change=lambda: seen.append(set(informer.snapshot())),
        stop=kube.stop,
    )
    informer.run()
    assert kube.watched_from == ["10", "15", "20"]
    assert seen == [{"a"}, {"a", "b"}, {"b"}, {"c"}]  # the relist replaced the cache
    assert kube.lists == 2
