"""The command line's own parsing: stages from flags, tasks from files, the failure result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from optimizer_job.cli import _failure, build_parser, load_task, parse_stage, task_from_flags
from optimizer_job.contract import BadInputError, PruneStage, RetrainStage

pytestmark = pytest.mark.unit


def test_stage_flags_accept_short_names_and_both_separators() -> None:
    assert parse_stage("prune:amount=30:method=unstructured") == PruneStage(
        amount_percent=30, method="unstructured"
    )
    assert parse_stage("retrain:epochs=4,dropout=10,lr=0.01,label-smoothing=5") == RetrainStage(
        epochs=4, dropout_percent=10, learning_rate="0.01", label_smoothing_percent=5
    )
    assert parse_stage("quantize").type == "quantize"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("compile", "stage 'compile'"),
        ("prune:amount=500", "amount_percent"),
        ("prune:amount", "expected key=value"),
        ("retrain:nonsense=1", "nonsense"),
    ],
)
def test_bad_stage_flags_are_bad_input(text: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        parse_stage(text)


def test_flags_become_a_task_with_file_uris(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "optimize",
            "--model",
            str(tmp_path / "m"),
            "--holdout",
            "pvc://data/h.parquet",
            "--artifacts",
            str(tmp_path / "a"),
            "--stage",
            "retrain:epochs=2",
            "--stage",
            "quantize:mode=int8",
            "--batch-sizes",
            "1,8",
        ]
    )
    task = task_from_flags(args)
    assert task.model_uri == (tmp_path / "m").as_uri()
    assert task.data.holdout == "pvc://data/h.parquet"
    assert task.artifacts_uri == (tmp_path / "a").as_uri()
    assert [s.type for s in task.stages] == ["retrain", "quantize"]
    assert task.evaluation.latency_batch_sizes == [1, 8]
    assert task.run_id.startswith("manual-")


def test_a_task_file_that_does_not_validate_is_bad_input_and_still_named(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    path.write_text('{"kind": "evaluate", "run_id": "r-9", "namespace": "n"}')
    with pytest.raises(BadInputError, match="task: "):
        load_task(path)
    failure = _failure(path, "bad input: x")
    assert (failure.kind, failure.run_id, failure.ok) == ("evaluate", "r-9", False)
    path.write_text("not json")
    assert _failure(path, "bad").run_id == "unknown"


def test_parsing_the_command_line_does_not_import_torch() -> None:
    # Starting the Job and refusing bad flags stay quick; torch loads in the runner only.
    code = "import sys, optimizer_job.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
