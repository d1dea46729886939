from __future__ import annotations

import copy
import json

import pytest

from driftwarden.builders import names
from driftwarden.builders.job import (
    CONTAINER_NAME,
    TASK_PATH,
    JobSettings,
    Owner,
    build_job,
    build_task_configmap,
)
from optimizer_job import contract

pytestmark = pytest.mark.unit

OWNER = Owner(namespace="ml", name="digits", uid="0000-1111")


def task(**changes: object) -> contract.Task:
    fields: dict[str, object] = {
        "kind": "optimize",
        "namespace": "ml",
        "optimization": "digits",
        "run_id": "r1-abcdef",
        "model_uri": "pvc://models/digits/v1",
        "data": contract.DataRefs(
            reference="pvc://data/ref.parquet",
            current="pvc://data/cur.parquet",
            holdout="file:///srv/holdout.parquet",
        ),
        "stages": [contract.PruneStage(amount_percent=40)],
        "artifacts_uri": "pvc://models/runs",
    }
    fields |= changes
    return contract.Task.model_validate(fields)


def settings(**changes: object) -> JobSettings:
    base = JobSettings(image="optimizer:1", cpu="2", memory="4Gi")
    return JobSettings(**(base.__dict__ | changes))  # type: ignore[arg-type]


def container(job: dict[str, object]) -> dict[str, object]:
    containers = job["spec"]["template"]["spec"]["containers"]  # type: ignore[index]
    assert len(containers) == 1
    result: dict[str, object] = containers[0]
    return result


def test_name_labels_owner_and_task_annotation() -> None:
    job = build_job(OWNER, task(), settings(), annotations={names.RUN_PLAN_ANNOTATION: "{}"})
    meta = job["metadata"]
    assert meta["name"] == "digits-optimize-r1-abcdef"
    assert meta["namespace"] == "ml"
    assert meta["labels"]["driftwarden.io/run"] == "r1-abcdef"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "driftwarden"
    assert job["spec"]["template"]["metadata"]["labels"] == meta["labels"]
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "driftwarden.io/v1alpha1",
            "kind": "ModelOptimization",
            "name": "digits",
            "uid": "0000-1111",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert contract.Task.model_validate_json(meta["annotations"][names.TASK_ANNOTATION]) == task()
    assert meta["annotations"][names.RUN_PLAN_ANNOTATION] == "{}"
    assert job["spec"]["suspend"] is True  # resumed once its ConfigMap exists


def test_same_input_builds_the_same_job() -> None:
    assert build_job(OWNER, task(), settings()) == build_job(OWNER, task(), settings())


def test_restricted_pod_security() -> None:
    job = build_job(OWNER, task(), settings())
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(job)
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    # A read-only root needs a writable /tmp.
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}  # type: ignore[attr-defined]
    scratch = next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"]["name"])
    assert scratch == {"name": "scratch", "emptyDir": {}}


def test_command_and_termination_message() -> None:
    c = container(build_job(OWNER, task(), settings()))
    assert c["command"] == ["python", "-m", "optimizer_job", "--task", TASK_PATH]
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert c["name"] == CONTAINER_NAME


def test_failure_policy_fails_at_once_on_bad_input_and_ignores_disruption() -> None:
    spec = build_job(OWNER, task(), settings(backoff_limit=3))["spec"]
    assert spec["backoffLimit"] == 3
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "FailJob",
        "onExitCodes": {
            "containerName": CONTAINER_NAME,
            "operator": "In",
            "values": [contract.EXIT_BAD_INPUT],
        },
    }
    assert rules[1]["action"] == "Ignore"
    assert rules[1]["onPodConditions"] == [{"type": "DisruptionTarget", "status": "True"}]


def test_deadline_and_ttl() -> None:
    spec = build_job(
        OWNER, task(), settings(active_deadline_seconds=600, ttl_seconds_after_finished=120)
    )["spec"]
    assert spec["activeDeadlineSeconds"] == 600
    assert spec["ttlSecondsAfterFinished"] == 120
    assert "activeDeadlineSeconds" not in build_job(OWNER, task(), settings())["spec"]


