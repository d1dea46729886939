"""Serving latency read from a real Prometheus (driftwarden.promql), scraping a small
exporter that stands in for a serving app's request-latency histogram
(prometheus_server.ServingExporter: its quantiles are known exactly)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
from prometheus_server import EXPECTED_LATENCY_MS, TEMPLATE, PrometheusServer, ServingExporter

from driftwarden.promql import PrometheusError, PrometheusReason, serving_latency

pytestmark = pytest.mark.e2e
pytest_plugins = ["prometheus_fixture"]


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
    assert latency.as_ms() == pytest.approx(EXPECTED_LATENCY_MS, rel=1e-6)


def test_plain_query_gives_the_p95(scraped: PrometheusServer) -> None:
    query = TEMPLATE.replace("{{quantile}}", "0.95")
    latency = serving_latency(scraped.url, query)
    assert (latency.p50_ms, latency.p99_ms) == (None, None)
    assert latency.p95_ms == pytest.approx(EXPECTED_LATENCY_MS["p95"], rel=1e-6)


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
