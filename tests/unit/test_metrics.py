"""OperatorMetrics: what a scrape of its registry shows."""

from __future__ import annotations

import threading
import urllib.request

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from driftwarden.metrics import OUTCOME_LABELS, RUN_OUTCOMES, OperatorMetrics

pytestmark = pytest.mark.unit

ALLOWED_LABELS = {"namespace", "name", "quantile", "outcome", "le"}


def scrape(metrics: OperatorMetrics) -> list[Sample]:
    text = generate_latest(metrics.registry).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(samples: list[Sample], metric: str, /, **labels: str) -> float:
    found = [s.value for s in samples if s.name == metric and s.labels == labels]
    assert len(found) == 1, f"{metric}{labels}: {len(found)} samples"
    return found[0]


def series_of(samples: list[Sample], namespace: str, name: str) -> list[Sample]:
    return [
        s
        for s in samples
        if s.labels.get("namespace") == namespace and s.labels.get("name") == name
    ]


def evaluate(metrics: OperatorMetrics, ns: str, name: str, p95_ms: float = 40.0) -> None:
    metrics.record_evaluation(
        ns,
        name,
        drift_score=0.31,
        drifted_features=7,
        drift_detected=True,
        latency_ms={"p50": 12.5, "p95": p95_ms, "p99": 80.0},
        accuracy=0.925,
        timestamp=1_700_000_000.0,
    )


def test_evaluation_values_and_labels() -> None:
    metrics = OperatorMetrics()
    evaluate(metrics, "prod", "fraud")
    samples = scrape(metrics)
    key = {"namespace": "prod", "name": "fraud"}
    assert value(samples, "driftwarden_drift_score", **key) == pytest.approx(0.31)
    assert value(samples, "driftwarden_drifted_features", **key) == 7
    assert value(samples, "driftwarden_drift_detected", **key) == 1
    assert value(samples, "driftwarden_model_accuracy", **key) == pytest.approx(0.925)
    assert value(samples, "driftwarden_last_evaluation_timestamp_seconds", **key) == 1.7e9
    for quantile, seconds in (("0.5", 0.0125), ("0.95", 0.04), ("0.99", 0.08)):
        got = value(samples, "driftwarden_model_latency_seconds", **key, quantile=quantile)
        assert got == pytest.approx(seconds)
    # The temporary fix is off until said otherwise, and every outcome starts at zero so
    # that increase() sees the first failure.
    assert value(samples, "driftwarden_temporary_fix_active", **key) == 0
    for outcome in OUTCOME_LABELS.values():
        assert value(samples, "driftwarden_optimization_runs_total", **key, outcome=outcome) == 0
    assert len(OUTCOME_LABELS) == len(RUN_OUTCOMES) == 6


def test_runs_counted_by_outcome_with_duration_histogram() -> None:
    metrics = OperatorMetrics()
    metrics.record_run("prod", "fraud", "Failed", 45.0)
    metrics.record_run("prod", "fraud", "Promoted", 700.0)
    metrics.record_run("prod", "fraud", "Promoted", 90_000.0)
    metrics.record_run("prod", "fraud", "RolledBack", 5.0)
    samples = scrape(metrics)
    key = {"namespace": "prod", "name": "fraud"}
    runs = "driftwarden_optimization_runs_total"
    assert value(samples, runs, **key, outcome="failed") == 1
    assert value(samples, runs, **key, outcome="promoted") == 2
    assert value(samples, runs, **key, outcome="rolled_back") == 1
    assert value(samples, runs, **key, outcome="rejected") == 0
    hist = "driftwarden_optimization_run_duration_seconds"
    assert value(samples, hist + "_count", **key) == 4
    assert value(samples, hist + "_sum", **key) == pytest.approx(90_750.0)
    assert value(samples, hist + "_bucket", **key, le="10.0") == 1
    assert value(samples, hist + "_bucket", **key, le="60.0") == 2
    assert value(samples, hist + "_bucket", **key, le="1200.0") == 3
    assert value(samples, hist + "_bucket", **key, le="86400.0") == 3
    assert value(samples, hist + "_bucket", **key, le="+Inf") == 4


