"""One reconcile pass against an in-memory API (fast; the real thing is in tests/e2e).

The fake keeps objects as the apiserver would return them for the calls the pass makes,
including 409 on create and resourceVersion preconditions on status patches.
"""

from __future__ import annotations

import copy
import json
import threading
from typing import Any, cast

import pytest
from prometheus_client import generate_latest

from driftwarden.builders import names
from driftwarden.config import OperatorConfig
from driftwarden.k8s import ApiError, ConflictError, Kube
from driftwarden.metrics import OperatorMetrics
from driftwarden.runtime import Runtime
from driftwarden.services.reconcile import ReleaseFailedError, reconcile, release
from optimizer_job import contract

pytestmark = pytest.mark.unit

NS, NAME, UID = "ml", "digits", "mo-uid-1"
RUN_1 = names.run_id_for(UID, 1)
JOB_1 = f"{NAME}-optimize-{RUN_1}"
Json = dict[str, Any]


def spec(**changes: Any) -> Json:
    base: Json = {
        "runRequest": "first",
        "model": {"uri": "file:///srv/model"},
        "data": {
            "reference": "file:///srv/ref.parquet",
            "current": "file:///srv/cur.parquet",
            "holdout": "file:///srv/hold.parquet",
        },
        "artifacts": {"uri": "file:///srv/runs"},
        "promotion": {"mode": "Manual"},
        "pipeline": [{"quantize": {"mode": "int8"}}],
    }
    return base | changes


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(merged.get(key), value)
    return merged


def _prune_nulls(value: Any) -> Any:
    """The apiserver drops nulls of non-nullable fields (all of status's) when it stores."""
    if isinstance(value, dict):
        return {k: _prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_nulls(v) for v in value]
    return value


