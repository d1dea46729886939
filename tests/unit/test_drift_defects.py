"""Verdicts that used to report drift that was not there (issue 13), one test per defect."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from optimizer_job import dataio
from optimizer_job.drift import FittedReference, compare, feature_statistics, univariate

pytestmark = pytest.mark.unit


# 1. dtype mismatch --------------------------------------------------------------------


def _tenths(dtype: type[np.floating]) -> np.ndarray:
    return np.tile(np.array([0.1, 0.2, 0.3], dtype=dtype), 400)[:, None]


@pytest.mark.parametrize(
    ("ref_dtype", "cur_dtype"), [(np.float32, np.float64), (np.float64, np.float32)]
)
def test_same_values_in_float32_and_float64_are_not_drift(
    ref_dtype: type[np.floating], cur_dtype: type[np.floating]
) -> None:
    for reference in (_tenths(ref_dtype), FittedReference.fit(_tenths(ref_dtype), ["x"])):
        report = compare(reference, _tenths(cur_dtype), ["x"], metric="psi")
        values = report.per_feature["x"]
        assert values["ks"] == 0.0, values
        assert values["psi"] == pytest.approx(0.0, abs=1e-12), values
        assert values["jensenshannon"] == pytest.approx(0.0, abs=1e-7), values
        assert not report.detected
        assert report.drifted_features == []


def test_parquet_columns_of_different_types_compare_equal(tmp_path: Path) -> None:
    values = np.tile([0.1, 0.2, 0.3, 7.0], 300)
    label = np.zeros(values.shape[0], dtype=np.int64)
    pq.write_table(
        pa.table({"x": pa.array(values.astype(np.float32)), "label": label}),
        tmp_path / "reference.parquet",
    )
    pq.write_table(
        pa.table({"x": pa.array(values, pa.float64()), "label": label}),
        tmp_path / "current.parquet",
    )
    reference = dataio.load_table(tmp_path / "reference.parquet", "label")
    current = dataio.load_table(tmp_path / "current.parquet", "label")
    report = compare(reference.X, current.X, ["x"], metric="psi")
    assert report.per_feature["x"]["ks"] == 0.0
    assert not report.detected


# 2. small current samples ------------------------------------------------------------


def test_one_current_row_is_insufficient_data_not_drift() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(10_000, 5))
    names = [f"f{i}" for i in range(5)]
    for metric in ("psi", "ks", "jensenshannon", "wasserstein"):
        report = compare(reference, rng.normal(size=(1, 5)), names, metric=metric)  # type: ignore[arg-type]
        assert not report.detected, (metric, report.score)
        assert report.insufficient_data, metric
        assert "rows" in report.insufficient_data


def test_default_metric_keeps_its_false_alarm_rate_at_30_rows() -> None:
    """The default metric, no drift, 30 current rows: false alarms near alpha, not 100 %."""
    rng = np.random.default_rng(1)
    names = [f"f{i}" for i in range(5)]
    fitted = FittedReference.fit(rng.normal(size=(10_000, 5)), names)
    trials = 200
    alarms = 0
    for _ in range(trials):
        report = compare(fitted, rng.normal(size=(30, 5)), names)
        assert report.insufficient_data is None
        alarms += report.detected
    # alpha = 0.05; 200 trials: the rate's standard error is 1.5 points.
    assert alarms / trials <= 0.05 + 0.045, alarms


def test_psi_minimum_rows_follow_the_threshold() -> None:
    from optimizer_job.drift.verdict import minimum_rows

    assert minimum_rows("psi", threshold=0.2, alpha=0.05, bins=10) > 50
    assert minimum_rows("psi", threshold=0.1, alpha=0.05, bins=10) > minimum_rows(
        "psi", threshold=0.2, alpha=0.05, bins=10
    )
    assert minimum_rows("ks", threshold=0.2, alpha=0.05, bins=10) == 30


# 3. int64 above 2**53 -----------------------------------------------------------------


def test_integers_above_2_53_compare_exactly() -> None:
    base = 2**60
    reference = (base + np.arange(0, 1000, dtype=np.int64))[:, None]
    current = (base + np.arange(1000, 2000, dtype=np.int64))[:, None]
    report = compare(reference, current, ["id"], metric="ks")
    values = report.per_feature["id"]
    assert values["ks"] == 1.0
    assert values["wasserstein"] == 1000.0
    assert report.drifted_features == ["id"]
    same = compare(reference, reference.copy(), ["id"], metric="ks")
    assert same.per_feature["id"]["ks"] == 0.0
    assert same.per_feature["id"]["wasserstein"] == 0.0


def test_large_integers_against_floats_are_refused_with_the_column_named() -> None:
    reference = (2**60 + np.arange(100, dtype=np.int64))[:, None]
    current = reference.astype(np.float64)
    with pytest.raises(ValueError, match=r"'id'.*2\^53"):
        compare(reference, current, ["id"])


def test_parquet_integers_beyond_float32_are_named(tmp_path: Path) -> None:
    ids = 2**40 + np.arange(500, dtype=np.int64)
    pq.write_table(
        pa.table({"id": ids, "label": np.zeros(500, dtype=np.int64)}), tmp_path / "t.parquet"
    )
    table = dataio.load_table(tmp_path / "t.parquet", "label")
    assert table.inexact_columns == ["id"]


# 4. the exact small-sample p-value ----------------------------------------------------


def test_exact_pvalue_uses_only_public_scipy() -> None:
    source = inspect.getsource(univariate)
    assert "scipy.stats._" not in source
    assert "_attempt_exact_2kssamp" not in source


@pytest.mark.parametrize(("n_ref", "n_cur"), [(1, 1), (3, 5), (40, 40), (97, 61), (800, 9_999)])
def test_exact_pvalue_equals_scipy_exact_method(n_ref: int, n_cur: int) -> None:
    rng = np.random.default_rng(n_ref + n_cur)
    for shift in (0.0, 0.2, 1.0):
        reference = np.sort(rng.normal(size=n_ref))
        current = np.sort(rng.normal(shift, size=n_cur))
        expected = stats.ks_2samp(reference, current, method="exact")
        statistic, pvalue = univariate.ks_test(reference, current)
        assert statistic == pytest.approx(expected.statistic, abs=1e-12)
        assert pvalue == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-15)


# 5. memory ----------------------------------------------------------------------------


def test_fitted_reference_keeps_float64_columns_as_float32_when_exact() -> None:
    rng = np.random.default_rng(2)
    exact = rng.normal(size=(5000, 3)).astype(np.float32).astype(np.float64)
    fitted = FittedReference.fit(exact, ["a", "b", "c"], sample_rows=0)
    assert fitted.nbytes <= exact.nbytes // 2 + 4096
    # The row sample for multivariate drift is compact too.
    with_sample = FittedReference.fit(exact, ["a", "b", "c"])
    assert with_sample.sample is not None
    assert with_sample.sample.dtype == np.float32
    # ... and compares as float64 all the same: a float64 current value between two
    # float32 neighbours is not rounded onto one of them.
    current = exact[:100].copy()
    current[:, 0] += 1e-12
    plain = feature_statistics(FittedReference.fit(exact, ["a", "b", "c"]), current)
    np.testing.assert_allclose(
        plain["ks"][0], stats.ks_2samp(exact[:, 0], current[:, 0]).statistic, atol=1e-12
    )
    small_ints = rng.integers(0, 1000, size=(5000, 2))
    fitted_ints = FittedReference.fit(small_ints, ["i", "j"], sample_rows=0)
    assert fitted_ints.nbytes <= small_ints.nbytes // 2 + 4096


def test_evaluate_memory_is_checked_before_reading_the_data(tmp_path: Path) -> None:
    from optimizer_job.contract import BadInputError
    from optimizer_job.memory import (
        check_evaluate_memory,
        evaluate_memory_bytes,
        memory_limit_bytes,
        table_shape,
    )

    rows = np.zeros((1000, 3), dtype=np.float32)
    pq.write_table(
        pa.table({"a": rows[:, 0], "b": rows[:, 1], "label": rows[:, 2]}), tmp_path / "t.parquet"
    )
    np.savez(tmp_path / "t.npz", X=np.zeros((700, 5), dtype=np.float32))
    assert table_shape(tmp_path / "t.parquet") == (1000, 3)
    assert table_shape(tmp_path / "t.npz") == (700, 5)
    assert table_shape(tmp_path / "t.csv") is None
    (tmp_path / "memory.max").write_text("max\n")
    assert memory_limit_bytes(tmp_path / "memory.max") is None
    (tmp_path / "memory.max").write_text(f"{512 * 2**20}\n")
    limit = memory_limit_bytes(tmp_path / "memory.max")
    assert limit == 512 * 2**20
    big = {"reference": (1_000_000, 50), "current": (1_000_000, 50), "holdout": None}
    estimate = evaluate_memory_bytes(1_000_000, 1_000_000, 50)
    assert estimate > 2 * 1_000_000 * 50 * 4  # at least the two float32 tables
    with pytest.raises(BadInputError, match=r"job\.resources\.memory.*MiB"):
        check_evaluate_memory(big, workers=2, multivariate=False, limit=limit)
    assert check_evaluate_memory(big, workers=2, multivariate=False, limit=None) == estimate
