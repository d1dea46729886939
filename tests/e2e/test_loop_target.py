"""A target Deployment that does not exist (yet) is a reason on Ready, not a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
from loop_support import (
    apply_yaml,
    condition,
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


def test_a_missing_target_is_reported_until_it_exists(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    tmp_path: Path,
) -> None:
    model = f"file://{job_example}/model"
    apply_yaml(
        devcluster,
        namespace,
        loop_resource(
            "targeted",
            model=model,
            data=job_example / "data",
            artifacts=scratch_dir("loop-target-artifacts-"),
            target={"deployment": "later-server", "container": "server"},
            spec={"pipeline": [{"retrain": {"epochs": 1}}]},
        ),
    )
    operator = start_loop_operator(devcluster, namespace, operators, tmp_path)
    missing = wait_status(
        "Ready=False for the missing target",
        devcluster,
        namespace,
        "targeted",
        lambda s: condition(s, "Ready").get("reason") == "TargetNotFound",
        operator,
    )
    ready = condition(missing, "Ready")
    assert ready["status"] == "False"
    assert "Deployment later-server (spec.target.deployment) not found" in ready["message"]
    assert missing["phase"] == "Failed"
    assert "TargetNotFound" in event_reasons(devcluster, namespace, "targeted")

    apply_yaml(devcluster, namespace, serving_deployment(model, name="later-server"))
    wait_status(
        "Ready=True once the Deployment exists",
        devcluster,
        namespace,
        "targeted",
        lambda s: condition(s, "Ready").get("status") == "True",
        operator,
    )
    assert operator.running
