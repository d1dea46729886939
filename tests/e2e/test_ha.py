"""High availability: two operator replicas with kopf's peering, as the chart runs them
(issue 16).

Each test runs two real `python -m driftwarden --peering` processes against the devcluster
with a KopfPeering object in the test's namespace (the CRDs come from crds/). What a
replica did is counted from the outside: Jobs by run id, runs in status, the resource's
events, the serving Deployment's generation and ReplicaSets, and each replica's own
`driftwarden_reconcile_duration_seconds_count` (passes it ran). kopf logs "Resuming
operations after the pause" when a replica starts to work (a replica starts paused with
mandatory peering); the tests wait for that line, never for a quiet moment.

- Both replicas started at the same moment: exactly one of them ever runs a pass; the
  run is started once, with one Job.
- The working replica SIGKILLed during a run (its Job running): the standby takes over
  within 90 s (kopf's keep-alive lifetime is 60 s), adopts the Job, records the run once.
- The working replica SIGKILLed while a temporary fix is on: the standby takes over and
  adopts the fix from the Deployment's record: no second raise (the Deployment's
  generation and its ReplicaSets are unchanged), then reverts it once when asked.
- A replica of higher priority joins a working one: the new one works, the old one stands
  by and runs no pass at all (not even those it had scheduled) while the other works,
  and works again, passes due included, when the other exits.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from loop_support import (
    apply_yaml,
    container_of,
    deployment,
    evaluated_since,
    event_reasons,
    metric,
    wait_status,
)
from operator_process import (
    OperatorProcess,
    example_uris,
    finished_runs,
    get_json,
    jobs_of,
    mo_manifest,
    mo_status,
    report_timing,
    wait_for,
)
from scale_support import manifests
from test_loop_fix_safety import (
    NAME as FIX_NAME,
)
from test_loop_fix_safety import (
    ORIGINAL,
    RAISED,
    RECORD,
    SERVER,
    disable_fix,
    fix_active,
    fix_off,
    fix_setup,
    resources,
)

from devcluster.controlplane import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
pytest_plugins = ["operator_fixtures"]

PEERING = "driftwarden"  # the operator's default peering name (--peering-name)
PRIMARY, STANDBY = 2_000, 1_000
TAKEOVER_LIMIT = 90.0  # kopf's keep-alive lifetime (60 s) and the time to notice
RESUMED = "Resuming operations after the pause"
PAUSED = "Pausing operations in favour of"
RESYNC = 2.0


def peering_object(devcluster: Cluster, namespace: str) -> None:
    """The KopfPeering the chart creates in each watched namespace."""
    manifest = f"apiVersion: kopf.dev/v1\nkind: KopfPeering\nmetadata: {{name: {PEERING}}}\n"

    def created() -> bool:
        done = devcluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest, check=False)
        return done.returncode == 0  # the CRD may still be on its way to Established

    wait_for("the KopfPeering object", created, 60)


def replica(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    log: Path,
    priority: int | None = None,
    extra_args: tuple[str, ...] = (),
) -> OperatorProcess:
    operator = OperatorProcess(
        devcluster.kubeconfig,
        [namespace],
        log,
        resync_seconds=RESYNC,
        peering=True,
        peering_priority=priority,
        extra_args=extra_args,
    )
    operators.append(operator)
    return operator


def passes(operator: OperatorProcess) -> float:
    """How many reconcile passes this replica ran (its own /metrics)."""
    value = metric(operator.metrics(), "driftwarden_reconcile_duration_seconds_count", {})
    return value or 0.0


def resumed(operator: OperatorProcess, times: int = 1) -> bool:
    return operator.log_path.read_text(errors="replace").count(RESUMED) >= times


def paused(operator: OperatorProcess) -> bool:
    """kopf saw a live replica of higher priority in the peering object."""
    return PAUSED in operator.log_path.read_text(errors="replace")


def active(operator: OperatorProcess) -> float | None:
    """The replica's own driftwarden_operator_active gauge (1 works, 0 stands by)."""
    return metric(operator.metrics(), "driftwarden_operator_active", {})


def passes_beyond(operator: OperatorProcess, count: float) -> Any:
    """A check for wait_for: the replica's pass count once it exceeds ``count``."""
    return lambda: (lambda now: now if now > count else None)(passes(operator))


