"""Drift statistics of one feature: a reference column against a current column.

Numeric columns arrive sorted ascending, both in one type (float32, float64 or
int64; see ``reference.comparison_dtype``): integers are compared exactly. The
reference is sorted once, when it is fitted; the current column once per comparison.
Every statistic here reads the two sorted arrays, so no statistic sorts again and
only Wasserstein builds a merged copy.

The results equal SciPy's: ``ks_test`` matches
``scipy.stats.ks_2samp(reference, current)`` (two-sided, ``method="auto"``),
``wasserstein`` matches ``scipy.stats.wasserstein_distance``, ``jensenshannon``
matches ``scipy.spatial.distance.jensenshannon(p, q, base=2)`` and ``chi2_test``
matches ``scipy.stats.chi2_contingency`` on the 2 x K table of category counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

# scipy.stats.ks_2samp computes exact p-values (Hodges' lattice-path counts) for
# samples of at most this many values and Smirnov's asymptotic law above. In the
# exact regime ``ks_test`` calls ks_2samp itself (public API, small samples: cheap);
# only the asymptotic regime, where the samples are large, takes the fast path here.
KS_EXACT_MAX_N = 10_000

# Above this effective sample size the Smirnov tail (an O(n) sum in SciPy, 0.4 s at
# n = 500 000) is replaced by Miller's approximation, within 2e-5 of it from here up.
SMIRNOV_DIRECT_MAX_N = 2_000

# Current values per chunk in ks_statistic: 64 keeps the per-chunk searches few and
# the chunks to search in full (those near the maximum) small.
KS_CHUNK = 64

# PSI takes the logarithm of bin proportions: an empty bin would make it infinite.
# Proportions below PSI_EPSILON count as PSI_EPSILON (a common choice; one bin that
# empties completely then adds at most about p * ln(p / 1e-4) to the score).
PSI_EPSILON = 1e-4

FloatArray = NDArray[np.floating[Any]]
ValueArray = NDArray[Any]  # float32, float64 or int64 values
IntArray = NDArray[np.intp]


@dataclass(frozen=True, eq=False)  # holds arrays: compare by identity
class Ranks:
    """Where each value of a sorted current column falls in the sorted reference.

    ``below[j]`` counts reference values < current[j], ``at_or_below[j]`` those <=.
    They differ only where a current value also occurs in the reference.
    """

    below: IntArray
    at_or_below: IntArray


def ranks_in_reference(reference_sorted: ValueArray, current_sorted: ValueArray) -> Ranks:
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


def ks_statistic(
    reference_sorted: ValueArray, current_sorted: ValueArray, chunk: int = KS_CHUNK
) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_ref - F_cur|, exact.

    Between consecutive current values F_cur is constant, so with n reference and m
    current values the supremum is the largest of, over every current index j,
      T+_j = below_j / n - j / m             (F_ref - F_cur just below current[j])
      T-_j = (j + 1) / m - at_or_below_j / n (F_cur - F_ref at current[j])
    where below_j / at_or_below_j count reference values < / <= current[j]. Ties in
    the current column only add smaller candidates.

    Searching every current value in the reference costs 20 ms per million values;
    instead the current indices are cut into chunks of ``chunk``. The counts are found
    for the first and last index of each chunk only: that gives T+ at chunk starts and
    T- at chunk ends exactly, and, since the counts never decrease with j, an upper
    bound of T+ and T- anywhere in the chunk. Only chunks whose bound beats the best
    exact value are searched in full: usually a few near the maximum (all of them in
    the worst case, which is the plain method). Integer arithmetic (scaled by n * m)
    keeps the comparisons exact.
    """
    n_ref, n_cur = reference_sorted.shape[0], current_sorted.shape[0]
    if n_ref * n_cur >= 2**62:
        raise ValueError(f"samples of {n_ref} and {n_cur} values are too large for exact KS")
    starts = np.arange(0, n_cur, chunk)
    ends = np.minimum(starts + chunk, n_cur) - 1
    below_start = np.searchsorted(reference_sorted, current_sorted[starts], side="left")
    at_or_below_end = np.searchsorted(reference_sorted, current_sorted[ends], side="right")
    plus = int(np.max(below_start * n_cur - starts * n_ref))
    minus = int(np.max((ends + 1) * n_ref - at_or_below_end * n_cur))
    plus_bound = at_or_below_end * n_cur - starts * n_ref
    minus_bound = (ends + 1) * n_ref - below_start * n_cur
    open_chunks = starts[(plus_bound > plus) | (minus_bound > minus)]
    if open_chunks.size:
        js = (open_chunks[:, None] + np.arange(chunk)).ravel()
        js = js[js < n_cur]
        ranks = ranks_in_reference(reference_sorted, current_sorted[js])
        plus = max(plus, int(np.max(ranks.below * n_cur - js * n_ref)))
        minus = max(minus, int(np.max((js + 1) * n_ref - ranks.at_or_below * n_cur)))
    return float(max(plus, minus, 0) / (n_ref * n_cur))


