"""The operator against the devcluster, as a user drives it: `kubectl apply` a
ModelOptimization, the operator runs optimizer_job as a Job through the node agent, and
`kubectl get mo` / `kubectl describe mo` tell what happened."""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from operator_process import (
    RESYNC,
    OperatorProcess,
    condition,
    evaluated_after_runs,
    events_of,
    example_uris,
    finished_runs,
    get_json,
    jobs_of,
    mo_manifest,
    mo_status,
    scratch_dir,
    start_operator,
    wait_for,
)

from devcluster.controlplane import Cluster
from driftwarden.builders import names

pytestmark = pytest.mark.e2e
# The fixtures mo_crd, job_example, artifacts_dir and operators.
pytest_plugins = ["operator_fixtures"]

RUN_TIMEOUT = 180.0  # a run is ~10-20 s; the machine is shared


def apply(devcluster: Cluster, path: Path, text: str) -> None:
    path.write_text(text)
    devcluster.kubectl("apply", "-f", str(path))


def active_run(cluster: Cluster, namespace: str, name: str) -> Callable[[], Any]:
    def check() -> dict[str, Any] | None:
        status = mo_status(cluster, namespace, name)
        return status if status.get("activeRun") else None

    return check


def table_row(table: str, name: str) -> dict[str, str]:
    """A row of `kubectl get` by its column headers (some are two words, some cells empty):
    each cell is the text under its header, up to the next header."""
    header, *lines = table.splitlines()
    titles = [m.group() for m in re.finditer(r"\S+(?: \S+)*", header)]
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    line = next(line for line in lines if line.split()[0] == name)
    bounds = [*starts[1:], None]
    return {t: line[a:b].strip() for t, a, b in zip(titles, starts, bounds, strict=True)}


def assert_settled(status: dict[str, Any], generation: int) -> None:
    """A run recorded and an evaluation recorded: the conditions say what it measured."""
    assert status["observedGeneration"] == generation
    assert "activeRun" not in status
    assert condition(status, "Optimizing")["status"] == "False"
    evaluation = status["lastEvaluation"]
    drift = condition(status, "DriftDetected")
    # The example's current data is shifted: the evaluation measured drift, and said so.
    assert evaluation["driftScore"] > 0 and evaluation["driftDetected"] is True, evaluation
    assert (drift["status"], drift["reason"]) == ("True", "DriftOverThreshold"), drift
    latency = condition(status, "LatencyWithinSLO")
    assert (latency["status"], latency["reason"]) == ("Unknown", "NoSLO")  # no triggers.latency
    # No spec.target: there is no Deployment to give more resources.
    assert condition(status, "TemporaryFixActive")["status"] == "Unknown"


