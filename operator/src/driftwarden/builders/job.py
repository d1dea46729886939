"""The optimizer Job and its task ConfigMap, as plain Kubernetes objects (no I/O).

A Job is created suspended and carries its task in an annotation; the operator then
creates the task ConfigMap (owned by the Job, so the Job's TTL and the resource's
deletion remove it too) and resumes the Job. So no Pod starts before its task is
mounted, and a Job adopted after a restart gets exactly the task it was created for.

With `workers` above 1 the Job is an Indexed Job of that many Pods that run torchrun with
the standard PET_* environment (as Kubeflow Trainer's torch runtime sets it): worker i is
node rank i (JOB_COMPLETION_INDEX), the first worker is the rendezvous master, reached by its
stable name `<job>-0.<service>` through a headless Service of the Job's name (also owned by
the Job, created with its ConfigMap). Any worker failing fails the whole Job at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from driftwarden.builders import names
from optimizer_job import contract

CONTAINER_NAME: Final = "optimizer"
TASK_DIR: Final = "/etc/driftwarden/task"
TASK_FILE: Final = "task.json"
TASK_PATH: Final = f"{TASK_DIR}/{TASK_FILE}"
SCRATCH_DIR: Final = "/tmp"  # noqa: S108 - an emptyDir: the root filesystem is read-only
GPU_RESOURCE: Final = "nvidia.com/gpu"
QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
COMPLETION_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"
# How long the workers of a gang may wait for each other; read back by the operator.
GANG_TIMEOUT_ANNOTATION: Final = "driftwarden.io/gang-timeout-seconds"
# The launcher that waits for the master's name, then runs torchrun (optimizer_job.distributed).
DISTRIBUTED_MODULE: Final = "optimizer_job.distributed"
# The Indexed Job's Pod hostnames are <job>-<index>: keep room for "-15" in 63 characters.
GANG_JOB_NAME_MAX: Final = names.DNS_LABEL_MAX - 3
# The non-root user of the distroless/nonroot convention; the image runs as it too.
JOB_USER: Final = 65532

Json = dict[str, Any]


@dataclass(frozen=True)
class JobSettings:
    """How a Job runs, resolved from spec.job and the operator's defaults."""

    image: str
    service_account: str | None = None
    gpu: int = 0
    cpu: str | None = None
    memory: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    backoff_limit: int = 2
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int = 24 * 3600
    pvc_mount_root: str = contract.PVC_MOUNT_ROOT
    # spec.storage.secretRef: its AWS_* keys become the container's environment.
    storage_secret: str | None = None
    workers: int = 1
    gang_timeout_seconds: int = 600
    queue_name: str | None = None


@dataclass(frozen=True)
class Owner:
    """The ModelOptimization a Job belongs to."""

    namespace: str
    name: str
    uid: str

    def reference(self) -> Json:
        return names.owner_reference(
            api_version=names.API_VERSION, kind=names.KIND, name=self.name, uid=self.uid
        )


def task_uris(task: contract.Task) -> list[str | None]:
    data = task.data
    return [task.model_uri, data.reference, data.current, data.holdout, task.artifacts_uri]


def claim_mounts(task: contract.Task) -> dict[str, bool]:
    """PVC claim -> whether the Job needs to write to it (only the artifacts claim)."""
    claims = dict.fromkeys(contract.pvc_claims(task_uris(task)), False)
    for claim in contract.pvc_claims([task.artifacts_uri]):
        claims[claim] = True
    return claims


def storage_env_from(secret: str | None) -> list[Json]:
    """The storage Secret as the Job's ``envFrom``: its values never appear in the Job, its
    task or the operator. Not optional - a missing Secret holds the Pod in
    CreateContainerConfigError (``secret "<name>" not found``), which the operator reports
    as Ready=False MissingSecret (services.jobs.missing_secret) without reading Secrets.
    Every key is prefixed: a key of the Secret cannot set PATH, LD_PRELOAD or anything else
    the Job reads; the S3 client takes the AWS keys back from the prefix."""
    if secret is None:
        return []
    return [
        {
            "prefix": contract.STORAGE_ENV_PREFIX,
            "secretRef": {"name": secret, "optional": False},
        }
    ]


