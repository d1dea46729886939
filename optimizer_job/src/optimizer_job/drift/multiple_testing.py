"""Adjusted p-values for testing every feature at once.

Testing 50 features at alpha = 0.05 flags about 2.5 of them by chance alone. The
adjusted p-values below are compared with alpha directly:

- ``bonferroni``: min(1, p * m). Controls the chance of flagging any unchanged
  feature (family-wise error) at alpha.
- ``fdr_bh``: Benjamini-Hochberg step-up, as scipy.stats.false_discovery_control
  (method="bh"). Controls the expected share of flagged features that did not change
  (false discovery rate) at alpha: more power when many features drift.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

Correction = Literal["bonferroni", "fdr_bh"]


def adjust_pvalues(pvalues: NDArray[np.float64], correction: Correction) -> NDArray[np.float64]:
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.shape[0]
    if m == 0:
        return p.copy()
    if correction == "bonferroni":
        bonferroni: NDArray[np.float64] = np.minimum(p * m, 1.0)
        return bonferroni
    if correction == "fdr_bh":
        order = np.argsort(p)
        scaled = p[order] * m / np.arange(1, m + 1)
        # Step-up: a p-value's adjusted value is the least scaled value at or above it.
        monotone = np.minimum.accumulate(scaled[::-1])[::-1]
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(monotone, 1.0)
        return adjusted
    raise ValueError(f"unknown correction {correction!r}: use 'bonferroni' or 'fdr_bh'")
