"""How long one scrape of the operator's metrics takes, and how big it is, per resource count.

    .venv/bin/python bench/metrics_scrape.py

Every resource gets a full set of series (an evaluation, an SLO, runs of every outcome, a
temporary fix), which is the worst case. Medians of repeated scrapes.
"""

from __future__ import annotations

import statistics
import time

from prometheus_client import generate_latest

from driftwarden.metrics import RUN_OUTCOMES, OperatorMetrics


def populated(resources: int) -> OperatorMetrics:
    metrics = OperatorMetrics()
    for i in range(resources):
        ns, name = f"team-{i % 20}", f"model-{i}"
        metrics.set_slo(ns, name, 50.0 + i % 7)
        metrics.set_evaluation_interval(ns, name, 300.0)
        metrics.record_evaluation(
            ns,
            name,
            drift_score=0.1 + (i % 10) / 100,
            drifted_features=i % 5,
            drift_detected=i % 3 == 0,
            latency_ms={"p50": 10.0, "p95": 40.0 + i % 20, "p99": 80.0},
            accuracy=0.9,
            timestamp=1_700_000_000.0 + i,
        )
        for outcome in RUN_OUTCOMES:
            metrics.record_run(ns, name, outcome, 60.0 * (1 + i % 30))
        metrics.set_temporary_fix(ns, name, i % 4 == 0, expires_at=1_700_007_200.0)
        metrics.observe_reconcile(0.01)
    return metrics


def main() -> None:
    print("| resources | series | bytes | scrape median ms | (min..max of 15) |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for resources in (10, 100, 1000):
        metrics = populated(resources)
        body = generate_latest(metrics.registry)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        times = []
        for _ in range(15):
            started = time.perf_counter()
            generate_latest(metrics.registry)
            times.append((time.perf_counter() - started) * 1000)
        print(
            f"| {resources} | {series} | {len(body)} | {statistics.median(times):.1f} "
            f"| {min(times):.1f}..{max(times):.1f} |"
        )


if __name__ == "__main__":
    main()
