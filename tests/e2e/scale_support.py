"""The scale scenario shared by tests/e2e/test_scale.py and bench/scale.py.

N ModelOptimizations made from examples/minimal.yaml (without its target) whose PVCs do not
exist, so no Job ever runs and the operator only reconciles. The operator runs as a real
process with its production resync period. Measured:

- create: the resources are POSTed by CREATE_WORKERS threads at once over the REST API
  (kubectl's one-by-one creates took ~30 min for 10,000 here), with progress on stderr;
- settle: from the first create until every resource has a Ready condition for its
  generation (the operator's first pass of each one wrote status), and from the last
  create;
- reconcile p50/p99: from the operator's own histogram
  (driftwarden_reconcile_duration_seconds, interpolated like PromQL's histogram_quantile);
- the operator's RSS (VmRSS) with no resource and after the idle window, and its CPU over
  the idle window (utime + stime from /proc, as a percentage of one core);
- API requests per second over the same idle window: the operator's own, counted by the
  devcluster proxy it talks through (no faults); and all requests, and those on the
  resources the operator reads or writes whoever makes them, counted by kube-apiserver
  itself (apiserver_request_total from GET /metrics).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config, watch
from operator_process import OperatorProcess

from devcluster.controlplane import Cluster

PROJECT = Path(__file__).resolve().parents[2]
# The resources whose requests are the operator's (watches count once, when they start).
OPERATOR_RESOURCES = frozenset(
    {
        "modeloptimizations",
        "persistentvolumeclaims",
        "secrets",
        "jobs",
        "pods",
        "configmaps",
        "events",
        "deployments",
    }
)
_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CREATE_WORKERS = 16
CREATE_ATTEMPTS = 8  # a busy apiserver (429, 5xx, timeouts): try a create again


def bodies(namespace: str, count: int) -> list[dict[str, Any]]:
    """``count`` copies of examples/minimal.yaml named scale-<i>, without a target (so with
    Manual promotion): the claims it names (models, data) do not exist in ``namespace``."""
    example = yaml.safe_load((PROJECT / "examples" / "minimal.yaml").read_text())
    example["spec"].pop("target", None)
    example["spec"]["promotion"] = {"mode": "Manual"}  # Automatic needs a target
    made = []
    for index in range(count):
        body = json.loads(json.dumps(example))
        body["metadata"] = {"name": f"scale-{index:05d}", "namespace": namespace}
        made.append(body)
    return made


def manifests(namespace: str, count: int) -> str:
    """The same resources as one YAML stream, for kubectl."""
    return "---\n".join(yaml.safe_dump(body) for body in bodies(namespace, count))


def create_concurrently(
    cluster: Cluster,
    namespace: str,
    count: int,
    *,
    workers: int = CREATE_WORKERS,
    progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> None:
    """POST the scale resources with ``workers`` threads, reporting progress about every
    5 % and every 10 s. A create that found its resource there already (409: an earlier
    attempt got through before its answer was lost) counts as done."""
    configuration = client.Configuration()
    config.load_kube_config(str(cluster.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = workers
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    lock = threading.Lock()
    done = [0]
    started = last_report = time.monotonic()
    step = max(1, count // 20)

    def create(body: dict[str, Any]) -> None:
        nonlocal last_report
        for attempt in range(CREATE_ATTEMPTS):
            try:
                api.create_namespaced_custom_object(
                    "driftwarden.io",
                    "v1alpha1",
                    namespace,
                    "modeloptimizations",
                    body,
                    _preload_content=False,
                    _request_timeout=60,
                )
                break
            except client.ApiException as error:
                if error.status == 409:
                    break
                if error.status not in (429, 500, 502, 503, 504) or attempt == CREATE_ATTEMPTS - 1:
                    raise
            except (TimeoutError, OSError, urllib3.exceptions.HTTPError):
                if attempt == CREATE_ATTEMPTS - 1:
                    raise
            time.sleep(min(2.0**attempt * 0.2, 10.0))
        with lock:
            done[0] += 1
            now = time.monotonic()
            if done[0] % step == 0 or done[0] == count or now - last_report >= 10:
                last_report = now
                elapsed = now - started
                progress(
                    f"created {done[0]}/{count} in {elapsed:.1f} s "
                    f"({done[0] / max(elapsed, 1e-9):.0f}/s)"
                )

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="create") as pool:
        for finished in [pool.submit(create, body) for body in bodies(namespace, count)]:
            finished.result()


def request_counts(cluster: Cluster) -> dict[tuple[str, str], float]:
    """apiserver_request_total summed per (verb, resource)."""
    text = cluster.kubectl("get", "--raw", "/metrics").stdout
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        found = _SAMPLE.match(line)
        if found is None:
            continue
        labels = dict(_LABEL.findall(found["labels"]))
        key = (labels.get("verb", ""), labels.get("resource", ""))
        counts[key] = counts.get(key, 0.0) + float(found["value"])
    return counts


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def histogram_quantile(metrics_text: str, name: str, quantile: float) -> float | None:
    """PromQL's histogram_quantile over one histogram of a /metrics page."""
    buckets: list[tuple[float, float]] = []
    for line in metrics_text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            bound = re.search(r'le="([^"]+)"', line)
            if bound:
                buckets.append((float(bound.group(1)), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = quantile * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def _is_settled(item: dict[str, Any]) -> bool:
    generation = item["metadata"].get("generation")
    status = item.get("status") or {}
    ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
    return bool(
        status.get("observedGeneration") == generation
        and ready
        and ready[0].get("observedGeneration") == generation
    )


def wait_settled(
    cluster: Cluster, namespace: str, count: int, timeout: float, operator: OperatorProcess
) -> None:
    """Until ``count`` resources are settled: one LIST, then a watch from its version (a
    LIST of 10,000 resources every few seconds would load the apiserver it measures)."""
    configuration = client.Configuration()
    config.load_kube_config(str(cluster.kubeconfig), client_configuration=configuration)
    api = client.CustomObjectsApi(client.ApiClient(configuration))
    where = ("driftwarden.io", "v1alpha1", namespace, "modeloptimizations")
    deadline = time.monotonic() + timeout
    settled: set[str] = set()
    version: str | None = None
    while len(settled) < count:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(settled)} of {count} settled after {timeout:.0f} s:\n{operator.log_tail()}"
            )
        if not operator.running:
            raise AssertionError(f"the operator exited:\n{operator.log_tail()}")
        try:
            if version is None:
                response = api.list_namespaced_custom_object(
                    *where, _preload_content=False, _request_timeout=300
                )
                listing = json.loads(response.data)
                settled = {i["metadata"]["name"] for i in listing["items"] if _is_settled(i)}
                version = str(listing["metadata"]["resourceVersion"])
                continue
            stream = watch.Watch().stream(
                api.list_namespaced_custom_object,
                *where,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=60,
                _request_timeout=90,
            )
            for event in stream:
                body = event["object"]
                if event["type"] == "ERROR":  # 410: the version is too old
                    version = None
                    break
                version = str(body["metadata"]["resourceVersion"])
                name = body["metadata"].get("name")
                if event["type"] in ("ADDED", "MODIFIED") and _is_settled(body):
                    settled.add(name)
                elif event["type"] != "BOOKMARK":
                    settled.discard(name)
                if len(settled) >= count:
                    return
        except client.ApiException as error:
            if error.status == 410:
                version = None
            else:
                time.sleep(1)
        except (TimeoutError, OSError, urllib3.exceptions.HTTPError):
            time.sleep(1)  # a busy apiserver: watch again from the last version


