"""optimizer_job.report on made-up results: binning, escaping, no script (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer_job import report
from optimizer_job.contract import DriftReport, ModelMetrics, RunResult

pytestmark = pytest.mark.unit


def _drift(names: list[str], drifted: list[str], categorical: set[str]) -> DriftReport:
    per_feature = {
        name: ({"chi2": 5.0 + i, "chi2_p": 0.01} if name in categorical else {"ks": 0.1 * i})
        | {"p_adjusted": 0.01 if name in drifted else 0.5}
        for i, name in enumerate(names)
    }
    return DriftReport(
        metric="ks",
        score=0.3,
        share_drifted=len(drifted) / len(names),
        drifted_features=drifted,
        detected=bool(drifted),
        per_feature=per_feature,
    )


def test_latency_bins_keep_every_call_even_the_rare_slow_ones() -> None:
    rng = np.random.default_rng(0)
    fast = np.concatenate([rng.normal(0.05, 0.005, 500), [9.0]])  # one call 180x the median
    slow = rng.normal(0.2, 0.01, 500)
    histograms = report.latency_histograms({"baseline": {1: slow}, "candidate": {1: fast}})
    assert [(h.model, h.batch_size) for h in histograms] == [("baseline", 1), ("candidate", 1)]
    for histogram, values in zip(histograms, (slow, fast), strict=True):
        assert sum(histogram.counts) == len(values)
        assert len(histogram.edges) == len(histogram.counts) + 1 == report.HISTOGRAM_BINS + 1
        assert histogram.edges == sorted(histogram.edges)
    # Log-spaced: the bulk of fast calls is spread over several bins, not one.
    assert sum(c > 0 for c in histograms[1].counts) >= 4


def test_drifted_features_come_first_and_categoricals_are_bars() -> None:
    names = ["a", "b", "colour", "d"]
    reference = np.array([[0.0, 1.0, 1.0, 5.0], [0.5, 1.5, 2.0, 5.0]] * 50)
    current = np.array([[3.0, 1.0, 3.0, 5.0], [3.5, 1.5, 3.0, 5.0]] * 50)
    drift = _drift(names, ["colour", "a"], {"colour"})
    histograms = report.feature_histograms(reference, current, names, drift, limit=3)
    assert [h.name for h in histograms] == ["colour", "a", "d"]
    colour = histograms[0]
    assert colour.kind == "categorical" and colour.categories == ["1", "2", "3"]
    assert (colour.reference, colour.current) == ([50, 50, 0], [0, 0, 100])
    assert histograms[1].kind == "numeric" and sum(histograms[1].reference) == 100


def test_text_from_the_data_is_escaped_and_the_page_has_no_script() -> None:
    evil = '<script>alert("x")</script>'
    names = [evil, "ok"]
    x = np.array([[0.0, 1.0], [1.0, 2.0]] * 20)
    drift = _drift(names, [evil], set())
    histograms = report.feature_histograms(x, x + 1, names, drift)
    result = RunResult(
        kind="evaluate",
        run_id="e-1",
        ok=True,
        baseline=ModelMetrics(accuracy=0.9, latency_ms={"b1_p95": 1.0}),
        drift=drift,
        report_data={"drift_histograms": histograms, "alpha": 0.05},  # type: ignore[arg-type]
    )
    page = report.render(result, optimization=f"ns/{evil}")
    assert "<script" not in page
    assert "&lt;script&gt;" in page
    assert page.count('<img class="plot"') == 1 + len(histograms)  # scores + histograms
    assert "Per-feature drift scores (red: drifted at alpha 0.05)" in page
