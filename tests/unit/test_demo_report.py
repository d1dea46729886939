"""demo-report.html from a status like the demo's (issue 18): plots, runs, links, copies."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devcluster import demo_report

pytestmark = pytest.mark.unit

START = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _at(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


def _evaluation(index: int, drift: float, p95: float, accuracy: float) -> dict[str, Any]:
    return {
        "id": f"e-{index}",
        "time": _at(index),
        "modelUri": "pvc://ml/models/v1",
        "driftScore": drift,
        "driftDetected": drift > 0.2,
        "latency": {"p95Ms": p95},
        "accuracyPercent": accuracy,
        "reportUri": f"pvc://ml/artifacts/demo/evaluations/e-{index}/report.html",
    }


STATUS: dict[str, Any] = {
    "runs": [
        {
            "id": "r-1",
            "trigger": "Latency",
            "outcome": "Promoted",
            "finishedAt": _at(3.5),
            "baseline": {"accuracyPercent": 96.0},
            "candidate": {"accuracyPercent": 95.5},
            "gates": [
                {"name": "AccuracyDrop", "passed": True, "value": 0.5, "limit": 1.0},
                {"name": "Speedup", "passed": True, "value": 2.4, "limit": 1.25},
            ],
            "reportUri": "pvc://ml/artifacts/demo/r-1/report.html",
        },
        {
            "id": "r-2",
            "trigger": "Drift",
            "outcome": "Promoted",
            "finishedAt": _at(7.5),
            "reportUri": "pvc://ml/artifacts/demo/r-2/report.html",
        },
    ],
    "temporaryFix": {"active": False, "appliedAt": _at(1.2), "expiresAt": _at(30)},
}


def test_the_demo_report_has_the_history_plot_runs_and_copies(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    for uri in [r["reportUri"] for r in STATUS["runs"]] + ["pvc://ml/x/e-2/report.html"]:
        path = volume / uri.removeprefix("pvc://ml/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html>{uri}</html>")
    history = demo_report.DemoHistory(
        slo_ms=5,
        latency_batch=32,
        evaluations=[
            _evaluation(1, 0.05, 7.0, 96.0),
            _evaluation(2, 0.04, 6.5, 96.0),
            _evaluation(5, 0.06, 3.0, 95.5),
            _evaluation(6, 0.45, 3.1, 71.0),
            _evaluation(9, 0.08, 3.0, 93.0),
        ],
        fix_reverted_at=START + timedelta(minutes=4),
    )

    def resolve(uri: str) -> Path | None:
        return volume / uri.removeprefix("pvc://ml/")

    page = demo_report.write(tmp_path / "out" / "demo-report.html", STATUS, history, resolve)
    text = page.read_text()
    assert "<script" not in text and "http://" not in text
    (image,) = re.findall(r'<img class="plot" width="(\d+)" height="(\d+)" src="([^"]+)"', text)
    assert (image[0], image[1]) == ("800", "560")
    png = base64.b64decode(image[2].removeprefix("data:image/png;base64,"))
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "Evaluation history: drift score, p95 latency vs SLO, accuracy" in text
    for run in ("r-1", "r-2"):
        assert f'href="demo-reports/{run}.html"' in text
        copied = page.parent / "demo-reports" / f"{run}.html"
        assert copied.read_text() == f"<html>pvc://ml/artifacts/demo/{run}/report.html</html>"
    assert "Gates of run r-1" in text and "AccuracyDrop" in text
    assert "reverted (seen by the demo)" in text
    # An evaluation whose report is not on the volume is listed without a link.
    assert ">e-1<" in text and 'href="demo-reports/e-1.html"' not in text
