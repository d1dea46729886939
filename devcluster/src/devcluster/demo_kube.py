"""What the demo does to the cluster: kubectl and helm as a user types them, and waiting.

Everything goes through the real command-line tools against the devcluster's API server, so
each step is one the user can repeat by hand (the demo prints how).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config

from devcluster import build
from devcluster.controlplane import Cluster

T = TypeVar("T")
Json = dict[str, Any]


class StepTimeoutError(Exception):
    """A step did not happen in time; the message says what was awaited and what was seen."""


class DemoKube:
    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self._api: client.ApiClient | None = None

    @property
    def api(self) -> client.ApiClient:
        """An API client for polling: cheaper than starting kubectl every few seconds on
        a machine whose two cores also run the cluster and the Jobs being timed."""
        if self._api is None:
            self._api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.cluster.kubeconfig)
            )
        return self._api

    def custom(self, plural: str, name: str) -> Json | None:
        """A driftwarden.io object of the demo namespace; None when it does not exist."""
        api = client.CustomObjectsApi(self.api)
        try:
            value = api.get_namespaced_custom_object(
                "driftwarden.io", "v1alpha1", self.namespace, plural, name
            )
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise RuntimeError(f"get {plural}/{name}: {error.status} {error.reason}") from error
        return value if isinstance(value, dict) else None

    def events_of(self, kind: str, name: str) -> list[Json]:
        """The events about one object, as `kubectl get events -o json` shows them."""
        found = client.CoreV1Api(self.api).list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name},involvedObject.kind={kind}"
        )
        plain = self.api.sanitize_for_serialization(found)  # type: ignore[no-untyped-call]
        return list(plain.get("items") or [])

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = self.cluster.kubectl(*args, input=input, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def ns(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """kubectl in the demo namespace."""
        return self.kubectl("-n", self.namespace, *args, input=input, check=check)

    def get(self, *args: str) -> Json | None:
        """An object (or list) in the demo namespace as JSON; None when it does not exist."""
        result = self.cluster.kubectl("-n", self.namespace, "get", *args, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise RuntimeError(f"kubectl get {' '.join(args)} failed: {result.stderr.strip()}")
        value: Json = json.loads(result.stdout)
        return value

    def apply(self, manifest: str, *, dry_run: bool = False) -> str:
        args = ["apply", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
        return self.ns(*args, input=manifest)

    def helm(self, *args: str, timeout: float = 300) -> str:
        helm = build.binary("helm")
        result = subprocess.run(
            [str(helm), "--kubeconfig", str(self.cluster.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result.stdout

    def wait_job(self, name: str, timeout: float) -> str:
        """Wait for a Job to complete; its logs. A failed Job raises with its logs."""

        def finished() -> str | None:
            job = self.get("job", name) or {}
            for condition in (job.get("status") or {}).get("conditions") or []:
                if condition.get("status") != "True":
                    continue
                if condition["type"] == "Complete":
                    return "Complete"
                if condition["type"] == "Failed":
                    return "Failed"
            return None

        state = wait_for(f"Job {name} to finish", finished, timeout)
        logs = self.ns("logs", f"job/{name}", "--tail=40", check=False)
        if state == "Failed":
            raise RuntimeError(f"Job {name} failed; its log ends with:\n{logs}")
        return logs

    def rollout(self, deployment: str, timeout: float) -> None:
        self.ns("rollout", "status", f"deployment/{deployment}", f"--timeout={int(timeout)}s")

    def ready_pod_ips(self, selector: str) -> list[str]:
        pods = self.get("pods", "-l", selector) or {}
        ips = []
        for pod in pods.get("items") or []:
            status = pod.get("status") or {}
            if pod["metadata"].get("deletionTimestamp"):
                continue
            ready = any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            )
            if ready and status.get("podIP"):
                ips.append(str(status["podIP"]))
        return ips


def wait_for(what: str, check: Callable[[], T | None], timeout: float, interval: float = 1.0) -> T:
    """Poll ``check`` until it returns a value; StepTimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StepTimeoutError(f"no {what} after {timeout:.0f} s")
        time.sleep(interval)


def repo_file(root: Path, relative: str) -> str:
    return (root / relative).read_text()
