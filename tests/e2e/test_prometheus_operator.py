"""A real Prometheus scrapes the operator during devcluster tests: what Prometheus answers
about a ModelOptimization is what the resource's status shows.

The operator runs as a process (`python -m driftwarden`, admin kubeconfig) on free ports;
Prometheus scrapes its metrics port every second as job `driftwarden` with honor_labels,
like the chart's ServiceMonitor. The tests compare the values with ==: the operator exports
the very floats it writes into status, and both the exposition format and the Prometheus
API print floats exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from operator_process import (
    RESYNC,
    OperatorProcess,
    condition,
    example_uris,
    finished_runs,
    mo_manifest,
    mo_status,
    wait_for,
)
from prometheus_server import EXPECTED_LATENCY_MS, TEMPLATE, PrometheusServer, ServingExporter

from devcluster.controlplane import Cluster
from driftwarden.metrics import OUTCOME_LABELS
from driftwarden.promql import QueryResult

pytestmark = pytest.mark.e2e
# mo_crd, job_example, artifacts_dir, operators; prometheus, module_prometheus.
pytest_plugins = ["operator_fixtures", "prometheus_fixture"]

NAME = "digits"
RUN_TIMEOUT = 180.0
EVALUATION_TIMEOUT = 180.0


def scraped_operator(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    prometheus: PrometheusServer,
    log_dir: Path,
    *extra_args: str,
) -> OperatorProcess:
    operator = OperatorProcess(
        devcluster.kubeconfig,
        [namespace],
        log_dir / "operator.log",
        resync_seconds=RESYNC,
        # The admin's policy allows this Prometheus only (driftwarden.policy.admission).
        extra_args=(f"--allowed-prometheus-url={prometheus.url}", *extra_args),
    )
    operators.append(operator)
    operator.start()
    prometheus.set_targets({"driftwarden": [f"127.0.0.1:{operator.metrics_port}"]})
    prometheus.wait_up("driftwarden")
    return operator


def selector(namespace: str, name: str, **labels: str) -> str:
    pairs = {"namespace": namespace, "name": name, **labels}
    return "{" + ", ".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"


def one_sample(result: QueryResult) -> bool:
    return len(result.samples) == 1


def test_run_counts_in_prometheus_are_the_runs_in_status(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    prometheus: PrometheusServer,
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    operator = scraped_operator(devcluster, namespace, operators, prometheus, tmp_path)
    devcluster.kubectl(
        "apply",
        "-f",
        "-",
        input=mo_manifest(NAME, namespace, example_uris(job_example), f"file://{artifacts_dir}"),
    )
    status = wait_for(
        "the first run", finished_runs(devcluster, namespace, NAME, 1), RUN_TIMEOUT, operator
    )
    by_outcome: dict[str, int] = {}
    for run in status["runs"]:
        by_outcome[run["outcome"]] = by_outcome.get(run["outcome"], 0) + 1
    assert by_outcome == {"Succeeded": 1}

    query = f"driftwarden_optimization_runs_total{selector(namespace, NAME)}"
    expected = {OUTCOME_LABELS[o]: float(by_outcome.get(o, 0)) for o in OUTCOME_LABELS}

    def counted(result: QueryResult) -> bool:
        return {s.labels["outcome"]: s.value for s in result.samples} == expected

    result = prometheus.wait_query(query, counted)
    for sample in result.samples:
        # honor_labels: the resource's namespace, not the scrape target's.
        assert sample.labels["namespace"] == namespace
        assert sample.labels["job"] == "driftwarden"
        assert sample.labels["instance"] == f"127.0.0.1:{operator.metrics_port}"

    # A deleted resource's series leave the operator's /metrics, and Prometheus marks them
    # stale at the next scrape: an instant query no longer finds them.
    devcluster.kubectl("delete", "mo", NAME, "-n", namespace, "--timeout=60s")
    prometheus.wait_query(query, lambda r: r.samples == [])


def wait_status(
    what: str,
    devcluster: Cluster,
    namespace: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    operator: OperatorProcess,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = mo_status(devcluster, namespace, name)
        return status if check(status) else None

    return wait_for(what, probe, EVALUATION_TIMEOUT, operator)


def evaluated_manifest(
    name: str, namespace: str, example: Path, artifacts: Path, monitoring: str = ""
) -> str:
    """Evaluations every 10 s, no run: only what an evaluation measures."""
    uris = example_uris(example)
    return f"""apiVersion: driftwarden.io/v1alpha1
kind: ModelOptimization
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  model: {{uri: "{uris["model"]}"}}
  data:
    reference: "{uris["reference"]}"
    current: "{uris["current"]}"
    holdout: "{uris["holdout"]}"
  artifacts: {{uri: "file://{artifacts}"}}
  promotion: {{mode: Manual}}
  pipeline: [{{quantize: {{mode: int8}}}}]
  triggers:
    # Measured, never acted on: no score reaches the threshold, no p95 the SLO.
    drift: {{metric: psi, threshold: "1000"}}
    latency: {{p95Ms: 600000}}
  monitoring:
    interval: 10s
    latency: {{batchSizes: [1], warmup: 2, iterations: 5}}
{monitoring}  job:
    resources: {{cpu: 500m, memory: 1Gi}}
    backoffLimit: 0
