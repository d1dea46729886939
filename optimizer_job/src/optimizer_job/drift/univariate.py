"""Drift statistics of one feature: a reference column against a current column.

Numeric columns arrive sorted ascending. The reference is sorted once, when it is
fitted; the current column once per comparison. Every statistic here reads the two
sorted arrays, so no statistic sorts again and only Wasserstein builds a merged copy.

The results equal SciPy's: ``ks_statistic`` / ``ks_pvalue`` match
``scipy.stats.ks_2samp(reference, current)`` (two-sided, ``method="auto"``),
``wasserstein`` matches ``scipy.stats.wasserstein_distance``, ``jensenshannon``
matches ``scipy.spatial.distance.jensenshannon(p, q, base=2)`` and ``chi2_test``
matches ``scipy.stats.chi2_contingency`` on the 2 x K table of category counts.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

# scipy.stats.ks_2samp computes exact p-values (Hodges' lattice-path counts) for
# samples of at most this many values and Smirnov's asymptotic law above.
KS_EXACT_MAX_N = 10_000

try:
    # The exact two-sample distribution is not public API in SciPy; it is the very
    # routine ks_2samp calls, so p-values match it. SciPy is pinned, and the unit
    # tests compare against ks_2samp, so a change there is caught, not hidden.
    from scipy.stats._stats_py import _attempt_exact_2kssamp
except ImportError:  # pragma: no cover - only with an unexpected SciPy
    _attempt_exact_2kssamp = None

# Above this effective sample size the Smirnov tail (an O(n) sum in SciPy, 0.4 s at
# n = 500 000) is replaced by Miller's approximation, within 2e-5 of it from here up.
SMIRNOV_DIRECT_MAX_N = 2_000

# PSI takes the logarithm of bin proportions: an empty bin would make it infinite.
# Proportions below PSI_EPSILON count as PSI_EPSILON (a common choice; one bin that
# empties completely then adds at most about p * ln(p / 1e-4) to the score).
PSI_EPSILON = 1e-4

FloatArray = NDArray[np.floating[Any]]
IntArray = NDArray[np.intp]


@dataclass(frozen=True)
class Ranks:
    """Where each value of a sorted current column falls in the sorted reference.

    ``below[j]`` counts reference values < current[j], ``at_or_below[j]`` those <=.
    They differ only where a current value also occurs in the reference.
    """

    below: IntArray
    at_or_below: IntArray


def ranks_in_reference(reference_sorted: FloatArray, current_sorted: FloatArray) -> Ranks:
    """One binary search per current value; a second one only for exact ties."""
    at_or_below = np.searchsorted(reference_sorted, current_sorted, side="right")
    # current[j] occurs in the reference iff the reference value just below or at it
    # is equal to it (at_or_below == 0 reads reference[0] > current[j]: no tie).
    candidate = reference_sorted[np.maximum(at_or_below - 1, 0)]
    tied = candidate == current_sorted
    if not tied.any():
        return Ranks(below=at_or_below, at_or_below=at_or_below)
    below = at_or_below.copy()
    below[tied] = np.searchsorted(reference_sorted, current_sorted[tied], side="left")
    return Ranks(below=below, at_or_below=at_or_below)


@functools.lru_cache(maxsize=4)
def _ecdf_levels(n: int) -> NDArray[np.float64]:
    """j / n for j < n, shared by every feature of a comparison (read-only)."""
    levels = np.arange(n) / n
    levels.flags.writeable = False
    return levels


def ks_statistic(n_reference: int, ranks: Ranks) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_ref - F_cur|.

    Between two consecutive current values F_cur is constant, so sup(F_ref - F_cur)
    is reached just below a current value (reference count ``below[j]``, current count
    j) and sup(F_cur - F_ref) at a current value (``at_or_below[j]``, j + 1). Ties in
    the current column only add smaller candidates, so no de-duplication is needed.
    The winning candidate is evaluated as SciPy writes it: k_ref / n - k_cur / m.
    """
    n_cur = ranks.below.shape[0]
    levels = _ecdf_levels(n_cur)  # F_cur just below each current value
    gap = ranks.below / n_reference
    gap -= levels
    j = int(np.argmax(gap))
    d_plus = ranks.below[j] / n_reference - j / n_cur
    if ranks.at_or_below is not ranks.below:
        gap = ranks.at_or_below / n_reference
        gap -= levels
    # F_cur - F_ref at current[k] is (k + 1) / m - at_or_below[k] / n: largest where gap is least.
    k = int(np.argmin(gap))
    d_minus = (k + 1) / n_cur - ranks.at_or_below[k] / n_reference
    return max(float(d_plus), float(d_minus), 0.0)


