"""The dataset-level drift verdict, prediction drift, and agreement with SciPy's KS."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from optimizer_job.contract import DriftReport
from optimizer_job.drift import FittedReference, adjust_pvalues, compare, prediction_drift

pytestmark = pytest.mark.unit

NAMES = [f"f{i}" for i in range(6)]


def _data(rng: np.random.Generator, n: int, shifts: dict[int, float] | None = None) -> np.ndarray:
    data = rng.normal(size=(n, len(NAMES)))
    for column, shift in (shifts or {}).items():
        data[:, column] += shift
    return data


def test_no_drift_on_the_same_distribution() -> None:
    rng = np.random.default_rng(0)
    report = compare(_data(rng, 3000), _data(rng, 2000), NAMES)
    assert isinstance(report, DriftReport)
    assert report.metric == "ks"  # the default (issue 13)
    assert not report.detected
    assert report.drifted_features == []
    assert report.share_drifted == 0.0
    assert report.score < 0.05
    assert set(report.per_feature) == set(NAMES)
    assert set(report.per_feature["f0"]) == {
        "psi",
        "jensenshannon",
        "ks",
        "ks_p",
        "wasserstein",
        "p_adjusted",
    }


def test_shifted_feature_is_found_and_scored() -> None:
    rng = np.random.default_rng(1)
    reference, current = _data(rng, 3000), _data(rng, 3000, {2: 1.5})
    report = compare(reference, current, NAMES, metric="psi", threshold=0.2)
    assert report.drifted_features == ["f2"]
    assert report.share_drifted == pytest.approx(1 / 6)
    psi = [report.per_feature[name]["psi"] for name in NAMES]
    assert report.score == pytest.approx(np.mean(psi))
    assert psi[2] > 1.0
    assert report.detected  # one feature far off lifts the mean PSI over 0.2
    assert not compare(reference, current, NAMES, metric="psi", threshold=0.5).detected


def test_ks_metric_detects_when_any_feature_drifts_after_correction() -> None:
    rng = np.random.default_rng(2)
    reference = _data(rng, 2000)
    drifted = compare(reference, _data(rng, 2000, {4: 0.3}), NAMES, metric="ks", threshold=0.9)
    assert drifted.detected  # the threshold plays no part for "ks"
    assert drifted.drifted_features == ["f4"]
    ks = [drifted.per_feature[name]["ks"] for name in NAMES]
    assert drifted.score == pytest.approx(np.mean(ks))
    calm = compare(reference, _data(rng, 2000), NAMES, metric="ks", threshold=0.0)
    assert not calm.detected


def test_feature_is_drifted_by_adjusted_p_value() -> None:
    rng = np.random.default_rng(3)
    reference, current = _data(rng, 400), _data(rng, 400, {0: 0.2, 1: 0.25, 3: 0.15})
    for correction in ("bonferroni", "fdr_bh"):
        report = compare(reference, current, NAMES, metric="ks", correction=correction)
        pvalues = np.array(
            [stats.ks_2samp(reference[:, i], current[:, i]).pvalue for i in range(6)]
        )
        adjusted = adjust_pvalues(pvalues, correction)
        expected = [name for name, q in zip(NAMES, adjusted, strict=True) if q <= 0.05]
        assert report.drifted_features == expected, correction
        for name, q in zip(NAMES, adjusted, strict=True):
            assert report.per_feature[name]["p_adjusted"] == pytest.approx(q, abs=1e-3)


def test_wasserstein_and_jensenshannon_scores() -> None:
    rng = np.random.default_rng(4)
    reference, current = _data(rng, 1000), _data(rng, 1000, {5: 2.0})
    report = compare(reference, current, NAMES, metric="wasserstein", threshold=0.2)
    expected = np.mean(
        [stats.wasserstein_distance(reference[:, i], current[:, i]) for i in range(6)]
    )
    assert report.score == pytest.approx(expected, abs=1e-9)
    assert report.detected  # 2.0 / 6 + noise > 0.2
    js = compare(reference, current, NAMES, metric="jensenshannon", threshold=0.5)
    assert 0.0 < js.score < 0.5 and not js.detected


def test_categorical_features_use_chi_squared() -> None:
    rng = np.random.default_rng(5)
    names = ["x", "colour"]
    reference = np.column_stack([rng.normal(size=2000), rng.choice(3, 2000, p=[0.6, 0.3, 0.1])])
    current = np.column_stack([rng.normal(size=2000), rng.choice(3, 2000, p=[0.3, 0.3, 0.4])])
    report = compare(reference, current, names, categorical={"colour"}, metric="ks")
    assert report.drifted_features == ["colour"]
    assert set(report.per_feature["colour"]) == {
        "psi",
        "jensenshannon",
        "chi2",
        "chi2_p",
        "p_adjusted",
    }
    table = np.array([np.bincount(s[:, 1].astype(int), minlength=3) for s in (reference, current)])
    assert report.per_feature["colour"]["chi2"] == pytest.approx(
        stats.chi2_contingency(table).statistic
    )
    with pytest.raises(ValueError, match="all are categorical"):
        compare(reference[:, 1:], current[:, 1:], ["colour"], categorical={"colour"}, metric="ks")


def test_fitted_reference_gives_the_same_report() -> None:
    rng = np.random.default_rng(6)
    reference, current = _data(rng, 1000), _data(rng, 800, {1: 0.4})
    fitted = FittedReference.fit(reference, NAMES)
    assert compare(fitted, current, NAMES) == compare(reference, current, NAMES)
    with pytest.raises(ValueError, match="differ from the fitted reference"):
        compare(fitted, current, list(reversed(NAMES)))
    with pytest.raises(ValueError, match="categorical"):
        compare(fitted, current, NAMES, categorical={"f0"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "kl"}, "unknown drift metric"),
        ({"alpha": 0.0}, "alpha"),
        ({"threshold": float("nan")}, "threshold"),
        ({"correction": "holm"}, "correction"),
    ],
)
def test_compare_rejects_bad_settings(kwargs: dict[str, object], message: str) -> None:
    data = np.zeros((5, 6))
    with pytest.raises(ValueError, match=message):
        compare(data, data, NAMES, **kwargs)  # type: ignore[arg-type]


def test_prediction_drift() -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(3000, 3))
    p_ref = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    logits_same = rng.normal(size=(2000, 3))
    p_same = np.exp(logits_same) / np.exp(logits_same).sum(axis=1, keepdims=True)
    logits_shift = rng.normal(size=(2000, 3)) + np.array([0.5, 0.0, 0.0])
    p_shift = np.exp(logits_shift) / np.exp(logits_shift).sum(axis=1, keepdims=True)
    for current in (p_same, p_shift):
        expected = min(
            1.0, 3 * min(stats.ks_2samp(p_ref[:, k], current[:, k]).pvalue for k in range(3))
        )
        assert prediction_drift(p_ref, current) == pytest.approx(expected, abs=1e-3)
    assert prediction_drift(p_ref, p_shift) < 1e-6
    assert prediction_drift(p_ref[:, 0], p_same[:, 0]) > 0.0  # 1-D: one column
    report = compare(_data(rng, 100), _data(rng, 100), NAMES, predictions=(p_ref, p_shift))
    assert report.prediction_drift_p == pytest.approx(prediction_drift(p_ref, p_shift))
    with pytest.raises(ValueError, match="classes"):
        prediction_drift(p_ref, p_shift[:, :2])


def test_decisions_agree_with_scipy_ks_over_random_trials() -> None:
    """A small version of bench/drift_bench.py's 200-trial agreement check."""
    rng = np.random.default_rng(8)
    agree = 0
    trials = 30
    for trial in range(trials):
        n_ref, n_cur = rng.integers(20, 800, size=2)
        reference = rng.normal(size=(n_ref, len(NAMES)))
        current = rng.normal(size=(n_cur, len(NAMES)))
        if trial % 2:  # shift a few features by amounts near the detection limit
            columns = rng.choice(len(NAMES), size=rng.integers(1, 4), replace=False)
            current[:, columns] += rng.uniform(0.05, 0.4, size=columns.size)
        if trial % 3 == 0:  # ties
            reference, current = np.round(reference, 1), np.round(current, 1)
        correction = "bonferroni" if trial % 4 < 2 else "fdr_bh"
        report = compare(reference, current, NAMES, metric="ks", correction=correction)
        pvalues = np.array(
            [stats.ks_2samp(reference[:, i], current[:, i]).pvalue for i in range(len(NAMES))]
        )
        expected = [
            n for n, q in zip(NAMES, adjust_pvalues(pvalues, correction), strict=True) if q <= 0.05
        ]
        agree += report.drifted_features == expected
    assert agree / trials >= 0.99
