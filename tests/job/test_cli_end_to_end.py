"""``python -m optimizer_job`` as the Job runs it: example data, tasks, artifacts, exit codes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from optimizer_job.contract import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    TERMINATION_MESSAGE_LIMIT,
    CompactResult,
    RetrainStage,
    RunResult,
    Task,
)
from optimizer_job.example import make_example
from optimizer_job.manifest import verify_manifest
from optimizer_job.runner import run_task

pytestmark = pytest.mark.job


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    # Fewer epochs than the default: the model only has to be good on the old digits.
    return make_example(tmp_path_factory.mktemp("example"), logging.getLogger("test"), epochs=20)


def _job(
    args: list[str], tmp_path: Path, extra_env: dict[str, str] | None = None
) -> tuple[int, RunResult, CompactResult, str]:
    termination = tmp_path / "termination-log"
    termination.unlink(missing_ok=True)
    env = {**os.environ, "DRIFTWARDEN_TERMINATION_LOG": str(termination), **(extra_env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "optimizer_job", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    message = termination.read_text()
    assert len(message.encode()) <= TERMINATION_MESSAGE_LIMIT
    return (
        done.returncode,
        RunResult.model_validate_json(done.stdout),
        CompactResult.model_validate_json(message),
        done.stderr,
    )


def _task(example: dict[str, Any], kind: str, tmp_path: Path, **changes: Any) -> Path:
    raw = json.loads(Path(example["out"], f"task-{kind}.json").read_text())
    raw.update(changes)
    path = tmp_path / f"task-{kind}.json"
    path.write_text(Task.model_validate(raw).model_dump_json())
    return path


def test_evaluate_reports_metrics_and_drift(example: dict[str, Any], tmp_path: Path) -> None:
    code, result, compact, log = _job(
        ["--task", str(_task(example, "evaluate", tmp_path))], tmp_path
    )
    assert code == 0, log
    assert result.ok and result.drift is not None and result.baseline is not None
    assert result.drift.detected and compact.drift_detected
    assert result.drift.prediction_drift_p is not None and result.drift.prediction_drift_p < 0.01
    assert compact.baseline == result.baseline
    assert result.baseline.accuracy == pytest.approx(example["holdout_accuracy"], abs=1e-4)
    assert "drift: ks" in log and "evaluate: accuracy=" in log  # ks: the default (issue 13)
    # Current data from the reference's own distribution scores far lower.
    stable = Task.model_validate_json(_task(example, "evaluate", tmp_path).read_text())
    stable = stable.model_copy(
        update={"data": stable.data.model_copy(update={"current": example["data"]["stable"]})}
    )
    calm = run_task(stable)
    assert calm.drift is not None
    assert calm.drift.score < result.drift.score / 5


def test_optimize_publishes_a_verified_model_and_a_rerun_changes_nothing(
    example: dict[str, Any], tmp_path: Path
) -> None:
    artifacts = tmp_path / "artifacts"
    stages = [RetrainStage(epochs=6, early_stopping_patience=0).model_dump()]
    task = _task(
        example, "optimize", tmp_path, artifacts_uri=artifacts.as_uri(), stages=stages, run_id="r-1"
    )
    code, result, compact, log = _job(["--task", str(task)], tmp_path)
    assert code == 0, log
    run_dir = artifacts / "example" / "r-1"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "MANIFEST",
        "model.json",
        "model.safetensors",
        "report.html",
        "result.json",
    ]
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["r-1"]  # no temporaries left
    assert verify_manifest(run_dir) == result.manifest_sha256 == compact.manifest_sha256
    assert RunResult.model_validate_json((run_dir / "result.json").read_text()) == result
    assert result.artifact_uri == compact.artifact_uri == run_dir.as_uri()
    assert result.baseline is not None and result.candidate is not None
    assert result.baseline.accuracy is not None and result.candidate.accuracy is not None
    assert result.candidate.accuracy > result.baseline.accuracy + 0.15
    assert [s.type for s in result.stages] == ["retrain"]
    assert result.stages[0].after is not None
    assert result.stages[0].after.accuracy == pytest.approx(result.candidate.accuracy)
    assert "retrain epoch 6/6" in log and "eta=" in log
    written = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}

    # The same run again, by hand with flags: the recorded result, nothing rewritten.
    data = example["data"]
    code, again, _, log = _job(
        [
            "optimize",
            "--model",
            example["model"],
            "--reference",
            data["reference"],
            "--current",
            data["current"],
            "--holdout",
            data["holdout"],
            "--artifacts",
            str(artifacts),
            "--name",
            "example",
            "--run-id",
            "r-1",
            "--stage",
            "retrain:epochs=6,patience=0",
        ],
        tmp_path,
    )
    assert code == 0, log
    assert again == result
    assert "already published" in log
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == written


def test_bad_input_exits_65_with_a_one_line_reason(example: dict[str, Any], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    holdout = pq.read_table(Path(example["out"], "data", "holdout.parquet")).drop_columns(["px7"])
    pq.write_table(holdout, tmp_path / "holdout.parquet")
    data = Task.model_validate_json(Path(example["tasks"][1]).read_text()).data
    task = _task(
        example,
        "optimize",
        tmp_path,
        artifacts_uri=(tmp_path / "artifacts").as_uri(),
        data=data.model_copy(
            update={"holdout": (tmp_path / "holdout.parquet").as_uri()}
        ).model_dump(),
    )
    code, result, compact, _ = _job(["--task", str(task)], tmp_path)
    assert code == EXIT_BAD_INPUT
    assert not compact.ok and compact.run_id == "example-opt-1"
    assert "data.holdout" in compact.reason and "px7" in compact.reason
    assert "\n" not in compact.reason and compact.reason == result.reason
    assert not (tmp_path / "artifacts").exists()

    (tmp_path / "broken.json").write_text('{"kind": "optimize", "run_id": "r-2"}')
    code, _, compact, _ = _job(["--task", str(tmp_path / "broken.json")], tmp_path)
    assert code == EXIT_BAD_INPUT and compact.run_id == "r-2" and "task: " in compact.reason


def test_an_unexpected_failure_exits_70_and_still_reports(
    example: dict[str, Any], tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "flaky_models.py").write_text(
        textwrap.dedent(
            """
            def build(**kwargs):
                raise RuntimeError("GPU fell off the bus")
            """
        )
    )
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("model.safetensors", "MANIFEST"):
        (model_dir / name).write_bytes(Path(example["out"], "model", name).read_bytes())
    meta = json.loads(Path(example["out"], "model", "model.json").read_text())
    meta["factory"] = "flaky_models:build"
    (model_dir / "model.json").write_text(json.dumps(meta))
    from optimizer_job.manifest import write_manifest

    write_manifest(model_dir)
    task = _task(example, "evaluate", tmp_path, model_uri=model_dir.as_uri())
    code, result, compact, log = _job(["--task", str(task)], tmp_path, {"PYTHONPATH": str(source)})
    assert code == EXIT_INTERNAL
    assert compact.reason == "internal error: RuntimeError: GPU fell off the bus"
    assert not result.ok and "Traceback" in log
