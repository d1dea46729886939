"""The dataset-level drift verdict that the evaluate stage reports.

Rules (the same for every metric):

- A feature has *drifted* when its test rejects "same distribution" after the
  multiple-test correction: the two-sample KS p-value for a numeric feature, the
  chi-squared p-value for a categorical one, adjusted (``bonferroni`` or ``fdr_bh``)
  and compared with ``alpha`` (drifted when adjusted p <= alpha).
  ``share_drifted`` is the share of such features.
- ``score`` is the mean of the chosen metric over the features that have it (KS and
  Wasserstein are numeric-only; Wasserstein is in each feature's own units).
- ``detected``:
  - ``ks`` (the default): at least one feature drifted after the correction. This is
    a level-alpha test of "no feature changed" (Bonferroni; Benjamini-Hochberg
    reduces to Simes' test here), so without drift it fires in at most alpha of
    evaluations at any sample size. ``threshold`` is not used. With large samples it
    flags small shifts too.
  - ``psi``, ``jensenshannon``, ``wasserstein``: ``score > threshold``. These measure
    how much the distributions moved; the threshold says how much matters.
  - ``multivariate``: a domain classifier tells current rows from reference rows
    better than chance (``multivariate``; p-value <= alpha). ``score`` is its
    cross-validated AUROC; the per-feature tests still name the drifted features,
    and the report names the features the classifier relied on.
- Too few rows (``minimum_rows``): ``insufficient_data`` says why, ``detected`` is
  False and no feature is named. A score over a fixed threshold is mostly noise on
  a small sample: PSI of one current row from the reference distribution is 8.3.
  - ``ks``: 30 rows per side (the test is exact at any size; below 30 it has next to
    no power, and bench/RESULTS.md shows its false-alarm rate <= alpha from 30 up).
  - ``psi``, ``jensenshannon``: without drift, n * PSI and 8 ln(2) n JS^2 are about
    chi-squared with bins - 1 degrees of freedom (n = n_ref n_cur / (n_ref + n_cur),
    the effective sample size), so the minimum is the n at which the threshold is
    that law's 1 - alpha quantile: below it the score is over the threshold in more
    than alpha of comparisons without any drift.
  - ``wasserstein``: 100 rows (it is in the feature's units: no scale-free law).
  - ``multivariate``: 100 rows per side.

Prediction drift (the model's output probabilities, reference vs current) is
reported as ``prediction_drift_p`` and does not change ``detected``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from scipy import stats as sp_stats

from optimizer_job.contract import DriftReport
from optimizer_job.drift import multivariate as multivariate_drift
from optimizer_job.drift.multiple_testing import Correction, adjust_pvalues
from optimizer_job.drift.reference import (
    FittedReference,
    as_numeric_matrix,
    sorted_finite_column,
)
from optimizer_job.drift.scoring import (
    ALL_STATISTICS,
    CATEGORICAL_STATISTICS,
    NUMERIC_STATISTICS,
    feature_statistics,
)
from optimizer_job.drift.univariate import ks_test

Metric = Literal["ks", "psi", "wasserstein", "jensenshannon", "multivariate"]
METRICS: tuple[Metric, ...] = ("ks", "psi", "wasserstein", "jensenshannon", "multivariate")
DEFAULT_METRIC: Metric = "ks"

KS_MIN_ROWS = 30
WASSERSTEIN_MIN_ROWS = 100


def minimum_rows(metric: Metric, *, threshold: float, alpha: float, bins: int) -> int:
    """The fewest rows a comparison with ``metric`` needs (rules: module docstring).

    For ``psi`` and ``jensenshannon`` this is an effective sample size
    n_ref n_cur / (n_ref + n_cur); for the others, rows of the smaller sample.
    """
    if metric in ("psi", "jensenshannon"):
        quantile = float(sp_stats.chi2.ppf(1.0 - alpha, bins - 1))
        if threshold <= 0.0:
            return 2**62
        scale = threshold if metric == "psi" else 8.0 * math.log(2.0) * threshold**2
        return max(KS_MIN_ROWS, math.ceil(quantile / scale))
    if metric == "wasserstein":
        return WASSERSTEIN_MIN_ROWS
    if metric == "multivariate":
        return multivariate_drift.MIN_ROWS
    return KS_MIN_ROWS


def compare(
    reference: Any,
    current: Any,
    feature_names: Sequence[str],
    *,
    metric: Metric = DEFAULT_METRIC,
    alpha: float = 0.05,
    threshold: float = 0.2,
    correction: Correction = "bonferroni",
    categorical: set[str] | None = None,
    bins: int = 10,
    predictions: tuple[Any, Any] | None = None,
    workers: int | None = None,
) -> DriftReport:
    """Compare ``current`` with ``reference`` feature by feature (rules: module docstring).

    ``reference`` is a (rows x features) array, fitted here with ``categorical`` and
    ``bins``, or a ``FittedReference`` fitted earlier on the same feature names.
    ``predictions`` is (reference probabilities, current probabilities), each
    (rows x classes). Bad input (shapes, names, NaN) raises ValueError.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown drift metric {metric!r}; known: {list(METRICS)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not (math.isfinite(threshold) and threshold >= 0.0):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    if correction not in ("bonferroni", "fdr_bh"):
        raise ValueError(f"unknown correction {correction!r}: use 'bonferroni' or 'fdr_bh'")
    fitted = _fitted(reference, feature_names, categorical, bins)
    names = fitted.feature_names
    categorical_mask = np.array([fitted.is_categorical(name) for name in names])
    if metric in ("ks", "wasserstein") and categorical_mask.all():
        raise ValueError(f"metric {metric!r} needs a numeric feature; all are categorical")
    current_matrix = as_numeric_matrix(current, "current data")

    stats = feature_statistics(fitted, current_matrix, ALL_STATISTICS, workers=workers)
    pvalues = np.where(categorical_mask, stats["chi2_p"], stats["ks_p"])
    adjusted = adjust_pvalues(pvalues, correction)
    drifted = adjusted <= alpha

    per_feature: dict[str, dict[str, float]] = {}
    for index, name in enumerate(names):
        kinds = CATEGORICAL_STATISTICS if categorical_mask[index] else NUMERIC_STATISTICS
        values = {kind: float(stats[kind][index]) for kind in kinds}
        values["p_adjusted"] = float(adjusted[index])
        per_feature[name] = values

    n_ref, n_cur = fitted.n_rows, current_matrix.shape[0]
    needed = minimum_rows(metric, threshold=threshold, alpha=alpha, bins=bins)
    if metric in ("psi", "jensenshannon"):
        have = n_ref * n_cur / (n_ref + n_cur)
        rows = f"an effective sample size of {have:.1f} rows (reference {n_ref}, current {n_cur})"
    else:
        have = min(n_ref, n_cur)
        rows = f"{n_ref} reference and {n_cur} current rows"
    insufficient = None
    if have < needed:
        insufficient = f"{rows}: drift metric {metric} needs at least {needed}" + (
            f" at threshold {threshold:g}" if metric in ("psi", "jensenshannon") else ""
        )
        drifted = np.zeros_like(drifted)

    multivariate = None
    if metric == "multivariate":
        if insufficient is None:
            multivariate = multivariate_drift.domain_classifier(
                _reference_rows(reference, fitted), current_matrix, names, alpha=alpha
            )
        score = multivariate.auroc if multivariate else 0.5  # 0.5: no evidence either way
        detected = multivariate is not None and multivariate.p_value <= alpha
    else:
        score = float(np.nanmean(stats[metric]))
        detected = bool(drifted.any()) if metric == "ks" else score > threshold
    if insufficient is not None:
        detected = False

    return DriftReport(
        metric=metric,
        score=score,
        share_drifted=float(drifted.mean()),
        drifted_features=[name for name, flag in zip(names, drifted, strict=True) if flag],
        detected=detected,
        prediction_drift_p=prediction_drift(*predictions) if predictions is not None else None,
        per_feature=per_feature,
        insufficient_data=insufficient,
        minimum_rows=needed,
        multivariate=multivariate,
    )


def _reference_rows(reference: Any, fitted: FittedReference) -> Any:
    if not isinstance(reference, FittedReference):
        return as_numeric_matrix(reference, "reference")
    if fitted.sample is None:
        raise ValueError(
            "metric 'multivariate' needs reference rows; this fitted reference was saved "
            "without a row sample: fit it again"
        )
    return fitted.sample


def _fitted(
    reference: Any, feature_names: Sequence[str], categorical: set[str] | None, bins: int
) -> FittedReference:
    if not isinstance(reference, FittedReference):
        return FittedReference.fit(reference, feature_names, categorical, bins)
    if tuple(feature_names) != reference.feature_names:
        raise ValueError(
            f"feature_names {list(feature_names)} differ from the fitted reference's "
            f"{list(reference.feature_names)}"
        )
    if categorical is not None:
        fitted_categorical = {n for n in reference.feature_names if reference.is_categorical(n)}
        if set(categorical) != fitted_categorical:
            raise ValueError(
                f"categorical={sorted(categorical)} differs from the fitted reference's "
                f"{sorted(fitted_categorical)}"
            )
    return reference


def prediction_drift(p_ref: Any, p_cur: Any) -> float:
    """Black-box shift detection: did the model's output distribution change?

    Runs a two-sample KS test per class on the predicted probabilities (reference
    rows x classes against current rows x classes) and returns the smallest p-value
    times the number of classes (Bonferroni), capped at 1. A 1-D input is one column.
    """
    reference = as_numeric_matrix(_as_columns(p_ref), "reference predictions")
    current = as_numeric_matrix(_as_columns(p_cur), "current predictions")
    if reference.shape[1] != current.shape[1]:
        raise ValueError(
            f"reference predictions have {reference.shape[1]} classes, "
            f"current predictions {current.shape[1]}"
        )
    classes = [f"class {k}" for k in range(reference.shape[1])]
    smallest = 1.0
    for index, name in enumerate(classes):
        ref_sorted = sorted_finite_column(reference, index, name, "reference predictions")
        cur_sorted = sorted_finite_column(current, index, name, "current predictions")
        if ref_sorted.dtype != cur_sorted.dtype:  # one type for both (drift.reference)
            common = np.promote_types(ref_sorted.dtype, cur_sorted.dtype)
            narrow = np.float32 if np.float32 in (ref_sorted.dtype, cur_sorted.dtype) else common
            ref_sorted, cur_sorted = ref_sorted.astype(narrow), cur_sorted.astype(narrow)
        smallest = min(smallest, ks_test(ref_sorted, cur_sorted)[1])
    return min(1.0, smallest * len(classes))


def _as_columns(values: Any) -> Any:
    array = np.asarray(values)
    return array[:, None] if array.ndim == 1 else array