def _resources(settings: JobSettings) -> Json:
    # Limits equal requests (Guaranteed QoS): latency measured inside the Job must not
    # depend on what its neighbours do.
    amounts: dict[str, str] = {}
    if settings.cpu:
        amounts["cpu"] = settings.cpu
    if settings.memory:
        amounts["memory"] = settings.memory
    limits = dict(amounts)
    if settings.gpu > 0:
        limits[GPU_RESOURCE] = str(settings.gpu)
    resources: Json = {}
    if amounts:
        resources["requests"] = amounts
    if limits:
        resources["limits"] = limits
    return resources


def _tolerations(settings: JobSettings) -> list[Json]:
    tolerations = [dict(t) for t in settings.tolerations]
    # GPU nodes are usually tainted nvidia.com/gpu; a Job that asks for a GPU tolerates
    # that taint, as the ExtendedResourceToleration admission plugin would add it.
    if settings.gpu > 0 and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def _volumes(
    task: contract.Task, configmap: str, settings: JobSettings
) -> tuple[list[Json], list[Json]]:
    volumes: list[Json] = [
        {
            "name": "task",
            "configMap": {"name": configmap, "items": [{"key": TASK_FILE, "path": TASK_FILE}]},
        },
        {"name": "scratch", "emptyDir": {}},
    ]
    mounts: list[Json] = [
        {"name": "task", "mountPath": TASK_DIR, "readOnly": True},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
    ]
    root = settings.pvc_mount_root.rstrip("/")
    for claim, writable in sorted(claim_mounts(task).items()):
        volume = names.claim_volume_name(claim)
        volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": claim}})
        mount: Json = {"name": volume, "mountPath": f"{root}/{claim}"}
        if not writable:
            mount["readOnly"] = True
        mounts.append(mount)
    return volumes, mounts


def build_job(
    owner: Owner,
    task: contract.Task,
    settings: JobSettings,
    *,
    annotations: Mapping[str, str] | None = None,
) -> Json:
    """The Job that runs `task` for `owner`, created suspended (see the module doc).
    `annotations` are added to the Job's (the operator keeps its run plan there)."""
    gang = settings.workers > 1 and task.kind == "optimize"
    limit = GANG_JOB_NAME_MAX if gang else names.DNS_LABEL_MAX
    name = names.job_name(owner.name, task.run_id, task.kind, limit=limit)
    labels = names.labels(owner.name, task.run_id, task.kind)
    job_annotations = dict(annotations or {})
    job_annotations[names.TASK_ANNOTATION] = task.model_dump_json()
    if labels[names.OPTIMIZATION_LABEL] != owner.name:
        job_annotations[names.OPTIMIZATION_ANNOTATION] = owner.name
    volumes, mounts = _volumes(task, names.task_configmap_name(name), settings)
    entry_module = DISTRIBUTED_MODULE if gang else "optimizer_job"
    container: Json = {
        "name": CONTAINER_NAME,
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", entry_module, "--task", TASK_PATH],
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            # Caches (torch, matplotlib, ...) go to the writable scratch dir.
            {"name": "HOME", "value": SCRATCH_DIR},
            {"name": "TMPDIR", "value": SCRATCH_DIR},
            *(torchrun_env(name, settings) if gang else []),
        ],
        "resources": _resources(settings),
        "volumeMounts": mounts,
        "terminationMessagePath": contract.TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
        },
    }
    if settings.storage_secret is not None:
        container["envFrom"] = storage_env_from(settings.storage_secret)
    pod_spec: Json = {
        "restartPolicy": "Never",  # podFailurePolicy requires it; the Job retries
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": JOB_USER,
            "runAsGroup": JOB_USER,
            "fsGroup": JOB_USER,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(settings.node_selector)
    if tolerations := _tolerations(settings):
        pod_spec["tolerations"] = tolerations
    if gang:
        # The stable DNS name <job>-<index>.<service> of each worker.
        pod_spec["subdomain"] = worker_service_name(name)
    failure_rules: list[Json] = []
    if gang:
        # One worker failing breaks the collective for all: fail the Job at once (its
        # other Pods are stopped) instead of retrying one Pod the others no longer wait for.
        failure_rules.append(
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER_NAME,
                    "operator": "NotIn",
                    "values": [0],
                },
            }
        )
    job_spec: Json = {
        "suspend": True,
        "backoffLimit": 0 if gang else settings.backoff_limit,
        "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
        "podFailurePolicy": {
            "rules": [
                # The same input would fail the same way again: fail the Job at once.
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": CONTAINER_NAME,
                        "operator": "In",
                        "values": [contract.EXIT_BAD_INPUT],
                    },
                },
                # An evicted or preempted Pod is not the task's fault: retry without
                # counting it against backoffLimit.
                {
                    "action": "Ignore",
                    "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                },
                *failure_rules,
            ]
        },
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod_spec},
    }
    if gang:
        job_spec["completionMode"] = "Indexed"
        job_spec["completions"] = settings.workers
        job_spec["parallelism"] = settings.workers
        job_annotations[GANG_TIMEOUT_ANNOTATION] = str(settings.gang_timeout_seconds)
    if settings.queue_name:
        # Kueue reads the Job's label and admits the whole Job (all its Pods) or none.
        labels = {**labels, QUEUE_LABEL: settings.queue_name}
    if settings.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = settings.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": job_annotations,
            "ownerReferences": [owner.reference()],
        },
        "spec": job_spec,
    }