def start_together(*replicas: OperatorProcess) -> None:
    errors: list[BaseException] = []

    def start(op: OperatorProcess) -> None:
        try:
            op.start(ready_timeout=120)
        except BaseException as error:  # shown below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(op,)) for op in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def test_two_replicas_started_at_once_act_as_one(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    peering_object(devcluster, namespace)
    name = "together"
    uris = example_uris(job_example)
    apply_yaml(devcluster, namespace, mo_manifest(name, namespace, uris, f"file://{artifacts_dir}"))
    # Default priorities (from the start time), as the chart's replicas get them.
    first = replica(devcluster, namespace, operators, tmp_path / "a.log")
    second = replica(devcluster, namespace, operators, tmp_path / "b.log")
    start_together(first, second)

    status = wait_for("the run", finished_runs(devcluster, namespace, name, 1), 600, first)
    working = [op for op in (first, second) if passes(op) > 0]
    assert len(working) == 1, [(op.log_path.name, passes(op)) for op in (first, second)]
    (active,) = working
    (standby,) = [op for op in (first, second) if op is not active]
    assert resumed(active) and not resumed(standby), standby.log_tail()
    assert len(jobs_of(devcluster, namespace, name)) == 1
    assert len(status["runs"]) == 1 and status["runCount"] == 1
    assert event_reasons(devcluster, namespace, name).count("RunStarted") == 1
    # Still one worker after the run: the standby has not run a single pass.
    assert passes(standby) == 0
    assert standby.running and active.running


