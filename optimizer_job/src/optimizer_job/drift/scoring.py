"""Per-feature statistics of a current sample against a fitted reference.

This is the fast path: each current column is copied out and sorted once, then
every statistic reads that sorted copy (see ``univariate``). Only one column per
worker is alive at a time, so the extra memory is a few columns, never a second
copy of the table. NumPy's sort and binary search release the GIL, so a few
threads split the features between cores.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from optimizer_job.drift.reference import (
    CategoricalReference,
    FittedReference,
    NumericReference,
    ValueArray,
    as_comparable,
    as_numeric_matrix,
    comparison_dtype,
    distinct_counts,
    sorted_finite_column,
)
from optimizer_job.drift.univariate import (
    bin_counts,
    chi2_test,
    jensenshannon,
    ks_test,
    psi,
    wasserstein,
)

# What each kind of feature reports. KS and Wasserstein need an order of values, which
# categories lack; chi-squared is the categorical feature's test instead.
NUMERIC_STATISTICS: Final = ("psi", "jensenshannon", "ks", "ks_p", "wasserstein")
CATEGORICAL_STATISTICS: Final = ("psi", "jensenshannon", "chi2", "chi2_p")
ALL_STATISTICS: Final = ("psi", "jensenshannon", "ks", "ks_p", "wasserstein", "chi2", "chi2_p")


def _numeric(
    reference: NumericReference, current_sorted: ValueArray, wanted: Collection[str]
) -> dict[str, float]:
    # One type for both sides (reference.comparison_dtype): a copy of this one column
    # when the reference is stored more compactly than it is compared.
    reference_sorted = reference.values_as(current_sorted.dtype)
    out: dict[str, float] = {}
    if "psi" in wanted or "jensenshannon" in wanted:
        reference_shares = reference.shares_as(reference_sorted)
        shares = bin_counts(current_sorted, reference.edges) / current_sorted.shape[0]
        if "psi" in wanted:
            out["psi"] = psi(reference_shares, shares)
        if "jensenshannon" in wanted:
            out["jensenshannon"] = jensenshannon(reference_shares, shares)
    if "ks" in wanted or "ks_p" in wanted:
        out["ks"], out["ks_p"] = ks_test(reference_sorted, current_sorted)
    if "wasserstein" in wanted:
        out["wasserstein"] = wasserstein(reference_sorted, current_sorted)
    return out


def _categorical(
    reference: CategoricalReference, current_sorted: ValueArray, wanted: Collection[str]
) -> dict[str, float]:
    values, counts = distinct_counts(current_sorted)
    reference_categories = as_comparable(
        reference.categories, current_sorted.dtype, "categorical", "reference"
    )
    categories = np.union1d(reference_categories, values)
    ref_counts = np.zeros(categories.shape[0], dtype=np.int64)
    # Rounding to the comparison type may merge categories: add their counts.
    np.add.at(ref_counts, np.searchsorted(categories, reference_categories), reference.counts)
    cur_counts = np.zeros(categories.shape[0], dtype=np.int64)
    cur_counts[np.searchsorted(categories, values)] = counts
    ref_shares = ref_counts / ref_counts.sum()
    cur_shares = cur_counts / cur_counts.sum()
    out: dict[str, float] = {}
    if "psi" in wanted:
        out["psi"] = psi(ref_shares, cur_shares)
    if "jensenshannon" in wanted:
        out["jensenshannon"] = jensenshannon(ref_shares, cur_shares)
    if "chi2" in wanted or "chi2_p" in wanted:
        out["chi2"], out["chi2_p"] = chi2_test(ref_counts, cur_counts)
    return out


def feature_bounds(feature: NumericReference | CategoricalReference) -> ValueArray:
    """The smallest and largest reference value of a feature, in the type it came in."""
    values = feature.sorted_values if isinstance(feature, NumericReference) else feature.categories
    return values[[0, -1]].astype(feature.dtype)


def available_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota.

    In a Kubernetes Pod the affinity lists every core of the node while the CPU limit
    is a quota ("200000 100000" = 2 cores); threads beyond the quota only get throttled.
    """
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def default_workers(n_features: int) -> int:
    """One thread per available core (at most 8), never more than there are features."""
    return max(1, min(available_cores(), 8, n_features))


def feature_statistics(
    reference: FittedReference,
    current: Any,
    statistics: Collection[str] = ALL_STATISTICS,
    workers: int | None = None,
) -> dict[str, NDArray[np.float64]]:
    """Each requested statistic for every feature, in ``reference.feature_names`` order.

    Returns one array per statistic; a feature the statistic does not apply to (KS of
    a categorical feature, chi-squared of a numeric one) holds NaN there. ``current``
    has the reference's columns in the same order; NaN or infinite values are a
    ValueError naming the feature.
    """
    unknown = sorted(set(statistics) - set(ALL_STATISTICS))
    if unknown:
        raise ValueError(f"unknown statistics {unknown}; known: {list(ALL_STATISTICS)}")
    matrix = as_numeric_matrix(current, "current data")
    if matrix.shape[1] != reference.n_features:
        raise ValueError(
            f"current data has {matrix.shape[1]} columns, the reference "
            f"{reference.n_features} features"
        )

    def one(index: int) -> Mapping[str, float]:
        name = reference.feature_names[index]
        feature = reference.features[index]
        dtype = comparison_dtype(feature.dtype, matrix.dtype, name)
        if feature.dtype != str(dtype):  # refuses integers beyond 2**53 against floats
            as_comparable(feature_bounds(feature), dtype, name, "reference")
        column = sorted_finite_column(matrix, index, name, "current data", dtype)
        if isinstance(feature, NumericReference):
            return _numeric(feature, column, statistics)
        return _categorical(feature, column, statistics)

    n_workers = workers if workers is not None else default_workers(reference.n_features)
    indices = range(reference.n_features)
    if n_workers <= 1:
        rows = [one(index) for index in indices]
    else:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            rows = list(pool.map(one, indices))
    return {
        name: np.array([row.get(name, np.nan) for row in rows], dtype=np.float64)
        for name in statistics
    }
