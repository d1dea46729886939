"""A reference sample fitted once and compared against many current samples.

Fitting sorts each numeric column (for KS and Wasserstein), cuts it into quantile
bins (for PSI and Jensen-Shannon) and counts the categories of categorical columns
(for chi-squared). A fitted reference saves to and loads from an ``.npz`` file
without pickle, so a caller can cache it beside the data it came from.

Types. A column keeps the type it came in (float32, float64 or integer): integers
are compared as integers, exactly, however large. Two samples of different types
are brought to one type before any comparison (``comparison_dtype``): float32
against float64 compares at float32 (a float32 sample only knows its values to
that precision: 0.1 stored as float32 is not "drift" from 0.1 in float64); integers
against floats compare as float64, and integers beyond 2**53 (which float64 cannot
hold) against floats are refused with the feature named.

Memory. The sorted copy of a column is stored compactly: a float64 column whose
values are all float32 values is kept as float32, an integer column within int32's
range as int32. The type it came in is remembered, so results are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from optimizer_job.drift.univariate import IntArray, bin_counts

FORMAT_VERSION = 2

# Integers whose magnitude is at most this are exact in float64.
FLOAT64_EXACT_INT: Final = 2**53

# Rows of the reference kept as they are (a seeded random sample) for multivariate
# drift, which needs rows, not sorted columns.
SAMPLE_ROWS: Final = 20_000

ValueArray = NDArray[Any]  # float32, float64 or int64 values


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class NumericReference:
    """One numeric reference column."""

    sorted_values: ValueArray  # stored compactly (module docstring)
    # Interior bin edges from the reference's quantiles, strictly increasing; the bins
    # are (-inf, e0], (e0, e1], ..., (e_last, inf) so every current value has a bin.
    # Integer columns have integer edges (reference values), exact at any magnitude.
    edges: ValueArray
    shares: NDArray[np.float64]  # the reference's own share of values in each bin
    dtype: str = "float64"  # the type the column came in: float32, float64 or int64

    def values_as(self, dtype: np.dtype[Any]) -> ValueArray:
        """The sorted values in the comparison type (a copy unless stored that way)."""
        return self.sorted_values.astype(dtype, copy=False)

    def shares_as(self, values: ValueArray) -> NDArray[np.float64]:
        """Bin shares of ``values`` (this column in another type: rounding may move
        values across an edge, so the shares are recounted, not reused)."""
        if values.dtype == np.dtype(self.dtype):
            return self.shares
        counts: NDArray[np.float64] = bin_counts(values, self.edges) / values.shape[0]
        return counts


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class CategoricalReference:
    """One categorical reference column: its distinct values and their counts."""

    categories: ValueArray
    counts: IntArray
    dtype: str = "float64"


FeatureReference = NumericReference | CategoricalReference


def as_numeric_matrix(data: Any, what: str) -> ValueArray:
    """A 2-D view or copy of ``data`` in its own numeric type: float32 and float64 stay
    as they are (no doubled memory), integers become int64 (exact), booleans int8."""
    array = np.asarray(data)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (rows x features), got shape {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{what} has no rows")
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False) if array.itemsize < 4 else array
    if array.dtype.kind == "b":
        return array.astype(np.int8)
    too_large = array.dtype.kind == "u" and array.itemsize == 8 and array.size
    if too_large and int(array.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"{what} has unsigned values above 2**63 - 1")
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")


# Kept for callers of the old name: the matrix is no longer always floating-point.
as_float_matrix = as_numeric_matrix


def comparison_dtype(reference: str, current: np.dtype[Any], name: str) -> np.dtype[Any]:
    """The one type a reference column (of type ``reference``) and a current column
    (of type ``current``) are compared in (rules: module docstring)."""
    ref, cur = np.dtype(reference), np.dtype(current)
    if ref.kind in "iu" and cur.kind in "iu":
        return np.dtype(np.int64)
    if ref.kind == "f" and cur.kind == "f":
        return np.dtype(np.float32) if min(ref.itemsize, cur.itemsize) <= 4 else ref
    return np.dtype(np.float64)


def as_comparable(values: ValueArray, dtype: np.dtype[Any], name: str, what: str) -> ValueArray:
    """``values`` in ``dtype``; integers beyond 2**53 turned into floats are refused."""
    if values.dtype == dtype:
        return values
    if values.dtype.kind in "iu" and dtype.kind == "f" and values.size:
        largest = max(abs(int(values.min())), abs(int(values.max())))
        if largest > FLOAT64_EXACT_INT:
            raise ValueError(
                f"feature {name!r} of the {what} holds integers up to {largest}, beyond 2^53, "
                "and the other sample is floating-point: they cannot be compared exactly "
                "(give both samples as integers)"
            )
    return values.astype(dtype)


def compact(sorted_values: ValueArray) -> ValueArray:
    """The same values in the smallest type that holds them exactly (module docstring)."""
    if sorted_values.dtype == np.float64:
        narrow = sorted_values.astype(np.float32)
        if np.array_equal(narrow, sorted_values):
            return narrow
    elif sorted_values.dtype.kind in "iu" and sorted_values.itemsize > 4 and sorted_values.size:
        info = np.iinfo(np.int32)
        if info.min <= int(sorted_values[0]) and int(sorted_values[-1]) <= info.max:
            return sorted_values.astype(np.int32)
    return sorted_values


def sorted_finite_column(
    matrix: ValueArray,
    index: int,
    name: str,
    what: str,
    dtype: np.dtype[Any] | None = None,
) -> ValueArray:
    """Column ``index`` (in ``dtype``, default its own) sorted ascending; NaN or
    infinity is an error naming the feature."""
    column = matrix[:, index]
    column = np.sort(column if dtype is None else as_comparable(column, dtype, name, what))
    if column.dtype.kind != "f":
        return column
    # np.sort puts NaN last, so the two ends tell whether every value is finite.
    if not (np.isfinite(column[0]) and np.isfinite(column[-1])):
        nans = int(np.count_nonzero(np.isnan(column)))
        infinite = int(np.count_nonzero(np.isinf(column)))
        raise ValueError(
            f"feature {name!r} of the {what} has {nans} NaN and {infinite} infinite values"
        )
    return column


def distinct_counts(sorted_values: ValueArray) -> tuple[ValueArray, IntArray]:
    """Distinct values of a sorted column and how often each occurs."""
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    counts = np.diff(np.append(starts, sorted_values.shape[0]))
    return sorted_values[starts], counts


def bin_edges(sorted_values: ValueArray, bins: int) -> ValueArray:
    """Interior edges at the reference's quantiles; tied quantiles (discrete features)
    collapse into one edge, not empty bins. Integer columns take reference values
    (``method="lower"``) so the edges stay exact integers at any magnitude."""
    levels = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    if sorted_values.dtype.kind in "iu":
        return np.unique(np.quantile(sorted_values, levels, method="lower").astype(np.int64))
    return np.unique(np.quantile(sorted_values, levels).astype(np.float64))


def _fit_numeric(sorted_values: ValueArray, bins: int) -> NumericReference:
    edges = bin_edges(sorted_values, bins)
    counts = bin_counts(sorted_values, edges)
    return NumericReference(
        compact(sorted_values), edges, counts / sorted_values.shape[0], str(sorted_values.dtype)
    )


def row_sample(matrix: ValueArray, rows: int = SAMPLE_ROWS, seed: int = 0) -> ValueArray | None:
    """At most ``rows`` rows of ``matrix`` (a seeded random sample in their own order),
    stored compactly; None for ``rows`` = 0."""
    if rows <= 0:
        return None
    if matrix.shape[0] <= rows:
        sample = np.array(matrix)
    else:
        chosen = np.random.default_rng(seed).choice(matrix.shape[0], rows, replace=False)
        sample = matrix[np.sort(chosen)]
    flat = compact(np.sort(sample, axis=None))
    return sample.astype(flat.dtype, copy=False)


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class FittedReference:
    """The per-feature summaries of a reference sample; build it with ``fit``."""

    feature_names: tuple[str, ...]
    features: tuple[FeatureReference, ...]
    n_rows: int
    bins: int
    # A seeded sample of whole rows (at most SAMPLE_ROWS) for multivariate drift;
    # None in a reference saved before there was one.
    sample: ValueArray | None = None

    @classmethod
    def fit(
        cls,
        reference: Any,
        feature_names: Sequence[str],
        categorical: set[str] | None = None,
        bins: int = 10,
        sample_rows: int = SAMPLE_ROWS,
    ) -> FittedReference:
        """Fit on a (rows x features) array whose columns are named by ``feature_names``;
        ``sample_rows`` rows are kept whole for multivariate drift (0: none)."""
        matrix = as_numeric_matrix(reference, "reference")
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
                categories, counts = distinct_counts(column)
                features.append(CategoricalReference(categories, counts, str(column.dtype)))
            else:
                features.append(_fit_numeric(column, bins))
        return cls(names, tuple(features), matrix.shape[0], bins, row_sample(matrix, sample_rows))

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays of this reference."""
        total = 0 if self.sample is None else self.sample.nbytes
        for feature in self.features:
            if isinstance(feature, NumericReference):
                total += feature.sorted_values.nbytes + feature.edges.nbytes
                total += feature.shares.nbytes
            else:
                total += feature.categories.nbytes + feature.counts.nbytes
        return total

    def is_categorical(self, name: str) -> bool:
        return isinstance(self.features[self.feature_names.index(name)], CategoricalReference)

    def save(self, path: str | Path) -> None:
        """Write an ``.npz`` file (no pickle) that ``load`` reads back."""
        arrays: dict[str, Any] = {
            "format_version": np.array(FORMAT_VERSION),
            "feature_names": np.array(self.feature_names, dtype=np.str_),
            "n_rows": np.array(self.n_rows),
            "bins": np.array(self.bins),
            "dtypes": np.array([feature.dtype for feature in self.features], dtype=np.str_),
        }
        if self.sample is not None:
            arrays["sample"] = self.sample
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
            if version not in (1, FORMAT_VERSION):
                raise ValueError(
                    f"{path}: fitted reference format {version}, expected 1 or {FORMAT_VERSION}"
                )
            names = tuple(str(name) for name in data["feature_names"])
            # Format 1 stored every column in the type it came in.
            dtypes = [str(d) for d in data["dtypes"]] if "dtypes" in data else None
            features: list[FeatureReference] = []
            for index in range(len(names)):
                if f"{index}.sorted_values" in data:
                    values = data[f"{index}.sorted_values"]
                    features.append(
                        NumericReference(
                            values,
                            data[f"{index}.edges"],
                            data[f"{index}.shares"],
                            dtypes[index] if dtypes else str(values.dtype),
                        )
                    )
                else:
                    categories = data[f"{index}.categories"]
                    features.append(
                        CategoricalReference(
                            categories,
                            data[f"{index}.counts"],
                            dtypes[index] if dtypes else str(categories.dtype),
                        )
                    )
            sample = data.get("sample")
            return cls(names, tuple(features), int(data["n_rows"]), int(data["bins"]), sample)


def check_feature_names(feature_names: Sequence[str], n_columns: int) -> tuple[str, ...]:
    names = tuple(feature_names)
    if len(names) != n_columns:
        raise ValueError(f"{len(names)} feature names for {n_columns} columns")
    if len(set(names)) != len(names):
        duplicates = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"duplicate feature names: {duplicates}")
    return names