def test_cpu_memory_and_gpu() -> None:
    c = container(build_job(OWNER, task(), settings(gpu=2)))
    assert c["resources"] == {
        "requests": {"cpu": "2", "memory": "4Gi"},
        "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "2"},
    }
    no_gpu = container(build_job(OWNER, task(), settings()))
    assert "nvidia.com/gpu" not in no_gpu["resources"]["limits"]  # type: ignore[index]


def test_gpu_jobs_tolerate_the_gpu_taint_and_keep_given_tolerations() -> None:
    given = [{"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]
    pod = build_job(
        OWNER, task(), settings(gpu=1, tolerations=given, node_selector={"gpu": "a100"})
    )["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["tolerations"] == [
        *given,
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    cpu_pod = build_job(OWNER, task(), settings())["spec"]["template"]["spec"]
    assert "tolerations" not in cpu_pod and "nodeSelector" not in cpu_pod


def test_claims_are_mounted_under_the_contract_root_read_only_except_artifacts() -> None:
    job = build_job(OWNER, task(), settings())
    pod = job["spec"]["template"]["spec"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v["name"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"models": "pvc-models", "data": "pvc-data"}
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}  # type: ignore[attr-defined]
    assert mounts["pvc-models"]["mountPath"] == f"{contract.PVC_MOUNT_ROOT}/models"
    assert "readOnly" not in mounts["pvc-models"]  # artifacts are written there
    assert mounts["pvc-data"]["mountPath"] == f"{contract.PVC_MOUNT_ROOT}/data"
    assert mounts["pvc-data"]["readOnly"] is True
    # What the Job resolves and what is mounted agree.
    resolved = contract.resolve_uri("pvc://data/ref.parquet")
    assert str(resolved).startswith(mounts["pvc-data"]["mountPath"] + "/")


def test_file_uris_mount_nothing() -> None:
    only_files = task(
        model_uri="file:///srv/m",
        data=contract.DataRefs(holdout="file:///srv/h.csv"),
        artifacts_uri="file:///srv/out",
    )
    pod = build_job(OWNER, only_files, settings())["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["task", "scratch"]


def test_service_account_only_when_given() -> None:
    pod = build_job(OWNER, task(), settings(service_account="optimizer"))["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "optimizer"
    assert (
        "serviceAccountName" not in build_job(OWNER, task(), settings())["spec"]["template"]["spec"]
    )


def test_long_resource_names_keep_the_full_name_in_an_annotation() -> None:
    long_owner = Owner(namespace="ml", name="m" * 120, uid="u")
    job = build_job(long_owner, task(optimization="m" * 120), settings())
    meta = job["metadata"]
    assert len(meta["name"]) <= 63
    assert len(meta["labels"]["driftwarden.io/optimization"]) <= 63
    assert meta["annotations"][names.OPTIMIZATION_ANNOTATION] == "m" * 120
    assert meta["ownerReferences"][0]["name"] == "m" * 120


def test_configmap_is_owned_by_its_job_and_holds_the_jobs_task() -> None:
    job = copy.deepcopy(build_job(OWNER, task(), settings()))
    job["metadata"]["uid"] = "job-uid-1"  # what the apiserver assigned
    cm = build_task_configmap(job)
    assert cm["metadata"]["name"] == job["metadata"]["name"]
    assert cm["metadata"]["namespace"] == "ml"
    assert cm["metadata"]["labels"] == job["metadata"]["labels"]
    assert cm["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": job["metadata"]["name"],
            "uid": "job-uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert contract.Task.model_validate_json(cm["data"]["task.json"]) == task()
    volume = job["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert volume["configMap"]["items"] == [{"key": "task.json", "path": "task.json"}]


def test_configmap_refuses_a_task_the_job_could_not_read() -> None:
    job = build_job(OWNER, task(), settings())
    job["metadata"]["uid"] = "u"
    job["metadata"]["annotations"][names.TASK_ANNOTATION] = json.dumps({"kind": "optimize"})
    with pytest.raises(ValueError, match="validation error"):
        build_task_configmap(job)
