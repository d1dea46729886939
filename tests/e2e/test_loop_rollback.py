"""Rollback: the first evaluation after a promotion shows accuracy under the gates.

A Manual candidate passes its gates. Before it is approved, corrected labels for the
holdout arrive, under which the candidate is much worse. The approval promotes it; the
first evaluation of the promoted model measures its accuracy under the gate, and
DriftWarden points the Deployment back to the previous model and records why. The approval
that is still in the spec does not promote the rolled-back run again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from loop_support import (
    apply_yaml,
    condition,
    container_of,
    copy_tree,
    deployment,
    evaluated_since,
    event_reasons,
    loop_resource,
    serving_deployment,
    start_loop_operator,
    wait_status,
)
from operator_process import OperatorProcess, scratch_dir

from devcluster.controlplane import Cluster

pytestmark = pytest.mark.e2e
pytest_plugins = ["operator_fixtures"]

NAME = "rollback"
SERVER = "rollback-server"


def served(devcluster: Cluster, namespace: str) -> str:
    env = container_of(deployment(devcluster, namespace, SERVER))["env"]
    return str({e["name"]: e.get("value") for e in env}["MODEL_URI"])


def test_a_promotion_under_the_gates_is_rolled_back(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    tmp_path: Path,
) -> None:
    data = copy_tree(job_example / "data", "loop-rollback-data-")
    model = f"file://{job_example}/model"
    apply_yaml(devcluster, namespace, serving_deployment(model, name=SERVER))
    apply_yaml(
        devcluster,
        namespace,
        loop_resource(
            NAME,
            model=model,
            data=data,
            artifacts=scratch_dir("loop-rollback-artifacts-"),
            target=SERVER,
            spec={
                "runRequest": "first",
                "pipeline": [{"retrain": {"epochs": 5}}],
                "gates": {"maxAccuracyDropPercent": 1},
                "promotion": {"mode": "Manual", "rollback": True},
                "monitoring": {
                    "interval": "10s",
                    "latency": {"batchSizes": [1, 32], "warmup": 2, "iterations": 20},
                },
            },
        ),
    )
    operator = start_loop_operator(devcluster, namespace, operators, tmp_path)
    waiting = wait_status(
        "the candidate", devcluster, namespace, NAME, lambda s: bool(s.get("candidate")), operator
    )
    (run,) = waiting["runs"]
    before = run["baseline"]["accuracyPercent"]
    assert run["candidate"]["accuracyPercent"] > before  # it passed on the labels of then

    # Corrected holdout labels arrive (every label moves to the next class).
    holdout = data / "holdout.parquet"
    table = pq.read_table(holdout)
    relabelled = pc.remainder(pc.add(table["label"], 1), 10)
    pq.write_table(
        table.set_column(table.column_names.index("label"), "label", relabelled), holdout
    )

    patch = {"spec": {"promotion": {"mode": "Manual", "approvedRunId": run["id"]}}}
    devcluster.kubectl(
        "patch", "mo", NAME, "-n", namespace, "--type=merge", "-p", json.dumps(patch)
    )
    wait_status(
        "the promotion", devcluster, namespace, NAME, lambda s: bool(s.get("promoted")), operator
    )

    rolled = wait_status(
        "the rollback",
        devcluster,
        namespace,
        NAME,
        lambda s: condition(s, "Promoted").get("reason") == "RolledBack",
        operator,
    )
    reason = condition(rolled, "Promoted")["message"]
    assert f"points under the previous model's {before:.2f}%" in reason
    assert f"Pointing back to {model}" in reason
    assert rolled["promoted"]["current"] == model
    assert "previous" not in rolled["promoted"]
    (record,) = rolled["runs"]
    assert record["outcome"] == "RolledBack" and record["message"] == reason
    assert rolled["lastEvaluation"]["modelUri"] == run["artifactUri"]
    assert rolled["lastEvaluation"]["accuracyPercent"] < before - 1
    assert served(devcluster, namespace) == model
    assert "RolledBack" in event_reasons(devcluster, namespace, NAME)

    # The approval still names the run; it is not promoted again.
    later = wait_status(
        "two evaluations started after it finished",
        devcluster,
        namespace,
        NAME,
        lambda s: evaluated_since(s, rolled, 2),
        operator,
    )
    assert later["promoted"]["current"] == model
    assert served(devcluster, namespace) == model
    assert condition(later, "Promoted")["reason"] == "RolledBack"
