"""The speed ratio's confidence interval and the decision taken on it (optimizer_job.speed)."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer_job.speed import (
    RatioInterval,
    abba_first,
    block_ratios,
    decide,
    ratio_interval,
)

pytestmark = pytest.mark.unit


def rounds(ms: float, n: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ms * (1 + noise * rng.standard_normal(n))


def test_blocks_alternate_abba_and_baab() -> None:
    order = [abba_first(r) for r in range(8)]
    assert order == [0, 1, 1, 0, 0, 1, 1, 0]  # A B B A, B A A B, A B B A, B A A B


def test_block_ratios_pair_two_rounds_of_each_model() -> None:
    baseline = np.array([2.0, 2.0, 4.0, 4.0, 9.0])  # the odd last round is dropped
    candidate = np.array([1.0, 1.0, 1.0, 3.0, 1.0])
    assert block_ratios(baseline, candidate).tolist() == [2.0, 2.0]
    with pytest.raises(ValueError):
        block_ratios(baseline, candidate[:4])


def test_a_quiet_pair_gives_a_narrow_interval_around_the_true_ratio() -> None:
    interval = ratio_interval(rounds(3.0, 40, 0.02, 1), rounds(1.5, 40, 0.02, 2))
    assert interval.low < 2.0 < interval.high
    assert interval.relative_width() < 0.05
    assert interval.blocks == 20 and interval.rounds == 40 and interval.confidence == 0.95


def test_the_interval_is_reproducible() -> None:
    a, b = rounds(3.0, 40, 0.1, 3), rounds(2.0, 40, 0.1, 4)
    assert ratio_interval(a, b) == ratio_interval(a, b)


def test_a_load_burst_on_one_model_widens_the_interval_but_hardly_moves_the_median() -> None:
    a, b = rounds(2.0, 40, 0.02, 5), rounds(2.0, 40, 0.02, 6)
    quiet = ratio_interval(a, b)
    burst = a.copy()
    burst[4:16] *= 3.0  # a CPU hog during six blocks of the baseline's rounds
    loaded = ratio_interval(burst, b)
    assert loaded.relative_width() > 3 * quiet.relative_width()
    assert abs(loaded.ratio - 1.0) < abs(float(np.mean(burst / b)) - 1.0)
    # A speed gate asking for +25 % does not pass on the burst: the lower bound is under it.
    assert decide(loaded, 1.25) != "pass"
    assert loaded.low < 1.25


def test_decide_passes_fails_or_says_inconclusive() -> None:
    interval = RatioInterval(ratio=1.3, low=1.2, high=1.4, blocks=20)
    assert decide(interval, 1.2) == "pass"  # the lower bound at the limit passes
    assert decide(interval, 1.1) == "pass"
    assert decide(interval, 1.25) == "inconclusive"
    assert decide(interval, 1.4) == "inconclusive"
    assert decide(interval, 1.5) == "fail"


def test_too_few_blocks_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 4 blocks"):
        ratio_interval(np.ones(6), np.ones(6))
