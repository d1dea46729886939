"""The operator <-> Job contract: JSON round trips, the 4 KiB message, URI resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from optimizer_job.contract import (
    TERMINATION_MESSAGE_LIMIT,
    BadInputError,
    CompactResult,
    DataRefs,
    DriftReport,
    ModelMetrics,
    PruneStage,
    QuantizeStage,
    RetrainStage,
    RunResult,
    Task,
    pvc_claims,
    resolve_uri,
    run_artifact_uri,
    storage_environment,
)

pytestmark = pytest.mark.unit


def _task() -> Task:
    return Task(
        kind="optimize",
        namespace="ml",
        optimization="fraud",
        run_id="r-1",
        model_uri="pvc://models/fraud/v1",
        data=DataRefs(reference="pvc://data/ref.parquet", holdout="file:///d/h.csv"),
        stages=[RetrainStage(epochs=3), PruneStage(amount_percent=40), QuantizeStage(mode="fp16")],
        artifacts_uri="pvc://models/runs",
    )


def test_task_round_trips_through_json_with_stage_types_kept() -> None:
    task = _task()
    again = Task.model_validate_json(task.model_dump_json())
    assert again == task
    assert [type(s).__name__ for s in again.stages] == [
        "RetrainStage",
        "PruneStage",
        "QuantizeStage",
    ]


def test_task_refuses_unknown_fields_and_stage_types() -> None:
    raw = _task().model_dump()
    raw["surprise"] = 1
    with pytest.raises(ValidationError):
        Task.model_validate(raw)
    raw = _task().model_dump()
    raw["stages"] = [{"type": "compile"}]
    with pytest.raises(ValidationError):
        Task.model_validate(raw)


def test_compact_result_fits_the_termination_message_with_many_drifted_features() -> None:
    metrics = ModelMetrics(
        accuracy=0.9, latency_ms={f"b{b}_p{p}": 1.5 for b in (1, 32) for p in (50, 95, 99)}
    )
    drift = DriftReport(
        metric="psi",
        score=1.0,
        share_drifted=1.0,
        drifted_features=[f"a_rather_long_feature_name_{i:04d}" for i in range(5000)],
        detected=True,
    )
    result = RunResult(
        kind="evaluate", run_id="r", ok=False, reason="x" * 3000, baseline=metrics, drift=drift
    )
    message = CompactResult.from_result(result).to_message()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    parsed = CompactResult.model_validate_json(message)
    assert parsed.drift_detected is True
    assert parsed.baseline == metrics


def test_resolve_uri_maps_file_and_pvc_and_refuses_others() -> None:
    assert resolve_uri("file:///data/x%20y.csv") == Path("/data/x y.csv")
    assert resolve_uri("pvc://claim/a/b.npz", pvc_root="/mnt") == Path("/mnt/claim/a/b.npz")
    for bad in ("s3://bucket/key", "file://host/path", "pvc:///nohost", "relative/path"):
        with pytest.raises(BadInputError):
            resolve_uri(bad)


def test_run_artifact_uri_and_claims() -> None:
    assert run_artifact_uri("pvc://m/runs/", "fraud", "r-2") == "pvc://m/runs/fraud/r-2"
    assert pvc_claims(["pvc://b/x", None, "file:///y", "pvc://a/z", "pvc://b/w"]) == ["a", "b"]


def test_parse_s3_uri_keeps_the_key_inside_its_prefix() -> None:
    from optimizer_job.contract import is_s3_uri, parse_s3_uri

    assert parse_s3_uri("s3://models/bert/v1/") == ("models", "bert/v1")
    assert parse_s3_uri("s3://my.bucket-1/") == ("my.bucket-1", "")
    assert is_s3_uri("s3://a-b/x") and not is_s3_uri("pvc://a/x") and not is_s3_uri(None)
    for bad in (
        "s3://models/a/../b",
        "s3://models/a/%2e%2e/b",
        "s3://models/a//b",
        "s3://models/./b",
        "s3://Upper/x",
        "s3://ab/x",
        "s3://models/x?versionId=1",
        "pvc://models/x",
    ):
        with pytest.raises(BadInputError):
            parse_s3_uri(bad)


@pytest.mark.parametrize(
    "uri",
    [
        "pvc://data/iris/../../../etc/shadow",
        "pvc://models/..",
        "pvc://models/runs/%2e%2e/%2E%2E/etc",
        "pvc://models/..%2fsecrets",
        "pvc://models/a%5c..%5cb",
        "file:///srv/runs/../../etc/passwd",
        "pvc://../etc/passwd",
    ],
)
def test_resolve_uri_refuses_paths_out_of_their_claim(uri: str) -> None:
    with pytest.raises(BadInputError):
        resolve_uri(uri, pvc_root="/mnt")


def test_resolve_uri_refuses_a_symbolic_link_out_of_the_claim(tmp_path: Path) -> None:
    claim = tmp_path / "claim"
    claim.mkdir()
    (claim / "inside.csv").write_text("x\n")
    (claim / "escape").symlink_to("/etc")
    assert resolve_uri("pvc://claim/inside.csv", pvc_root=str(tmp_path)) == claim / "inside.csv"
    assert resolve_uri("pvc://claim/new/run", pvc_root=str(tmp_path)) == claim / "new" / "run"
    with pytest.raises(BadInputError, match="outside its claim"):
        resolve_uri("pvc://claim/escape/passwd", pvc_root=str(tmp_path))


def test_the_storage_secret_keys_come_back_from_their_prefix_and_nothing_else_does() -> None:
    env = {
        "DRIFTWARDEN_STORAGE_AWS_ACCESS_KEY_ID": "from-secret",
        "DRIFTWARDEN_STORAGE_AWS_REGION": "eu-west-1",
        "DRIFTWARDEN_STORAGE_LD_PRELOAD": "/tmp/evil.so",
        "AWS_ACCESS_KEY_ID": "from-pod",
        "AWS_ENDPOINT_URL": "http://s3.local",
    }
    merged = storage_environment(env)
    assert merged["AWS_ACCESS_KEY_ID"] == "from-secret"  # the spec's Secret wins
    assert merged["AWS_REGION"] == "eu-west-1"
    assert merged["AWS_ENDPOINT_URL"] == "http://s3.local"  # a serving Pod's own env
    assert "LD_PRELOAD" not in merged