def test_apply_runs_the_pipeline_and_records_it(
    devcluster: Cluster,
    restricted_namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    ns = restricted_namespace  # the real PodSecurity admission checks the Job's Pod
    op = start_operator(devcluster, ns, tmp_path, operators=operators)
    manifest = tmp_path / "digits.yaml"
    uris = example_uris(job_example)
    apply(devcluster, manifest, mo_manifest("digits", ns, uris, f"file://{artifacts_dir}"))

    status = wait_for(
        "the first run and evaluation",
        evaluated_after_runs(devcluster, ns, "digits", 1),
        RUN_TIMEOUT,
        op,
    )
    mo = get_json(devcluster, "mo", "digits", "-n", ns)
    run_id = names.run_id_for(mo["metadata"]["uid"], 1)
    (run,) = status["runs"]
    assert run["id"] == run_id, op.log_tail()
    assert run["outcome"] == "Succeeded", run
    assert run["trigger"] == "Manual"
    artifact = artifacts_dir / "digits" / run_id
    assert run["artifactUri"] == f"file://{artifact}"
    assert (artifact / "result.json").is_file()
    assert run["manifestSha256"] == hashlib.sha256((artifact / "MANIFEST").read_bytes()).hexdigest()
    # int8 weights: the candidate the Job measured is smaller than the model in use.
    assert run["candidate"]["sizeBytes"] < run["baseline"]["sizeBytes"]
    assert 0 < run["baseline"]["accuracyPercent"] <= 100
    assert run["baseModelUri"] == uris["model"]
    assert status["candidate"]["runId"] == run_id
    assert status["lastRunRequest"] == "first"
    assert status["runCount"] == 1
    # promotion Manual: the candidate passed its gates and waits for approval.
    assert status["phase"] == "AwaitingPromotion"
    promoted = condition(status, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "AwaitingApproval")
    assert f"approvedRunId: {run_id}" in promoted["message"]
    assert all(gate["passed"] for gate in run["gates"]), run["gates"]
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "Optimizing")["reason"] == "RunSucceeded"
    assert_settled(status, mo["metadata"]["generation"])

    table = devcluster.kubectl("get", "mo", "-n", ns).stdout
    row = table_row(table, "digits")
    assert (row["PHASE"], row["READY"], row["LAST RUN"]) == (
        "AwaitingPromotion",
        "True",
        "Succeeded",
    ), table
    evaluation = status["lastEvaluation"]
    # Rounded for people (api.status.rounded): three decimals under 1, else three digits.
    # Off by up to half the last digit shown, inclusive: 0.0375 is shown as 0.037 (a float
    # just under 0.0375), 5e-4 away plus float error (failed so in one run).
    shown = {"rel": 5e-3 + 1e-9, "abs": 5e-4 + 1e-9}
    assert float(row["DRIFT"]) == pytest.approx(evaluation["driftScore"], **shown), table
    p95 = float(row["P95"].removesuffix("ms"))
    assert p95 == pytest.approx(evaluation["latency"]["p95Ms"], **shown), table
    described = devcluster.kubectl("describe", "mo", "digits", "-n", ns).stdout
    assert f"Started run {run_id}" in described
    assert f"Run {run_id} succeeded" in described
    assert "CandidateReady" in described and "Evaluated" in described

    # The Job and its ConfigMap: named after the run, owned so that deletion cascades.
    (job,) = jobs_of(devcluster, ns, "digits")
    assert job["metadata"]["name"] == f"digits-optimize-{run_id}"
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "ModelOptimization",
        mo["metadata"]["uid"],
        True,
    )
    configmap = get_json(devcluster, "configmap", job["metadata"]["name"], "-n", ns)
    (cm_owner,) = configmap["metadata"]["ownerReferences"]
    assert (cm_owner["kind"], cm_owner["uid"]) == ("Job", job["metadata"]["uid"])

    # A new runRequest is a second run; the first stays recorded.
    apply(
        devcluster,
        manifest,
        mo_manifest("digits", ns, uris, f"file://{artifacts_dir}", run_request="second"),
    )
    status = wait_for("the second run", finished_runs(devcluster, ns, "digits", 2), RUN_TIMEOUT, op)
    second_id = names.run_id_for(mo["metadata"]["uid"], 2)
    assert [r["id"] for r in status["runs"]] == [run_id, second_id]
    assert status["runs"][1]["outcome"] == "Succeeded"
    assert status["lastRunRequest"] == "second"
    assert len(jobs_of(devcluster, ns, "digits")) == 2

    # Deleting the resource deletes its Jobs, ConfigMaps and Pods, not its artifacts.
    devcluster.kubectl("delete", "-f", str(manifest), "--timeout=60s")

    def all_gone() -> bool:
        leftovers = get_json(
            devcluster, "jobs,configmaps,pods", "-n", ns, "-l", "driftwarden.io/optimization=digits"
        )
        return not leftovers["items"]

    wait_for("the garbage collector", all_gone, 60, op)
    assert (artifacts_dir / "digits" / run_id / "MANIFEST").is_file()
    assert (artifacts_dir / "digits" / second_id / "MANIFEST").is_file()


def test_bad_input_fails_once_and_says_why(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    op = start_operator(devcluster, namespace, tmp_path, operators=operators)
    uris = example_uris(job_example)
    missing = artifacts_dir / "no-such-model"
    manifest = tmp_path / "broken.yaml"
    apply(
        devcluster,
        manifest,
        mo_manifest(
            "broken", namespace, uris | {"model": f"file://{missing}"}, f"file://{artifacts_dir}"
        ),
    )
    status = wait_for(
        "the run to fail", finished_runs(devcluster, namespace, "broken", 1), RUN_TIMEOUT, op
    )
    (run,) = status["runs"]
    assert run["outcome"] == "Failed"
    assert run["message"].startswith("BadInput:"), run
    assert str(missing) in run["message"]
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "BadInput")
    assert str(missing) in ready["message"]
    assert status["phase"] == "Failed"

    # No retry storm: exit code 65 failed the Job at once (backoffLimit 1 would have
    # allowed a second Pod), and later resyncs start nothing new and repeat no event.
    time.sleep(4 * RESYNC)
    (job,) = jobs_of(devcluster, namespace, "broken")
    pods = get_json(
        devcluster, "pods", "-n", namespace, "-l", f"job-name={job['metadata']['name']}"
    )
    assert len(pods["items"]) == 1
    reasons = [e["reason"] for e in events_of(devcluster, namespace, "broken")]
    assert reasons.count("RunFailed") == 1 and reasons.count("BadInput") == 1, reasons
    assert op.running

    # Fixing the spec makes the resource usable again; the next request runs.
    apply(
        devcluster,
        manifest,
        mo_manifest("broken", namespace, uris, f"file://{artifacts_dir}", run_request="fixed"),
    )
    status = wait_for("run 2 started", active_run(devcluster, namespace, "broken"), 60, op)
    assert status["activeRun"]["reason"] == "A run was requested (spec.runRequest='fixed')."

    # The evaluation that refused the old input is repeated at once, not an interval (5m)
    # later: its success makes the resource Ready again.
    def ready_again() -> dict[str, Any] | None:
        status = mo_status(devcluster, namespace, "broken")
        return status if condition(status, "Ready")["status"] == "True" else None

    status = wait_for("Ready=True after a new evaluation", ready_again, RUN_TIMEOUT, op)
    evaluation = status["lastEvaluation"]
    assert evaluation["modelUri"] == uris["model"], evaluation
    assert evaluation["accuracyPercent"] > 0 and "message" not in evaluation, evaluation


