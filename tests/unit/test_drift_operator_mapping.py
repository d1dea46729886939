"""How a drift verdict from the evaluate Job reaches status, conditions and metrics."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftwarden.api.spec import DriftTrigger
from driftwarden.api.status import Evaluation
from driftwarden.metrics import OperatorMetrics
from driftwarden.services.evaluations import _drifting, _test_verdicts
from optimizer_job.contract import CompactResult, EvaluationSettings

pytestmark = pytest.mark.unit


def _result(**fields: object) -> CompactResult:
    return CompactResult(kind="evaluate", run_id="e-1", ok=True, **fields)  # type: ignore[arg-type]


def test_default_metric_is_ks_in_the_spec_and_the_task() -> None:
    assert DriftTrigger().metric == "ks"
    assert EvaluationSettings().drift_metric == "ks"
    assert DriftTrigger(metric="multivariate").metric == "multivariate"


def test_test_metrics_use_the_jobs_verdict_and_score_metrics_the_threshold() -> None:
    # KS: mean KS statistic 0.05 is far under 0.2, but a feature's test rejected.
    ks = _result(drift_score=0.05, drift_detected=True, drift_metric="ks")
    assert _drifting(ks, "ks", "0.2") is True
    # PSI: the spec's current threshold decides.
    psi = _result(drift_score=0.25, drift_detected=False, drift_metric="psi")
    assert _drifting(psi, "psi", "0.2") is True
    assert _drifting(psi, "psi", "0.3") is False
    mv = _result(drift_score=0.97, drift_detected=True, drift_metric="multivariate")
    assert _drifting(mv, "multivariate", "0.2") is True


def test_insufficient_data_is_no_verdict() -> None:
    small = _result(
        drift_score=8.28,
        drift_detected=False,
        drift_metric="psi",
        drift_insufficient="1 current row: drift metric psi needs at least 85",
    )
    assert _drifting(small, "psi", "0.2") is None


def test_multivariate_condition_message_names_the_top_features() -> None:
    evaluation = Evaluation(
        drift_metric="multivariate",
        drift_score=0.93,
        drift_p_value=1e-9,
        drift_top_features=["a", "b"],
    )
    over, within = _test_verdicts("multivariate", 0.93, "0.05", evaluation)
    assert "AUROC 0.930" in over and "a, b" in over
    assert "AUROC 0.930" in within


def test_multivariate_auroc_and_insufficient_data_are_their_own_metrics() -> None:
    metrics = OperatorMetrics()
    metrics.record_evaluation(
        "prod",
        "fraud",
        drift_score=0.93,
        drifted_features=0,
        drift_detected=True,
        latency_ms=None,
        accuracy=None,
        timestamp=1.0,
        multivariate_auroc=0.93,
        drift_insufficient_data=False,
    )
    metrics.record_evaluation(
        "prod",
        "small",
        drift_score=None,
        drifted_features=None,
        drift_detected=None,
        latency_ms=None,
        accuracy=None,
        timestamp=1.0,
        drift_insufficient_data=True,
    )
    text = generate_latest(metrics.registry).decode()
    samples = {
        (s.name, s.labels["name"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "name" in s.labels
    }
    assert samples[("driftwarden_multivariate_drift_auroc", "fraud")] == pytest.approx(0.93)
    assert ("driftwarden_multivariate_drift_auroc", "small") not in samples
    assert samples[("driftwarden_drift_insufficient_data", "small")] == 1
    assert samples[("driftwarden_drift_insufficient_data", "fraud")] == 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= {"namespace", "name", "quantile", "outcome", "le"}
