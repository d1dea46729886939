"""The manifests the demo applies besides the ones in examples/: its namespace, the Jobs that
write the model and data into the volume and later shift the data, and the Helm values that
run the chart's operator Deployment on the devcluster."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from devcluster.demo_data import MODEL_DIR

NAMESPACE = "driftwarden-demo"
OPERATOR_NAMESPACE = "driftwarden-system"
RELEASE = "driftwarden"
CLAIM = "ml"
MOUNT = f"/mnt/driftwarden/pvc/{CLAIM}"  # where pvc://ml/... resolves (contract.PVC_MOUNT_ROOT)
MODEL_URI = f"pvc://{CLAIM}/{MODEL_DIR}"
SERVING = "digits-serving"
SERVING_SELECTOR = "app.kubernetes.io/name=digits-serving"
MO_NAME = "digits"
# On the devcluster the image is not pulled (containers run in the project's environment);
# the name says which image would run the same command in a real cluster.
JOB_IMAGE = "ghcr.io/driftwarden/optimizer-job:0.1.0"


@dataclass(frozen=True)
class Pace:
    """How much work and how long the intervals: the full demo, or the reduced CI one."""

    prepare_epochs: int
    retrain_epochs: int
    fine_tune_epochs: int
    interval: str
    cooldown: str
    expires_after: str
    step_timeout: float  # seconds for one evaluation or one run to show up


FULL = Pace(
    prepare_epochs=15,
    retrain_epochs=10,
    fine_tune_epochs=5,
    interval="20s",
    cooldown="30s",
    expires_after="4m",
    step_timeout=420.0,
)
FAST = Pace(
    prepare_epochs=8,
    retrain_epochs=6,
    fine_tune_epochs=3,
    interval="10s",
    cooldown="20s",
    expires_after="3m",
    step_timeout=420.0,
)


def namespace() -> str:
    # The restricted Pod Security profile is enforced: the serving Pods and the Jobs comply.
    return f"""apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
"""


def data_job(name: str, args: list[str]) -> str:
    """A restricted Job running ``python -m devcluster.demo_data <args>`` on the volume."""
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "driftwarden-demo"}},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "data",
                            "image": JOB_IMAGE,
                            "command": ["python", "-m", "devcluster.demo_data", *args],
                            "resources": {
                                "requests": {"cpu": "1", "memory": "1Gi"},
                                "limits": {"cpu": "1", "memory": "2Gi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": CLAIM, "mountPath": MOUNT}],
                        }
                    ],
                    "volumes": [{"name": CLAIM, "persistentVolumeClaim": {"claimName": CLAIM}}],
                }
            },
        },
    }
    return yaml.safe_dump(job, sort_keys=False)


def prepare_job(pace: Pace, latency_batch: int) -> str:
    args = ["prepare", "--root", MOUNT, "--epochs", str(pace.prepare_epochs)]
    return data_job("demo-prepare", [*args, "--latency-batch", str(latency_batch)])


def shift_job() -> str:
    return data_job("demo-shift", ["shift", "--root", MOUNT])


def helm_values(health_port: int, metrics_port: int, resync_seconds: int) -> str:
    """The chart's values for the devcluster. The operator binds its ports on all addresses,
    which every Pod shares on the devcluster (no network namespaces): free ports avoid a
    clash with anything else on the machine, and the metrics are at 127.0.0.1:<port>."""
    values = {
        "watchNamespaces": [NAMESPACE],
        "operator": {
            # One replica: a second would find the ports taken (the chart's peering stays on).
            "replicas": 1,
            "healthPort": health_port,
            # A short resync so evaluations start close to their interval; no run on creation:
            # the demo's runs come from its triggers.
            "extraArgs": [f"--resync-seconds={resync_seconds}", "--no-initial-run"],
        },
        "metrics": {"port": metrics_port},
    }
    return yaml.safe_dump(values, sort_keys=False)


def modeloptimization(text: str, slo_ms: int, pace: Pace) -> str:
    """examples/demo/modeloptimization.yaml with the measured SLO and the demo's pace."""
    body: dict[str, Any] = copy.deepcopy(yaml.safe_load(text))
    spec = body["spec"]
    spec["triggers"]["latency"]["p95Ms"] = slo_ms
    spec["triggers"]["cooldown"] = pace.cooldown
    spec["monitoring"]["interval"] = pace.interval
    spec["temporaryFix"]["expiresAfter"] = pace.expires_after
    for stage in spec["pipeline"]:
        if "retrain" in stage:
            stage["retrain"]["epochs"] = pace.retrain_epochs
        if "prune" in stage:
            stage["prune"]["fineTuneEpochs"] = pace.fine_tune_epochs
    return yaml.safe_dump(body, sort_keys=False)
