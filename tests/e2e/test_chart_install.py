"""The Helm chart installed on the devcluster the way a user installs it, and the operator
running in-cluster with nothing but the chart's ServiceAccount.

`helm template` with non-default values (watch one namespace, free ports), the CRD from the
chart's crds/ by server-side apply (the documented upgrade path), `kubectl apply` of the
rest. The operator's Pod is started by the node agent as `python -m driftwarden` with the
ServiceAccount token the real kubelet protocol gives it (a projected volume), so every API
call it makes is checked by the real RBAC: a missing permission shows as `Forbidden` in its
log, and a run that never finishes.

Both namespaces enforce the `restricted` Pod Security profile with the real admission
plugin: the operator's Pod and every Job Pod it creates must pass it to exist at all.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_process import (
    example_dir,
    example_uris,
    finished_runs,
    get_json,
    jobs_of,
    mo_manifest,
    scratch_dir,
    wait_for,
)
from prometheus_server import PrometheusServer

from devcluster.controlplane import Cluster
from devcluster.ports import free_port

pytestmark = pytest.mark.e2e
pytest_plugins = ["prometheus_fixture"]

PROJECT = Path(__file__).resolve().parents[2]
CHART = PROJECT / "charts" / "driftwarden"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
RESYNC_SECONDS = 2
# Starting the Pod is seconds; the time kopf spends before it handles resources (its
# retries when something is forbidden) is what a broken install costs here.
READY_TIMEOUT = 120.0
RUN_TIMEOUT = 240.0
MO_NAME = "digits"

Json = dict[str, Any]


@dataclass(frozen=True)
class Install:
    release: str
    system: str  # the release namespace: the operator runs here
    watched: str  # the one namespace it watches; the Jobs run here
    rendered: Path
    manifests: list[Json]
    metrics_port: int

    @property
    def fullname(self) -> str:
        return f"{self.release}-driftwarden"

    @property
    def job_service_account(self) -> str:
        return f"{self.fullname}-job"

    def one(self, kind: str) -> Json:
        (found,) = [m for m in self.manifests if m["kind"] == kind]
        return found


def helm_template(cluster: Cluster, release: str, namespace: str, values: Path) -> str:
    helm = cluster.bin_dir / "helm"
    result = subprocess.run(
        [str(helm), "template", release, str(CHART), "--namespace", namespace, "-f", str(values)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def kubectl_ok(cluster: Cluster, *args: str, input: str | None = None) -> str:
    """kubectl that must succeed; a failure shows kubectl's own words."""
    result = cluster.kubectl(*args, input=input, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


CRDS = (
    "modeloptimizations.driftwarden.io",
    "kopfpeerings.kopf.dev",
    "clusterkopfpeerings.kopf.dev",
)


def crd_established(cluster: Cluster) -> bool:
    # Not `kubectl wait`: right after the create it fails on a CRD without status yet.
    for name in CRDS:
        crd = get_json(cluster, "crd", name)
        conditions = (crd.get("status") or {}).get("conditions") or []
        if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return False
    return True


def create_namespace(cluster: Cluster, name: str) -> None:
    cluster.kubectl("create", "namespace", name)
    cluster.kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in RESTRICTED.items()))


def remove_optimizations(cluster: Cluster, namespace: str) -> None:
    """Delete the ModelOptimizations (the operator drops its finalizer); if the operator
    cannot, drop it by hand so the namespace can go."""
    deleted = cluster.kubectl(
        "delete", "mo", "--all", "-n", namespace, "--timeout=60s", check=False
    )
    if deleted.returncode == 0:
        return
    for item in get_json(cluster, "mo", "-n", namespace)["items"]:
        cluster.kubectl(
            "patch",
            "mo",
            item["metadata"]["name"],
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )


@pytest.fixture(scope="module")
def install(devcluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    suffix = uuid.uuid4().hex[:5]
    release = f"dw{suffix}"
    system, watched = f"t-chart-system-{suffix}", f"t-chart-ml-{suffix}"
    for name in (system, watched):
        create_namespace(devcluster, name)
    workdir = tmp_path_factory.mktemp("chart")
    rendered = workdir / "rendered.yaml"
    try:
        metrics_port = free_port()
        values = workdir / "values.yaml"
        values.write_text(
            yaml.safe_dump(
                {
                    "watchNamespaces": [watched],
                    # Pods share the host's network here: ports no other test uses, and
                    # one replica (a second would find its ports taken). Peering stays on
                    # (the default): the audit log test measures its rights too.
                    "operator": {
                        "replicas": 1,
                        "healthPort": free_port(),
                        "extraArgs": [f"--resync-seconds={RESYNC_SECONDS}"],
                    },
                    "metrics": {"port": metrics_port},
                    "image": {"repository": "registry.invalid/driftwarden", "tag": "e2e"},
                }
            )
        )
        rendered.write_text(helm_template(devcluster, release, system, values))
        kubectl_ok(devcluster, "apply", "--server-side", "-f", str(CHART / "crds"))
        wait_for("the CRDs to be established", lambda: crd_established(devcluster), 60)
        kubectl_ok(devcluster, "apply", "-f", str(rendered))
        manifests = [m for m in yaml.safe_load_all(rendered.read_text()) if m]
        yield Install(release, system, watched, rendered, manifests, metrics_port)
    finally:
        remove_optimizations(devcluster, watched)
        if rendered.exists():
            devcluster.kubectl("delete", "-f", str(rendered), "--wait=false", check=False)
        for name in (watched, system):
            devcluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def operator_log(cluster: Cluster, install: Install) -> str:
    result = cluster.kubectl(
        "logs", "-n", install.system, f"deployment/{install.fullname}", check=False
    )
    return result.stdout + result.stderr


def diagnose(cluster: Cluster, install: Install) -> str:
    """What a failing test shows: the Pods, the events, the operator's log."""
    namespaces = (install.system, install.watched)
    pods = "".join(
        cluster.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False).stdout
        for ns in namespaces
    )
    events = "".join(
        cluster.kubectl("get", "events", "-n", ns, check=False).stdout for ns in namespaces
    )
    log = "\n".join(operator_log(cluster, install).splitlines()[-60:])
    return f"pods:\n{pods}\nevents:\n{events}\noperator log:\n{log}"


class OperatorCrashedError(AssertionError):
    pass


def crash_looping(pods: list[Json]) -> list[str]:
    return [
        f"{p['metadata']['name']}/{c['name']} restarted {c['restartCount']}x"
        for p in pods
        for c in p["status"].get("containerStatuses") or []
        if c.get("restartCount", 0) >= 2
    ]


@pytest.fixture(scope="module")
def running(devcluster: Cluster, install: Install) -> Install:
    """The install, once its operator Deployment is available; a crash loop fails at once."""
    selector = ",".join(
        f"{k}={v}" for k, v in install.one("Deployment")["spec"]["selector"]["matchLabels"].items()
    )

    def available() -> bool | None:
        deployment = get_json(devcluster, "deployment", "-n", install.system, install.fullname)
        if (deployment.get("status") or {}).get("availableReplicas") == 1:
            return True
        pods = get_json(devcluster, "pods", "-n", install.system, "-l", selector)["items"]
        if crashed := crash_looping(pods):
            raise OperatorCrashedError(
                f"the operator crash-loops ({crashed}):\n{diagnose(devcluster, install)}"
            )
        return None

    try:
        wait_for("the operator Deployment to be available", available, READY_TIMEOUT)
    except OperatorCrashedError:
        raise
    except AssertionError as error:
        raise AssertionError(f"{error}\n{diagnose(devcluster, install)}") from None
    return install


def forbidden_lines(log: str) -> list[str]:
    # Every refusal by RBAC says Forbidden: the apiserver's reason, kopf's APIForbiddenError
    # and the kubernetes client's ApiException all carry the word.
    return [line for line in log.splitlines() if re.search("forbidden", line, re.IGNORECASE)]


def operator_pod(cluster: Cluster, install: Install) -> Json:
    selector = ",".join(
        f"{k}={v}" for k, v in install.one("Deployment")["spec"]["selector"]["matchLabels"].items()
    )
    pods = get_json(cluster, "pods", "-n", install.system, "-l", selector)["items"]
    running_pods = [p for p in pods if p["status"].get("phase") == "Running"]
    assert len(running_pods) == 1, [p["metadata"]["name"] for p in pods]
    return dict(running_pods[0])


def dry_run_pod(cluster: Cluster, namespace: str, pod: Json) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        "-o",
        "name",
        input=json.dumps(pod),
        check=False,
    )


