"""Drift statistics: is the current data distributed like the reference data?

NumPy and SciPy only (no torch), so the operator side may import it too.

- ``FittedReference.fit`` summarises a reference sample once (sorted columns,
  quantile bins, category counts); ``save`` / ``load`` cache it as ``.npz``.
- ``feature_statistics`` scores a current sample against it: PSI, Jensen-Shannon,
  two-sample KS (statistic and p-value as scipy.stats.ks_2samp), Wasserstein-1 for
  numeric features; PSI, Jensen-Shannon and chi-squared for categorical ones.
- ``compare`` turns those into the contract's ``DriftReport`` (rules in ``verdict``).
- ``prediction_drift`` tests the model's output probabilities for a shift.
"""

from optimizer_job.drift.multiple_testing import Correction, adjust_pvalues
from optimizer_job.drift.reference import FittedReference
from optimizer_job.drift.scoring import ALL_STATISTICS, feature_statistics
from optimizer_job.drift.univariate import PSI_EPSILON
from optimizer_job.drift.verdict import METRICS, Metric, compare, prediction_drift

__all__ = [
    "ALL_STATISTICS",
    "METRICS",
    "PSI_EPSILON",
    "Correction",
    "FittedReference",
    "Metric",
    "adjust_pvalues",
    "compare",
    "feature_statistics",
    "prediction_drift",
]