def ks_pvalue(statistic: float, n_reference: int, n_current: int) -> float:
    """Two-sided p-value of the KS statistic, chosen the way ks_2samp(method="auto") does.

    Exact when both samples hold at most KS_EXACT_MAX_N values (falling back to the
    asymptotic law where the exact count overflows, as SciPy does); otherwise
    ``kstwo.sf(d, round(n*m / (n+m)))``.
    """
    if max(n_reference, n_current) <= KS_EXACT_MAX_N and _attempt_exact_2kssamp is not None:
        gcd = math.gcd(n_reference, n_current)
        with np.errstate(all="ignore"):
            ok, _, p = _attempt_exact_2kssamp(n_reference, n_current, gcd, statistic, "two-sided")
        if ok:
            return float(np.clip(p, 0.0, 1.0))
    larger, smaller = max(n_reference, n_current), min(n_reference, n_current)
    effective_n = float(np.round(float(larger) * smaller / (larger + smaller)))
    return float(np.clip(kstwo_sf(statistic, effective_n), 0.0, 1.0))


def kstwo_sf(d: float, n: float) -> float:
    """``scipy.stats.kstwo.sf(d, n)``, fast for large n.

    SciPy evaluates the upper tail (n d^2 >= 2.2) as 2 * smirnov(n, d), an exact sum
    over n terms. For n above SMIRNOV_DIRECT_MAX_N this uses Miller's approximation
    smirnov(n, d) ~ exp(-(6 n d + 1)^2 / (18 n)) instead (about 1000x faster); every
    other region, and the cut-offs, are SciPy's own.
    """
    nd = n * d
    in_smirnov_tail = 1.0 < nd < n - 1 and d < 0.5 and nd * d >= 2.2
    if n > SMIRNOV_DIRECT_MAX_N and in_smirnov_tail:
        if nd * d >= 370.0:  # SciPy returns 0 here: the tail is below 1e-320
            return 0.0
        return min(1.0, 2.0 * math.exp(-((6.0 * nd + 1.0) ** 2) / (18.0 * n)))
    return float(stats.kstwo.sf(d, n))


def wasserstein(reference_sorted: FloatArray, current_sorted: FloatArray, ranks: Ranks) -> float:
    """Wasserstein-1 distance: the area between the two empirical CDFs.

    Merges the two sorted columns in O(n) without a search: current[j] goes right after
    the ``at_or_below[j]`` reference values <= it, and reference[i] after the current
    values placed before it. Each merged value carries |F_ref - F_cur| there, which
    holds until the next merged value; the sum has SciPy's terms in SciPy's order.
    """
    n_ref, n_cur = reference_sorted.shape[0], current_sorted.shape[0]
    ref_rank = ranks.at_or_below
    cur_before_ref = np.cumsum(np.bincount(ref_rank, minlength=n_ref + 1)[:n_ref])
    cur_position = np.arange(n_cur) + ref_rank
    ref_position = np.arange(n_ref) + cur_before_ref
    merged = np.empty(n_ref + n_cur)  # float64, as SciPy converts the values
    merged[cur_position] = current_sorted
    merged[ref_position] = reference_sorted
    # Within a run of equal values only the last one's gap is wide (the others are 0).
    cdf_gap = np.empty(n_ref + n_cur)
    cdf_gap[cur_position] = ref_rank / n_ref - np.arange(1, n_cur + 1) / n_cur
    cdf_gap[ref_position] = np.arange(1, n_ref + 1) / n_ref - cur_before_ref / n_cur
    np.abs(cdf_gap, out=cdf_gap)
    return float(np.sum(cdf_gap[:-1] * np.diff(merged)))


def bin_counts(sorted_values: FloatArray, edges: FloatArray) -> IntArray:
    """Counts per bin (-inf, e0], (e0, e1], ..., (e_last, inf) of a sorted column."""
    at_or_below = np.searchsorted(sorted_values, edges, side="right")
    bounds = np.concatenate(([0], at_or_below, [sorted_values.shape[0]]))
    return np.diff(bounds)


def psi(reference_share: FloatArray, current_share: FloatArray) -> float:
    """Population stability index sum (q - p) ln(q / p), shares floored at PSI_EPSILON."""
    p = np.maximum(reference_share, PSI_EPSILON)
    q = np.maximum(current_share, PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def jensenshannon(reference_share: FloatArray, current_share: FloatArray) -> float:
    """Jensen-Shannon distance in base 2 (0 = same, 1 = disjoint); empty bins are fine."""
    p = reference_share / reference_share.sum()
    q = current_share / current_share.sum()
    m = (p + q) / 2.0
    # 0 * log(0 / m) = 0: only bins a distribution uses contribute to its divergence.
    kl_p = np.sum(p[p > 0] * np.log2(p[p > 0] / m[p > 0]))
    kl_q = np.sum(q[q > 0] * np.log2(q[q > 0] / m[q > 0]))
    return float(np.sqrt(max((kl_p + kl_q) / 2.0, 0.0)))


def chi2_test(reference_counts: IntArray, current_counts: IntArray) -> tuple[float, float]:
    """Pearson chi-squared test of homogeneity on the 2 x K table of category counts.

    Categories absent from both rows must already be dropped. With one degree of
    freedom Yates' continuity correction applies, as in scipy.stats.chi2_contingency.
    """
    observed = np.vstack((reference_counts, current_counts)).astype(np.float64)
    dof = observed.shape[1] - 1
    if dof == 0:
        return 0.0, 1.0
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    if dof == 1:
        gap = expected - observed
        observed = observed + np.sign(gap) * np.minimum(0.5, np.abs(gap))
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, dof))
