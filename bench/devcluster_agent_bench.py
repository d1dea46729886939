"""The devcluster node agent: Pod start latency and the agent's memory.

    nice .venv/bin/python bench/devcluster_agent_bench.py [--state-dir DIR] [--pods 10]

Without --state-dir it starts its own devcluster in a temporary directory and tears it down.
Latencies are measured from just before the Pod's POST to the watch event that shows the
state (Running / Ready / Succeeded), sequentially, one Pod at a time. First it times
`container_init` alone (the per-container cost: namespaces, mounts, user switch, exec of
`true`).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devcluster.controlplane import Cluster
from devcluster.node_agent.container_spec import interpreter_paths
from devcluster.node_agent.kube import Kube
from devcluster.node_agent.launch_spec import BindMount, LaunchSpec

Obj = dict[str, Any]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pod(name: str, command: list[str], *, probe: bool = False) -> Obj:
    container: Obj = {"name": "main", "image": "bench", "command": command}
    if probe:
        container["env"] = [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
        ]
        container["readinessProbe"] = {
            "httpGet": {"path": "/", "port": 8080},
            "periodSeconds": 1,
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    }


def is_running(p: Obj) -> bool:
    return bool(p.get("status", {}).get("phase") == "Running")


def is_ready(p: Obj) -> bool:
    conditions = p.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def is_succeeded(p: Obj) -> bool:
    return bool(p.get("status", {}).get("phase") == "Succeeded")


def time_pod(kube: Kube, namespace: str, body: Obj, done: Callable[[Obj], bool]) -> float:
    base = f"/api/v1/namespaces/{namespace}/pods"
    name = body["metadata"]["name"]
    listed = kube.get(base)
    start = time.perf_counter()
    kube.create(base, body)
    for event in kube.watch(
        base,
        timeout_seconds=120,
        resourceVersion=listed["metadata"]["resourceVersion"],
        fieldSelector=f"metadata.name={name}",
    ):
        if done(event["object"]):
            return time.perf_counter() - start
    raise TimeoutError(f"pod {name} did not get there")


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"median {statistics.median(ms):.0f} ms (min {ms[0]:.0f}, max {ms[-1]:.0f}, n={len(ms)})"


def time_container_init(rounds: int = 7) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        volume = root / "volume"
        volume.mkdir()
        cases = {
            "existing mount path": "/tmp",
            "missing nested path (tmpfs shadow)": "/var/run/devcluster-bench/x",
            "missing top-level path (private root)": "/devcluster-bench",
        }
        for label, target in cases.items():
            for uid in (None, 65532):
                times = []
                for i in range(rounds):
                    container_dir = root / f"c-{abs(hash(label))}-{uid}-{i}"
                    container_dir.mkdir()
                    spec = LaunchSpec(
                        argv=["true"],
                        env={"PATH": "/usr/bin:/bin"},
                        mounts=[BindMount(str(volume), target)],
                        uid=uid,
                        gid=uid,
                        keep_reachable=interpreter_paths(),
                        scratch_dir=str(container_dir),
                    )
                    spec_path = root / "spec.json"
                    spec.write(spec_path)
                    start = time.perf_counter()
                    subprocess.run(
                        [
                            sys.executable,
                            "-I",
                            "-m",
                            "devcluster.node_agent.container_init",
                            str(spec_path),
                        ],
                        check=True,
                    )
                    times.append(time.perf_counter() - start)
                print(f"container_init, {label}, uid {uid or 0}: {summary(times)}")


def run(cluster: Cluster, count: int) -> None:
    kube = Kube(cluster.kubeconfig)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    agent_pid = cluster.state.pids["node-devnode"]
    print(f"agent RSS idle: {rss_mib(agent_pid):.1f} MiB")
    try:
        sleeper = ["python", "-c", "import time; time.sleep(600)"]
        running = [
            time_pod(kube, namespace, pod(f"run-{i}", sleeper), is_running) for i in range(count)
        ]
        print(f"create -> Running: {summary(running)}")
        print(f"agent RSS with {count} running pods: {rss_mib(agent_pid):.1f} MiB")
        server = ["python", "-m", "http.server", "--bind", "$(POD_IP)", "8080"]
        ready = [
            time_pod(kube, namespace, pod(f"web-{i}", server, probe=True), is_ready)
            for i in range(count)
        ]
        print(f"create -> Ready (python http.server, httpGet readiness): {summary(ready)}")
        print(f"agent RSS with {2 * count} running pods: {rss_mib(agent_pid):.1f} MiB")
        trivial = ["python", "-c", "pass"]
        finished = [
            time_pod(kube, namespace, pod(f"once-{i}", trivial), is_succeeded) for i in range(count)
        ]
        print(f"create -> Succeeded (python -c pass): {summary(finished)}")
    finally:
        kube.delete(f"/api/v1/namespaces/{namespace}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--pods", type=int, default=10)
    args = parser.parse_args()
    time_container_init()
    if args.state_dir:
        run(Cluster(args.state_dir), args.pods)
        return
    with tempfile.TemporaryDirectory() as scratch:
        cluster = Cluster(Path(scratch) / "state")
        started = time.perf_counter()
        cluster.up()
        print(f"devcluster up: {time.perf_counter() - started:.1f} s")
        try:
            run(cluster, args.pods)
        finally:
            cluster.down()


if __name__ == "__main__":
    main()
