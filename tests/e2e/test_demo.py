"""`make demo` in its reduced mode (`python -m devcluster.demo --ci`), on its own devcluster.

The demo brings up a cluster in its own state directory, so this test does not use the
session's devcluster. After it ends, the test reads the cluster itself: what the demo
printed must be what happened.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.report_support import check_in_chromium

from devcluster import chromium
from devcluster import demo_manifests as m
from devcluster.controlplane import Cluster

PROJECT = Path(__file__).resolve().parents[2]
# Seconds. The reduced demo takes about 2 minutes on two quiet cores, 3-4 under load; the
# demo gives each of its steps up to 7 minutes before it reports the step missing.
DEMO_TIMEOUT = 1500

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(DEMO_TIMEOUT + 300)]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo")


@pytest.fixture(scope="module")
def demo(demo_dir: Path) -> Iterator[tuple[Cluster, str, int]]:
    state = demo_dir / "state"
    cluster = Cluster(state)
    report = demo_dir / "demo-report.html"
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "devcluster.demo",
                "--ci",
                "--state-dir",
                str(state),
                "--report",
                str(report),
            ],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=DEMO_TIMEOUT,
            check=False,
        )
        output = result.stdout + result.stderr
        print(output)  # shown by pytest when an assertion below fails
        yield cluster, output, result.returncode
    finally:
        cluster.down()


def _get(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("-n", m.NAMESPACE, "get", *args, "-o", "json").stdout)


def _container(cluster: Cluster) -> dict[str, Any]:
    deployment = _get(cluster, "deployment", m.SERVING)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_the_demo_shows_every_step(demo: tuple[Cluster, str, int]) -> None:
    _, output, code = demo
    assert code == 0, output[-4000:]
    assert "NOT SHOWN" not in output
    for step in range(1, 13):
        assert f"==> [{step}/12]" in output
    assert "exactly the original values" in output
    assert "Tear down: .venv/bin/devcluster down --state-dir" in output


def reported_runs(output: str) -> dict[str, tuple[str, str]]:
    """The runs the demo followed, as it printed them: id -> (trigger, outcome). A run is
    shown as "run <id> (<trigger>): ..." and, after its stages, "outcome <outcome> after"."""
    runs: dict[str, tuple[str, str]] = {}
    current: tuple[str, str] | None = None
    for line in output.splitlines():
        shown = re.match(r"^    run (\S+) \((\w+)\): ", line)
        if shown:
            current = (shown.group(1), shown.group(2))
            continue
        outcome = re.match(r"^    outcome (\w+) after ", line)
        if outcome and current is not None:
            runs[current[0]] = (current[1], outcome.group(1))
            current = None
    return runs


def test_the_cluster_shows_what_the_demo_said(demo: tuple[Cluster, str, int]) -> None:
    """Each run the demo showed is recorded with the outcome the demo printed; the demo
    ends only after a Latency and a Drift run were promoted. Whether one latency
    candidate passes its speed gate depends on the machine's load (the demo then follows
    the next run), so the test checks the runs the demo reported, not the first or last
    run of a trigger."""
    cluster, output, code = demo
    assert code == 0, output[-4000:]
    status = _get(cluster, "mo", m.MO_NAME)["status"]
    recorded = {run["id"]: run for run in status["runs"]}
    reported = reported_runs(output)
    assert reported, output[-4000:]
    for run_id, (trigger, outcome) in reported.items():
        assert run_id in recorded, (run_id, status["runs"])
        assert (recorded[run_id]["trigger"], recorded[run_id]["outcome"]) == (trigger, outcome)
    promoted = [recorded[i] for i, (_, outcome) in reported.items() if outcome == "Promoted"]
    assert {"Latency", "Drift"} <= {run["trigger"] for run in promoted}, reported
    (drift_run,) = [run for run in promoted if run["trigger"] == "Drift"]
    # The retrained model is better on the shifted holdout than the one it replaced.
    assert drift_run["candidate"]["accuracyPercent"] > drift_run["baseline"]["accuracyPercent"]
    # Promotion pointed the Deployment at the promoted model (the drift run's, unless the
    # loop promoted a newer one since).
    container = _container(cluster)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MODEL_URI"] == status["promoted"]["current"]
    ids = list(recorded)
    later = [
        r for r in ids[ids.index(drift_run["id"]) + 1 :] if recorded[r]["outcome"] == "Promoted"
    ]
    if not later:
        assert drift_run["artifactUri"] in {
            status["promoted"]["current"],
            status["promoted"].get("previous"),
        }
    # The fix came back off with exactly the resources of examples/serving/deployment.yaml
    # (on a busy machine a later breach may have applied it again: then the Deployment has
    # exactly what status records, and status recorded the originals).
    manifest = yaml.safe_load((PROJECT / "examples/serving/deployment.yaml").read_text())
    (original,) = manifest["spec"]["template"]["spec"]["containers"]
    fix = status["temporaryFix"]
    (recorded,) = fix["original"]
    assert {k: recorded.get(k) for k in ("requests", "limits")} == original["resources"]
    if fix["active"]:
        (applied,) = fix["applied"]
        assert container["resources"] == {k: applied[k] for k in ("requests", "limits")}
    else:
        assert container["resources"] == original["resources"]
    events = _get(
        cluster,
        "events",
        "--field-selector",
        f"involvedObject.name={m.MO_NAME},involvedObject.kind=ModelOptimization",
    )
    reasons = {e["reason"] for e in events["items"]}
    assert {"TemporaryFixApplied", "TemporaryFixReverted", "Promoted"} <= reasons, reasons


def test_the_demo_report_shows_its_plots_in_chromium(
    demo: tuple[Cluster, str, int], demo_dir: Path
) -> None:
    """demo-report.html: the history plot and the runs' reports, as a browser shows them."""
    cluster, output, code = demo
    assert code == 0, output[-4000:]
    page = demo_dir / "demo-report.html"
    assert f"report with plots: {page}" in output
    status = _get(cluster, "mo", m.MO_NAME)["status"]
    runs = status["runs"]
    assert all(run.get("reportUri", "").endswith(f"/{run['id']}/report.html") for run in runs)
    assert status["lastEvaluation"]["reportUri"].endswith(
        f"/evaluations/{status['lastEvaluation']['id']}/report.html"
    )
    text = page.read_text()
    assert "<script" not in text
    for run in runs:  # each run's own report, copied beside the page and linked
        assert (demo_dir / "demo-reports" / f"{run['id']}.html").is_file()
        assert f'href="demo-reports/{run["id"]}.html"' in text
    try:
        checked = check_in_chromium(page, demo_dir / "demo-report.png")
    except chromium.ChromiumUnavailableError as error:
        pytest.fail(f"headless Chromium unavailable (make devcluster-bin fetches it): {error}")
    assert any(title.startswith("Evaluation history") for title in checked), checked
    for run in runs:
        assert check_in_chromium(
            demo_dir / "demo-reports" / f"{run['id']}.html", demo_dir / f"{run['id']}.png"
        )
