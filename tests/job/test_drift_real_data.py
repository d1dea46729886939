"""Drift verdicts on a real tabular dataset (scikit-learn's bundled breast cancer data)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from optimizer_job.drift import FittedReference, compare, prediction_drift

pytestmark = pytest.mark.job


def _data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    bunch = load_breast_cancer()
    return bunch.data, bunch.target, [str(name) for name in bunch.feature_names]


def test_random_split_shows_no_drift() -> None:
    features, _, names = _data()
    order = np.random.default_rng(0).permutation(len(features))
    reference, current = features[order[:285]], features[order[285:]]
    for metric in ("psi", "ks", "jensenshannon"):
        report = compare(reference, current, names, metric=metric)  # type: ignore[arg-type]
        assert not report.detected, (metric, report.score, report.drifted_features)
        assert report.drifted_features == []


def test_selection_shift_is_detected_and_localised() -> None:
    features, _, names = _data()
    radius = names.index("mean radius")
    median = np.median(features[:, radius])
    # The current data only holds the larger tumours: a covariate shift that moves
    # every size-related feature and leaves e.g. texture or symmetry about as they were.
    reference = features[features[:, radius] <= np.quantile(features[:, radius], 0.8)]
    current = features[features[:, radius] > median]
    fitted = FittedReference.fit(reference, names)
    for metric in ("psi", "ks"):
        report = compare(fitted, current, names, metric=metric)  # type: ignore[arg-type]
        assert report.detected, metric
        for size_feature in ("mean radius", "mean area", "worst perimeter"):
            assert size_feature in report.drifted_features
        assert "mean symmetry" not in report.drifted_features
        assert 0.2 < report.share_drifted < 1.0


def test_prediction_drift_of_a_fitted_model() -> None:
    features, target, names = _data()
    order = np.random.default_rng(1).permutation(len(features))
    train, rest = order[:300], order[300:]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(features[train], target[train])
    p_reference = model.predict_proba(features[rest[:130]])
    p_same = model.predict_proba(features[rest[130:]])
    radius = names.index("mean radius")
    large = features[features[:, radius] > np.quantile(features[:, radius], 0.7)]
    p_shifted = model.predict_proba(large)
    assert prediction_drift(p_reference, p_same) > 0.05
    assert prediction_drift(p_reference, p_shifted) < 1e-4


CAR_LOAN_FEATURES = [
    "car_value",
    "salary_range",
    "debt_to_income_ratio",
    "loan_length",
    "repaid_loan_on_write_off",
    "size_of_downpayment",
    "driver_tenure",
]
CAR_LOAN_DRIFTED = {"car_value", "salary_range", "debt_to_income_ratio", "loan_length"}


def _car_loan_chunk(rng: np.random.Generator, n: int, drifted: bool) -> np.ndarray:
    """A synthetic stand-in for NannyML's car-loan data (which cannot be downloaded
    here): the same seven features, and in the drifted chunks a shift of the four
    that NannyML reports drifting (dearer cars, higher salaries, more debt, longer
    loans); the other three stay as they are."""
    salary = rng.choice(4, size=n, p=[0.2, 0.3, 0.3, 0.2] if drifted else [0.4, 0.3, 0.2, 0.1])
    car_value = rng.lognormal(10.0 + (0.25 if drifted else 0.0) + 0.1 * salary, 0.4)
    debt = rng.beta(2.0 + (1.0 if drifted else 0.0), 5.0, size=n)
    loan_length = rng.choice(
        np.arange(12, 61, 6), size=n, p=np.linspace(2, 1, 9) / np.linspace(2, 1, 9).sum()
    ) + (6 * rng.integers(0, 2, size=n) if drifted else 0)
    repaid = rng.integers(0, 2, size=n)
    downpayment = rng.choice([0.0, 0.1, 0.2, 0.3, 0.4], size=n)
    tenure = rng.gamma(2.0, 2.0, size=n)
    return np.column_stack(
        [car_value, salary, debt, loan_length, repaid, downpayment, tenure]
    ).astype(np.float64)


def test_car_loan_like_chunks_five_to_nine_drift() -> None:
    rng = np.random.default_rng(2026)
    reference = _car_loan_chunk(rng, 10_000, drifted=False)
    categorical = {"salary_range", "repaid_loan_on_write_off", "size_of_downpayment"}
    fitted = FittedReference.fit(reference, CAR_LOAN_FEATURES, categorical=categorical)
    flagged_ks, flagged_mv = [], []
    for chunk in range(10):
        current = _car_loan_chunk(rng, 1000, drifted=chunk >= 5)
        ks = compare(fitted, current, CAR_LOAN_FEATURES, metric="ks")
        if ks.detected:
            flagged_ks.append(chunk)
            assert set(ks.drifted_features) == CAR_LOAN_DRIFTED, (chunk, ks.drifted_features)
        mv = compare(fitted, current, CAR_LOAN_FEATURES, metric="multivariate")
        if mv.detected:
            flagged_mv.append(chunk)
            assert mv.multivariate is not None
            top = {feature.name for feature in mv.multivariate.top_features[:2]}
            assert top <= CAR_LOAN_DRIFTED, (chunk, mv.multivariate.top_features)
    assert flagged_ks == [5, 6, 7, 8, 9]
    assert flagged_mv == [5, 6, 7, 8, 9]