def test_the_standby_takes_over_a_run_when_the_active_replica_is_killed(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    job_example: Path,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    peering_object(devcluster, namespace)
    primary = replica(devcluster, namespace, operators, tmp_path / "primary.log", PRIMARY)
    standby = replica(devcluster, namespace, operators, tmp_path / "standby.log", STANDBY)
    start_together(primary, standby)
    wait_for("the primary to work", lambda: resumed(primary), 120, primary)

    name = "failover"
    uris = example_uris(job_example)
    apply_yaml(devcluster, namespace, mo_manifest(name, namespace, uris, f"file://{artifacts_dir}"))

    def running_job() -> list[dict[str, Any]] | None:
        jobs = jobs_of(devcluster, namespace, name)
        return jobs if jobs and mo_status(devcluster, namespace, name).get("activeRun") else None

    (job,) = wait_for("the run's Job", running_job, 300, primary)
    # Events are posted after the pass's status write, best effort: one the primary had no
    # time to post before the SIGKILL is lost (seen in a loaded run), which is no second
    # start. Kill only once it is visible, so the count below can only catch a duplicate.
    wait_for(
        "the RunStarted event",
        lambda: "RunStarted" in event_reasons(devcluster, namespace, name),
        120,
        primary,
    )
    assert passes(standby) == 0
    primary.kill()
    killed = time.monotonic()
    wait_for("the standby to take over", lambda: resumed(standby), 180, standby)
    takeover = time.monotonic() - killed
    status = wait_for(
        "the run recorded", finished_runs(devcluster, namespace, name, 1), 600, standby
    )
    report_timing(test="kill during a run", takeover_s=round(takeover, 1))
    assert takeover <= TAKEOVER_LIMIT, takeover
    assert passes(standby) > 0
    (after,) = jobs_of(devcluster, namespace, name)
    assert after["metadata"]["uid"] == job["metadata"]["uid"]  # adopted, not started again
    runs = status["runs"]
    assert [r["id"] for r in runs] == [job["metadata"]["labels"]["driftwarden.io/run"]]
    assert status["runCount"] == 1
    assert event_reasons(devcluster, namespace, name).count("RunStarted") == 1


def raised_replica_sets(devcluster: Cluster, namespace: str) -> list[str]:
    """ReplicaSets of the serving Deployment whose template carries the raised resources:
    one per raise (a second raise, even to the same values after a revert, adds one)."""
    found = get_json(devcluster, "replicasets", "-n", namespace)["items"]
    return [
        rs["metadata"]["name"]
        for rs in found
        if rs["metadata"]["name"].startswith(SERVER + "-")
        and container_of(rs)["resources"] == RAISED
    ]


def test_the_standby_adopts_an_active_fix_and_never_raises_it_again(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    tmp_path: Path,
) -> None:
    peering_object(devcluster, namespace)
    _, manifest = fix_setup(devcluster, namespace)
    args = ("--no-initial-run",)
    primary = replica(devcluster, namespace, operators, tmp_path / "primary.log", PRIMARY, args)
    standby = replica(devcluster, namespace, operators, tmp_path / "standby.log", STANDBY, args)
    start_together(primary, standby)
    wait_for("the primary to work", lambda: resumed(primary), 120, primary)
    apply_yaml(devcluster, namespace, manifest)
    fixed = wait_status(
        "the fix applied", devcluster, namespace, FIX_NAME, fix_active, primary, timeout=900
    )
    before = deployment(devcluster, namespace, SERVER)
    assert resources(devcluster, namespace) == RAISED
    assert len(raised_replica_sets(devcluster, namespace)) == 1

    primary.kill()
    killed = time.monotonic()
    wait_for("the standby to take over", lambda: resumed(standby), 180, standby)
    takeover = time.monotonic() - killed
    # An evaluation that started after the takeover, judged by the standby: the SLO is
    # still breached, the fix is kept - adopted from the record, not raised again.
    taken = mo_status(devcluster, namespace, FIX_NAME)
    judged = wait_status(
        "an evaluation by the standby",
        devcluster,
        namespace,
        FIX_NAME,
        lambda s: evaluated_since(s, taken, 1),
        standby,
        timeout=900,
    )
    report_timing(test="kill during a temporary fix", takeover_s=round(takeover, 1))
    assert takeover <= TAKEOVER_LIMIT, takeover
    assert passes(standby) > 0
    assert fix_active(judged)
    assert judged["temporaryFix"]["appliedAt"] == fixed["temporaryFix"]["appliedAt"]
    after = deployment(devcluster, namespace, SERVER)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["metadata"]["annotations"][RECORD] == before["metadata"]["annotations"][RECORD]
    assert len(raised_replica_sets(devcluster, namespace)) == 1
    assert event_reasons(devcluster, namespace, FIX_NAME).count("TemporaryFixApplied") == 1

    disable_fix(devcluster, namespace)
    wait_status("the revert", devcluster, namespace, FIX_NAME, fix_off, standby)
    assert resources(devcluster, namespace) == ORIGINAL
    reasons = event_reasons(devcluster, namespace, FIX_NAME)
    assert reasons.count("TemporaryFixApplied") == 1, reasons
    assert reasons.count("TemporaryFixReverted") == 1, reasons


def test_a_replica_of_higher_priority_takes_over_and_the_other_runs_no_pass(
    devcluster: Cluster,
    namespace: str,
    operators: list[OperatorProcess],
    tmp_path: Path,
) -> None:
    """kopf pauses its own handlers on the replica that loses the peering; the passes that
    replica had already scheduled (every resource is due every RESYNC seconds: a PVC it
    waits for is missing) must stop too, and come back when it works again."""
    peering_object(devcluster, namespace)
    count = 4
    devcluster.kubectl("apply", "-f", "-", input=manifests(namespace, count))
    old = replica(devcluster, namespace, operators, tmp_path / "old.log", STANDBY)
    old.start(ready_timeout=120)
    wait_for("the old replica to work", lambda: resumed(old), 120, old)
    # Every resource passed a few times: passes are scheduled ahead in the old replica.
    wait_for("the old replica's passes", passes_beyond(old, 3 * count), 300, old)

    new = replica(devcluster, namespace, operators, tmp_path / "new.log", PRIMARY)
    new.start(ready_timeout=120)
    wait_for("the new replica to work", lambda: resumed(new), 180, new)
    wait_for("the old replica to see the new one", lambda: paused(old), 180, old)
    # A pass the old replica was running when it saw the new one finishes: give it the
    # time of a round of the new replica's passes over every resource, then measure.
    wait_for("a round of the new replica", passes_beyond(new, count), 300, new)
    before = passes(old)
    seen = passes(new)
    # Three rounds of the new replica over every resource (each is due every RESYNC s).
    working = wait_for(
        "three rounds of the new replica", passes_beyond(new, seen + 3 * count), 300, new
    )
    after = passes(old)
    report_timing(
        test="higher priority joins",
        new_passes=working - seen,
        old_passes=after - before,
    )
    assert after == before, (before, after, old.log_tail())
    assert active(old) == 0 and active(new) == 1

    # The new replica exits cleanly (its keep-alive goes with it): the old one works
    # again at once and runs the passes that fell due meanwhile.
    new.stop()
    wait_for("the old replica to work again", lambda: resumed(old, 2), 120, old)
    wait_for("the old replica's passes again", passes_beyond(old, after + count), 120, old)
    assert active(old) == 1
