"""Multivariate drift: can a classifier tell current rows from reference rows?

Per-feature tests see each marginal distribution alone; they miss a change in how
features go together (a correlation that flips leaves every marginal as it was).
The domain classifier sees whole rows:

1. Take the same number of rows from each side (at most ``max_rows``, a seeded random
   sample), label them reference = 0 / current = 1.
2. Cross-validate (``folds`` stratified folds) a gradient-boosted tree ensemble
   (scikit-learn's HistGradientBoostingClassifier: fast at 10^5 rows, and trees catch
   interactions a linear model cannot) and score each held-out fold: its AUROC.
3. Test "AUROC = 0.5". Within a held-out fold the labels are independent of the
   classifier's scores when nothing drifted, so the fold's Mann-Whitney U (= AUROC x
   n0 x n1) has its null mean n0 n1 / 2 and variance n0 n1 (n0 + n1 + 1) / 12 (ties
   only make that smaller, so the test is conservative). The folds' U are summed and
   the one-sided normal p-value is reported. bench/RESULTS.md measures the false-alarm
   rate without drift.
4. Name the features that carry the difference: on each held-out fold, how much the
   AUROC drops when a feature's values are shuffled (permutation importance), averaged
   over folds; computed only when the test rejects (it costs a few predictions per
   feature).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import stats
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from optimizer_job.contract import FeatureContribution, MultivariateDrift

# Rows per side the classifier sees: 10 000 + 10 000 rows fit in seconds and detect
# an AUROC of 0.52 (the standard error of the AUROC is about 0.004 there).
MAX_ROWS: Final = 10_000
FOLDS: Final = 5
# Fewer rows than this and the test is not to be trusted: InsufficientData (at 50 rows
# per side 3 of 10 comparisons without drift rejected; bench/RESULTS.md).
MIN_ROWS: Final = 100
TOP_FEATURES: Final = 5


def _sample(rows: NDArray[Any], count: int, rng: np.random.Generator) -> NDArray[np.float64]:
    if rows.shape[0] > count:
        rows = rows[np.sort(rng.choice(rows.shape[0], count, replace=False))]
    return np.asarray(rows, dtype=np.float64)


def _classifier(seed: int) -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(
        max_iter=50,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=10,
        early_stopping=False,
        random_state=seed,
    )


def domain_classifier(
    reference: Any,
    current: Any,
    feature_names: Sequence[str],
    *,
    alpha: float = 0.05,
    seed: int = 0,
    folds: int = FOLDS,
    max_rows: int = MAX_ROWS,
    threads: int = 1,
) -> MultivariateDrift:
    """Cross-validated domain classifier of reference rows against current rows.

    ``threads`` caps the classifier's OpenMP threads: by default OpenMP starts one per
    core it sees, and on a busy or CPU-limited node those spin against each other
    (measured: 3.5 s with one thread, over 5 minutes with the default on a 2-core
    machine at load 18).
    """
    with threadpool_limits(limits=threads):
        return _domain_classifier(
            reference,
            current,
            feature_names,
            alpha=alpha,
            seed=seed,
            folds=folds,
            max_rows=max_rows,
        )


def _domain_classifier(
    reference: Any,
    current: Any,
    feature_names: Sequence[str],
    *,
    alpha: float,
    seed: int,
    folds: int,
    max_rows: int,
) -> MultivariateDrift:
    reference_rows, current_rows = np.asarray(reference), np.asarray(current)
    if reference_rows.ndim != 2 or current_rows.ndim != 2:
        raise ValueError("multivariate drift needs 2-D samples (rows x features)")
    if len({reference_rows.shape[1], current_rows.shape[1], len(feature_names)}) != 1:
        raise ValueError("reference, current and feature_names disagree on the features")
    per_side = min(reference_rows.shape[0], current_rows.shape[0], max_rows)
    if per_side < folds * 2:
        raise ValueError(f"multivariate drift needs at least {folds * 2} rows per side")
    rng = np.random.default_rng(seed)
    x = np.vstack((_sample(reference_rows, per_side, rng), _sample(current_rows, per_side, rng)))
    y = np.repeat(np.array([0, 1]), per_side)

    u_sum = mean_sum = variance_sum = 0.0
    aurocs: list[float] = []
    fitted: list[tuple[HistGradientBoostingClassifier, NDArray[np.int64]]] = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y):
        model = _classifier(seed).fit(x[train], y[train])
        scores = model.predict_proba(x[test])[:, 1]
        auroc = float(roc_auc_score(y[test], scores))
        n1 = int(y[test].sum())
        n0 = int(test.shape[0] - n1)
        aurocs.append(auroc)
        u_sum += auroc * n0 * n1
        mean_sum += n0 * n1 / 2.0
        variance_sum += n0 * n1 * (n0 + n1 + 1) / 12.0
        fitted.append((model, test))
    z = (u_sum - mean_sum) / math.sqrt(variance_sum)
    p_value = float(stats.norm.sf(z))
    top: list[FeatureContribution] = []
    if p_value <= alpha:
        top = _top_features(fitted, x, y, feature_names, seed)
    return MultivariateDrift(
        auroc=float(np.mean(aurocs)),
        p_value=p_value,
        rows_per_side=per_side,
        folds=folds,
        top_features=top,
    )


def _top_features(
    fitted: list[tuple[HistGradientBoostingClassifier, NDArray[np.int64]]],
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    feature_names: Sequence[str],
    seed: int,
) -> list[FeatureContribution]:
    importance = np.zeros(x.shape[1])
    for model, test in fitted:
        result = permutation_importance(
            model, x[test], y[test], scoring="roc_auc", n_repeats=3, random_state=seed
        )
        importance += result.importances_mean / len(fitted)
    order = np.argsort(-importance, kind="stable")
    return [
        FeatureContribution(name=str(feature_names[i]), importance=round(float(importance[i]), 6))
        for i in order[:TOP_FEATURES]
        if importance[i] > 0.0
    ]
