"""Coreset selection: sizes, class balance, determinism and what each method optimises."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer_job.strategies import _coreset

pytestmark = pytest.mark.unit

METHODS = ("herding", "kcenter", "random")


def blobs(rows: int = 1200, dims: int = 8, classes: int = 4, seed: int = 0) -> tuple:
    """Unequal classes of Gaussian points with class-specific means."""
    rng = np.random.default_rng(seed)
    y = rng.choice(
        classes, size=rows, p=np.linspace(1, 2, classes) / np.linspace(1, 2, classes).sum()
    )
    centres = rng.normal(scale=3.0, size=(classes, dims))
    x = centres[y] + rng.normal(size=(rows, dims))
    return x.astype(np.float32), y.astype(np.int64)


def test_quotas_keep_each_class_share_and_the_total() -> None:
    y = np.array([0] * 50 + [1] * 30 + [2] * 20)
    # Shares 12.5, 7.5 and 5: the one row left over goes to the first largest remainder.
    assert _coreset.class_quotas(y, 0.25) == {0: 13, 1: 7, 2: 5}


def test_quotas_keep_at_least_one_row_of_every_class() -> None:
    y = np.array([0] * 98 + [1] * 2)
    assert _coreset.class_quotas(y, 0.1) == {0: 10, 1: 1}


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_quotas_refuse_a_fraction_outside_0_1(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        _coreset.class_quotas(np.array([0, 1]), fraction)


@pytest.mark.parametrize("method", METHODS)
def test_selection_has_the_right_size_balance_and_no_duplicates(method: str) -> None:
    x, y = blobs()
    chosen = _coreset.select(method, x, y, 0.2, seed=3)
    assert chosen.size == round(0.2 * y.size)
    assert np.array_equal(chosen, np.unique(chosen))  # sorted, unique
    assert chosen.min() >= 0 and chosen.max() < y.size
    for label in np.unique(y):
        assert abs(int(np.sum(y[chosen] == label)) - 0.2 * np.sum(y == label)) <= 1


@pytest.mark.parametrize("method", METHODS)
def test_selection_is_deterministic_for_a_seed(method: str) -> None:
    x, y = blobs()
    assert np.array_equal(
        _coreset.select(method, x, y, 0.3, seed=7), _coreset.select(method, x, y, 0.3, seed=7)
    )


def test_random_selection_changes_with_the_seed() -> None:
    x, y = blobs()
    assert not np.array_equal(
        _coreset.select("random", x, y, 0.3, seed=1), _coreset.select("random", x, y, 0.3, seed=2)
    )


@pytest.mark.parametrize("method", METHODS)
def test_the_whole_fraction_keeps_every_row(method: str) -> None:
    x, y = blobs(rows=300)
    assert np.array_equal(_coreset.select(method, x, y, 1.0, seed=0), np.arange(300))


def test_herding_tracks_the_class_mean_better_than_random_subsets() -> None:
    x, _ = blobs(rows=2000, classes=1)
    k = 50
    mean = x.mean(axis=0)
    herded = np.linalg.norm(x[_coreset.herding_order(x, k)].mean(axis=0) - mean)
    rng = np.random.default_rng(0)
    random_errors = [
        np.linalg.norm(x[rng.choice(x.shape[0], k, replace=False)].mean(axis=0) - mean)
        for _ in range(50)
    ]
    # Herding's error shrinks like 1/k, a random subset's like 1/sqrt(k).
    assert herded < 0.2 * float(np.median(random_errors))


def test_kcenter_covers_the_points_better_than_random_subsets() -> None:
    x, _ = blobs(rows=2000, classes=1)
    k = 50

    def radius(chosen: np.ndarray) -> float:
        distances = np.linalg.norm(x[:, None, :] - x[chosen][None, :, :], axis=2)
        return float(distances.min(axis=1).max())

    greedy = radius(_coreset.kcenter_order(x, k))
    rng = np.random.default_rng(0)
    random_radii = [radius(rng.choice(x.shape[0], k, replace=False)) for _ in range(20)]
    assert greedy < min(random_radii)


def test_greedy_orders_never_repeat_a_point() -> None:
    x, _ = blobs(rows=200, classes=1)
    for order in (_coreset.herding_order(x, 200), _coreset.kcenter_order(x, 200)):
        assert np.array_equal(np.sort(order), np.arange(200))


def test_standardize_gives_unit_columns_and_keeps_constant_ones_finite() -> None:
    x = np.column_stack([np.arange(10.0) * 100, np.full(10, 5.0)])
    z = _coreset.standardize(x)
    assert np.allclose(z[:, 0].mean(), 0, atol=1e-6) and np.isclose(z[:, 0].std(), 1)
    assert np.all(z[:, 1] == 0)
