"""The Deployment apply configurations against a real kube-apiserver.

What the policy modules claim about server-side apply, checked on the real thing: our apply
owns only the fields we set; one intent carries promotion and fix together; the revert
restores the original strings exactly and removes what was absent; after the release we own
none of the restored fields, a later apply keeps them, and a client-side ``kubectl apply``
of a changed manifest goes through.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from devcluster.controlplane import Cluster
from driftwarden.policy.deployment_apply import (
    FIELD_MANAGER,
    DeploymentIntent,
    ResourceValues,
    TargetRef,
    build_apply,
)
from driftwarden.policy.ownership import detach_patch, release_patch, resource_paths
from driftwarden.policy.promotion import promote
from driftwarden.policy.temporary_fix import FixSettings, plan_fix, revert_values

pytestmark = pytest.mark.e2e


def manifest(namespace: str, cpu_limit: str = "500m") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "server", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "server"}},
            "template": {
                "metadata": {"labels": {"app": "server"}},
                "spec": {
                    "containers": [
                        {
                            "name": "sidecar",
                            "image": "busybox",
                            "resources": {"limits": {"cpu": "100m"}},
                        },
                        {
                            "name": "model",
                            "image": "model-server:1",
                            "env": [
                                {"name": "MODEL_URI", "value": "file:///models/v1"},
                                {"name": "LOG_LEVEL", "value": "info"},
                            ],
                            "resources": {
                                "requests": {"cpu": "250m", "memory": "256Mi"},
                                "limits": {"cpu": cpu_limit, "memory": "512Mi"},
                            },
                        },
                    ]
                },
            },
        },
    }


@pytest.fixture
def apps(devcluster: Cluster) -> Iterator[client.AppsV1Api]:
    api_client = config.new_client_from_config(config_file=str(devcluster.kubeconfig))
    with api_client:
        yield client.AppsV1Api(api_client)


def kubectl_apply(cluster: Cluster, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(body))


def ssa(apps: client.AppsV1Api, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    apps.patch_namespaced_deployment(
        meta["name"],
        meta["namespace"],
        body,
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type="application/apply-patch+yaml",
    )


def raw(apps: client.AppsV1Api, namespace: str) -> dict[str, Any]:
    response = apps.read_namespaced_deployment("server", namespace, _preload_content=False)
    return json.loads(response.data)


def container(body: dict[str, Any], name: str = "model") -> dict[str, Any]:
    (found,) = [c for c in body["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def owned_by_us(body: dict[str, Any]) -> str:
    entries = [
        m
        for m in body["metadata"].get("managedFields", [])
        if m["manager"] == FIELD_MANAGER and m["operation"] == "Apply"
    ]
    return json.dumps(entries[0]["fieldsV1"]) if entries else ""


def release(apps: client.AppsV1Api, namespace: str, paths: list[tuple[str, ...]]) -> None:
    """Release ownership, re-reading when the Deployment controller wrote in between (its
    status updates change the resourceVersion the patch tests)."""
    for _ in range(10):
        body = raw(apps, namespace)
        patch = release_patch(
            body["metadata"]["managedFields"], body["metadata"]["resourceVersion"], paths
        )
        assert patch is not None
        try:
            apps.patch_namespaced_deployment(
                "server",
                namespace,
                patch,
                field_manager=FIELD_MANAGER,
                _content_type="application/json-patch+json",
            )
            return
        except client.ApiException as error:
            if error.status != 422:
                raise
    raise AssertionError("the resourceVersion kept changing")


def test_fix_promotion_revert_and_release(
    devcluster: Cluster, namespace: str, apps: client.AppsV1Api
) -> None:
    kubectl_apply(devcluster, manifest(namespace))
    before = raw(apps, namespace)
    target = TargetRef(namespace=namespace, deployment="server", container="model")
    current = ResourceValues(**container(before)["resources"])

    # 1. The fix: raised CPU and memory, one GPU that was absent.
    plan = plan_fix(FixSettings(cpu_percent=200, memory_percent=150, extra_gpus=1), current)
    intent = DeploymentIntent(resources=plan.applied, fix_expires_at="2026-03-02T14:00:00Z")
    ssa(apps, build_apply(target, intent))
    fixed = raw(apps, namespace)
    assert container(fixed)["resources"] == {
        "requests": {"cpu": "500m", "memory": "384Mi"},
        "limits": {"cpu": "1", "memory": "768Mi", "nvidia.com/gpu": "1"},
    }
    assert container(fixed, "sidecar") == container(before, "sidecar")
    assert container(fixed)["env"] == container(before)["env"]

    # 2. A promotion while the fix is on: one apply with both; the fix survives.
    intent = promote(intent, "file:///artifacts/run-1", "run-1")
    ssa(apps, build_apply(target, intent))
    promoted = raw(apps, namespace)
    assert container(promoted)["resources"] == container(fixed)["resources"]
    assert container(promoted)["env"] == [
        {"name": "MODEL_URI", "value": "file:///artifacts/run-1"},
        {"name": "LOG_LEVEL", "value": "info"},
    ]
    assert promoted["metadata"]["annotations"]["driftwarden.io/promoted-run"] == "run-1"
    ours = owned_by_us(promoted)
    for foreign in ("f:image", "f:replicas", "LOG_LEVEL", "sidecar", "f:selector"):
        assert foreign not in ours

    # 3. The revert: original strings back, the GPU limit gone.
    reverted_intent = DeploymentIntent(
        model_uri=intent.model_uri,
        promoted_run=intent.promoted_run,
        resources=revert_values(plan.original, plan.applied),
    )
    ssa(apps, build_apply(target, reverted_intent))
    reverted = raw(apps, namespace)
    assert container(reverted)["resources"] == container(before)["resources"]
    assert "driftwarden.io/temporary-fix-expires" not in reverted["metadata"]["annotations"]
    assert "f:resources" in owned_by_us(reverted)  # still ours: the release is needed

    # 4. The release: same values, no longer ours.
    release(apps, namespace, resource_paths("model", plan.applied))
    released = raw(apps, namespace)
    assert container(released)["resources"] == container(before)["resources"]
    assert "f:resources" not in owned_by_us(released)
    assert "MODEL_URI" in owned_by_us(released)
    assert released["metadata"]["generation"] == reverted["metadata"]["generation"]

    # 5. Our next apply (the promotion alone) leaves the restored resources in place ...
    ssa(
        apps,
        build_apply(target, DeploymentIntent(model_uri=intent.model_uri, promoted_run="run-1")),
    )
    assert container(raw(apps, namespace))["resources"] == container(before)["resources"]

    # 6. ... and the owner's next kubectl apply of a changed manifest goes through.
    kubectl_apply(devcluster, manifest(namespace, cpu_limit="750m"))
    changed = raw(apps, namespace)
    assert container(changed)["resources"]["limits"]["cpu"] == "750m"
    # A client-side apply writes every field of its manifest, ours included: the manifest's
    # MODEL_URI wins. This is why docs/gitops.md has Argo CD strip the fields we own
    # (RespectIgnoreDifferences) or use promotion Manual with the URI committed to Git.
    assert container(changed)["env"][0]["value"] == "file:///models/v1"


def test_release_patch_with_a_stale_resource_version_is_refused(
    devcluster: Cluster, namespace: str, apps: client.AppsV1Api
) -> None:
    kubectl_apply(devcluster, manifest(namespace))
    target = TargetRef(namespace=namespace, deployment="server", container="model")
    fix = ResourceValues(limits={"cpu": "2"})
    ssa(apps, build_apply(target, DeploymentIntent(resources=fix)))
    body = raw(apps, namespace)
    kubectl_apply(devcluster, manifest(namespace, cpu_limit="600m"))  # someone writes meanwhile
    patch = release_patch(
        body["metadata"]["managedFields"],
        body["metadata"]["resourceVersion"],
        resource_paths("model", fix),
    )
    assert patch is not None
    with pytest.raises(client.ApiException) as refused:
        apps.patch_namespaced_deployment(
            "server", namespace, patch, _content_type="application/json-patch+json"
        )
    assert refused.value.status == 422


def test_detach_keeps_the_served_model_and_hands_it_back(
    devcluster: Cluster, namespace: str, apps: client.AppsV1Api
) -> None:
    kubectl_apply(devcluster, manifest(namespace))
    target = TargetRef(namespace=namespace, deployment="server", container="model")
    ssa(apps, build_apply(target, promote(DeploymentIntent(), "file:///artifacts/run-2", "run-2")))
    for _ in range(10):
        body = raw(apps, namespace)
        patch = detach_patch(
            body["metadata"]["managedFields"],
            body["metadata"]["resourceVersion"],
            body["metadata"].get("annotations", {}),
        )
        try:
            apps.patch_namespaced_deployment(
                "server", namespace, patch, _content_type="application/json-patch+json"
            )
            break
        except client.ApiException as error:
            if error.status != 422:
                raise
    detached = raw(apps, namespace)
    assert container(detached)["env"][0] == {
        "name": "MODEL_URI",
        "value": "file:///artifacts/run-2",
    }
    assert not any(k.startswith("driftwarden.io/") for k in detached["metadata"]["annotations"])
    assert FIELD_MANAGER not in {m["manager"] for m in detached["metadata"]["managedFields"]}
    # The owner's next server-side apply of Git's manifest takes the field without a conflict.
    devcluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=gitops",
        "-f",
        "-",
        input=yaml.safe_dump(manifest(namespace)),
    )
    assert container(raw(apps, namespace))["env"][0]["value"] == "file:///models/v1"
