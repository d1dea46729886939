"""How much faster one model is than another, with a confidence interval (numpy only).

Two models are timed in short alternating rounds in ABBA order (A B B A, then B A A B, ...):
each *block* is two adjacent rounds of each model, so load that rises or falls steadily
during a block falls on both alike. A block gives one paired ratio, the baseline's time
over the candidate's (above 1: the candidate is faster). The estimate is the median of the
block ratios; its interval is a percentile bootstrap over blocks (seeded, so the same
timings always give the same interval). A load burst that lands on one model makes a few
block ratios extreme: the median barely moves, the interval widens, and a gate that
decides on the interval's lower bound does not pass on the burst.

A decision against a required ratio is ``pass`` when the whole interval is at or above
it, ``fail`` when the whole interval is below it, and ``inconclusive`` when the interval
straddles it: then the caller measures more blocks, and if it still cannot tell, says so
instead of deciding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_SAMPLES = 2000
MIN_BLOCKS = 4

Decision = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class RatioInterval:
    ratio: float  # median block ratio, baseline time / candidate time
    low: float
    high: float
    blocks: int
    confidence: float = CONFIDENCE

    @property
    def rounds(self) -> int:
        """Timed rounds per model (two per block)."""
        return 2 * self.blocks

    def relative_width(self) -> float:
        return (self.high - self.low) / self.ratio if self.ratio > 0 else float("inf")


def abba_first(round_index: int) -> int:
    """Which of two models (0 = baseline, 1 = candidate) goes first in round ``round_index``:
    A B, B A | B A, A B | A B, B A | ... Blocks alternate ABBA and BAAB, so neither model
    is always the one that runs twice in a row (with warm caches)."""
    return ((round_index + 1) // 2) % 2


def block_ratios(baseline: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Paired ratios of blocks of two consecutive rounds: ``baseline`` and ``candidate`` hold
    one time per round (same length, rounds in order); a trailing odd round is dropped."""
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("baseline and candidate need one time per round each, as many rounds")
    blocks = len(a) // 2
    a_sum = a[: 2 * blocks].reshape(blocks, 2).sum(axis=1)
    b_sum = b[: 2 * blocks].reshape(blocks, 2).sum(axis=1)
    ratios: np.ndarray = a_sum / np.maximum(b_sum, 1e-12)
    return ratios


def ratio_interval(
    baseline: np.ndarray,
    candidate: np.ndarray,
    confidence: float = CONFIDENCE,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> RatioInterval:
    """Median block ratio of per-round times and its percentile-bootstrap interval."""
    ratios = block_ratios(baseline, candidate)
    if len(ratios) < MIN_BLOCKS:
        raise ValueError(f"a ratio interval needs at least {MIN_BLOCKS} blocks ({len(ratios)})")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ratios), size=(samples, len(ratios)))
    medians = np.median(ratios[picks], axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(medians, [tail, 100.0 - tail])
    return RatioInterval(
        ratio=float(np.median(ratios)),
        low=float(low),
        high=float(high),
        blocks=len(ratios),
        confidence=confidence,
    )


def decide(interval: RatioInterval, required: float) -> Decision:
    """Whether the candidate is at least ``required`` times as fast, judged on the interval."""
    if interval.low >= required:
        return "pass"
    if interval.high < required:
        return "fail"
    return "inconclusive"