def build_task_configmap(job: Json) -> Json:
    """The task ConfigMap of a Job (created or adopted), owned by that Job.

    The task comes from the Job's annotation, not from the resource's current spec, so a
    ConfigMap created after a restart matches the Job it belongs to."""
    metadata = job["metadata"]
    task_json = metadata["annotations"][names.TASK_ANNOTATION]
    contract.Task.model_validate_json(task_json)  # refuse to mount a task the Job can't read
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": names.task_configmap_name(metadata["name"]),
            "namespace": metadata["namespace"],
            "labels": dict(metadata.get("labels") or {}),
            "ownerReferences": [
                names.owner_reference(
                    api_version="batch/v1",
                    kind="Job",
                    name=metadata["name"],
                    uid=metadata["uid"],
                )
            ],
        },
        "data": {TASK_FILE: task_json},
    }


def worker_service_name(job_name: str) -> str:
    """The headless Service of a gang shares its Job's name (another kind: no collision)."""
    return job_name


def master_port(job_name: str) -> int:
    """The rendezvous port: fixed per Job. On a real cluster each Pod has its own network
    and 29500 would do; a per-Job port also keeps gangs apart where Pods share one."""
    return 29500 + int(names.short_hash(job_name, length=4), 16) % 10000


def torchrun_env(job_name: str, settings: JobSettings) -> list[Json]:
    """torchrun's standard environment: each of its flags reads PET_<FLAG>."""
    return [
        {"name": "PET_NNODES", "value": str(settings.workers)},
        {
            "name": "PET_NODE_RANK",
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}
            },
        },
        # One process per GPU; one per Pod on CPU.
        {"name": "PET_NPROC_PER_NODE", "value": str(max(1, settings.gpu))},
        {"name": "PET_MASTER_ADDR", "value": f"{job_name}-0.{worker_service_name(job_name)}"},
        {"name": "PET_MASTER_PORT", "value": str(master_port(job_name))},
        {"name": "DRIFTWARDEN_GANG_TIMEOUT_SECONDS", "value": str(settings.gang_timeout_seconds)},
    ]


def workers_of(job: Json) -> int:
    """How many workers a Job runs: its completions when Indexed, else 1."""
    spec = job.get("spec") or {}
    if spec.get("completionMode") != "Indexed":
        return 1
    return int(spec.get("completions") or 1)


def build_worker_service(job: Json) -> Json:
    """The headless Service that gives a gang's Pods their DNS names, owned by the Job.

    publishNotReadyAddresses: the names must resolve while the Pods start (they have no
    readiness probe, and the rendezvous happens before anything could be "ready")."""
    metadata = job["metadata"]
    name = metadata["name"]
    run_labels = {
        k: v
        for k, v in (metadata.get("labels") or {}).items()
        if k in (names.RUN_LABEL, names.OPTIMIZATION_LABEL)
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": worker_service_name(name),
            "namespace": metadata["namespace"],
            "labels": dict(metadata.get("labels") or {}),
            "ownerReferences": [
                names.owner_reference(
                    api_version="batch/v1", kind="Job", name=name, uid=metadata["uid"]
                )
            ],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_NAME_LABEL: name, **run_labels},
            "ports": [{"name": "c10d", "port": master_port(name), "protocol": "TCP"}],
        },
    }