def test_latency_histogram_has_a_bucket_at_each_resources_slo() -> None:
    metrics = OperatorMetrics()
    metrics.set_slo("prod", "fraud", 30.0)  # 0.03 s: not one of the fixed buckets
    metrics.set_slo("prod", "churn", 120.0)
    for p95 in (29.0, 30.0, 31.0):
        evaluate(metrics, "prod", "fraud", p95_ms=p95)
    evaluate(metrics, "prod", "churn", p95_ms=110.0)
    samples = scrape(metrics)
    bucket = "driftwarden_model_latency_observed_seconds_bucket"
    fraud = {"namespace": "prod", "name": "fraud"}
    churn = {"namespace": "prod", "name": "churn"}
    # Evaluations at or under the SLO: 29 ms and 30 ms, exactly, not interpolated.
    assert value(samples, bucket, **fraud, le="0.03") == 2
    assert value(samples, bucket, **fraud, le="+Inf") == 3
    assert value(samples, bucket, **churn, le="0.12") == 1
    # Each resource's SLO is a boundary only in its own histogram.
    assert not [s for s in series_of(samples, "prod", "churn") if s.labels.get("le") == "0.03"]
    assert value(samples, "driftwarden_latency_slo_seconds", **fraud) == pytest.approx(0.03)


def test_changed_slo_restarts_that_histogram_only() -> None:
    metrics = OperatorMetrics()
    metrics.set_slo("prod", "fraud", 30.0)
    evaluate(metrics, "prod", "fraud")
    metrics.set_slo("prod", "fraud", 30.0)  # unchanged: keeps its counts
    count = "driftwarden_model_latency_observed_seconds_count"
    fraud = {"namespace": "prod", "name": "fraud"}
    assert value(scrape(metrics), count, **fraud) == 1
    metrics.set_slo("prod", "fraud", 45.0)
    samples = scrape(metrics)
    assert value(samples, count, **fraud) == 0
    les = {s.labels["le"] for s in series_of(samples, "prod", "fraud") if "le" in s.labels}
    assert "0.045" in les
    assert "0.03" not in les


def test_forget_removes_every_series_of_that_resource_only() -> None:
    metrics = OperatorMetrics()
    for name in ("fraud", "churn"):
        metrics.set_slo("prod", name, 50.0)
        metrics.set_evaluation_interval("prod", name, 300.0)
        evaluate(metrics, "prod", name)
        metrics.record_run("prod", name, "Succeeded", 30.0)
        metrics.set_temporary_fix("prod", name, True, expires_at=1_700_003_600.0)
    before = scrape(metrics)
    assert len(series_of(before, "prod", "fraud")) > 20
    metrics.forget("prod", "fraud")
    after = scrape(metrics)
    assert series_of(after, "prod", "fraud") == []
    assert len(series_of(after, "prod", "churn")) == len(series_of(before, "prod", "churn"))
    metrics.forget("prod", "never-seen")  # forgetting twice or an unknown one is harmless


def test_none_removes_a_series_instead_of_keeping_a_stale_value() -> None:
    metrics = OperatorMetrics()
    evaluate(metrics, "prod", "fraud")
    metrics.record_evaluation(
        "prod",
        "fraud",
        drift_score=None,
        drifted_features=None,
        drift_detected=None,
        latency_ms=None,
        accuracy=None,
        timestamp=1_700_000_600.0,
    )
    metrics.set_temporary_fix("prod", "fraud", True, expires_at=1_700_003_600.0)
    metrics.set_temporary_fix("prod", "fraud", False, expires_at=1_700_003_600.0)
    names = {s.name for s in series_of(scrape(metrics), "prod", "fraud")}
    for gone in (
        "driftwarden_drift_score",
        "driftwarden_drifted_features",
        "driftwarden_drift_detected",
        "driftwarden_model_accuracy",
        "driftwarden_model_latency_seconds",
        "driftwarden_latency_slo_seconds",
        "driftwarden_temporary_fix_expiry_timestamp_seconds",
    ):
        assert gone not in names
    assert "driftwarden_last_evaluation_timestamp_seconds" in names