def ks_test(reference_sorted: ValueArray, current_sorted: ValueArray) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and p-value, as ``scipy.stats.ks_2samp``.

    Both samples at most KS_EXACT_MAX_N values: ks_2samp itself (its exact p-value,
    and its own fallback to the asymptotic law where the exact count overflows), on
    the dense ranks of the values - KS depends on the order alone, and ranks keep
    integers beyond 2**53 exact where ks_2samp would turn them into floats.
    Otherwise the fast exact statistic and ``ks_pvalue``.
    """
    n_ref, n_cur = reference_sorted.shape[0], current_sorted.shape[0]
    if max(n_ref, n_cur) <= KS_EXACT_MAX_N:
        distinct = np.unique(np.concatenate((reference_sorted, current_sorted)))
        result = stats.ks_2samp(
            np.searchsorted(distinct, reference_sorted),
            np.searchsorted(distinct, current_sorted),
            alternative="two-sided",
            method="auto",
        )
        return float(result.statistic), float(np.clip(result.pvalue, 0.0, 1.0))
    statistic = ks_statistic(reference_sorted, current_sorted)
    return statistic, ks_pvalue(statistic, n_ref, n_cur)


def ks_pvalue(statistic: float, n_reference: int, n_current: int) -> float:
    """Asymptotic two-sided p-value of the KS statistic, as ks_2samp(method="auto")
    computes it when a sample holds more than KS_EXACT_MAX_N values:
    ``kstwo.sf(d, round(n*m / (n+m)))``. Smaller samples go through ``ks_test``.
    """
    if max(n_reference, n_current) <= KS_EXACT_MAX_N:
        raise ValueError(
            f"samples of {n_reference} and {n_current} values take the exact p-value: use ks_test"
        )
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


def wasserstein(reference_sorted: ValueArray, current_sorted: ValueArray) -> float:
    """Wasserstein-1 distance: the area between the two empirical CDFs.

    One binary search per current value, then an O(n) merge of the sorted columns:
    current[j] goes right after the ``at_or_below[j]`` reference values <= it, and
    reference[i] after the current values placed before it. Each merged value carries
    |F_ref - F_cur| there, which holds until the next merged value; the sum has SciPy's
    terms in SciPy's order.
    """
    n_ref, n_cur = reference_sorted.shape[0], current_sorted.shape[0]
    at_or_below = np.searchsorted(reference_sorted, current_sorted, side="right")
    # float64, as SciPy converts the values; integers stay integers, so the gaps
    # between large values are exact (SciPy's float64 would round them).
    integral = reference_sorted.dtype.kind in "iu" and current_sorted.dtype.kind in "iu"
    merged = np.empty(n_ref + n_cur, dtype=np.int64 if integral else np.float64)
    cdf_gap = np.empty(n_ref + n_cur)
    # Built one sample at a time, freeing as it goes: this runs on a column of a
    # million values per worker thread, and the peak memory is part of the budget.
    position = np.arange(n_cur)
    position += at_or_below
    merged[position] = current_sorted
    gap = at_or_below / n_ref
    gap -= np.arange(1, n_cur + 1) / n_cur
    cdf_gap[position] = gap
    del position, gap
    current_before = np.cumsum(np.bincount(at_or_below, minlength=n_ref + 1)[:n_ref])
    position = np.arange(n_ref)
    position += current_before
    merged[position] = reference_sorted
    gap = np.arange(1, n_ref + 1) / n_ref
    gap -= current_before / n_cur
    cdf_gap[position] = gap
    del position, gap, current_before, at_or_below
    # Within a run of equal values only the last one's gap is wide (the others are 0).
    widths = np.diff(merged).astype(np.float64, copy=False)
    del merged
    widths *= np.abs(cdf_gap[:-1])
    return float(np.sum(widths))


def bin_counts(sorted_values: ValueArray, edges: ValueArray) -> IntArray:
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
