"""Startup, readiness and liveness probes: httpGet, tcpSocket and exec."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from devcluster.node_agent.kube import Obj

ExecProbe = Callable[[list[str], float], int]
"""Run a command inside the container (argv, timeout seconds) -> exit code."""


def _port(probe_port: object, container: Obj) -> int:
    if isinstance(probe_port, int):
        return probe_port
    text = str(probe_port)
    if text.isdigit():
        return int(text)
    for port in container.get("ports") or []:
        if port.get("name") == text:
            return int(port["containerPort"])
    raise ValueError(f"probe port {text!r} is not a named port of the container")


def run_probe(
    probe: Obj, container: Obj, pod_ip: str, exec_in_container: ExecProbe
) -> tuple[bool, str]:
    """One attempt: (success, message)."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            action = probe["httpGet"]
            host = action.get("host") or pod_ip
            port = _port(action.get("port"), container)
            connection: http.client.HTTPConnection
            if str(action.get("scheme", "HTTP")).upper() == "HTTPS":
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE  # the kubelet does not verify either
                connection = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=context
                )
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            headers = {h["name"]: h["value"] for h in action.get("httpHeaders") or []}
            headers.setdefault("User-Agent", "kube-probe/devcluster")
            try:
                connection.request("GET", action.get("path") or "/", headers=headers)
                status = connection.getresponse().status
            finally:
                connection.close()
            return 200 <= status < 400, f"HTTP probe failed with statuscode: {status}"
        if "tcpSocket" in probe:
            action = probe["tcpSocket"]
            host = action.get("host") or pod_ip
            with socket.create_connection((host, _port(action.get("port"), container)), timeout):
                return True, ""
        if "exec" in probe:
            code = exec_in_container(list(probe["exec"].get("command") or []), timeout)
            return code == 0, f"exec probe exited with {code}"
    except (OSError, ValueError, subprocess.TimeoutExpired) as error:
        return False, f"probe failed: {error}"
    return False, f"probe handler {sorted(set(probe) & {'grpc'}) or 'unknown'} is not supported"


@dataclass
class ProbeState:
    """The kubelet's bookkeeping for one probe of one container run."""

    probe: Obj
    started_at: float
    result: bool
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0
    last_message: str = ""

    @classmethod
    def begin(cls, probe: Obj, *, initial: bool) -> ProbeState:
        started = time.monotonic()
        delay = float(probe.get("initialDelaySeconds") or 0)
        return cls(probe=probe, started_at=started, result=initial, next_at=started + delay)

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def record(self, success: bool, message: str) -> None:
        self.next_at = time.monotonic() + float(self.probe.get("periodSeconds") or 10)
        self.last_message = message
        if success:
            self.failures = 0
            self.successes += 1
            if self.successes >= int(self.probe.get("successThreshold") or 1):
                self.result = True
        else:
            self.successes = 0
            self.failures += 1
            if self.failures >= int(self.probe.get("failureThreshold") or 3):
                self.result = False
