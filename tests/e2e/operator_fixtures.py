"""pytest fixtures of the operator's e2e tests, loaded by their modules as a plugin
(`pytest_plugins = ["operator_fixtures"]`): the CRD applied once, the job's example
model and data, a per-test artifacts directory, and the operators a test started."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_process import OperatorProcess, example_dir, scratch_dir

from devcluster.controlplane import Cluster

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mo_crd(devcluster: Cluster) -> None:
    devcluster.kubectl("apply", "-f", str(PROJECT / "crds"))
    # Polled rather than `kubectl wait`, which failed at once now and then on a cluster
    # that had just started (before its discovery settled).
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = devcluster.kubectl(
            "get",
            "customresourcedefinition",
            "modeloptimizations.driftwarden.io",
            "-o",
            f"jsonpath={jsonpath}",
            check=False,
        )
        if got.stdout.strip() == "True":
            return
        time.sleep(0.5)
    raise AssertionError(f"the CRD is not Established: {got.stdout} {got.stderr}")


@pytest.fixture(scope="module")
def job_example() -> Path:
    return example_dir()


@pytest.fixture
def artifacts_dir() -> Iterator[Path]:
    path = scratch_dir("artifacts-")
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def operators(devcluster: Cluster, mo_crd: None, tmp_path: Path) -> Iterator[list[OperatorProcess]]:
    """Operators a test starts (start_operator) for its namespace; stopped after the test,
    once their resources are deleted (the operator removes its finalizer from them)."""
    started: list[OperatorProcess] = []
    yield started
    for op in started:
        if op.running:
            for ns in op.namespaces:
                devcluster.kubectl("delete", "mo", "--all", "-n", ns, "--timeout=60s", check=False)
        op.stop()
