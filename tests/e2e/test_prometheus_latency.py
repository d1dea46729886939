"""Serving latency read from a real Prometheus (driftwarden.promql), scraping a small
exporter that stands in for a serving app's request-latency histogram.

The exporter's histogram grows by the same requests every 100 ms - four of 15 ms, one of
150 ms - rendered from one tick counter, so every scrape sees the same proportions and
Prometheus' histogram_quantile over any window has an exact answer by linear
interpolation inside the bucket:
    p50: rank 2.5 of 5 in (0.01, 0.02] holding 4  -> 0.01 + 0.01 * 2.5/4  = 16.25 ms
    p95: rank 4.75 in (0.1, 0.2] holding 1 above 4 -> 0.1 + 0.1 * 0.75    = 175 ms
    p99: rank 4.95                                  -> 0.1 + 0.1 * 0.95    = 195 ms
A second histogram never changes: its rate is zero and histogram_quantile gives NaN.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from operator_process import free_port
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import HistogramMetricFamily, Metric

from driftwarden.promql import PrometheusError, PrometheusReason, serving_latency

if TYPE_CHECKING:  # the plugin module itself is imported by pytest (assertion rewriting)
    from prometheus_fixture import PrometheusServer

pytestmark = pytest.mark.e2e
pytest_plugins = ["prometheus_fixture"]

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


@pytest.fixture(scope="module")
def scraped(module_prometheus: PrometheusServer) -> Iterator[PrometheusServer]:
    prometheus = module_prometheus
    exporter = ServingExporter()
    try:
        prometheus.set_targets({"serving": [f"127.0.0.1:{exporter.port}"]})
        prometheus.wait_up("serving")
        # rate() over the window needs two samples of a growing counter.
        prometheus.wait_query(
            'rate(http_request_duration_seconds_count{handler="predict"}[5s])',
            lambda r: len(r.samples) == 1 and r.samples[0].value > 0,
        )
        yield prometheus
    finally:
        exporter.close()


def test_quantile_template_gives_p50_p95_p99(scraped: PrometheusServer) -> None:
    latency = serving_latency(scraped.url, TEMPLATE)
    assert latency.p50_ms == pytest.approx(16.25, rel=1e-6)
    assert latency.p95_ms == pytest.approx(175.0, rel=1e-6)
    assert latency.p99_ms == pytest.approx(195.0, rel=1e-6)


def test_plain_query_gives_the_p95(scraped: PrometheusServer) -> None:
    query = TEMPLATE.replace("{{quantile}}", "0.95")
    latency = serving_latency(scraped.url, query)
    assert (latency.p50_ms, latency.p99_ms) == (None, None)
    assert latency.p95_ms == pytest.approx(175.0, rel=1e-6)


def reason_of(url: str, query: str) -> tuple[PrometheusReason, str]:
    with pytest.raises(PrometheusError) as caught:
        serving_latency(url, query)
    return caught.value.reason, caught.value.message


def test_what_goes_wrong_is_a_reason(scraped: PrometheusServer) -> None:
    url = scraped.url
    # No requests in the window: histogram_quantile of a zero rate is NaN.
    idle = TEMPLATE.replace('handler="predict"', 'handler="idle"')
    reason, message = reason_of(url, idle)
    assert reason == PrometheusReason.NO_DATA and "NaN" in message
    # A selector that matches nothing.
    reason, message = reason_of(url, TEMPLATE.replace('job="serving"', 'job="nope"'))
    assert reason == PrometheusReason.NO_DATA and "no sample" in message
    # Not aggregated: one quantile per handler.
    per_handler = TEMPLATE.replace(', handler="predict"', "").replace("by (le)", "by (le, handler)")
    reason, message = reason_of(url, per_handler)
    assert reason == PrometheusReason.QUERY_FAILED and "2 series" in message
    # PromQL Prometheus cannot parse: its own words come through.
    reason, message = reason_of(url, "histogram_quantile(0.95, ")
    assert reason == PrometheusReason.QUERY_FAILED and "bad_data" in message
    # A range vector is not a value.
    reason, message = reason_of(url, "http_request_duration_seconds_count[5s]")
    assert reason == PrometheusReason.QUERY_FAILED and "matrix" in message
    # The UI path, not the API's.
    reason, _ = reason_of(url + "/graph", TEMPLATE)
    assert reason == PrometheusReason.UNREACHABLE


def test_exporter_answers_are_exact(scraped: PrometheusServer) -> None:
    # The arithmetic in the module docstring, checked against what Prometheus itself says
    # for the share of requests within 20 ms (a bucket boundary: no interpolation).
    result = scraped.client.query(
        'sum(rate(http_request_duration_seconds_bucket{handler="predict", le="0.02"}[5s]))'
        ' / sum(rate(http_request_duration_seconds_count{handler="predict"}[5s]))'
    )
    assert math.isclose(result.samples[0].value, 0.8, rel_tol=1e-9)
