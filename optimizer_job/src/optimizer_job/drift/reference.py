"""A reference sample fitted once and compared against many current samples.

Fitting sorts each numeric column (for KS and Wasserstein), cuts it into quantile
bins (for PSI and Jensen-Shannon) and counts the categories of categorical columns
(for chi-squared). A fitted reference saves to and loads from an ``.npz`` file
without pickle, so a caller can cache it beside the data it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from optimizer_job.drift.univariate import FloatArray, IntArray, bin_counts

FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class NumericReference:
    """One numeric reference column."""

    sorted_values: FloatArray
    # Interior bin edges from the reference's quantiles, strictly increasing; the bins
    # are (-inf, e0], (e0, e1], ..., (e_last, inf) so every current value has a bin.
    edges: NDArray[np.float64]
    shares: NDArray[np.float64]  # the reference's own share of values in each bin


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class CategoricalReference:
    """One categorical reference column: its distinct values and their counts."""

    categories: FloatArray
    counts: IntArray


FeatureReference = NumericReference | CategoricalReference


def as_float_matrix(data: Any, what: str) -> FloatArray:
    """A 2-D float view or copy of ``data``; float32 stays float32 (no doubled memory)."""
    array = np.asarray(data)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (rows x features), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{what} has no rows")
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False) if array.itemsize < 4 else array
    if array.dtype.kind in "biu":
        return array.astype(np.float64)
    raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")


def sorted_finite_column(matrix: FloatArray, index: int, name: str, what: str) -> FloatArray:
    """Column ``index`` sorted ascending; NaN or infinity is an error naming the feature."""
    column = np.sort(matrix[:, index])
    # np.sort puts NaN last, so the two ends tell whether every value is finite.
    if not (np.isfinite(column[0]) and np.isfinite(column[-1])):
        nans = int(np.count_nonzero(np.isnan(column)))
        infinite = int(np.count_nonzero(np.isinf(column)))
        raise ValueError(
            f"feature {name!r} of the {what} has {nans} NaN and {infinite} infinite values"
        )
    return column


def distinct_counts(sorted_values: FloatArray) -> tuple[FloatArray, IntArray]:
    """Distinct values of a sorted column and how often each occurs."""
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    counts = np.diff(np.append(starts, sorted_values.shape[0]))
    return sorted_values[starts], counts


def _fit_numeric(sorted_values: FloatArray, bins: int) -> NumericReference:
    levels = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    # Tied quantiles (discrete features) collapse into one edge, not empty bins.
    edges = np.unique(np.quantile(sorted_values, levels).astype(np.float64))
    counts = bin_counts(sorted_values, edges)
    return NumericReference(sorted_values, edges, counts / sorted_values.shape[0])


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class FittedReference:
    """The per-feature summaries of a reference sample; build it with ``fit``."""

    feature_names: tuple[str, ...]
    features: tuple[FeatureReference, ...]
    n_rows: int
    bins: int

    @classmethod
    def fit(
        cls,
        reference: Any,
        feature_names: Sequence[str],
        categorical: set[str] | None = None,
        bins: int = 10,
    ) -> FittedReference:
        """Fit on a (rows x features) array whose columns are named by ``feature_names``."""
        matrix = as_float_matrix(reference, "reference")
        names = check_feature_names(feature_names, matrix.shape[1])
        unknown = sorted((categorical or set()) - set(names))
        if unknown:
            raise ValueError(f"categorical features not among feature_names: {unknown}")
        if bins < 2:
            raise ValueError(f"bins must be at least 2, got {bins}")
        features: list[FeatureReference] = []
        for index, name in enumerate(names):
            column = sorted_finite_column(matrix, index, name, "reference")
            if categorical and name in categorical:
                features.append(CategoricalReference(*distinct_counts(column)))
            else:
                features.append(_fit_numeric(column, bins))
        return cls(names, tuple(features), matrix.shape[0], bins)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def is_categorical(self, name: str) -> bool:
        return isinstance(self.features[self.feature_names.index(name)], CategoricalReference)

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` file (no pickle) that ``load`` reads back."""
        arrays: dict[str, Any] = {
            "format_version": np.array(FORMAT_VERSION),
            "feature_names": np.array(self.feature_names, dtype=np.str_),
            "n_rows": np.array(self.n_rows),
            "bins": np.array(self.bins),
        }
        for index, feature in enumerate(self.features):
            if isinstance(feature, NumericReference):
                arrays[f"{index}.sorted_values"] = feature.sorted_values
                arrays[f"{index}.edges"] = feature.edges
                arrays[f"{index}.shares"] = feature.shares
            else:
                arrays[f"{index}.categories"] = feature.categories
                arrays[f"{index}.counts"] = feature.counts
        with Path(path).open("wb") as stream:
            np.savez(stream, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> FittedReference:
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise ValueError(f"{path}: fitted reference format {version}, expected 1")
            names = tuple(str(name) for name in data["feature_names"])
            features: list[FeatureReference] = []
            for index in range(len(names)):
                if f"{index}.sorted_values" in data:
                    features.append(
                        NumericReference(
                            data[f"{index}.sorted_values"],
                            data[f"{index}.edges"],
                            data[f"{index}.shares"],
                        )
                    )
                else:
                    features.append(
                        CategoricalReference(data[f"{index}.categories"], data[f"{index}.counts"])
                    )
            return cls(names, tuple(features), int(data["n_rows"]), int(data["bins"]))


def check_feature_names(feature_names: Sequence[str], n_columns: int) -> tuple[str, ...]:
    names = tuple(feature_names)
    if len(names) != n_columns:
        raise ValueError(f"{len(names)} feature names for {n_columns} columns")
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"duplicate feature names: {duplicates}")
    return names
