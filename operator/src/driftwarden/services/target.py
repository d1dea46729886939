"""API I/O on the target Deployment: read it, server-side apply our intent, JSON patches.

The closed loop (services.loop) writes the target only through this class, so what it
sends is exactly what the policies built: an apply configuration (field manager
``driftwarden``, ``force``) or a JSON patch guarded by a ``test`` of the resourceVersion.
Errors surface as driftwarden.k8s errors (NotFoundError, ConflictError, ApiError).
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from kubernetes import client

from driftwarden.k8s import ApiError, NotFoundError, Rest
from driftwarden.policy.deployment_apply import FIELD_MANAGER

Json = dict[str, Any]

APPLY_PATCH: Final = "application/apply-patch+yaml"
JSON_PATCH: Final = "application/json-patch+json"
# A JSON patch whose `test` of the resourceVersion fails answers 422 Invalid.
TEST_FAILED: Final = 422


class TargetApi(Protocol):
    def get_deployment(self, namespace: str, name: str) -> Json | None: ...

    def apply_deployment(self, body: Json) -> Json: ...

    def json_patch_deployment(self, namespace: str, name: str, patch: list[Json]) -> Json: ...


class KubeTargetApi:
    """TargetApi on a kubernetes ApiClient."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._rest = Rest(api_client)

    def _call(self, method: str, namespace: str, name: str, **kwargs: Any) -> Json:
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        return self._rest.request(method, path, **kwargs)

    def get_deployment(self, namespace: str, name: str) -> Json | None:
        try:
            return self._call("GET", namespace, name)
        except NotFoundError:
            return None

    def apply_deployment(self, body: Json) -> Json:
        meta = body["metadata"]
        return self._call(
            "PATCH",
            meta["namespace"],
            meta["name"],
            query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=body,
            content_type=APPLY_PATCH,
        )

    def json_patch_deployment(self, namespace: str, name: str, patch: list[Json]) -> Json:
        return self._call(
            "PATCH",
            namespace,
            name,
            query={"fieldManager": FIELD_MANAGER},
            body=patch,
            content_type=JSON_PATCH,
        )


def is_stale_write(error: ApiError) -> bool:
    """The guarded JSON patch lost a race (the object changed since it was read)."""
    return error.status == TEST_FAILED
