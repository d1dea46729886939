"""Fitting, caching and validating a drift reference; the per-feature fast path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from optimizer_job.drift import FittedReference, feature_statistics
from optimizer_job.drift.reference import CategoricalReference, NumericReference
from optimizer_job.drift.scoring import available_cores

pytestmark = pytest.mark.unit

NAMES = ["age", "income", "city", "score"]


def _table(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    return np.column_stack(
        [
            rng.normal(40 + shift * 10, 10, size=n),
            rng.lognormal(10 + shift, 1, size=n),
            rng.integers(0, 4, size=n),  # categorical codes
            np.round(rng.normal(shift, 1, size=n), 1),  # numeric with many ties
        ]
    )


def test_fit_stores_sorted_columns_bins_and_category_counts() -> None:
    rng = np.random.default_rng(0)
    data = _table(rng, 1000)
    fitted = FittedReference.fit(data, NAMES, categorical={"city"}, bins=10)
    age = fitted.features[0]
    assert isinstance(age, NumericReference)
    np.testing.assert_array_equal(age.sorted_values, np.sort(data[:, 0]))
    assert age.edges.shape == (9,)
    assert np.all(np.diff(age.edges) > 0)
    # Quantile bins of continuous data hold a tenth of the reference each.
    np.testing.assert_allclose(age.shares, 0.1, atol=0.002)
    city = fitted.features[2]
    assert isinstance(city, CategoricalReference)
    values, counts = np.unique(data[:, 2], return_counts=True)
    np.testing.assert_array_equal(city.categories, values)
    np.testing.assert_array_equal(city.counts, counts)
    assert fitted.is_categorical("city") and not fitted.is_categorical("score")


def test_discrete_feature_gets_no_duplicate_edges() -> None:
    data = np.repeat([[0.0], [1.0]], [700, 300], axis=0)
    feature = FittedReference.fit(data, ["flag"]).features[0]
    assert isinstance(feature, NumericReference)
    assert np.all(np.diff(feature.edges) > 0)
    assert feature.shares.sum() == pytest.approx(1.0)
    assert feature.shares[0] == pytest.approx(0.7)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    fitted = FittedReference.fit(_table(rng, 500), NAMES, categorical={"city"})
    path = tmp_path / "reference.npz"
    fitted.save(path)
    loaded = FittedReference.load(path)
    assert loaded.feature_names == fitted.feature_names
    assert (loaded.n_rows, loaded.bins) == (fitted.n_rows, fitted.bins)
    current = _table(rng, 300, shift=0.5)
    before = feature_statistics(fitted, current)
    after = feature_statistics(loaded, current)
    for name, values in before.items():
        np.testing.assert_array_equal(values, after[name], err_msg=name)


def test_float32_reference_is_kept_float32() -> None:
    data = np.random.default_rng(2).normal(size=(100, 2)).astype(np.float32)
    feature = FittedReference.fit(data, ["a", "b"]).features[0]
    assert isinstance(feature, NumericReference)
    assert feature.sorted_values.dtype == np.float32


def test_statistics_per_feature_match_scipy() -> None:
    rng = np.random.default_rng(3)
    reference, current = _table(rng, 800), _table(rng, 600, shift=0.3)
    fitted = FittedReference.fit(reference, NAMES, categorical={"city"})
    result = feature_statistics(fitted, current, workers=2)
    for index in (0, 1, 3):
        expected = stats.ks_2samp(reference[:, index], current[:, index])
        assert result["ks"][index] == pytest.approx(expected.statistic, abs=1e-9)
        assert result["ks_p"][index] == pytest.approx(expected.pvalue, abs=1e-3)
        distance = stats.wasserstein_distance(reference[:, index], current[:, index])
        assert result["wasserstein"][index] == pytest.approx(distance, abs=1e-9)
        assert np.isnan(result["chi2"][index])
    assert np.isnan(result["ks"][2]) and np.isnan(result["wasserstein"][2])
    assert result["chi2_p"][2] > 0.0
    single = feature_statistics(fitted, current, workers=1)
    for name, values in result.items():
        np.testing.assert_array_equal(values, single[name], err_msg=name)


def test_only_requested_statistics_are_returned() -> None:
    rng = np.random.default_rng(4)
    fitted = FittedReference.fit(_table(rng, 200), NAMES)
    result = feature_statistics(fitted, _table(rng, 200), statistics=("psi", "ks"))
    assert set(result) == {"psi", "ks"}
    with pytest.raises(ValueError, match="unknown statistics"):
        feature_statistics(fitted, _table(rng, 10), statistics=("kl",))


def test_psi_is_zero_for_identical_and_large_for_shifted_samples() -> None:
    rng = np.random.default_rng(5)
    reference = rng.normal(size=(20_000, 1))
    fitted = FittedReference.fit(reference, ["x"])
    assert feature_statistics(fitted, reference, ("psi",))["psi"][0] == 0.0
    same = feature_statistics(fitted, rng.normal(size=(20_000, 1)), ("psi",))["psi"][0]
    shifted = feature_statistics(fitted, rng.normal(1.0, 1.0, size=(20_000, 1)), ("psi",))
    assert same < 0.01
    assert shifted["psi"][0] > 0.5


@pytest.mark.parametrize(
    ("reference", "names", "categorical", "bins", "message"),
    [
        (np.zeros(5), ["a"], None, 10, "2-D"),
        (np.zeros((0, 1)), ["a"], None, 10, "no rows"),
        (np.zeros((5, 2)), ["a"], None, 10, "1 feature names for 2 columns"),
        (np.zeros((5, 2)), ["a", "a"], None, 10, "duplicate"),
        (np.zeros((5, 1)), ["a"], {"b"}, 10, "categorical features not among"),
        (np.zeros((5, 1)), ["a"], None, 1, "bins"),
        (np.array([["x"]]), ["a"], None, 10, "numeric"),
    ],
)
def test_fit_rejects_bad_input(
    reference: np.ndarray, names: list[str], categorical: set[str] | None, bins: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FittedReference.fit(reference, names, categorical=categorical, bins=bins)


def test_nan_is_an_error_naming_the_feature() -> None:
    data = np.zeros((10, 3))
    data[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"feature 'b' of the reference has 1 NaN"):
        FittedReference.fit(data, ["a", "b", "c"])
    fitted = FittedReference.fit(np.zeros((10, 3)), ["a", "b", "c"], categorical={"c"})
    current = np.zeros((10, 3))
    current[0, 2] = np.inf
    with pytest.raises(ValueError, match=r"feature 'c' of the current data has 0 NaN and 1 inf"):
        feature_statistics(fitted, current)
    with pytest.raises(ValueError, match="current data has 2 columns"):
        feature_statistics(fitted, np.zeros((10, 2)))


def test_available_cores_respects_a_cgroup_quota(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert available_cores(cpu_max) == min(cores, 2)
    cpu_max.write_text("max 100000\n")
    assert available_cores(cpu_max) == cores
    assert available_cores(tmp_path / "missing") == cores


def test_drift_package_does_not_import_torch() -> None:
    # The operator may import these statistics; it has no torch. A fresh interpreter
    # shows what the import itself pulls in.
    code = "import sys, optimizer_job.drift; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