class FakeKube:
    def __init__(self, mo_spec: Json) -> None:
        self.rv = 1
        self.mo: Json = {
            "apiVersion": "driftwarden.io/v1alpha1",
            "kind": "ModelOptimization",
            "metadata": {
                "name": NAME,
                "namespace": NS,
                "uid": UID,
                "generation": 1,
                "resourceVersion": "1",
            },
            "spec": mo_spec,
        }
        self.jobs: dict[str, Json] = {}
        self.configmaps: dict[str, Json] = {}
        self.pods: dict[str, list[Json]] = {}
        self.pvcs: set[str] = set()
        self.events: list[tuple[str, str, str]] = []
        self.status_patches = 0
        self.conflicts_to_inject = 0

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def get_optimization(self, namespace: str, name: str) -> Json | None:
        return copy.deepcopy(self.mo)

    def patch_optimization_status(
        self, namespace: str, name: str, status: Json, resource_version: str
    ) -> Json:
        if self.conflicts_to_inject:
            self.conflicts_to_inject -= 1
            self.mo["metadata"]["resourceVersion"] = self._bump()  # someone else wrote
        if resource_version != self.mo["metadata"]["resourceVersion"]:
            raise ConflictError(409, "the object has been modified")
        patch = json.loads(json.dumps(status))
        self.mo["status"] = _prune_nulls(_merge(self.mo.get("status") or {}, patch))
        self.mo["metadata"]["resourceVersion"] = self._bump()
        self.status_patches += 1
        return copy.deepcopy(self.mo)

    def list_jobs(self, namespace: str, label_selector: str) -> list[Json]:
        wanted = dict(pair.split("=") for pair in label_selector.split(","))
        return [
            copy.deepcopy(job)
            for job in self.jobs.values()
            if all(job["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        ]

    def create_job(self, namespace: str, body: Json) -> tuple[Json, bool]:
        name = body["metadata"]["name"]
        if name in self.jobs:
            return copy.deepcopy(self.jobs[name]), False
        job = copy.deepcopy(body)
        job["metadata"] |= {"uid": f"uid-{name}", "creationTimestamp": "2026-01-01T10:00:00Z"}
        job["status"] = {}
        self.jobs[name] = job
        return copy.deepcopy(job), True

    def patch_job(self, namespace: str, name: str, patch: Json) -> Json:
        job = self.jobs[name]
        job["metadata"].setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        job["spec"].update(patch["spec"])
        return copy.deepcopy(job)

    def list_job_pods(self, namespace: str, job_name: str, job_uid: str) -> list[Json]:
        return copy.deepcopy(self.pods.get(job_name, []))

    def create_configmap(self, namespace: str, body: Json) -> tuple[Json, bool]:
        name = body["metadata"]["name"]
        if name in self.configmaps:
            return copy.deepcopy(self.configmaps[name]), False
        self.configmaps[name] = copy.deepcopy(body)
        return copy.deepcopy(body), True

    def get_pvc(self, namespace: str, name: str) -> Json | None:
        return {"metadata": {"name": name}} if name in self.pvcs else None

    def post_event(self, involved: Json, *, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))

    # -- what the cluster does -------------------------------------------------------

    def finish(self, job_name: str, exit_code: int, message: str) -> None:
        job = self.jobs[job_name]
        condition = "Complete" if exit_code == 0 else "Failed"
        job["status"] = {
            "startTime": "2026-01-01T10:00:01Z",
            "completionTime": "2026-01-01T10:00:11Z",
            "conditions": [
                {
                    "type": condition,
                    "status": "True",
                    "reason": "PodFailurePolicy" if exit_code else "Completed",
                    "lastTransitionTime": "2026-01-01T10:00:11Z",
                }
            ],
        }
        self.pods[job_name] = [
            {
                "metadata": {"name": f"{job_name}-x", "creationTimestamp": "2026-01-01T10:00:01Z"},
                "status": {
                    "containerStatuses": [
                        {
                            "name": "optimizer",
                            "state": {"terminated": {"exitCode": exit_code, "message": message}},
                        }
                    ]
                },
            }
        ]


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


def run_pass(fake: FakeKube, metrics: OperatorMetrics, **config: Any) -> Json:
    runtime = Runtime(config=OperatorConfig(**config), kube=cast(Kube, fake), metrics=metrics)
    reconcile(runtime, NS, NAME)
    return dict(fake.mo.get("status") or {})


def conditions(status: Json) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def success_message(run_id: str = RUN_1) -> str:
    return contract.CompactResult(
        kind="optimize",
        run_id=run_id,
        ok=True,
        baseline=contract.ModelMetrics(accuracy=0.9, size_bytes=1000),
        candidate=contract.ModelMetrics(accuracy=0.9, size_bytes=300),
        artifact_uri=f"file:///srv/runs/{NAME}/{run_id}",
        manifest_sha256="cd" * 32,
    ).to_message()


def test_a_run_request_starts_one_run(metrics: OperatorMetrics) -> None:
    fake = FakeKube(spec())
    status = run_pass(fake, metrics)
    assert list(fake.jobs) == [JOB_1]
    job = fake.jobs[JOB_1]
    assert job["spec"]["suspend"] is False  # resumed once its ConfigMap existed
    assert names.RESUMED_ANNOTATION in job["metadata"]["annotations"]
    cm = fake.configmaps[JOB_1]
    assert cm["metadata"]["ownerReferences"][0]["uid"] == f"uid-{JOB_1}"
    task = contract.Task.model_validate_json(cm["data"]["task.json"])
    assert (task.run_id, task.model_uri, task.device) == (RUN_1, "file:///srv/model", "cpu")
    assert status["activeRun"]["id"] == RUN_1
    assert status["activeRun"]["trigger"] == "Manual"
    assert (status["runCount"], status["lastRunRequest"]) == (1, "first")
    assert status["phase"] == "Optimizing"
    assert conditions(status)["Optimizing"] == ("True", "RunInProgress")
    assert conditions(status)["Ready"] == ("True", "Ready")
    assert [e[1] for e in fake.events] == ["RunStarted"]

    # Nothing changed: the next pass creates nothing, posts nothing, writes nothing.
    patches = fake.status_patches
    run_pass(fake, metrics)
    assert list(fake.jobs) == [JOB_1]
    assert fake.status_patches == patches
    assert len(fake.events) == 1


def test_a_finished_run_is_recorded_once(metrics: OperatorMetrics) -> None:
    fake = FakeKube(spec())
    run_pass(fake, metrics)
    fake.finish(JOB_1, 0, success_message())
    status = run_pass(fake, metrics)
    (run,) = status["runs"]
    assert (run["id"], run["outcome"], run["durationSeconds"]) == (RUN_1, "Succeeded", 10.0)
    assert run["candidate"] == {"accuracyPercent": 90.0, "latencyMs": {}, "sizeBytes": 300}
    assert status["candidate"]["artifactUri"] == f"file:///srv/runs/{NAME}/{RUN_1}"
    assert "activeRun" not in status
    assert status["lastRun"]["outcome"] == "Succeeded"
    assert status["phase"] == "Monitoring"
    assert conditions(status)["Optimizing"] == ("False", "RunSucceeded")
    assert [e[1] for e in fake.events] == ["RunStarted", "RunSucceeded"]
    run_pass(fake, metrics)
    assert len(status["runs"]) == 1 and len(fake.events) == 2
    scraped = generate_latest(metrics.registry).decode()
    assert (
        'driftwarden_optimization_runs_total{name="digits",namespace="ml",outcome="succeeded"} 1.0'
        in scraped.lower()
    )


def test_bad_input_makes_the_resource_not_ready_until_the_spec_changes(
    metrics: OperatorMetrics,
) -> None:
    fake = FakeKube(spec())
    run_pass(fake, metrics)
    refused = contract.CompactResult(
        kind="optimize", run_id=RUN_1, ok=False, reason="bad input: no model at /srv/model"
    ).to_message()
    fake.finish(JOB_1, contract.EXIT_BAD_INPUT, refused)
    status = run_pass(fake, metrics)
    assert status["runs"][0]["outcome"] == "Failed"
    assert conditions(status)["Ready"] == ("False", "BadInput")
    assert status["phase"] == "Failed"
    assert [e[1] for e in fake.events] == ["RunStarted", "RunFailed", "BadInput"]
    status = run_pass(fake, metrics)
    assert conditions(status)["Ready"] == ("False", "BadInput")  # same spec: still refused
    fake.mo["metadata"]["generation"] = 2
    status = run_pass(fake, metrics)
    assert conditions(status)["Ready"] == ("True", "Ready")
    assert len(fake.jobs) == 1  # no retry without a new request


def test_an_unrecorded_job_is_adopted_not_duplicated(metrics: OperatorMetrics) -> None:
    fake = FakeKube(spec())
    run_pass(fake, metrics)
    fake.mo.pop("status")  # as if the operator died before writing status
    fake.events.clear()
    status = run_pass(fake, metrics)
    assert list(fake.jobs) == [JOB_1]
    assert status["activeRun"]["id"] == RUN_1
    assert (status["runCount"], status["lastRunRequest"]) == (1, "first")
    assert [e[1] for e in fake.events] == ["RunAdopted"]


def test_a_job_deleted_before_its_result_was_read_is_not_rerun(
    metrics: OperatorMetrics,
) -> None:
    fake = FakeKube(spec())
    run_pass(fake, metrics)
    del fake.jobs[JOB_1]
    status = run_pass(fake, metrics)
    (run,) = status["runs"]
    assert (run["id"], run["outcome"]) == (RUN_1, "Cancelled")
    assert run["message"].startswith("JobDeleted:")
    assert fake.jobs == {}
    assert fake.events[-1][:2] == ("Warning", "JobDeleted")


def test_a_foreign_job_with_our_name_is_left_alone(metrics: OperatorMetrics) -> None:
    fake = FakeKube(spec())
    fake.jobs[JOB_1] = {
        "metadata": {"name": JOB_1, "uid": "theirs", "labels": {"app": "other"}},
        "spec": {"suspend": False},
        "status": {},
    }
    status = run_pass(fake, metrics)
    assert conditions(status)["Ready"] == ("False", "JobNameConflict")
    assert "activeRun" not in status
    assert fake.configmaps == {}


def test_a_missing_claim_blocks_the_run_with_one_event(metrics: OperatorMetrics) -> None:
    fake = FakeKube(spec(model={"uri": "pvc://models/digits/v1"}))
    status = run_pass(fake, metrics)
    assert conditions(status)["Ready"] == ("False", "PVCNotFound")
    assert "models" in next(c for c in status["conditions"] if c["type"] == "Ready")["message"]
    run_pass(fake, metrics)
    assert [e[1] for e in fake.events] == ["PVCNotFound"]
    assert fake.jobs == {}
    fake.pvcs.add("models")
    status = run_pass(fake, metrics)
    assert conditions(status)["Ready"] == ("True", "Ready")
    job = fake.jobs[JOB_1]
    volumes = job["spec"]["template"]["spec"]["volumes"]
    assert {"name": "pvc-models", "persistentVolumeClaim": {"claimName": "models"}} in volumes


def _pod_state(job_name: str, state: Json) -> list[Json]:
    return [
        {
            "metadata": {"name": f"{job_name}-x", "creationTimestamp": "2026-01-01T10:00:01Z"},
            "status": {"containerStatuses": [{"name": "optimizer", "state": state}]},
        }
    ]


def test_a_missing_storage_secret_is_read_from_the_job_pod_without_secret_rights(
    metrics: OperatorMetrics,
) -> None:
    # FakeKube has no call that reads a Secret: the operator must not need one.
    assert not any("secret" in name for name in dir(FakeKube))
    fake = FakeKube(
        spec(
            model={"uri": "s3://models/digits/v1"},
            artifacts={"uri": "s3://models/runs"},
            storage={"secretRef": {"name": "s3-creds"}},
        )
    )
    status = run_pass(fake, metrics)
    container = fake.jobs[JOB_1]["spec"]["template"]["spec"]["containers"][0]
    # The Secret reaches the Job whole, prefixed, by reference; not optional, so a missing
    # one holds the Pod in CreateContainerConfigError.
    assert container["envFrom"] == [
        {"prefix": "DRIFTWARDEN_STORAGE_", "secretRef": {"name": "s3-creds", "optional": False}}
    ]
    assert not any(e["name"].startswith("AWS_") for e in container["env"])
    assert conditions(status)["Ready"] == ("True", "Ready")

    # Another Secret's or a ConfigMap's absence is not this one's.
    for message in ('secret "other" not found', 'configmap "s3-creds" not found'):
        waiting = {"reason": "CreateContainerConfigError", "message": message}
        fake.pods[JOB_1] = _pod_state(JOB_1, {"waiting": waiting})
        assert conditions(run_pass(fake, metrics))["Ready"] == ("True", "Ready")

    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "s3-creds" not found'}
    fake.pods[JOB_1] = _pod_state(JOB_1, {"waiting": waiting})
    status = run_pass(fake, metrics)
    assert conditions(status)["Ready"] == ("False", "MissingSecret")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert "s3-creds" in ready["message"] and "spec.storage.secretRef" in ready["message"]
    assert "waits until it exists" in ready["message"]
    assert [e[1] for e in fake.events].count("MissingSecret") == 1
    run_pass(fake, metrics)
    assert [e[1] for e in fake.events].count("MissingSecret") == 1
    assert list(fake.jobs) == [JOB_1]  # the run waits in its Job; nothing is re-created

    # The Secret is created: the kubelet starts the container, the run goes on.
    fake.pods[JOB_1] = _pod_state(JOB_1, {"running": {"startedAt": "2026-01-01T10:01:00Z"}})
    status = run_pass(fake, metrics)
    assert conditions(status)["Ready"] == ("True", "Ready")
    assert conditions(status)["Optimizing"] == ("True", "RunInProgress")


def test_suspended_resources_start_nothing(metrics: OperatorMetrics) -> None:
    fake = FakeKube(spec(suspend=True))
    status = run_pass(fake, metrics)
    assert fake.jobs == {}
    assert conditions(status)["Optimizing"] == ("False", "Suspended")
    assert status["phase"] == "Suspended"


def test_initial_run_without_a_request_and_its_switch(metrics: OperatorMetrics) -> None:
    no_request = spec()
    del no_request["runRequest"]
    fake = FakeKube(no_request)
    status = run_pass(fake, metrics, initial_run=True)
    assert status["activeRun"]["trigger"] == "Initial"
    quiet = FakeKube(no_request)
    status = run_pass(quiet, metrics)  # the default: monitoring first, no run on creation
    assert quiet.jobs == {}
    assert conditions(status)["Optimizing"] == ("False", "Idle")
    assert status["phase"] == "Pending"


def test_a_status_conflict_reruns_the_pass_without_a_second_job(
    metrics: OperatorMetrics,
) -> None:
    fake = FakeKube(spec())
    fake.conflicts_to_inject = 2
    status = run_pass(fake, metrics)
    assert list(fake.jobs) == [JOB_1]
    assert status["activeRun"]["id"] == RUN_1
    assert fake.status_patches == 1
    # The pass that created the Job lost its status write; the one after it says that the
    # operator started the run (not that it adopted someone's Job).
    reasons = [reason for _, reason, _ in fake.events]
    assert reasons.count("RunStarted") == 1 and "RunAdopted" not in reasons, reasons


def test_a_spec_the_models_refuse_is_reported_not_retried(metrics: OperatorMetrics) -> None:
    fake = FakeKube(spec(pipeline=[]))  # the CRD refuses it too; a version skew would not
    status = run_pass(fake, metrics)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.pipeline" in ready["message"]
    assert fake.jobs == {}


def test_runs_that_fell_out_of_the_history_are_never_recorded_again(
    metrics: OperatorMetrics,
) -> None:
    """25 runs, every Job kept (a week's TTL): each is recorded once, status.runs keeps the
    newest 20, lastRunRequest never moves back, and no extra run starts."""
    fake = FakeKube(spec(runRequest="req-1"))
    for sequence in range(1, 26):
        fake.mo["spec"]["runRequest"] = f"req-{sequence}"
        status = run_pass(fake, metrics)
        run_id = names.run_id_for(UID, sequence)
        job = f"{NAME}-optimize-{run_id}"
        assert status["activeRun"]["id"] == run_id, sequence
        fake.finish(job, 0, success_message(run_id))
        for _ in range(2):
            status = run_pass(fake, metrics)
    assert len(fake.jobs) == 25
    assert [r["id"] for r in status["runs"]] == [names.run_id_for(UID, s) for s in range(6, 26)]
    assert (status["runCount"], status["lastRunRequest"]) == (25, "req-25")
    assert "activeRun" not in status
    reasons = [e[1] for e in fake.events]
    assert reasons.count("RunSucceeded") == 25 and reasons.count("RunStarted") == 25


class FakeTarget:
    """The target Deployment API: a raised Deployment whose writes fail while ``failures``
    lasts (an API fault), as the apiserver would answer them (503)."""

    def __init__(self, deployment: Json) -> None:
        self.deployment = deployment
        self.failures = 0
        self.applied: list[Json] = []

    def get_deployment(self, namespace: str, name: str) -> Json | None:
        return (
            copy.deepcopy(self.deployment) if name == self.deployment["metadata"]["name"] else None
        )

    def apply_deployment(self, body: Json) -> Json:
        if self.failures:
            self.failures -= 1
            raise ApiError(503, "the server is currently unable to handle the request")
        self.applied.append(copy.deepcopy(body))
        containers = body.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
        live = self.deployment["spec"]["template"]["spec"]["containers"][0]
        if containers:
            live["resources"] = containers[0].get("resources", {})
        self.deployment["metadata"]["annotations"] = body["metadata"].get("annotations", {})
        return copy.deepcopy(self.deployment)

    def json_patch_deployment(self, namespace: str, name: str, patch: list[Json]) -> Json:
        return copy.deepcopy(self.deployment)


def fixed_deployment() -> Json:
    record = {
        "v": 1,
        "ownerUid": UID,
        "owner": NAME,
        "deployment": "web",
        "container": "server",
        "original": {"limits": {"cpu": "1"}},
        "applied": {"limits": {"cpu": "2"}},
        "appliedAt": "2026-01-01T10:00:00Z",
        "expiresAt": "2099-01-01T10:00:00Z",
    }
    return {
        "metadata": {
            "name": "web",
            "namespace": NS,
            "resourceVersion": "7",
            "annotations": {"driftwarden.io/temporary-fix": json.dumps(record)},
            "managedFields": [],
        },
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "server", "resources": {"limits": {"cpu": "2"}}}]}
            }
        },
    }


