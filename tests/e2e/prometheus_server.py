"""A real Prometheus server for e2e tests (Debian's `prometheus` package; `make tools`).

It listens on a free loopback port with a generated config, keeps its TSDB in the test's
temporary directory, scrapes every second, and is stopped after the test. Targets are
static (`host:port` per job) and can be changed while it runs (`set_targets` rewrites the
config and asks for a reload), because a target's port is often known only after the
server started - the operator's metrics port, for one.

The fixtures are in prometheus_fixture.py: `pytest_plugins = ["prometheus_fixture"]` in a
test module, then `prometheus` (one server per test) or `module_prometheus` (one per module).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import HistogramMetricFamily, Metric

from devcluster.ports import free_port
from driftwarden.promql import PrometheusClient, PrometheusError, QueryResult

SCRAPE_INTERVAL = "1s"


def prometheus_binary() -> str:
    found = os.environ.get("PROMETHEUS") or shutil.which("prometheus")
    if found:
        return found
    reason = "prometheus not found ($PROMETHEUS or PATH); `make tools` installs it from Debian"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


class PrometheusServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.config_path = workdir / "prometheus.yml"
        self.log_path = workdir / "prometheus.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_config(self, jobs: Mapping[str, Sequence[str]]) -> None:
        config: dict[str, Any] = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": job,
                    # The operator's series carry the resource's namespace label: keep it
                    # (the chart's ServiceMonitor sets the same).
                    "honor_labels": True,
                    "scrape_timeout": SCRAPE_INTERVAL,
                    "static_configs": [{"targets": list(targets)}],
                }
                for job, targets in sorted(jobs.items())
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config))

    def start(
        self, jobs: Mapping[str, Sequence[str]] | None = None, timeout: float = 60.0
    ) -> PrometheusServer:
        self._write_config(jobs or {})
        argv = [
            prometheus_binary(),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def set_targets(self, jobs: Mapping[str, Sequence[str]]) -> None:
        """Replace the scrape jobs and reload the running server."""
        self._write_config(jobs)
        request = urllib.request.Request(self.url + "/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.status

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def client(self) -> PrometheusClient:
        return PrometheusClient(self.url)

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/api/v1/targets", timeout=5) as response:
            payload = json.load(response)
        return list(payload["data"]["activeTargets"])

    def wait_up(self, job: str, timeout: float = 30.0) -> None:
        """Until every target of `job` was scraped successfully."""

        def up() -> bool:
            found = [t for t in self.targets() if t["labels"].get("job") == job]
            return bool(found) and all(t["health"] == "up" for t in found)

        self.wait(lambda: f"job {job} up", up, timeout)

    def wait_query(
        self, promql: str, accept: Callable[[QueryResult], bool], timeout: float = 30.0
    ) -> QueryResult:
        """Query until `accept` likes the answer; the last answer."""
        last: list[QueryResult] = []

        def check() -> bool:
            try:
                result = self.client.query(promql)
            except PrometheusError:
                return False
            last[:] = [result]
            return accept(result)

        self.wait(lambda: f"{promql} to be accepted (last answer: {last})", check, timeout)
        return last[0]

    def wait(self, what: Callable[[], str], check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited while waiting for {what()}")
            time.sleep(0.5)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what()}; targets: "
            f"{[(t['scrapeUrl'], t['health'], t['lastError']) for t in self.targets()]}\n"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


# -- a stand-in for a serving app's request-latency histogram ----------------------------
#
# It grows by the same requests every 100 ms - four of 15 ms, one of 150 ms - rendered from
# one tick counter, so every scrape sees the same proportions and histogram_quantile over
# any window has an exact answer by linear interpolation inside the bucket:
#     p50: rank 2.5 of 5 in (0.01, 0.02] holding 4   -> 0.01 + 0.01 * 2.5/4 = 16.25 ms
#     p95: rank 4.75 in (0.1, 0.2] holding 1 above 4 -> 0.1 + 0.1 * 0.75    = 175 ms
#     p99: rank 4.95                                 -> 0.1 + 0.1 * 0.95    = 195 ms
# The handler "idle" never changes: its rate is zero and histogram_quantile gives NaN.
EXPECTED_LATENCY_MS = {"p50": 16.25, "p95": 175.0, "p99": 195.0}

BOUNDS = ("0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1.0", "+Inf")
# Requests per tick that end in each bucket (not cumulative): 4 x 15 ms, 1 x 150 ms.
PER_TICK = {"0.02": 4, "0.2": 1}
TICK_SECONDS = 0.1
TEMPLATE = (
    "histogram_quantile({{quantile}}, sum by (le) (rate("
    'http_request_duration_seconds_bucket{job="serving", handler="predict"}[5s])))'
)


class ServingExporter:
    """A request-latency histogram (http_request_duration_seconds) per handler."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.port = free_port()
        self.server, self.thread = start_http_server(
            self.port, addr="127.0.0.1", registry=self.registry
        )

    def _cumulative(self, ticks: int) -> list[tuple[str, float]]:
        running, buckets = 0, []
        for bound in BOUNDS:
            running += PER_TICK.get(bound, 0) * ticks
            buckets.append((bound, float(running)))
        return buckets

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "http_request_duration_seconds", "Request latency.", labels=["handler"]
        )
        ticks = 1 + int((time.monotonic() - self.started) / TICK_SECONDS)
        for handler, n in (("predict", ticks), ("idle", 1)):
            total = sum(PER_TICK.values()) * n
            family.add_metric([handler], self._cumulative(n), sum_value=0.042 * total)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