def test_labels_stay_bounded_whatever_happens() -> None:
    metrics = OperatorMetrics()

    def series_count() -> int:
        return len(scrape(metrics))

    evaluate(metrics, "prod", "fraud")
    metrics.record_run("prod", "fraud", "Failed", 10.0)
    metrics.observe_reconcile(0.01)
    baseline = series_count()
    for i in range(50):
        evaluate(metrics, "prod", "fraud", p95_ms=10.0 + i)
        metrics.record_run("prod", "fraud", RUN_OUTCOMES[i % len(RUN_OUTCOMES)], 5.0 * i)
        metrics.observe_reconcile(0.001 * i)
    samples = scrape(metrics)
    assert len(samples) == baseline
    for sample in samples:
        assert set(sample.labels) <= ALLOWED_LABELS, sample
        assert sample.name.startswith("driftwarden_")
    quantiles = {s.labels["quantile"] for s in samples if "quantile" in s.labels}
    assert quantiles == {"0.5", "0.95", "0.99"}


def test_bad_input_is_refused() -> None:
    metrics = OperatorMetrics()
    with pytest.raises(ValueError, match="outcome"):
        metrics.record_run("prod", "fraud", "failed", 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="latency key"):
        metrics.record_evaluation(
            "prod",
            "fraud",
            drift_score=0.1,
            drifted_features=0,
            drift_detected=False,
            latency_ms={"b1_p95": 3.0},
            accuracy=0.9,
            timestamp=1.0,
        )
    with pytest.raises(ValueError, match="accuracy"):
        metrics.record_evaluation(
            "prod",
            "fraud",
            drift_score=0.1,
            drifted_features=0,
            drift_detected=False,
            latency_ms={},
            accuracy=92.5,
            timestamp=1.0,
        )
    with pytest.raises(ValueError, match="SLO"):
        metrics.set_slo("prod", "fraud", 0.0)
    with pytest.raises(ValueError):
        metrics.observe_reconcile(float("nan"))
    with pytest.raises(ValueError):
        metrics.set_slo("", "fraud", 10.0)


def test_own_registry_not_the_global_one() -> None:
    metrics = OperatorMetrics()
    evaluate(metrics, "prod", "fraud")
    assert b"driftwarden_" not in generate_latest(REGISTRY)
    shared = CollectorRegistry()
    OperatorMetrics(shared)
    with pytest.raises(ValueError, match="Duplicated"):
        OperatorMetrics(shared)


def test_concurrent_writers_and_scrapes_lose_nothing() -> None:
    metrics = OperatorMetrics()
    per_thread = 200

    def work(name: str) -> None:
        for _ in range(per_thread):
            metrics.record_run("prod", name, "Succeeded", 1.0)
            metrics.observe_reconcile(0.002)

    threads = [threading.Thread(target=work, args=(f"m{i % 2}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        scrape(metrics)  # scraping while writing must not raise nor tear a histogram
    for thread in threads:
        thread.join()
    samples = scrape(metrics)
    for name in ("m0", "m1"):
        key = {"namespace": "prod", "name": name}
        got = value(samples, "driftwarden_optimization_runs_total", **key, outcome="succeeded")
        assert got == 2 * per_thread
    assert value(samples, "driftwarden_reconcile_duration_seconds_count") == 4 * per_thread


def test_serve_exposes_the_registry_over_http() -> None:
    metrics = OperatorMetrics()
    evaluate(metrics, "prod", "fraud")
    server = metrics.serve(0, "127.0.0.1")
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'driftwarden_drift_score{name="fraud",namespace="prod"} 0.31' in body


def test_operator_active_is_one_unlabelled_gauge_that_follows_the_standing() -> None:
    metrics = OperatorMetrics()
    assert value(scrape(metrics), "driftwarden_operator_active") == 1
    metrics.set_active(False)
    evaluate(metrics, "prod", "fraud")
    samples = scrape(metrics)
    assert value(samples, "driftwarden_operator_active") == 0  # one series, no labels
    metrics.set_active(True)
    assert value(scrape(metrics), "driftwarden_operator_active") == 1