def test_delete_under_an_api_fault_fails_until_the_revert_succeeded(
    metrics: OperatorMetrics,
) -> None:
    fake = FakeKube(
        spec(
            target={"deployment": "web"},
            temporaryFix={"enabled": True},
            triggers={"latency": {"p95Ms": 10}},
        )
    )
    target = FakeTarget(fixed_deployment())
    target.failures = 1
    runtime = Runtime(
        config=OperatorConfig(), kube=cast(Kube, fake), metrics=metrics, target=target
    )
    with pytest.raises(ReleaseFailedError, match="HTTP 503"):
        release(runtime, NS, NAME, 5.0)
    assert [e[1] for e in fake.events][-1] == "ReleaseFailed"
    assert "Trying again in 5 s" in fake.events[-1][2]
    assert target.deployment["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "2"}
    }
    release(runtime, NS, NAME, 10.0)  # the fault is over: the fix recorded on it is reverted
    assert target.deployment["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "1"}
    }
    assert "driftwarden.io/temporary-fix" not in target.deployment["metadata"]["annotations"]
    assert "TemporaryFixReverted" in [e[1] for e in fake.events]


def test_delete_waits_for_a_pass_of_the_same_resource(metrics: OperatorMetrics) -> None:
    fake = FakeKube(spec(target={"deployment": "web"}))
    target = FakeTarget(fixed_deployment())
    runtime = Runtime(
        config=OperatorConfig(), kube=cast(Kube, fake), metrics=metrics, target=target
    )
    done = threading.Event()

    def delete() -> None:
        release(runtime, NS, NAME, 2.0)
        done.set()

    with runtime.locks.hold(NS, NAME):  # a pass of this resource is running
        thread = threading.Thread(target=delete)
        thread.start()
        assert not done.wait(0.3)
        assert target.applied == []
    thread.join(10)
    assert done.is_set() and target.applied


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"job": {"image": "attacker.example/miner:1"}}, "spec.job.image"),
        ({"job": {"serviceAccountName": "cluster-admin-sa"}}, "spec.job.serviceAccountName"),
        (
            {
                "target": {"deployment": "serving", "modelEnv": "PYTHONPATH"},
                "promotion": {"mode": "Automatic"},
            },
            "spec.target.modelEnv",
        ),
        (
            {"monitoring": {"prometheus": {"url": "http://10.0.0.1:9090", "query": "up"}}},
            "spec.monitoring.prometheus.url",
        ),
    ],
)
def test_a_spec_outside_the_admin_policy_gets_no_job(
    metrics: OperatorMetrics, changes: Json, field: str
) -> None:
    fake = FakeKube(spec(**changes))
    status = run_pass(fake, metrics)
    assert fake.jobs == {}
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PolicyViolation")
    assert ready["message"].startswith(f"{field}: ")
    assert "policy" in ready["message"]
    assert [e[:2] for e in fake.events] == [("Warning", "PolicyViolation")]
    run_pass(fake, metrics)
    assert fake.jobs == {} and len(fake.events) == 1  # said once