def run_scale(
    cluster: Cluster,
    namespace: str,
    count: int,
    work: Path,
    *,
    idle_after: float = 10.0,
    idle_window: float = 60.0,
    settle_timeout: float | None = None,
    operator_src: str | None = None,
    via_proxy: bool = True,
) -> dict[str, Any]:
    """The scenario; a report of what was measured (see the module's docstring).

    ``via_proxy``: the operator talks to the apiserver through the devcluster's proxy with
    no faults, which counts exactly the operator's requests. The apiserver's own counts
    are per resource, whoever asks: on a shared cluster they include the controller-manager
    still deleting earlier tests' namespaces (the idle rate read 2.74/s that way in CI)."""
    proxy = cluster.start_fault_proxy({"enabled": False}) if via_proxy else None
    operator = OperatorProcess(
        proxy.kubeconfig if proxy is not None else cluster.kubeconfig,
        [namespace],
        work / "operator.log",
        resync_seconds=None,  # the production default
        extra_env={"PYTHONPATH": operator_src} if operator_src else None,
    )
    if settle_timeout is None:  # the goal is 10 min for 10,000; a busy machine is slower
        settle_timeout = max(900.0, 0.3 * count)
    report: dict[str, Any] = {"resources": count, "loadavg_start": os.getloadavg()}
    with operator.start(ready_timeout=180):
        assert operator.proc is not None
        pid = operator.proc.pid
        time.sleep(5)
        report["rss_mib_empty"] = round(rss_mib(pid), 1)
        started = time.monotonic()
        create_concurrently(cluster, namespace, count)
        created = time.monotonic()
        report["create_seconds"] = round(created - started, 1)
        wait_settled(cluster, namespace, count, settle_timeout, operator)
        report["settle_seconds"] = round(time.monotonic() - started, 1)
        report["settle_after_last_create_seconds"] = round(time.monotonic() - created, 1)
        report["rss_mib_settled"] = round(rss_mib(pid), 1)
        time.sleep(idle_after)
        cpu_before, requests_before = cpu_seconds(pid), request_counts(cluster)
        proxied_before = proxy.stats().get("requests", 0) if proxy is not None else 0
        window_started = time.monotonic()
        time.sleep(idle_window)
        requests_after, cpu_after = request_counts(cluster), cpu_seconds(pid)
        proxied_after = proxy.stats().get("requests", 0) if proxy is not None else 0
        elapsed = time.monotonic() - window_started
        report["idle_window_seconds"] = round(elapsed, 1)
        report["idle_cpu_percent"] = round(100 * (cpu_after - cpu_before) / elapsed, 2)
        delta = {
            key: value - requests_before.get(key, 0.0)
            for key, value in requests_after.items()
            if value - requests_before.get(key, 0.0) > 0
        }
        report["idle_requests_per_second"] = round(sum(delta.values()) / elapsed, 2)
        on_operator_resources = sum(
            v for (_, resource), v in delta.items() if resource in OPERATOR_RESOURCES
        )
        report["idle_requests_on_operator_resources_per_second"] = round(
            on_operator_resources / elapsed, 2
        )
        # The operator's own: counted by the proxy it talks through, else (a cluster of
        # its own, as bench/scale.py --direct) by the apiserver on its resources.
        report["idle_operator_requests_per_second"] = round(
            ((proxied_after - proxied_before) if proxy is not None else on_operator_resources)
            / elapsed,
            2,
        )
        report["idle_operator_requests_counted_by"] = "proxy" if proxy is not None else "apiserver"
        if proxy is not None:  # from the start: at least one status write per resource
            report["operator_requests_total"] = proxied_after
        report["idle_requests_by_verb_resource"] = {
            f"{verb} {resource}": round(value / elapsed, 3)
            for (verb, resource), value in sorted(delta.items(), key=lambda kv: -kv[1])[:12]
        }
        report["rss_mib_idle"] = round(rss_mib(pid), 1)
        metrics = operator.metrics()
        for quantile in (0.5, 0.99):
            value = histogram_quantile(metrics, "driftwarden_reconcile_duration_seconds", quantile)
            report[f"reconcile_p{int(quantile * 100)}_seconds"] = (
                None if value is None else round(value, 4)
            )
        passes = re.search(r"^driftwarden_reconcile_duration_seconds_count (\S+)$", metrics, re.M)
        report["reconcile_passes"] = int(float(passes.group(1))) if passes else None
    report["loadavg_end"] = os.getloadavg()
    return report
