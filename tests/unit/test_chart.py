"""The Helm chart: lint, render with default and non-default values, check what it renders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts/driftwarden"
VALUES = CHART / "tests"
RELEASE, NAMESPACE = "dw", "driftwarden-system"

Manifest = dict[str, Any]


@cache
def helm() -> str:
    """helm built by `devcluster build` (or $HELM, or one on PATH)."""
    candidates = [os.environ.get("HELM")]
    try:
        from devcluster.build import HELM, cache_dir

        candidates.append(str(cache_dir(HELM) / "helm"))
    except (ImportError, SystemExit, OSError, subprocess.CalledProcessError):
        pass  # no Go to compute the cache key: fall back to PATH
    candidates.append(shutil.which("helm"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    reason = "helm not found ($HELM, `devcluster build`'s cache, PATH)"
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must build it with `devcluster build`")
    pytest.skip(reason + "; build it with `.venv/bin/devcluster build`")


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=60, cwd=CHART)


def render(*value_files: str, sets: Iterable[str] = ()) -> list[Manifest]:
    args = ["template", RELEASE, ".", "--namespace", NAMESPACE]
    for name in value_files:
        args += ["-f", str(VALUES / name)]
    for assignment in sets:
        args += ["--set", assignment]
    result = run_helm(*args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def rules_of(manifests: list[Manifest]) -> list[tuple[str, Manifest, dict[str, Any]]]:
    return [
        (m["kind"], m, rule)
        for m in manifests
        if m["kind"] in ("Role", "ClusterRole")
        for rule in m["rules"]
    ]


def granted(manifests: list[Manifest], group: str, resource: str) -> set[str]:
    return {
        verb
        for _, _, rule in rules_of(manifests)
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


def restricted_violations(pod_spec: dict[str, Any]) -> list[str]:
    """What the restricted Pod Security Standard would refuse (its checks, by hand)."""
    problems = []
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(host):
            problems.append(host)
    allowed_volumes = {"configMap", "emptyDir", "projected", "secret", "downwardAPI"}
    allowed_volumes |= {"persistentVolumeClaim", "ephemeral", "csi"}
    for volume in pod_spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            problems.append(f"volume {volume['name']}: {kinds}")
    pod_sc = pod_spec.get("securityContext", {})
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        sc = container.get("securityContext", {})
        name = container["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation not false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: capabilities not dropped")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


def test_lint_default_and_non_default_values() -> None:
    for files in ([], ["values-namespaced.yaml"], ["values-monitoring.yaml"]):
        args = ["lint", "--strict", "."]
        for name in files:
            args += ["-f", str(VALUES / name)]
        result = run_helm(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_schema_refuses_a_typo_and_bad_values() -> None:
    result = run_helm("template", RELEASE, ".", "-f", str(VALUES / "values-typo.yaml"))
    assert result.returncode != 0
    assert "enabeld" in result.stderr
    for assignment, named in (
        ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
        ("metrics.port=70000", "port"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("operator.resourcse.limits.cpu=1", "resourcse"),
    ):
        result = run_helm("template", RELEASE, ".", "--set", assignment)
        assert result.returncode != 0, assignment
        assert named in result.stderr, result.stderr


def test_operator_deployment_defaults() -> None:
    manifests = render()
    deployment = one(manifests, "Deployment")
    spec = deployment["spec"]
    # Two replicas with kopf's peering: one works, one stands by; a rollout starts the new
    # Pod before the old one goes.
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    # The standby is spread to another node where there is one, and a drain evicts one
    # replica at a time.
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    )
    budget = one(manifests, "PodDisruptionBudget")["spec"]
    assert budget == {"maxUnavailable": 1, "selector": spec["selector"]}
    assert restricted_violations(pod) == []
    assert pod["securityContext"]["runAsUser"] == 65532
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsUser"] == 65532
    tmp = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/tmp"]
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[tmp]
    assert container["command"] == ["python", "-m", "driftwarden"]
    args = container["args"]
    assert "--liveness-endpoint=http://0.0.0.0:8080/healthz" in args
    assert "--all-namespaces" in args
    assert "--peering" in args
    assert "--peering-name=driftwarden" in args
    assert "--standalone" not in args
    assert "--metrics-port=9090" in args
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["image"] == "ghcr.io/driftwarden/operator:0.1.0"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DRIFTWARDEN_JOB_SERVICE_ACCOUNT"] == f"{RELEASE}-driftwarden-job"
    assert env["DRIFTWARDEN_JOB_IMAGE"] == "ghcr.io/driftwarden/optimizer-job:0.1.0"
    accounts = {sa["metadata"]["name"]: sa for sa in of_kind(manifests, "ServiceAccount")}
    assert pod["serviceAccountName"] == f"{RELEASE}-driftwarden"
    assert pod["serviceAccountName"] in accounts


def test_no_wildcards_and_no_more_than_needed_in_any_rbac() -> None:
    for files in ([], ["values-namespaced.yaml"], ["values-monitoring.yaml"]):
        manifests = render(*files)
        rules = rules_of(manifests)
        assert rules
        for kind, manifest, rule in rules:
            where = f"{kind} {manifest['metadata']['name']}"
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], f"{where}: wildcard in {field}"
            assert "nonResourceURLs" not in rule, where
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), where
        # No right on Secrets at all: a missing spec.storage.secretRef shows in the Job's
        # Pod status (CreateContainerConfigError), which the operator lists anyway.
        assert granted(manifests, "", "secrets") == set()
        assert not granted(manifests, "", "serviceaccounts")
        assert granted(manifests, "apps", "deployments") == {"get", "patch"}
        assert granted(manifests, "driftwarden.io", "modeloptimizations") == {
            "get",
            "list",
            "watch",
            "patch",
        }
        assert granted(manifests, "driftwarden.io", "modeloptimizations/status") == {"patch"}
        # What the code calls (driftwarden.k8s), measured against the audit log in
        # tests/e2e/test_chart_install.py; nothing it never calls.
        assert granted(manifests, "batch", "jobs") == {"create", "get", "list", "watch", "patch"}
        assert granted(manifests, "", "configmaps") == {"create", "get"}
        assert granted(manifests, "", "pods") == {"list"}
        assert granted(manifests, "", "pods/log") == set()
        assert granted(manifests, "", "events") == {"create"}
        assert granted(manifests, "events.k8s.io", "events") == set()
        assert granted(manifests, "", "persistentvolumeclaims") == {"get", "list", "watch"}
        # kopf's resource observer (all-namespaces mode only; a namespace list needs no
        # cluster-scoped right, measured by the audit log test).
        crds = granted(manifests, "apiextensions.k8s.io", "customresourcedefinitions")
        namespaced = "values-namespaced.yaml" in files
        assert crds == (set() if namespaced else {"get", "list", "watch"})


def peering_rules(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for _, _, rule in rules_of(manifests) if "kopf.dev" in rule["apiGroups"]]


def test_all_namespaces_peers_through_one_cluster_peering_object() -> None:
    manifests = render()
    assert of_kind(manifests, "Role") == []
    assert {m["roleRef"]["name"] for m in of_kind(manifests, "ClusterRoleBinding")} == {
        f"{RELEASE}-driftwarden-cluster",
        f"{RELEASE}-driftwarden-workloads",
    }
    (peering,) = of_kind(manifests, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "driftwarden"
    assert of_kind(manifests, "KopfPeering") == []
    # What kopf calls: list and watch the peering objects, patch its keep-alive into ours.
    assert peering_rules(manifests) == [
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
         "verbs": ["list", "watch"]},
        {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
         "resourceNames": ["driftwarden"], "verbs": ["patch"]},
    ]  # fmt: skip


def test_without_peering_one_replica_runs_standalone_with_no_peering_rights() -> None:
    manifests = render(sets=("peering.enabled=false", "operator.replicas=3"))
    spec = one(manifests, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert "--standalone" in args
    assert not any(a.startswith("--peering") for a in args)
    assert peering_rules(manifests) == []
    assert of_kind(manifests, "ClusterKopfPeering") == of_kind(manifests, "KopfPeering") == []
    assert of_kind(manifests, "PodDisruptionBudget") == []
    assert "affinity" not in spec["template"]["spec"]


def test_namespace_list_confines_rights_to_those_namespaces() -> None:
    manifests = render("values-namespaced.yaml")
    watched = {"ml-prod", "ml-staging"}
    roles = of_kind(manifests, "Role")
    assert {r["metadata"]["namespace"] for r in roles} == watched
    bindings = of_kind(manifests, "RoleBinding")
    assert {b["metadata"]["namespace"] for b in bindings} == watched
    for binding in bindings:
        (subject,) = binding["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": f"{RELEASE}-driftwarden",
            "namespace": NAMESPACE,
        }
    # Nothing cluster-wide at all.
    assert of_kind(manifests, "ClusterRole") == []
    assert of_kind(manifests, "ClusterRoleBinding") == []
    # Deployments: read and patched only when they are the named targets.
    for role in roles:
        deployment_rules = [r for r in role["rules"] if r["resources"] == ["deployments"]]
        assert deployment_rules == [
            {
                "apiGroups": ["apps"],
                "resources": ["deployments"],
                "resourceNames": ["churn-serving", "fraud-serving"],
                "verbs": ["get", "patch"],
            }
        ]
        assert [r for r in role["rules"] if r["resources"] == ["kopfpeerings"]] == [
            {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"],
             "verbs": ["list", "watch"]},
            {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"],
             "resourceNames": ["driftwarden"], "verbs": ["patch"]},
        ]  # fmt: skip
    peerings = of_kind(manifests, "KopfPeering")
    assert {(p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings} == {
        ("ml-prod", "driftwarden"),
        ("ml-staging", "driftwarden"),
    }
    args = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml-prod" in args
    assert "--namespace=ml-staging" in args
    assert "--all-namespaces" not in args
    assert "--peering-name=driftwarden" in args
    assert "--standalone" not in args


def test_job_service_accounts_have_no_token() -> None:
    manifests = render("values-namespaced.yaml")
    job_accounts = [
        sa
        for sa in of_kind(manifests, "ServiceAccount")
        if sa["metadata"]["name"] == f"{RELEASE}-driftwarden-job"
    ]
    assert {sa["metadata"]["namespace"] for sa in job_accounts} == {
        "ml-prod",
        "ml-staging",
        "ml-batch",
    }
    for account in job_accounts:
        assert account["automountServiceAccountToken"] is False
    # No role binds the Jobs' account.
    for binding in of_kind(manifests, "RoleBinding") + of_kind(manifests, "ClusterRoleBinding"):
        assert all(s["name"] != f"{RELEASE}-driftwarden-job" for s in binding["subjects"])
    # All-namespaces mode: one in the release namespace.
    (default_job_account,) = [
        sa
        for sa in of_kind(render(), "ServiceAccount")
        if sa["metadata"]["name"] == f"{RELEASE}-driftwarden-job"
    ]
    assert default_job_account["metadata"]["namespace"] == NAMESPACE
    assert default_job_account["automountServiceAccountToken"] is False


def test_monitoring_switches() -> None:
    off = render()
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert of_kind(off, kind) == []
    assert [c for c in of_kind(off, "ConfigMap") if "dashboard" in c["metadata"]["name"]] == []

    on = render("values-monitoring.yaml")
    service = one(on, "Service")
    monitor = one(on, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"] == "metrics"
    assert endpoint["honorLabels"] is True
    assert endpoint["interval"] == "15s"
    # The alerts look for job="driftwarden": the jobLabel must give exactly that.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "driftwarden"

    rule = one(on, "PrometheusRule")
    shipped = yaml.safe_load((CHART / "files/alerts.yaml").read_text())
    rebased = json.loads(
        json.dumps(shipped).replace(
            "docs/troubleshooting.md", "https://docs.example.com/driftwarden/troubleshooting.md"
        )
    )
    assert rule["spec"] == rebased
    assert rule["spec"] != shipped  # the runbook base really was applied

    (dashboard,) = [c for c in of_kind(on, "ConfigMap") if "dashboard" in c["metadata"]["name"]]
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["driftwarden.json"]) == json.loads(
        (CHART / "files/dashboard.json").read_text()
    )


def test_network_policy_admits_only_the_metrics_port() -> None:
    for files, peers in (
        ([], [{"namespaceSelector": {}}]),
        (
            ["values-monitoring.yaml"],
            [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    },
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                }
            ],
        ),
    ):
        manifests = render(*files)
        policy = one(manifests, "NetworkPolicy")
        pod_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        (ingress,) = policy["spec"]["ingress"]
        assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        assert ingress["from"] == peers
    assert of_kind(render(sets=["networkPolicy.enabled=false"]), "NetworkPolicy") == []


def test_notes_explain_scope_and_crd_upgrade() -> None:
    result = run_helm(
        "install",
        RELEASE,
        ".",
        "--dry-run=client",
        "--namespace",
        NAMESPACE,
        "-f",
        str(VALUES / "values-namespaced.yaml"),
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "ml-prod, ml-staging" in notes
    assert "kubectl apply --server-side -f" in notes


def test_chart_crd_is_identical_to_the_repository_crd() -> None:
    source = sorted((ROOT / "crds").glob("*.yaml"))
    copied = sorted((CHART / "crds").glob("*.yaml"))
    assert source, "crds/ holds no CRD"
    assert [p.name for p in copied] == [p.name for p in source]
    for original, copy in zip(source, copied, strict=True):
        assert copy.read_bytes() == original.read_bytes(), (
            f"{copy} differs from {original}: cp crds/*.yaml charts/driftwarden/crds/"
        )


@pytest.mark.parametrize("files", [[], ["values-namespaced.yaml"]])
def test_operator_accepts_the_rendered_command_line(files: list[str]) -> None:
    # The chart's args and env, read by the operator's own parser: a renamed flag fails here.
    from driftwarden.config import OperatorConfig

    container = one(render(*files), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][1:] == ["-m", "driftwarden"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    config = OperatorConfig.from_args(container["args"], env)
    assert config.metrics_port == 9090
    assert config.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    assert config.job_service_account == f"{RELEASE}-driftwarden-job"
    assert config.job_image == env["DRIFTWARDEN_JOB_IMAGE"]
    if files:
        assert config.namespaces == ("ml-prod", "ml-staging")
        assert config.peering_name == "driftwarden"
        assert config.verbose is True  # from operator.extraArgs
    else:
        assert config.clusterwide
    assert config.standalone is False  # --peering: peering required, never a silent fallback


def test_deployment_rights_can_be_confined_to_namespaces_in_all_namespaces_mode() -> None:
    manifests = render(sets=["rbac.deploymentNamespaces={serving-a,serving-b}"])
    (workloads,) = [
        m for m in of_kind(manifests, "ClusterRole") if m["metadata"]["name"].endswith("-workloads")
    ]
    assert not any("deployments" in rule["resources"] for rule in workloads["rules"])
    roles = {m["metadata"]["namespace"]: m for m in of_kind(manifests, "Role")}
    assert set(roles) == {"serving-a", "serving-b"}
    for role in roles.values():
        assert role["rules"] == [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]}
        ]
    bindings = {m["metadata"]["namespace"] for m in of_kind(manifests, "RoleBinding")}
    assert bindings == {"serving-a", "serving-b"}


def test_policy_values_reach_the_operator_and_the_admission_policy() -> None:
    from driftwarden.config import OperatorConfig

    manifests = render(
        sets=[
            "policy.jobImages={registry.example/ml/}",
            "policy.jobServiceAccounts={trainer}",
            "prometheus.url=http://prom.monitoring:9090",
        ]
    )
    container = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    policy = OperatorConfig.from_args(container["args"], env).admission_policy
    assert policy.job_images == ("ghcr.io/driftwarden/optimizer-job:0.1.0", "registry.example/ml/")
    assert policy.job_service_accounts == (f"{RELEASE}-driftwarden-job", "trainer")
    assert policy.model_env_patterns == ("*_URI", "*_PATH")
    assert policy.prometheus_urls == ("http://prom.monitoring:9090",)
    params = next(
        m for m in of_kind(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-policy")
    )["data"]
    assert params["jobImages"].split(",") == list(policy.job_images)
    assert params["jobServiceAccounts"].split(",") == list(policy.job_service_accounts)
    assert params["prometheusUrls"].split(",") == list(policy.prometheus_urls)
    assert params["modelEnvPattern"] == "^(.*_URI|.*_PATH)$"
    binding = one(manifests, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["paramRef"]["parameterNotFoundAction"] == "Deny"
    assert one(manifests, "ValidatingAdmissionPolicy")["spec"]["failurePolicy"] == "Fail"
    off = render(sets=["policy.admission.enabled=false"])
    assert of_kind(off, "ValidatingAdmissionPolicy") == []


def test_the_admission_policy_denies_what_the_operator_denies() -> None:
    from driftwarden.policy.admission import DENIED_ENV_NAMES, DENIED_ENV_PREFIXES

    params = next(
        m for m in of_kind(render(), "ConfigMap") if m["metadata"]["name"].endswith("-policy")
    )["data"]
    assert set(params["deniedEnvNames"].split(",")) == DENIED_ENV_NAMES
    assert tuple(params["deniedEnvPrefixes"].split(",")) == DENIED_ENV_PREFIXES


def test_images_by_digest() -> None:
    """checkov CKV_K8S_43: both images can be pinned by digest, which wins over the tag; the
    Job image so pinned is the one specs may name."""
    from driftwarden.config import OperatorConfig

    operator, job = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    manifests = render(
        sets=[f"image.digest={operator}", f"jobs.image.digest={job}", "image.tag=ignored"]
    )
    container = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/driftwarden/operator@{operator}"
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["DRIFTWARDEN_JOB_IMAGE"] == f"ghcr.io/driftwarden/optimizer-job@{job}"
    config = OperatorConfig.from_args(container["args"], env)
    assert config.admission_policy.job_images == (f"ghcr.io/driftwarden/optimizer-job@{job}",)
    result = run_helm("template", RELEASE, ".", "--set", "jobs.image.digest=latest")
    assert result.returncode != 0 and "digest" in result.stderr