def test_operator_pod_passes_restricted_pod_security(devcluster: Cluster, running: Install) -> None:
    install = running
    namespace = get_json(devcluster, "namespace", install.system)
    assert RESTRICTED.items() <= namespace["metadata"]["labels"].items()
    pod = operator_pod(devcluster, install)
    spec = pod["spec"]
    assert spec["serviceAccountName"] == install.fullname
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True"

    # The admission plugin did check it: the same Pod with one restricted field undone is
    # refused in this namespace, while the chart's own Pod spec is accepted.
    template = install.one("Deployment")["spec"]["template"]
    as_pod: Json = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{install.fullname}-admission-check"},
        "spec": copy.deepcopy(template["spec"]),
    }
    accepted = dry_run_pod(devcluster, install.system, as_pod)
    assert accepted.returncode == 0, accepted.stderr
    loosened = copy.deepcopy(as_pod)
    del loosened["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    refused = dry_run_pod(devcluster, install.system, loosened)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr
    assert "allowPrivilegeEscalation" in refused.stderr


def can_i(cluster: Cluster, install: Install, *args: str) -> bool:
    account = f"system:serviceaccount:{install.system}:{install.fullname}"
    result = cluster.kubectl("auth", "can-i", *args, "--as", account, check=False)
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


def test_service_account_rights_are_the_least_that_work(
    devcluster: Cluster, install: Install
) -> None:
    watched, other = install.watched, install.system
    allowed = [
        ("watch", "modeloptimizations.driftwarden.io", "-n", watched),
        ("patch", "modeloptimizations.driftwarden.io", "-n", watched),
        ("patch", "modeloptimizations.driftwarden.io", "--subresource=status", "-n", watched),
        ("create", "jobs.batch", "-n", watched),
        ("create", "configmaps", "-n", watched),
        ("list", "pods", "-n", watched),
        ("get", "persistentvolumeclaims", "-n", watched),
        ("watch", "persistentvolumeclaims", "-n", watched),  # claims waited for wake a pass
        ("patch", "deployments.apps", "-n", watched),
        ("create", "events", "-n", watched),
    ]
    refused = [
        # No right on Secrets: a missing spec.storage.secretRef shows in the Job's Pod.
        ("get", "secrets", "-n", watched),
        ("list", "secrets", "-n", watched),
        ("watch", "secrets", "-n", watched),
        # Nothing the code never calls (driftwarden.k8s; measured by the audit log test).
        ("get", "pods", "--subresource=log", "-n", watched),
        ("watch", "pods", "-n", watched),
        ("delete", "jobs.batch", "-n", watched),
        ("list", "configmaps", "-n", watched),
        ("delete", "configmaps", "-n", watched),
        ("create", "deployments.apps", "-n", watched),  # patched, never created
        ("delete", "deployments.apps", "-n", watched),
        ("create", "modeloptimizations.driftwarden.io", "-n", watched),  # never writes spec
        ("update", "modeloptimizations.driftwarden.io", "-n", watched),
        ("create", "pods", "-n", watched),  # Jobs create Pods, not the operator
        ("create", "jobs.batch", "-n", other),  # nothing outside the watched namespace
        ("list", "modeloptimizations.driftwarden.io", "-n", other),
        ("list", "jobs.batch", "--all-namespaces"),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", watched),
        ("update", "customresourcedefinitions.apiextensions.k8s.io"),
        # A namespace list needs no cluster-scoped right (kopf's scanning is off).
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    wrong = [a for a in allowed if not can_i(devcluster, install, *a)]
    wrong += [r for r in refused if can_i(devcluster, install, *r)]
    assert wrong == []


def test_operator_reconciles_with_only_the_chart_rights(
    devcluster: Cluster, running: Install
) -> None:
    install = running
    example = example_dir()
    artifacts = scratch_dir("chart-artifacts-")
    manifest = mo_manifest(MO_NAME, install.watched, example_uris(example), f"file://{artifacts}")
    kubectl_ok(devcluster, "apply", "-f", "-", input=manifest)
    started = time.monotonic()
    try:
        status = wait_for(
            "the run to be recorded",
            finished_runs(devcluster, install.watched, MO_NAME, 1),
            RUN_TIMEOUT,
        )
    except AssertionError as error:
        raise AssertionError(f"{error}\n{diagnose(devcluster, install)}") from None
    elapsed = time.monotonic() - started
    (run,) = status["runs"]
    assert run["outcome"] == "Succeeded", (run, diagnose(devcluster, install))
    assert (artifacts / MO_NAME / run["id"] / "MANIFEST").is_file()

    # The Job ran under the chart's Job ServiceAccount, without an API token, and its Pod
    # was admitted by the restricted profile (it ran to completion).
    (job,) = jobs_of(devcluster, install.watched, MO_NAME)
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == install.job_service_account
    assert pod_spec["automountServiceAccountToken"] is False
    pods = get_json(
        devcluster, "pods", "-n", install.watched, "-l", f"job-name={job['metadata']['name']}"
    )["items"]
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"]
    refusals = [
        e
        for e in get_json(devcluster, "events", "-n", install.watched)["items"]
        if e["reason"] == "FailedCreate"
    ]
    assert refusals == []

    # Nothing the operator did was refused by RBAC.
    assert forbidden_lines(operator_log(devcluster, install)) == []
    print(f"run recorded {elapsed:.1f} s after the apply")


POLICY_CASES = [
    ("job", {"image": "attacker.example/miner:1"}, "spec.job.image"),
    ("target", {"deployment": "serving", "modelEnv": "LD_PRELOAD"}, "spec.target.modelEnv"),
]


def violating_manifest(install: Install, name: str, key: str, value: Json) -> str:
    """The chart test's resource with one field outside the admin's policy."""
    example = example_dir()
    manifest = yaml.safe_load(
        mo_manifest(name, install.watched, example_uris(example), "file:///tmp/unused")
    )
    manifest["spec"][key] = manifest["spec"].get(key, {}) | value
    return yaml.safe_dump(manifest)


def policy_message(stderr: str) -> str:
    """The message of a ValidatingAdmissionPolicy refusal, after its preamble."""
    return stderr.split("denied request: ", 1)[1].strip()


def refused_at_admission(cluster: Cluster, manifest: str) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --dry-run=server` of a spec the admission policy refuses. A policy
    just created takes effect once the apiserver has loaded it: wait for the refusal."""

    def refused() -> subprocess.CompletedProcess[str] | None:
        result = cluster.kubectl(
            "apply", "--dry-run=server", "-f", "-", input=manifest, check=False
        )
        return result if result.returncode != 0 else None

    return wait_for("the admission policy to refuse the spec", refused, 60)


@pytest.mark.parametrize(("key", "value", "field"), POLICY_CASES)
def test_admission_refuses_a_spec_outside_the_policy(
    devcluster: Cluster, install: Install, key: str, value: Json, field: str
) -> None:
    """The chart's ValidatingAdmissionPolicy: `kubectl apply` is refused up front, with
    the field and the rule in the words the operator uses."""
    result = refused_at_admission(devcluster, violating_manifest(install, "refused", key, value))
    assert "ValidatingAdmissionPolicy" in result.stderr, result.stderr
    assert policy_message(result.stderr).startswith(f"{field}: "), result.stderr
    assert "is not allowed by the cluster's DriftWarden policy" in result.stderr


def test_without_admission_the_operator_refuses_with_the_same_words(
    devcluster: Cluster, running: Install
) -> None:
    """With the admission policy off (its binding removed) the spec is stored, and the
    operator refuses it: Ready=False PolicyViolation with the same message, an event, and
    no Job."""
    install = running
    binding = install.one("ValidatingAdmissionPolicyBinding")
    key, value, field = POLICY_CASES[0]
    manifest = violating_manifest(install, "policy-off", key, value)
    refused = refused_at_admission(devcluster, manifest)
    said_at_admission = policy_message(refused.stderr)
    kubectl_ok(
        devcluster, "delete", "validatingadmissionpolicybinding", binding["metadata"]["name"]
    )
    try:
        wait_for(
            "the spec to be stored with the binding gone",
            lambda: (
                devcluster.kubectl("apply", "-f", "-", input=manifest, check=False).returncode == 0
            ),
            60,
        )

        def refused_by_operator() -> Json | None:
            status = get_json(devcluster, "mo", "policy-off", "-n", install.watched).get("status")
            for item in (status or {}).get("conditions") or []:
                if item["type"] == "Ready" and item["reason"] == "PolicyViolation":
                    return dict(item)
            return None

        ready = wait_for("Ready=False PolicyViolation", refused_by_operator, READY_TIMEOUT)
        assert ready["status"] == "False"
        assert ready["message"] == said_at_admission
        assert ready["message"].startswith(f"{field}: ")
        events = get_json(devcluster, "events", "-n", install.watched)["items"]
        assert any(
            e["reason"] == "PolicyViolation" and e["involvedObject"]["name"] == "policy-off"
            for e in events
        )
        assert jobs_of(devcluster, install.watched, "policy-off") == []
        described = kubectl_ok(devcluster, "describe", "mo", "policy-off", "-n", install.watched)
        assert "PolicyViolation" in described
    finally:
        devcluster.kubectl("delete", "mo", "policy-off", "-n", install.watched, check=False)
        kubectl_ok(devcluster, "apply", "-f", "-", input=yaml.safe_dump(binding))


def test_prometheus_scrapes_the_installed_operator(
    devcluster: Cluster, running: Install, module_prometheus: PrometheusServer
) -> None:
    """The metrics Service's port leads to the operator's /metrics, served from the Pod."""
    install = running
    service = get_json(devcluster, "service", "-n", install.system, f"{install.fullname}-metrics")
    (port,) = service["spec"]["ports"]
    assert port["port"] == install.metrics_port
    pod = operator_pod(devcluster, install)
    (container,) = pod["spec"]["containers"]
    by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
    target = f"{pod['status']['podIP']}:{by_name[port['targetPort']]}"
    module_prometheus.set_targets({"driftwarden": [target]})
    module_prometheus.wait_up("driftwarden")
    reconciles = module_prometheus.wait_query(
        'driftwarden_reconcile_duration_seconds_count{job="driftwarden"}',
        lambda r: len(r.samples) == 1,
    )
    assert reconciles.samples[0].labels["instance"] == target
    # The operator-down alert's expression has nothing to say while it is scraped.
    assert module_prometheus.client.query('absent(up{job="driftwarden"} == 1)').samples == []


# Granted by the chart but not called by the operator in this module's scenario, each with
# the reason; anything else granted and never used is a grant to remove.
NOT_EXERCISED_HERE = {
    # Checked by the OwnerReferencesPermissionEnforcement admission plugin (when a cluster
    # enables it) for owner references with blockOwnerDeletion: never a request of its own.
    ("update", "driftwarden.io", "modeloptimizations", "finalizers"): "owner references",
    ("update", "batch", "jobs", "finalizers"): "owner references",
    # Adopting the task ConfigMap of a run whose operator crashed after creating it (409):
    # tests/e2e/test_operator_idempotency.py exercises it.
    ("get", "", "configmaps", ""): "a ConfigMap that exists is read and adopted",
    # The scenario's resource has file:// URIs and no target Deployment.
    ("get", "", "persistentvolumeclaims", ""): "pvc:// URIs: read only without the watch",
    ("get", "apps", "deployments", ""): "spec.target: promotion, temporary fix",
    ("patch", "apps", "deployments", ""): "spec.target: promotion, temporary fix",
    # The scenario runs one pod per Job: job.workers > 1 (tests/e2e/test_distributed_runs.py)
    # creates, or after a crash reads and adopts, the headless Service of a gang.
    ("create", "", "services", ""): "job.workers > 1: the gang's headless Service",
    ("get", "", "services", ""): "job.workers > 1: the gang's headless Service",
}
Access = tuple[str, str, str, str]  # verb, API group, resource, subresource


def granted_to_operator(install: Install) -> set[Access]:
    found: set[Access] = set()
    for manifest in install.manifests:
        if manifest["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in manifest.get("rules") or []:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    name, _, sub = resource.partition("/")
                    found |= {(verb, group, name, sub) for verb in rule["verbs"]}
    return found


def used_by_operator(cluster: Cluster, install: Install) -> dict[Access, set[int]]:
    """What the operator's ServiceAccount asked the apiserver, from its audit log, with the
    status codes of the answers."""
    account = f"system:serviceaccount:{install.system}:{install.fullname}"
    used: dict[Access, set[int]] = {}
    for line in cluster.state.audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef")
        # A watch is long-running: it is logged when it starts (ResponseStarted) and again
        # only when it ends; everything else once, complete.
        if event["user"]["username"] != account or event["stage"] not in (
            "ResponseStarted",
            "ResponseComplete",
        ):
            continue
        if not ref or "resource" not in ref:
            continue  # discovery and other non-resource URLs
        access = (
            event["verb"],
            ref.get("apiGroup", ""),
            ref["resource"],
            ref.get("subresource", ""),
        )
        used.setdefault(access, set()).add(int(event.get("responseStatus", {}).get("code", 0)))
    return used


def test_the_operator_used_every_grant_and_was_denied_nothing(
    devcluster: Cluster, running: Install
) -> None:
    """Least privilege, measured: the apiserver's audit log of this module's scenario (a
    run, the policy refusals) against the chart's RBAC rules. Runs last in the module."""
    install = running
    granted = granted_to_operator(install)
    used = used_by_operator(devcluster, install)
    print("used:", *sorted(f"{a} -> {sorted(c)}" for a, c in used.items()), sep="\n  ")
    denied = sorted(a for a, codes in used.items() if 403 in codes)
    assert denied == []
    assert sorted(set(used) - granted) == []
    assert set(NOT_EXERCISED_HERE) <= granted
    assert sorted(granted - set(used) - set(NOT_EXERCISED_HERE)) == []
