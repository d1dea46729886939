"""Per-feature drift statistics against SciPy's own implementations."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats
from scipy.spatial import distance

from optimizer_job.drift import univariate
from optimizer_job.drift.multiple_testing import adjust_pvalues

pytestmark = pytest.mark.unit


def _ks(
    reference: NDArray[np.floating], current: NDArray[np.floating], chunk: int = 32
) -> tuple[float, float]:
    ref_sorted, cur_sorted = np.sort(reference), np.sort(current)
    statistic = univariate.ks_statistic(ref_sorted, cur_sorted, chunk)
    # ks_test's statistic comes from ks_2samp below 10 001 values: check the fast one too.
    assert univariate.ks_test(ref_sorted, cur_sorted)[0] == pytest.approx(statistic, abs=1e-12)
    return statistic, univariate.ks_test(ref_sorted, cur_sorted)[1]


def _sample(rng: np.random.Generator, n: int, kind: str, shift: float) -> NDArray[np.floating]:
    if kind == "ties":  # few distinct values: ties within and across the samples
        return rng.integers(0, 6, size=n).astype(np.float64) + np.round(shift)
    if kind == "rounded":
        return np.round(rng.normal(shift, 1.0, size=n), 1)
    if kind == "float32":
        return rng.normal(shift, 1.0, size=n).astype(np.float32)
    return rng.normal(shift, 1.0, size=n)


# (n_reference, n_current): equal and unequal sizes, tiny samples, the exact regime
# (both <= 10 000) and the asymptotic one (with small and large effective n).
SIZES = [(1, 1), (1, 7), (5, 3), (40, 40), (97, 61), (500, 1200), (2000, 2000), (3000, 2999)]
SIZES_ASYMPTOTIC = [(12_000, 60), (20_000, 9_000), (15_000, 15_000)]


@pytest.mark.parametrize("kind", ["normal", "ties", "rounded", "float32"])
@pytest.mark.parametrize(("n_ref", "n_cur"), SIZES + SIZES_ASYMPTOTIC)
def test_ks_matches_scipy(n_ref: int, n_cur: int, kind: str) -> None:
    rng = np.random.default_rng(n_ref * 7919 + n_cur)
    for shift in (0.0, 0.05, 0.3, 2.0):
        reference = _sample(rng, n_ref, kind, 0.0)
        current = _sample(rng, n_cur, kind, shift)
        expected = stats.ks_2samp(reference, current)
        # chunk 1 searches every value; larger chunks exercise the bounds and refinement.
        for chunk in (1, 7, 32):
            statistic, pvalue = _ks(reference, current, chunk)
            assert abs(statistic - expected.statistic) <= 1e-9, (shift, chunk, statistic, expected)
            assert abs(pvalue - expected.pvalue) <= 1e-3, (shift, chunk, pvalue, expected)


def test_ks_all_current_values_tied_with_reference() -> None:
    reference = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 2.0])
    current = np.array([1.0, 1.0, 2.0, 2.0])
    expected = stats.ks_2samp(reference, current)
    statistic, pvalue = _ks(reference, current)
    assert statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert pvalue == pytest.approx(expected.pvalue, abs=1e-9)


@pytest.mark.parametrize("n", [2_001, 5_000, 50_000])
def test_kstwo_sf_matches_scipy(n: int) -> None:
    for z in (0.3, 0.8, 1.2, 1.49, 1.5, 2.0, 3.0, 5.0, 20.0):
        d = z / np.sqrt(n)
        assert univariate.kstwo_sf(d, float(n)) == pytest.approx(stats.kstwo.sf(d, n), abs=1e-4), z
    for d in (0.3, 0.6, 0.99):  # large statistics: SciPy's own branches
        assert univariate.kstwo_sf(d, float(n)) == pytest.approx(stats.kstwo.sf(d, n), abs=1e-12)


@pytest.mark.parametrize("kind", ["normal", "ties", "rounded", "float32"])
@pytest.mark.parametrize(("n_ref", "n_cur"), [(1, 1), (3, 8), (97, 61), (1000, 2500), (4000, 400)])
def test_wasserstein_matches_scipy(n_ref: int, n_cur: int, kind: str) -> None:
    rng = np.random.default_rng(n_ref + 31 * n_cur)
    for shift in (0.0, 0.2, 3.0):
        reference = _sample(rng, n_ref, kind, 0.0)
        current = _sample(rng, n_cur, kind, shift)
        ref_sorted, cur_sorted = np.sort(reference), np.sort(current)
        ours = univariate.wasserstein(ref_sorted, cur_sorted)
        assert abs(ours - stats.wasserstein_distance(reference, current)) <= 1e-9


def test_bin_counts_match_digitize() -> None:
    rng = np.random.default_rng(3)
    values = np.round(rng.normal(size=5000), 1)  # many values sit exactly on edges
    edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)[1:-1]))
    ours = univariate.bin_counts(np.sort(values), edges)
    # np.digitize(right=True): edges[i-1] < x <= edges[i], the same right-closed bins.
    expected = np.bincount(np.digitize(values, edges, right=True), minlength=edges.size + 1)
    np.testing.assert_array_equal(ours, expected)


def test_psi_formula_and_epsilon() -> None:
    p = np.array([0.5, 0.3, 0.2, 0.0])
    q = np.array([0.25, 0.25, 0.25, 0.25])
    pf, qf = np.maximum(p, univariate.PSI_EPSILON), np.maximum(q, univariate.PSI_EPSILON)
    expected = float(np.sum((qf - pf) * np.log(qf / pf)))
    assert univariate.psi(p, q) == pytest.approx(expected, rel=1e-12)
    assert univariate.psi(p, p) == 0.0
    assert np.isfinite(univariate.psi(p, q))


def test_jensenshannon_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        p = rng.random(8) * (rng.random(8) > 0.2)  # some empty bins
        q = rng.random(8) * (rng.random(8) > 0.2)
        p[0] += 0.1
        q[1] += 0.1
        expected = distance.jensenshannon(p, q, base=2)
        assert univariate.jensenshannon(p, q) == pytest.approx(expected, abs=1e-12)
    assert univariate.jensenshannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 1.0


def _table(reference: NDArray[np.int64], current: NDArray[np.int64]) -> NDArray[np.int64]:
    categories = np.union1d(reference, current)
    rows = [np.array([(sample == c).sum() for c in categories]) for sample in (reference, current)]
    return np.vstack(rows)


@pytest.mark.parametrize("n_categories", [2, 3, 7])
def test_chi2_matches_chi2_contingency(n_categories: int) -> None:
    rng = np.random.default_rng(n_categories)
    for shift in (0, 1):
        reference = rng.integers(0, n_categories, size=400)
        current = rng.integers(shift, n_categories + shift, size=250)  # a new category
        table = _table(reference, current)
        statistic, pvalue = univariate.chi2_test(table[0], table[1])
        expected = stats.chi2_contingency(table)
        assert statistic == pytest.approx(expected.statistic, rel=1e-9, abs=1e-12)
        assert pvalue == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-15)


def test_chi2_single_category_is_no_evidence() -> None:
    assert univariate.chi2_test(np.array([10]), np.array([4])) == (0.0, 1.0)


def test_fdr_bh_matches_scipy_and_bonferroni_scales() -> None:
    rng = np.random.default_rng(5)
    for m in (1, 2, 10, 50):
        p = rng.random(m) ** 3
        p[: m // 3] = p[0]  # ties
        np.testing.assert_allclose(
            adjust_pvalues(p, "fdr_bh"), stats.false_discovery_control(p, method="bh"), rtol=1e-12
        )
        np.testing.assert_allclose(adjust_pvalues(p, "bonferroni"), np.minimum(p * m, 1.0))
    with pytest.raises(ValueError, match="correction"):
        adjust_pvalues(np.array([0.1]), "holm")  # type: ignore[arg-type]
