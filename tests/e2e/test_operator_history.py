"""A finished run is recorded exactly once, however long the kept history (issue 11).

status.runs keeps the newest 20 runs, while a finished Job may be kept for a week
(ttlSecondsAfterFinished: 604800). Before the fix a kept Job whose run had fallen out of the
list was recorded again on the next pass: re-judged (its candidate offered or promoted
again), and lastRunRequest moved back to that run's request, which started a new Manual run.

Twenty-five real runs would take most of an hour on the test machine; the test makes one
real run, kept with a week's TTL, then gives the resource the history of 24 more runs (runs
6..25 in status.runs, runCount 25, the 25th run's request) while the operator is stopped:
exactly the state after 25 runs, with run 1's Job still there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from operator_process import (
    OperatorProcess,
    events_of,
    example_uris,
    finished_runs,
    get_json,
    jobs_of,
    mo_manifest,
    mo_status,
    start_operator,
    wait_for,
)

from devcluster.controlplane import Cluster
from driftwarden.builders import names

pytestmark = pytest.mark.e2e
pytest_plugins = ["operator_fixtures"]

NAME = "history"
WEEK = 604800
RUNS = 25
KEPT = 20


def test_a_kept_job_whose_run_fell_out_of_the_history_is_not_recorded_again(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    op = start_operator(devcluster, namespace, tmp_path, operators=operators)
    uris = example_uris(job_example)
    manifest = mo_manifest(NAME, namespace, uris, f"file://{artifacts_dir}", ttl_seconds=WEEK)
    devcluster.kubectl("apply", "-f", "-", input=manifest)
    wait_for("run 1 recorded", finished_runs(devcluster, namespace, NAME, 1), 300, op)
    op.stop()

    uid = get_json(devcluster, "mo", NAME, "-n", namespace)["metadata"]["uid"]
    history: list[dict[str, Any]] = [
        {
            "id": names.run_id_for(uid, sequence),
            "trigger": "Manual",
            "reason": f"A run was requested (spec.runRequest='run-{sequence}').",
            "outcome": "Failed",
            "message": "an earlier run of this resource",
        }
        for sequence in range(RUNS - KEPT + 1, RUNS + 1)
    ]
    last = history[-1]
    status_patch = {
        "status": {
            "runs": history,
            "runCount": RUNS,
            "lastRunRequest": f"run-{RUNS}",
            "lastRun": {"id": last["id"], "outcome": last["outcome"]},
        }
    }
    devcluster.kubectl(
        "patch",
        "mo",
        NAME,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status_patch),
    )
    spec_patch = {"spec": {"runRequest": f"run-{RUNS}"}}
    devcluster.kubectl(
        "patch", "mo", NAME, "-n", namespace, "--type=merge", "-p", json.dumps(spec_patch)
    )
    before = mo_status(devcluster, namespace, NAME)
    (job,) = jobs_of(devcluster, namespace, NAME)  # run 1's, finished, kept for a week
    assert names.run_id_for(uid, 1) not in {r["id"] for r in before["runs"]}

    op.start()
    # A change of spec makes the next pass write observedGeneration: that pass - and the
    # resyncs after it - looked at run 1's Job.
    devcluster.kubectl(
        "patch",
        "mo",
        NAME,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"monitoring": {"latency": {"iterations": 6}}}}),
    )
    generation = get_json(devcluster, "mo", NAME, "-n", namespace)["metadata"]["generation"]

    def observed() -> dict[str, Any] | None:
        status = mo_status(devcluster, namespace, NAME)
        return status if status.get("observedGeneration") == generation else None

    wait_for("a pass after the restart", observed, 120, op)
    marker = op.passes()
    wait_for("two more passes", lambda: op.passes() >= marker + 2, 60, op)
    after = mo_status(devcluster, namespace, NAME)
    assert [r["id"] for r in after["runs"]] == [r["id"] for r in history]
    assert (after["runCount"], after["lastRunRequest"]) == (RUNS, f"run-{RUNS}")
    assert "activeRun" not in after
    assert [j["metadata"]["uid"] for j in jobs_of(devcluster, namespace, NAME)] == [
        job["metadata"]["uid"]
    ]
    reasons = [e["reason"] for e in events_of(devcluster, namespace, NAME)]
    for once in ("RunStarted", "RunSucceeded", "CandidateReady"):
        assert reasons.count(once) == 1, (once, reasons)