def test_what_the_admin_allows_runs(metrics: OperatorMetrics) -> None:
    fake = FakeKube(
        spec(
            job={"image": "registry.example/ml/optimizer:2", "serviceAccountName": "trainer"},
            monitoring={"prometheus": {"url": "http://prom.monitoring:9090/api", "query": "up"}},
        )
    )
    status = run_pass(
        fake,
        metrics,
        allowed_job_images=("registry.example/ml/",),
        allowed_job_service_accounts=("trainer",),
        allowed_prometheus_urls=("http://prom.monitoring:9090",),
    )
    assert list(fake.jobs) == [JOB_1]
    assert conditions(status)["Ready"] == ("True", "Ready")


@pytest.mark.parametrize(
    "reported",
    [
        "file:///srv/models/production",  # somewhere else entirely
        f"file:///srv/runs/{NAME}/{names.run_id_for(UID, 7)}",  # another run's directory
        f"file:///srv/runs/{NAME}/{RUN_1}/../../other",  # out of its own by dot segments
        f"file:///srv/runs/other/{RUN_1}",  # another resource's directory
    ],
)
def test_a_run_reporting_an_artifact_outside_its_directory_fails(
    metrics: OperatorMetrics, reported: str
) -> None:
    fake = FakeKube(spec())
    run_pass(fake, metrics)
    message = contract.CompactResult(
        kind="optimize",
        run_id=RUN_1,
        ok=True,
        baseline=contract.ModelMetrics(accuracy=0.9, size_bytes=1000),
        candidate=contract.ModelMetrics(accuracy=0.9, size_bytes=300),
        artifact_uri=reported,
        manifest_sha256="cd" * 32,
    ).to_message()
    fake.finish(JOB_1, 0, message)
    status = run_pass(fake, metrics)
    (run,) = status["runs"]
    assert run["outcome"] == "Failed"
    assert run["message"].startswith("ArtifactOutsideRun: ")
    assert "artifactUri" not in run
    assert "candidate" not in status
    assert [e[1] for e in fake.events] == ["RunStarted", "RunFailed"]
