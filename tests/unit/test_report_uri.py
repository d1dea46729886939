"""Where a run's or evaluation's report.html is, and which URI the operator shows (issue 18)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from driftwarden.api.spec import ModelOptimizationSpec
from driftwarden.api.status import Evaluation, RunRecord
from driftwarden.builders import names
from driftwarden.builders.job import claim_mounts
from driftwarden.builders.task import build_task
from driftwarden.services.evaluations import _report_uri
from optimizer_job import contract

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _spec(name: str) -> ModelOptimizationSpec:
    doc = yaml.safe_load((ROOT / "examples" / name).read_text())
    return ModelOptimizationSpec.model_validate(doc["spec"])


def test_report_uris_sit_beside_the_result() -> None:
    run = contract.run_artifact_uri("pvc://models/runs/", "fraud", "r-3")
    assert contract.report_uri_of(run) == "pvc://models/runs/fraud/r-3/report.html"
    evaluation = contract.evaluation_artifact_uri("s3://bucket/runs", "fraud", "e-7")
    assert evaluation == "s3://bucket/runs/fraud/evaluations/e-7"
    assert contract.report_uri_of(evaluation) == f"{evaluation}/report.html"


def test_only_a_report_in_the_own_directory_is_shown() -> None:
    own = "pvc://models/runs/fraud/r-3"
    assert contract.own_report_uri(f"{own}/report.html", own) == f"{own}/report.html"
    for reported in (
        None,
        "",
        "pvc://models/runs/fraud/r-2/report.html",  # another run's
        "https://example.com/report.html",
        f"{own}/../r-2/report.html",
    ):
        assert contract.own_report_uri(reported, own) is None
    assert contract.own_report_uri(f"{own}/report.html", None) is None


def test_an_evaluation_task_names_the_artifacts_so_it_can_write_its_report() -> None:
    spec = _spec("minimal.yaml")
    task = build_task(spec, namespace="ml", name="fraud", run_id="e-1", kind="evaluate")
    assert task.artifacts_uri == spec.artifacts.uri
    assert task.stages == [] and task.speed_decision is None
    claims = contract.pvc_claims([spec.artifacts.uri])
    mounts = claim_mounts(task)
    assert claims and all(mounts[c] for c in claims)  # the artifacts claim is writable


def test_the_evaluation_report_uri_comes_from_the_jobs_own_task() -> None:
    spec = _spec("minimal.yaml")
    task = build_task(spec, namespace="ml", name="fraud", run_id="e-4", kind="evaluate")
    job = {"metadata": {"annotations": {names.TASK_ANNOTATION: task.model_dump_json()}}}
    assert task.artifacts_uri is not None
    expected = contract.report_uri_of(
        contract.evaluation_artifact_uri(task.artifacts_uri, "fraud", "e-4")
    )

    def result(uri: str | None) -> contract.CompactResult:
        return contract.CompactResult(kind="evaluate", run_id="e-4", ok=True, report_uri=uri)

    assert _report_uri(job, result(expected)) == expected
    assert _report_uri(job, result(expected.replace("e-4", "e-3"))) is None
    assert _report_uri(job, result(None)) is None
    assert _report_uri({"metadata": {}}, result(expected)) is None


def test_status_carries_report_uris() -> None:
    record = RunRecord.model_validate(
        {"id": "r-1", "trigger": "Drift", "outcome": "Promoted", "reportUri": "pvc://m/r"}
    )
    assert record.report_uri == "pvc://m/r"
    assert record.model_dump(by_alias=True, exclude_none=True)["reportUri"] == "pvc://m/r"
    evaluation = Evaluation.model_validate({"id": "e-1", "reportUri": "pvc://m/e"})
    assert evaluation.model_dump(by_alias=True, exclude_none=True)["reportUri"] == "pvc://m/e"
