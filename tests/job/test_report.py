"""report.html of a real run and evaluation on CPU, opened in headless Chromium (issue 18)."""

from __future__ import annotations

import base64
import io
import logging
import struct
import time
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image as mpimg
from tests.report_support import check_in_chromium

from devcluster import chromium, demo_report
from optimizer_job import report
from optimizer_job.contract import (
    REPORT_NAME,
    EvaluationSettings,
    PruneStage,
    RetrainStage,
    RunResult,
    Task,
    evaluation_artifact_uri,
    report_uri_of,
)
from optimizer_job.example import make_example
from optimizer_job.manifest import read_manifest, sha256_file, verify_manifest
from optimizer_job.runner import run_task

pytestmark = pytest.mark.job

FAST = EvaluationSettings(latency_batch_sizes=[1, 16], latency_iterations=20, latency_warmup=2)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_example(tmp_path_factory.mktemp("example"), logging.getLogger("test"), epochs=10)


def _task(example: dict[str, Any], kind: str, **changes: Any) -> Task:
    task = Task.model_validate_json(Path(example["out"], f"task-{kind}.json").read_text())
    return task.model_copy(update={"evaluation": FAST, **changes})


@pytest.fixture(scope="module")
def optimized(example: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    artifacts = tmp_path_factory.mktemp("artifacts")
    stages = [
        RetrainStage(epochs=2, early_stopping_patience=0),
        PruneStage(amount_percent=30, fine_tune_epochs=1),
    ]
    task = _task(
        example, "optimize", artifacts_uri=artifacts.as_uri(), stages=stages, run_id="r-report"
    )
    return run_task(task)


@pytest.fixture(scope="module")
def evaluated(example: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    artifacts = tmp_path_factory.mktemp("artifacts")
    task = _task(example, "evaluate", artifacts_uri=artifacts.as_uri(), run_id="e-report")
    return run_task(task)


class _Page(HTMLParser):
    """The plots (data-URI images with their declared size) and titles of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.titles: list[str] = []
        self.scripts = 0
        self._caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(values)
        if tag == "script":
            self.scripts += 1
        self._caption = tag in ("figcaption", "h2")

    def handle_data(self, data: str) -> None:
        if self._caption and data.strip():
            self.titles.append(data.strip())
        self._caption = False


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_plots(page: _Page) -> None:
    assert page.images, "no plots"
    for image in page.images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix), image["src"][:40]
        png = base64.b64decode(image["src"][len(prefix) :])
        assert _png_size(png) == (int(image["width"]), int(image["height"]))
        pixels = mpimg.imread(io.BytesIO(png), format="png")
        assert float(np.std(pixels[..., :3])) > 0.01  # something is drawn on it


def test_a_run_publishes_its_report_in_the_manifest(optimized: RunResult) -> None:
    assert optimized.ok and optimized.artifact_uri is not None
    run_dir = Path(optimized.artifact_uri.removeprefix("file://"))
    assert optimized.report_uri == report_uri_of(optimized.artifact_uri)
    assert (run_dir / REPORT_NAME).is_file()
    # Listed with its digest, and the MANIFEST digest that names the version covers it.
    assert read_manifest(run_dir)[REPORT_NAME] == sha256_file(run_dir / REPORT_NAME)
    assert verify_manifest(run_dir) == optimized.manifest_sha256
    assert RunResult.model_validate_json((run_dir / "result.json").read_text()) == optimized
    text = (run_dir / REPORT_NAME).read_text()
    page = _parse(text)
    assert page.scripts == 0 and "http://" not in text and "https://" not in text
    _check_plots(page)
    titles = " | ".join(page.titles)
    for expected in (
        "Summary",
        "Gate inputs",
        "Candidate speedup per batch size",
        "Latency at batch size 1: model in use vs candidate",
        "Latency at batch size 16: model in use vs candidate",
        "Confusion matrix, model in use",
        "Confusion matrix, candidate",
        "What ran",
        "Seconds per stage",
    ):
        assert expected in titles, (expected, titles)
    assert "1. retrain" in text and "2. prune" in text and "macs_ratio=" in text
    data = optimized.report_data
    assert data is not None and len(data.confusion) == 2
    assert {(h.model, h.batch_size) for h in data.latency} == {
        (m, b) for m in ("baseline", "candidate") for b in (1, 16)
    }
    # The result the operator reads stays small: the report's data is a few KiB.
    assert len(data.model_dump_json()) < 32_000


def test_an_evaluation_publishes_its_report(evaluated: RunResult, example: dict[str, Any]) -> None:
    assert evaluated.ok and evaluated.drift is not None and evaluated.drift.detected
    artifacts = _task(example, "evaluate").artifacts_uri
    assert artifacts is None  # the example's evaluate task has none: the test gave one
    assert evaluated.report_uri is not None
    directory = Path(evaluated.report_uri.removeprefix("file://")).parent
    assert evaluated.report_uri.endswith("/example/evaluations/e-report/report.html")
    assert evaluation_artifact_uri("file:///x", "example", "e-report").endswith(
        "/example/evaluations/e-report"
    )
    assert sorted(p.name for p in directory.iterdir()) == ["MANIFEST", REPORT_NAME, "result.json"]
    assert verify_manifest(directory) == evaluated.manifest_sha256
    page = _parse((directory / REPORT_NAME).read_text())
    _check_plots(page)
    titles = " | ".join(page.titles)
    assert "Drift" in titles and "Per-feature drift scores" in titles
    drifted = evaluated.drift.drifted_features
    assert any(f"Feature {name} (drifted): reference vs current" in titles for name in drifted)
    assert "Latency at batch size 16: model in use" in titles
    assert "Confusion matrix, model in use" in titles


def test_the_report_renders_again_from_result_json_quickly(optimized: RunResult) -> None:
    started = time.perf_counter()
    text = report.render(optimized)
    seconds = time.perf_counter() - started
    _check_plots(_parse(text))
    # Cheap enough to write with every run and evaluation (bench/RESULTS.md has the number).
    assert seconds < 30, seconds


def test_chromium_shows_the_reports_plots(
    optimized: RunResult, evaluated: RunResult, tmp_path: Path
) -> None:
    for result in (optimized, evaluated):
        assert result.report_uri is not None
        page = Path(result.report_uri.removeprefix("file://"))
        try:
            titles = check_in_chromium(page, tmp_path / f"{result.run_id}.png")
        except chromium.ChromiumUnavailableError as error:
            pytest.fail(f"headless Chromium unavailable (make devcluster-bin fetches it): {error}")
        expected = "Candidate speedup" if result.kind == "optimize" else "Per-feature drift"
        assert any(t.startswith(expected) for t in titles), titles


def test_chromium_shows_a_demo_report_built_from_real_reports(
    optimized: RunResult, evaluated: RunResult, tmp_path: Path
) -> None:
    """demo-report.html as `make demo` writes it, from this module's real run and evaluation
    (tests/e2e/test_demo.py does the same with the demo's own cluster)."""
    assert optimized.report_uri and evaluated.report_uri and evaluated.baseline
    now = datetime.now(UTC)
    evaluation = {
        "id": evaluated.run_id,
        "time": now.isoformat(),
        "driftScore": evaluated.drift.score if evaluated.drift else None,
        "driftDetected": True,
        "latency": {"p95Ms": evaluated.baseline.latency_ms.get("b16_p95")},
        "accuracyPercent": 100 * (evaluated.baseline.accuracy or 0),
        "reportUri": evaluated.report_uri,
    }
    before = dict(evaluation, id="e-before", time=(now - timedelta(minutes=5)).isoformat())
    status = {
        "runs": [
            {
                "id": optimized.run_id,
                "trigger": "Drift",
                "outcome": "Promoted",
                "finishedAt": (now - timedelta(minutes=2)).isoformat(),
                "reportUri": optimized.report_uri,
                "gates": [{"name": "AccuracyDrop", "passed": True, "value": -30.0, "limit": 1}],
            }
        ],
        "temporaryFix": {"active": False, "appliedAt": (now - timedelta(minutes=4)).isoformat()},
    }
    history = demo_report.DemoHistory(slo_ms=1, latency_batch=16, evaluations=[before, evaluation])

    def resolve(uri: str) -> Path | None:
        return Path(uri.removeprefix("file://"))

    page = demo_report.write(tmp_path / "demo-report.html", status, history, resolve)
    titles = check_in_chromium(page, tmp_path / "demo-report.png")
    assert any(t.startswith("Evaluation history") for t in titles), titles
    copies = tmp_path / demo_report.REPORTS_FOLDER
    assert sorted(p.name for p in copies.iterdir()) == [
        "e-before.html",
        f"{evaluated.run_id}.html",
        f"{optimized.run_id}.html",
    ]
    titles = check_in_chromium(copies / f"{optimized.run_id}.html", tmp_path / "run.png")
    assert "Seconds per stage" in titles
