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
