"""The operator's Prometheus metrics, served on their own port beside kopf's /healthz.

Every per-resource series carries exactly the labels ``namespace`` and ``name`` (plus a
bounded ``quantile`` or ``outcome`` where stated): never run ids, pod names or feature
names, so the number of series grows with the number of ModelOptimizations and nothing
else. Drifted features are exported as a count.

The values live in an in-memory store keyed by (namespace, name) and are rendered by a
custom collector at scrape time. That makes ``forget(namespace, name)`` remove every series
of a deleted resource at once, which labelled ``prometheus_client`` metrics only do one
child at a time. All methods are thread-safe: kopf handlers run in threads and on the
event loop while the HTTP server scrapes from its own thread.

The model-latency histogram ``driftwarden_model_latency_observed_seconds`` gets a bucket
boundary at each resource's own SLO (see ``LATENCY_BUCKETS_SECONDS`` and ``set_slo``), so
``bucket{le="<slo>"} / count`` is the exact share of evaluations within the SLO instead of
an interpolation between two fixed buckets.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

PREFIX: Final = "driftwarden_"
RESOURCE_LABELS: Final = ("namespace", "name")

# The outcome of one optimization run, spelled as status.runs[].outcome in the CRD. A fixed
# set, so the `outcome` label (the same words in lower snake case) stays bounded:
#   Promoted   - the candidate passed the gates and the target now serves it
#   Succeeded  - the candidate passed the gates and waits (promotion Manual, or no target)
#   Rejected   - the candidate failed a gate; the old model stays
#   Failed     - the Job failed (bad input, crash, deadline)
#   RolledBack - promoted, then rolled back after the next evaluation
#   Cancelled  - the run was abandoned (resource suspended, spec changed under it)
RunOutcome = Literal["Promoted", "Succeeded", "Rejected", "Failed", "RolledBack", "Cancelled"]
RUN_OUTCOMES: Final[tuple[RunOutcome, ...]] = get_args(RunOutcome)
OUTCOME_LABELS: Final[dict[RunOutcome, str]] = {
    "Promoted": "promoted",
    "Succeeded": "succeeded",
    "Rejected": "rejected",
    "Failed": "failed",
    "RolledBack": "rolled_back",
    "Cancelled": "cancelled",
}

# Latency quantiles the evaluate stage reports, keyed as the operator passes them.
LatencyQuantileKey = Literal["p50", "p95", "p99"]
LATENCY_QUANTILES: Final[dict[LatencyQuantileKey, str]] = {
    "p50": "0.5",
    "p95": "0.95",
    "p99": "0.99",
}

# Model inference latency: 0.5 ms (a small MLP at batch 1) to 10 s (a large model on CPU).
# Each resource's SLO is added to its own copy of this list.
LATENCY_BUCKETS_SECONDS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# An optimization run is one or more GPU Jobs: from ten seconds (a tiny model, warm node)
# to a day (retraining a large model); the buckets follow that range roughly x2-x3 apart.
RUN_DURATION_BUCKETS_SECONDS: Final = (
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
)
# One reconcile pass is API calls plus pure logic: milliseconds normally, seconds when the
# API server is slow; above a minute something is stuck.
RECONCILE_BUCKETS_SECONDS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


def _le(bound: float) -> str:
    """A bucket boundary as the exposition format writes it."""
    return "+Inf" if bound == math.inf else repr(float(bound))


class _Buckets:
    """Cumulative histogram counts over fixed upper bounds (+Inf implied)."""

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds: tuple[float, ...] = tuple(sorted(set(bounds)))
        self._counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; last is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"a duration must be a finite number >= 0, got {value!r}")
        index = len(self.bounds)
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                index = i
                break
        self._counts[index] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        rendered: list[tuple[str, float]] = []
        for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
            running += n
            rendered.append((_le(bound), float(running)))
        return rendered


def _latency_buckets(slo_seconds: float | None) -> _Buckets:
    extra = () if slo_seconds is None else (slo_seconds,)
    return _Buckets((*LATENCY_BUCKETS_SECONDS, *extra))


@dataclass
class _ResourceState:
    drift_score: float | None = None
    drifted_features: int | None = None
    drift_detected: bool | None = None
    multivariate_auroc: float | None = None
    drift_insufficient_data: bool | None = None
    latency_seconds: dict[str, float] = field(default_factory=dict)  # quantile label -> s
    accuracy: float | None = None
    last_evaluation: float | None = None
    slo_seconds: float | None = None
    evaluation_interval: float | None = None
    temporary_fix_active: bool = False
    temporary_fix_expiry: float | None = None
    runs: dict[RunOutcome, int] = field(default_factory=lambda: dict.fromkeys(RUN_OUTCOMES, 0))
    run_duration: _Buckets = field(default_factory=lambda: _Buckets(RUN_DURATION_BUCKETS_SECONDS))
    latency_observed: _Buckets = field(default_factory=lambda: _latency_buckets(None))


def _finite(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return float(value)


class OperatorMetrics:
    """Per-resource metrics of the operator, rendered from one store at scrape time.

    The operator calls the ``record_*``/``set_*`` methods as it learns things and
    ``forget`` when a resource is deleted. Passing ``None`` for a measured value removes
    that series: a value that was not measured this time must not be mistaken for one
    that was.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._resources: dict[tuple[str, str], _ResourceState] = {}
        self._reconcile = _Buckets(RECONCILE_BUCKETS_SECONDS)
        self._active = True
        self.registry.register(self)

    # -- what the operator records -------------------------------------------------

    def record_evaluation(
        self,
        namespace: str,
        name: str,
        *,
        drift_score: float | None,
        drifted_features: int | None,
        drift_detected: bool | None,
        latency_ms: Mapping[str, float] | None,
        accuracy: float | None,
        timestamp: float,
        multivariate_auroc: float | None = None,
        drift_insufficient_data: bool | None = None,
    ) -> None:
        """One finished evaluation. ``latency_ms`` maps p50/p95/p99 to milliseconds;
        ``accuracy`` is a fraction 0..1; ``timestamp`` is Unix seconds;
        ``multivariate_auroc`` is the domain classifier's AUROC (metric multivariate);
        ``drift_insufficient_data`` says the current sample was too small to judge.

        The p95 (the quantity the SLO is about) is also observed into the latency
        histogram, so its ``le`` bucket at the SLO counts evaluations within the SLO.
        """
        latency: dict[str, float] = {}
        for key, millis in (latency_ms or {}).items():
            if key not in LATENCY_QUANTILES:
                raise ValueError(f"latency key {key!r} is not one of {sorted(LATENCY_QUANTILES)}")
            latency[LATENCY_QUANTILES[key]] = _finite(millis, f"latency {key}") / 1000.0
        if accuracy is not None and not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracy is a fraction 0..1, got {accuracy!r}")
        if drifted_features is not None and drifted_features < 0:
            raise ValueError(f"drifted_features must be >= 0, got {drifted_features!r}")
        if multivariate_auroc is not None and not 0.0 <= multivariate_auroc <= 1.0:
            raise ValueError(f"an AUROC is 0..1, got {multivariate_auroc!r}")
        with self._lock:
            state = self._state(namespace, name)
            state.drift_score = None if drift_score is None else _finite(drift_score, "drift")
            state.drifted_features = drifted_features
            state.drift_detected = drift_detected
            state.multivariate_auroc = multivariate_auroc
            state.drift_insufficient_data = drift_insufficient_data
            state.latency_seconds = latency
            state.accuracy = accuracy
            state.last_evaluation = _finite(timestamp, "timestamp")
            if "0.95" in latency:
                state.latency_observed.observe(latency["0.95"])

    def set_slo(self, namespace: str, name: str, p95_ms: float | None) -> None:
        """The resource's p95 latency SLO (spec.triggers.latency), or None for none.

        A changed SLO gives the latency histogram a new bucket boundary; past
        observations cannot be split at it, so that resource's histogram restarts from
        zero, which Prometheus' rate() and increase() treat as a counter reset.
        """
        slo = None if p95_ms is None else _finite(p95_ms, "p95_ms") / 1000.0
        if slo is not None and slo <= 0:
            raise ValueError(f"an SLO must be > 0 ms, got {p95_ms!r}")
        with self._lock:
            state = self._state(namespace, name)
            if state.slo_seconds != slo:
                state.slo_seconds = slo
                state.latency_observed = _latency_buckets(slo)

    def set_evaluation_interval(self, namespace: str, name: str, seconds: float | None) -> None:
        """How often the resource is evaluated (spec.monitoring.interval); None while
        evaluation is off (suspended), so the stale-evaluation alert stays quiet."""
        if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"an interval must be > 0 s, got {seconds!r}")
        with self._lock:
            self._state(namespace, name).evaluation_interval = seconds

    def record_run(self, namespace: str, name: str, outcome: RunOutcome, seconds: float) -> None:
        """A finished optimization run: its outcome (as in status.runs) and its wall time."""
        if outcome not in RUN_OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {list(RUN_OUTCOMES)}")
        with self._lock:
            state = self._state(namespace, name)
            state.run_duration.observe(seconds)
            state.runs[outcome] += 1

    def set_temporary_fix(
        self, namespace: str, name: str, active: bool, *, expires_at: float | None = None
    ) -> None:
        """Whether the temporary resource fix is applied, and when it should have been
        taken back (Unix seconds), so an alert can catch one that outlives its expiry."""
        with self._lock:
            state = self._state(namespace, name)
            state.temporary_fix_active = active
            state.temporary_fix_expiry = (
                _finite(expires_at, "expires_at") if active and expires_at is not None else None
            )

    def observe_reconcile(self, seconds: float) -> None:
        """The wall time of one reconcile pass (any resource: an operator-wide histogram)."""
        with self._lock:
            self._reconcile.observe(seconds)

    def set_active(self, active: bool) -> None:
        """Whether this replica works (1) or stands by for another one (0, kopf peering)."""
        with self._lock:
            self._active = active

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of a deleted resource."""
        with self._lock:
            self._resources.pop((namespace, name), None)

    def serve(self, port: int, addr: str = "0.0.0.0") -> WSGIServer:  # noqa: S104
        """Serve /metrics from this registry on its own port, in a daemon thread."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server

    # -- the prometheus_client Collector protocol ------------------------------------

    def describe(self) -> Iterator[Metric]:
        # Names only, so the registry can refuse a duplicate registration.
        yield from _Families().all()

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        with self._lock:
            for (namespace, name), state in sorted(self._resources.items()):
                families.add_resource([namespace, name], state)
            families.reconcile_duration.add_metric(
                [], self._reconcile.cumulative(), self._reconcile.sum
            )
            families.operator_active.add_metric([], int(self._active))
        yield from families.all()

    def _state(self, namespace: str, name: str) -> _ResourceState:
        if not namespace or not name:
            raise ValueError("namespace and name must be non-empty")
        return self._resources.setdefault((namespace, name), _ResourceState())


