"""API I/O on the target Deployment: read it, server-side apply our intent, JSON patches.

The closed loop (services.loop) writes the target only through this class, so what it
sends is exactly what the policies built: an apply configuration (field manager
``driftwarden``, ``force``) or a JSON patch guarded by a ``test`` of the resourceVersion.
Errors surface as driftwarden.k8s errors (NotFoundError, ConflictError, ApiError).
"""

from __future__ import annotations

import json
from typing import Any, Final, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from driftwarden.k8s import REQUEST_TIMEOUT, ApiError, NotFoundError, _error
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
        self._apps = client.AppsV1Api(api_client)

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Json:
        try:
            response = method(
                *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs
            )
        except ApiException as exc:
            raise _error(exc) from None
        data: Json = json.loads(response.data)
        return data

    def get_deployment(self, namespace: str, name: str) -> Json | None:
        try:
            return self._call(self._apps.read_namespaced_deployment, name, namespace)
        except NotFoundError:
            return None

    def apply_deployment(self, body: Json) -> Json:
        meta = body["metadata"]
        return self._call(
            self._apps.patch_namespaced_deployment,
            meta["name"],
            meta["namespace"],
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_PATCH,
        )

    def json_patch_deployment(self, namespace: str, name: str, patch: list[Json]) -> Json:
        return self._call(
            self._apps.patch_namespaced_deployment,
            name,
            namespace,
            patch,
            field_manager=FIELD_MANAGER,
            _content_type=JSON_PATCH,
        )


def is_stale_write(error: ApiError) -> bool:
    """The guarded JSON patch lost a race (the object changed since it was read)."""
    return error.status == TEST_FAILED
