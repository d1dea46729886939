"""Multivariate drift: a domain classifier sees what per-feature tests cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optimizer_job.contract import CompactResult, RunResult
from optimizer_job.drift import FittedReference, compare
from optimizer_job.drift.multivariate import domain_classifier

pytestmark = pytest.mark.unit

NAMES = ["a", "b", "c", "d"]


def _correlated(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """a and b standard normal with correlation rho; c, d independent noise."""
    a = rng.standard_normal(n)
    b = rho * a + np.sqrt(1.0 - rho**2) * rng.standard_normal(n)
    return np.column_stack([a, b, rng.standard_normal(n), rng.uniform(size=n)])


def test_flipped_correlation_is_missed_by_univariate_tests_and_caught_by_multivariate() -> None:
    rng = np.random.default_rng(0)
    reference, current = _correlated(rng, 3000, 0.8), _correlated(rng, 3000, -0.8)
    for metric in ("ks", "psi", "jensenshannon", "wasserstein"):
        univariate = compare(reference, current, NAMES, metric=metric)  # type: ignore[arg-type]
        assert not univariate.detected, (metric, univariate.score)
        assert univariate.drifted_features == []
    report = compare(reference, current, NAMES, metric="multivariate")
    assert report.detected
    assert report.multivariate is not None
    assert report.score == report.multivariate.auroc > 0.8
    assert report.multivariate.p_value < 1e-6
    top = [feature.name for feature in report.multivariate.top_features]
    assert set(top[:2]) == {"a", "b"}, report.multivariate.top_features
    assert report.drifted_features == []  # no marginal moved


def test_no_drift_is_not_flagged_and_a_fitted_reference_keeps_rows_for_it() -> None:
    rng = np.random.default_rng(1)
    fitted = FittedReference.fit(_correlated(rng, 5000, 0.8), NAMES)
    report = compare(fitted, _correlated(rng, 2000, 0.8), NAMES, metric="multivariate")
    assert not report.detected
    assert report.multivariate is not None
    assert 0.4 < report.score < 0.6
    assert report.multivariate.top_features == []
    assert report.multivariate.rows_per_side == 2000


def test_saved_reference_keeps_its_row_sample(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    fitted = FittedReference.fit(_correlated(rng, 500, 0.8), NAMES)
    fitted.save(tmp_path / "ref.npz")
    loaded = FittedReference.load(tmp_path / "ref.npz")
    assert loaded.sample is not None
    np.testing.assert_array_equal(loaded.sample, fitted.sample)  # type: ignore[arg-type]
    without = FittedReference.fit(_correlated(rng, 500, 0.8), NAMES, sample_rows=0)
    with pytest.raises(ValueError, match="row sample"):
        compare(without, _correlated(rng, 500, -0.8), NAMES, metric="multivariate")


def test_too_few_rows_is_insufficient_data() -> None:
    rng = np.random.default_rng(3)
    report = compare(
        _correlated(rng, 1000, 0.8), _correlated(rng, 20, -0.8), NAMES, metric="multivariate"
    )
    assert not report.detected
    assert report.insufficient_data is not None
    assert report.multivariate is None


def test_domain_classifier_false_alarms_stay_near_alpha() -> None:
    """20 comparisons without drift at 100 rows per side: the test is level alpha."""
    alarms = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        result = domain_classifier(
            _correlated(rng, 100, 0.5), _correlated(rng, 100, 0.5), NAMES, seed=seed
        )
        alarms += result.p_value <= 0.05
    assert alarms <= 3  # P(X >= 4) for X ~ Binomial(20, 0.05) is 1.6 %


def test_compact_result_carries_the_multivariate_verdict() -> None:
    rng = np.random.default_rng(4)
    report = compare(
        _correlated(rng, 2000, 0.8), _correlated(rng, 2000, -0.8), NAMES, metric="multivariate"
    )
    result = RunResult(kind="evaluate", run_id="e-1", ok=True, drift=report)
    compact = CompactResult.from_result(result)
    assert compact.drift_metric == "multivariate"
    assert compact.drift_p_value is not None and compact.drift_p_value < 1e-6
    assert set(compact.drift_top_features[:2]) == {"a", "b"}
    assert len(compact.to_message()) <= 4096
