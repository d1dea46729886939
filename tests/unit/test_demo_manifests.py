"""The demo's rendered manifests: the ModelOptimization it applies is the example file with
the measured SLO and the demo's pace, and still a valid spec; its Jobs are restricted."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devcluster import demo_manifests as m
from devcluster.demo_show import evaluation_rows, run_header, run_rows, table
from driftwarden.api.spec import ModelOptimizationSpec

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE = PROJECT / "examples" / "demo" / "modeloptimization.yaml"


@pytest.mark.parametrize("pace", [m.FULL, m.FAST])
def test_the_rendered_optimization_is_the_example_with_slo_and_pace(pace: m.Pace) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    rendered = yaml.safe_load(m.modeloptimization(EXAMPLE.read_text(), 7, pace))
    spec = ModelOptimizationSpec.model_validate(rendered["spec"])
    assert spec.triggers.latency is not None
    assert spec.triggers.latency.p95_ms == 7
    assert rendered["spec"]["monitoring"]["interval"] == pace.interval
    stages = {name: body for stage in rendered["spec"]["pipeline"] for name, body in stage.items()}
    assert stages["retrain"]["epochs"] == pace.retrain_epochs
    assert stages["prune"]["fineTuneEpochs"] == pace.fine_tune_epochs
    # Nothing else changes: the demo shows the example file, not another resource.
    for key in ("model", "data", "artifacts", "target", "gates", "promotion", "job"):
        assert rendered["spec"][key] == example["spec"][key]


def test_the_example_points_at_the_serving_deployment_and_the_volume() -> None:
    spec = yaml.safe_load(EXAMPLE.read_text())["spec"]
    serving = yaml.safe_load((PROJECT / "examples/serving/deployment.yaml").read_text())
    assert spec["target"]["deployment"] == serving["metadata"]["name"] == m.SERVING
    (container,) = serving["spec"]["template"]["spec"]["containers"]
    assert spec["target"]["container"] == container["name"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[spec["target"]["modelEnv"]] == spec["model"]["uri"] == m.MODEL_URI
    mounts = {v["mountPath"] for v in container["volumeMounts"]}
    assert m.MOUNT in mounts


def test_data_jobs_run_restricted_on_the_claim() -> None:
    job = yaml.safe_load(m.prepare_job(m.FAST, 64))
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["command"][-2:] == ["--latency-batch", "64"]
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == m.CLAIM


def test_the_report_table_reads_runs_from_status() -> None:
    status = {
        "runs": [
            {
                "id": "r1",
                "trigger": "Latency",
                "startedAt": "2026-11-28T16:21:10Z",
                "outcome": "Promoted",
                "baseline": {"accuracyPercent": 90.0, "latencyMs": {"b64_p95": 8.0}},
                "candidate": {"accuracyPercent": 89.5, "latencyMs": {"b64_p95": 3.0}},
                "gates": [{"name": "Speedup", "passed": True}],
            }
        ]
    }
    evaluations = [
        {"id": "e1", "time": "2026-11-28T16:21:05Z", "driftScore": 0.0184, "modelUri": "x/v1"},
        {"id": "e2", "time": "2026-11-28T16:21:30Z", "driftScore": 4.61, "driftDetected": True},
    ]
    rows = run_rows(status, 64, evaluations)
    assert rows == [
        [
            "r1",
            "Latency",
            "0.0184",  # the evaluation before the run, not the later one
            "Promoted",
            "90.0% -> 89.5%",
            "8.00 -> 3.00",
            "- -> -",
            "Speedup ok",
        ]
    ]
    assert run_header(64)[5] == "p95 ms b64"
    assert table(run_header(64), rows).splitlines()[2].startswith("r1 ")
    assert evaluation_rows(evaluations)[1][3] == "4.61 *"
    assert evaluation_rows(evaluations)[0][2] == "v1"