def test_missing_claim_waits_then_runs_on_the_claim(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    tmp_path: Path,
) -> None:
    op = start_operator(devcluster, namespace, tmp_path, operators=operators)
    claim = "store"
    uris = {
        "model": f"pvc://{claim}/model",
        "reference": f"pvc://{claim}/data/reference.parquet",
        "current": f"pvc://{claim}/data/current.parquet",
        "holdout": f"pvc://{claim}/data/holdout.parquet",
    }
    apply(
        devcluster,
        tmp_path / "mo.yaml",
        mo_manifest("claimed", namespace, uris, f"pvc://{claim}/runs"),
    )

    def not_ready() -> dict[str, Any] | None:
        status = mo_status(devcluster, namespace, "claimed")
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        ready = conditions.get("Ready", {})
        return status if ready.get("reason") == "PVCNotFound" else None

    status = wait_for("Ready=False PVCNotFound", not_ready, 60, op)
    assert condition(status, "Ready")["status"] == "False"
    assert claim in condition(status, "Ready")["message"]
    assert status["phase"] == "Failed"
    time.sleep(4 * RESYNC)  # resyncs look again, quietly
    assert jobs_of(devcluster, namespace, "claimed") == []
    reasons = [e["reason"] for e in events_of(devcluster, namespace, "claimed")]
    assert reasons.count("PVCNotFound") == 1, reasons

    # The claim appears (a PV on a directory holding the model and data): the run starts.
    volume_dir = scratch_dir("pv-")
    shutil.copytree(job_example / "model", volume_dir / "model")
    shutil.copytree(job_example / "data", volume_dir / "data")
    pv = f"{namespace}-store"
    devcluster.kubectl(
        "apply",
        "-f",
        "-",
        input=f"""
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {pv}}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {{path: "{volume_dir}"}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {claim}, namespace: {namespace}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: {pv}
  resources: {{requests: {{storage: 1Gi}}}}
""",
    )
    try:
        status = wait_for(
            "the run on the claim",
            finished_runs(devcluster, namespace, "claimed", 1),
            RUN_TIMEOUT,
            op,
        )
        (run,) = status["runs"]
        assert run["outcome"] == "Succeeded", run
        assert run["artifactUri"] == f"pvc://{claim}/runs/claimed/{run['id']}"
        assert (volume_dir / "runs" / "claimed" / run["id"] / "MANIFEST").is_file()
        assert condition(status, "Ready")["status"] == "True"
        (job,) = jobs_of(devcluster, namespace, "claimed")
        mounts = job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "pvc-store", "mountPath": "/mnt/driftwarden/pvc/store"} in mounts
    finally:
        devcluster.kubectl("delete", "mo", "claimed", "-n", namespace, "--timeout=60s", check=False)
        devcluster.kubectl("delete", "pvc", claim, "-n", namespace, "--wait=false", check=False)
        devcluster.kubectl("delete", "pv", pv, "--wait=false", check=False)
        shutil.rmtree(volume_dir, ignore_errors=True)


def test_suspend_holds_new_runs(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    op = start_operator(devcluster, namespace, tmp_path, operators=operators)
    apply(
        devcluster,
        tmp_path / "mo.yaml",
        mo_manifest(
            "held", namespace, example_uris(job_example), f"file://{artifacts_dir}", suspend=True
        ),
    )

    def suspended() -> dict[str, Any] | None:
        status = mo_status(devcluster, namespace, "held")
        return status if status.get("phase") == "Suspended" else None

    status = wait_for("phase Suspended", suspended, 60, op)
    optimizing = condition(status, "Optimizing")
    assert (optimizing["status"], optimizing["reason"]) == ("False", "Suspended")
    assert "runRequest='first'" in optimizing["message"]
    assert condition(status, "Ready")["status"] == "True"
    time.sleep(3 * RESYNC)
    assert jobs_of(devcluster, namespace, "held") == []

    devcluster.kubectl(
        "patch", "mo", "held", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": false}}'
    )
    status = wait_for("the held run started", active_run(devcluster, namespace, "held"), 60, op)
    assert status["lastRunRequest"] == "first"
    assert len(jobs_of(devcluster, namespace, "held")) == 1