_GAUGES: Final[dict[str, str]] = {
    "drift_score": "Dataset-level drift score of the last evaluation "
    "(the metric spec.triggers.drift names).",
    "drifted_features": "Features drifted in the last evaluation, after the "
    "multiple-test correction.",
    "drift_detected": "1 if the last evaluation found drift, else 0.",
    "multivariate_drift_auroc": "Cross-validated AUROC of the domain classifier telling "
    "current rows from reference rows (0.5: indistinguishable); metric multivariate only.",
    "drift_insufficient_data": "1 if the last evaluation had too few current rows for the "
    "drift metric to mean anything (condition reason InsufficientData), else 0.",
    "model_accuracy": "Accuracy of the model in use on the holdout, 0..1.",
    "latency_slo_seconds": "The resource's p95 latency SLO.",
    "evaluation_interval_seconds": "How often the resource is evaluated.",
    "last_evaluation_timestamp_seconds": "Unix time of the last finished evaluation.",
    "temporary_fix_active": "1 while the temporary resource fix is applied, else 0.",
    "temporary_fix_expiry_timestamp_seconds": "Unix time the active temporary fix "
    "should be taken back by.",
}


class _Families:
    """The metric families of one scrape, filled resource by resource."""

    def __init__(self) -> None:
        labels = list(RESOURCE_LABELS)
        self.gauges = {
            short: GaugeMetricFamily(PREFIX + short, text, labels=labels)
            for short, text in _GAUGES.items()
        }
        self.latency = GaugeMetricFamily(
            PREFIX + "model_latency_seconds",
            "Model inference latency quantiles measured by the last evaluation.",
            labels=[*labels, "quantile"],
        )
        self.latency_observed = HistogramMetricFamily(
            PREFIX + "model_latency_observed_seconds",
            "The p95 latency of each evaluation; one bucket boundary is the resource's SLO.",
            labels=labels,
        )
        self.runs = CounterMetricFamily(
            PREFIX + "optimization_runs",
            "Finished optimization runs by outcome.",
            labels=[*labels, "outcome"],
        )
        self.run_duration = HistogramMetricFamily(
            PREFIX + "optimization_run_duration_seconds",
            "Wall time of finished optimization runs.",
            labels=labels,
        )
        self.reconcile_duration = HistogramMetricFamily(
            PREFIX + "reconcile_duration_seconds",
            "Wall time of one reconcile pass of the operator.",
            labels=[],
        )
        self.operator_active = GaugeMetricFamily(
            PREFIX + "operator_active",
            "1 while this replica works, 0 while it stands by for a replica of higher "
            "priority (kopf peering): exactly one replica should be at 1.",
            labels=[],
        )

    def all(self) -> Iterator[Metric]:
        yield from self.gauges.values()
        yield from (
            self.latency,
            self.latency_observed,
            self.runs,
            self.run_duration,
            self.reconcile_duration,
            self.operator_active,
        )

    def add_resource(self, labels: Sequence[str], state: _ResourceState) -> None:
        values: dict[str, float | None] = {
            "drift_score": state.drift_score,
            "drifted_features": state.drifted_features,
            "drift_detected": None if state.drift_detected is None else int(state.drift_detected),
            "multivariate_drift_auroc": state.multivariate_auroc,
            "drift_insufficient_data": None
            if state.drift_insufficient_data is None
            else int(state.drift_insufficient_data),
            "model_accuracy": state.accuracy,
            "latency_slo_seconds": state.slo_seconds,
            "evaluation_interval_seconds": state.evaluation_interval,
            "last_evaluation_timestamp_seconds": state.last_evaluation,
            "temporary_fix_active": int(state.temporary_fix_active),
            "temporary_fix_expiry_timestamp_seconds": state.temporary_fix_expiry,
        }
        for short, value in values.items():
            if value is not None:
                self.gauges[short].add_metric(labels, value)
        for quantile, seconds in sorted(state.latency_seconds.items()):
            self.latency.add_metric([*labels, quantile], seconds)
        for outcome in RUN_OUTCOMES:
            self.runs.add_metric([*labels, OUTCOME_LABELS[outcome]], state.runs[outcome])
        self.run_duration.add_metric(
            labels, state.run_duration.cumulative(), state.run_duration.sum
        )
        self.latency_observed.add_metric(
            labels, state.latency_observed.cumulative(), state.latency_observed.sum
        )
