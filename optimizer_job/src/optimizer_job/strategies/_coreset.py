"""Coreset selection: which rows of a labelled table to keep so training on them works.

Three selectors, all stratified by class (each class keeps its share of the rows, so the
coreset keeps the label prior) and deterministic:

- ``herding``: per class, greedily add the point that brings the running mean of the chosen
  points closest to the class mean (Welling 2009; the iCaRL exemplar rule).
- ``kcenter``: per class, greedy k-center (Sener & Savarese 2018): repeatedly add the point
  farthest from everything chosen so far, so the coreset covers the class.
- ``random``: a stratified random sample, the baseline the other two must beat.

Both greedy loops do one matrix-vector product per chosen point (O(n_c * d)), using
||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2, so 10^5 rows select in seconds. They run with one
BLAS thread: thousands of small products gain nothing from threads, and on a busy machine
OpenBLAS's threads made the same selection 10-40x slower (bench/RESULTS.md, "Coreset").
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from threadpoolctl import threadpool_limits

Method = Literal["herding", "kcenter", "random"]


def class_quotas(y: np.ndarray, fraction: float) -> dict[int, int]:
    """Rows to keep per class: ``fraction`` of each class, at least one, at most all.

    The total is round(fraction * n) (largest-remainder rounding across classes) unless
    the one-per-class floor forces a few more.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    classes, counts = np.unique(y, return_counts=True)
    if classes.size == 0:
        return {}
    exact = counts * fraction
    quotas = np.floor(exact).astype(np.int64)
    missing = round(float(y.shape[0]) * fraction) - int(quotas.sum())
    if missing > 0:
        # Largest fractional part first; ties go to the earlier class: deterministic.
        order = np.argsort(-(exact - quotas), kind="stable")[:missing]
        quotas[order] += 1
    quotas = np.clip(quotas, 1, counts)
    return {int(c): int(q) for c, q in zip(classes, quotas, strict=True)}


def herding_order(points: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` points whose running mean tracks the mean of ``points``.

    Step t picks argmin_i ||t * mu - s - x_i||^2, s the sum of the points chosen so far,
    which is the point that makes the mean of the t chosen points closest to mu.
    """
    n = points.shape[0]
    k = min(k, n)
    pts = np.ascontiguousarray(points, dtype=np.float32)
    sq_norms = np.einsum("ij,ij->i", pts, pts)
    mean = pts.mean(axis=0, dtype=np.float64)
    chosen_sum = np.zeros(pts.shape[1], dtype=np.float64)
    available = np.ones(n, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    for step in range(k):
        target = (step + 1) * mean - chosen_sum
        scores = sq_norms - 2.0 * (pts @ target.astype(np.float32))
        scores[~available] = np.inf
        pick = int(np.argmin(scores))
        order[step] = pick
        available[pick] = False
        chosen_sum += pts[pick]
    return order


def kcenter_order(points: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` points chosen by greedy k-center, starting nearest the mean.

    Starting at the most central point (not a random one) keeps the result independent
    of the seed and avoids opening with an outlier.
    """
    n = points.shape[0]
    k = min(k, n)
    pts = np.ascontiguousarray(points, dtype=np.float32)
    sq_norms = np.einsum("ij,ij->i", pts, pts)
    centred = pts - pts.mean(axis=0, dtype=np.float64).astype(np.float32)
    first = int(np.argmin(np.einsum("ij,ij->i", centred, centred)))
    order = np.empty(k, dtype=np.int64)
    nearest = np.full(n, np.inf, dtype=np.float32)
    pick = first
    for step in range(k):
        order[step] = pick
        dist = sq_norms - 2.0 * (pts @ pts[pick]) + sq_norms[pick]
        np.minimum(nearest, dist, out=nearest)
        nearest[pick] = -1.0  # chosen: never the farthest again, whatever rounding says
        pick = int(np.argmax(nearest))
    return order


def select(
    method: Method,
    features: np.ndarray,
    y: np.ndarray,
    fraction: float,
    seed: int,
) -> np.ndarray:
    """Sorted row indices of the coreset of (features, y) chosen by ``method``."""
    if features.shape[0] != y.shape[0]:
        raise ValueError("features and labels differ in length")
    flat = features.reshape(features.shape[0], -1)
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    with threadpool_limits(limits=1, user_api="blas"):
        for label, quota in class_quotas(y, fraction).items():
            picked.append(_select_class(method, flat, y, label, quota, rng))
    if not picked:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate(picked))


def _select_class(
    method: Method,
    flat: np.ndarray,
    y: np.ndarray,
    label: int,
    quota: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Row indices (into ``flat``) of the ``quota`` rows of class ``label`` to keep."""
    members = np.flatnonzero(y == label)
    if quota >= members.size:
        return members
    if method == "random":
        local = rng.choice(members.size, size=quota, replace=False)
    elif method == "herding":
        local = herding_order(flat[members], quota)
    elif method == "kcenter":
        local = kcenter_order(flat[members], quota)
    else:
        raise ValueError(f"unknown coreset method {method!r}")
    chosen: np.ndarray = members[local]
    return chosen


def standardize(features: np.ndarray) -> np.ndarray:
    """Columns scaled to zero mean and unit variance (constant columns left at zero), so
    distances do not depend on each feature's unit."""
    flat = features.reshape(features.shape[0], -1).astype(np.float32)
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    std[std == 0] = 1.0
    out: np.ndarray = (flat - mean) / std
    return out
