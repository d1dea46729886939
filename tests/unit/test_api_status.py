from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from driftwarden.api.openapi import load_crd, root_schema, validate
from driftwarden.api.status import (
    MAX_RUNS,
    ActiveRun,
    Evaluation,
    GateResult,
    LatencySummary,
    ModelMetrics,
    ModelOptimizationStatus,
    Outcome,
    Phase,
    RunRecord,
    Trigger,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
STATUS_SCHEMA = root_schema(load_crd(ROOT / "crds" / "modeloptimization.yaml"))["properties"][
    "status"
]
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def _run(number: int, outcome: Outcome = Outcome.SUCCEEDED) -> RunRecord:
    return RunRecord(
        id=f"r-{number}",
        trigger=Trigger.DRIFT,
        outcome=outcome,
        started_at=T0 + timedelta(hours=number),
        finished_at=T0 + timedelta(hours=number, minutes=3),
        baseline=ModelMetrics(accuracy_percent=91.0, latency_ms={"b1_p95": 2.0}),
        candidate=ModelMetrics(accuracy_percent=92.5, latency_ms={"b1_p95": 1.0}),
        gates=[GateResult(name="maxAccuracyDrop", passed=True, value=-1.5, limit=1.0)],
    )


def test_run_history_is_bounded_and_keeps_the_newest() -> None:
    status = ModelOptimizationStatus()
    for number in range(MAX_RUNS + 5):
        status.record_run(_run(number))
    assert len(status.runs) == MAX_RUNS
    assert status.runs[0].id == "r-5"
    assert status.last_run is not None
    assert status.last_run.id == f"r-{MAX_RUNS + 4}"


def test_recording_a_known_run_replaces_it_in_place() -> None:
    status = ModelOptimizationStatus()
    for number in range(3):
        status.record_run(_run(number))
    status.record_run(_run(1, Outcome.PROMOTED))
    assert [(r.id, r.outcome) for r in status.runs] == [
        ("r-0", Outcome.SUCCEEDED),
        ("r-1", Outcome.PROMOTED),
        ("r-2", Outcome.SUCCEEDED),
    ]
    assert status.last_run is not None
    assert status.last_run.id == "r-2"


def test_a_full_status_is_valid_for_the_crd_and_reads_back_equal() -> None:
    status = ModelOptimizationStatus(
        observed_generation=2,
        phase=Phase.OPTIMIZING,
        last_evaluation=Evaluation(
            time=T0,
            drift_score=0.31,
            drift_detected=True,
            drifted_features=["f1"],
            latency=LatencySummary(source="Benchmark", batch_size=1, p95_ms=1.5),
            accuracy_percent=93.0,
        ),
        active_run=ActiveRun(id="r-9", trigger=Trigger.LATENCY, stage=0, stage_type="prune"),
    )
    status.record_run(_run(1))
    body = status.to_json_dict()
    assert validate(STATUS_SCHEMA, body, "status") == []
    assert body["lastEvaluation"]["time"] == "2026-03-01T12:00:00Z"
    assert body["runs"][0]["baseline"]["latencyMs"] == {"b1_p95": 2.0}
    assert ModelOptimizationStatus.model_validate(body) == status


def test_merge_patch_clears_what_is_unset() -> None:
    status = ModelOptimizationStatus(phase=Phase.MONITORING)
    patch = status.to_merge_patch()
    assert patch["phase"] == "Monitoring"
    assert patch["activeRun"] is None
    assert patch["candidate"] is None
    assert "activeRun" not in status.to_json_dict()


def test_reading_status_ignores_fields_it_does_not_know() -> None:
    status = ModelOptimizationStatus.model_validate(
        {"phase": "Pending", "fieldFromANewerOperator": 1, "runs": []}
    )
    assert status.phase is Phase.PENDING


def test_long_free_text_is_cut_to_the_crds_limit() -> None:
    run = _run(1).model_copy(update={"message": "x" * 5000})
    validated = RunRecord.model_validate(run.model_dump())
    assert validated.message is not None
    assert len(validated.message) == 1024


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0.018390037946466986, "0.018"), (23.3474, "23.3"), (1.23456, "1.23"), (1234.5, "1234")],
)
def test_columns_show_rounded_values(value: float, shown: str) -> None:
    from driftwarden.api.status import rounded

    assert rounded(value) == shown


def test_display_follows_the_last_evaluation() -> None:
    from driftwarden.api.status import Evaluation, LatencySummary, ModelOptimizationStatus

    status = ModelOptimizationStatus()
    status.refresh_display()
    assert status.display is None
    status.last_evaluation = Evaluation.model_validate(
        {"driftScore": 0.018390037946466986, "latency": {"p95Ms": 23.3474}}
    )
    assert isinstance(status.last_evaluation.latency, LatencySummary)
    status.refresh_display()
    assert status.display is not None
    assert (status.display.drift, status.display.p95) == ("0.018", "23.3ms")