"""


def test_drift_score_in_prometheus_is_the_one_in_status(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    prometheus: PrometheusServer,
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    operator = scraped_operator(
        devcluster, namespace, operators, prometheus, tmp_path, "--no-initial-run"
    )
    devcluster.kubectl(
        "apply", "-f", "-", input=evaluated_manifest(NAME, namespace, job_example, artifacts_dir)
    )
    wait_status(
        "an evaluation with a drift score",
        devcluster,
        namespace,
        NAME,
        lambda s: (s.get("lastEvaluation") or {}).get("driftScore") is not None,
        operator,
    )
    query = f"driftwarden_drift_score{selector(namespace, NAME)}"
    seen: list[tuple[float, float | None]] = []

    def agrees() -> bool:
        # Evaluations repeat every 10 s: compare with the status of the same moment.
        evaluation = mo_status(devcluster, namespace, NAME)["lastEvaluation"]
        result = prometheus.client.query(query)
        value = result.samples[0].value if len(result.samples) == 1 else None
        seen.append((evaluation["driftScore"], value))
        return bool(value == evaluation["driftScore"])

    prometheus.wait(lambda: f"{query} == status.lastEvaluation.driftScore: {seen[-3:]}", agrees, 30)
    evaluation = mo_status(devcluster, namespace, NAME)["lastEvaluation"]
    stamp = prometheus.client.query_value(
        f"driftwarden_last_evaluation_timestamp_seconds{selector(namespace, NAME)}"
    )
    evaluated_at = datetime.fromisoformat(evaluation["time"].replace("Z", "+00:00"))
    # Either the same evaluation, or the next one (at most one interval later).
    assert 0 <= stamp - evaluated_at.timestamp() <= 15


def test_serving_latency_comes_from_prometheus(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    prometheus: PrometheusServer,
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    """spec.monitoring.prometheus: the operator reads p50/p95/p99 of the serving app from
    the same Prometheus, and a query that fails is a condition with its reason."""
    exporter = ServingExporter()
    try:
        operator = scraped_operator(
            devcluster, namespace, operators, prometheus, tmp_path, "--no-initial-run"
        )
        prometheus.set_targets(
            {
                "driftwarden": [f"127.0.0.1:{operator.metrics_port}"],
                "serving": [f"127.0.0.1:{exporter.port}"],
            }
        )
        prometheus.wait_up("serving")
        prometheus.wait_query(
            'rate(http_request_duration_seconds_count{handler="predict"}[5s])',
            lambda r: one_sample(r) and r.samples[0].value > 0,
        )

        def source(query: str) -> str:
            url, promql = json.dumps(prometheus.url), json.dumps(query)
            return f"    prometheus: {{url: {url}, query: {promql}}}\n"

        broken = "histogram_quantile({{quantile}}, "
        for name, query in ((NAME, TEMPLATE), ("broken", broken)):
            devcluster.kubectl(
                "apply",
                "-f",
                "-",
                input=evaluated_manifest(
                    name, namespace, job_example, artifacts_dir, source(query)
                ),
            )

        status = wait_status(
            "a latency from Prometheus",
            devcluster,
            namespace,
            NAME,
            lambda s: (
                ((s.get("lastEvaluation") or {}).get("latency") or {}).get("p95Ms") is not None
            ),
            operator,
        )
        latency = status["lastEvaluation"]["latency"]
        assert latency["source"] == "Prometheus"
        measured = {key: latency[f"{key}Ms"] for key in EXPECTED_LATENCY_MS}
        assert measured == pytest.approx(EXPECTED_LATENCY_MS, rel=1e-6)
        slo = condition(status, "LatencyWithinSLO")
        assert (slo["status"], slo["reason"]) == ("True", "WithinSLO")
        assert "serving (Prometheus)" in slo["message"]
        p95 = prometheus.wait_query(
            f"driftwarden_model_latency_seconds{selector(namespace, NAME, quantile='0.95')}",
            one_sample,
        )
        assert p95.samples[0].value == pytest.approx(EXPECTED_LATENCY_MS["p95"] / 1000, rel=1e-6)

        failed = wait_status(
            "the failed query's condition",
            devcluster,
            namespace,
            "broken",
            lambda s: any(
                c["type"] == "LatencyWithinSLO" and c["reason"].startswith("Prometheus")
                for c in s.get("conditions") or []
            ),
            operator,
        )
        reason = condition(failed, "LatencyWithinSLO")
        assert (reason["status"], reason["reason"]) == ("Unknown", "PrometheusQueryFailed")
        assert "bad_data" in reason["message"]
        assert operator.running  # a bad query is a condition, not a crash
    finally:
        exporter.close()
