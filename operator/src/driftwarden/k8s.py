"""Thin, synchronous Kubernetes API I/O for the services (kubernetes client, JSON dicts).

Every call returns plain JSON dicts in the API's own camelCase (raw responses, not the
client's model classes), so builders, services and tests all speak one format. Two
errors matter to the callers and get their own types: NotFoundError and Conflict. The rest
(timeouts, 5xx, 403) propagate as ApiError, which the handlers turn into a retry.

Synchronous on purpose: kopf runs `def` handlers in its thread pool, so these never
block the event loop.
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from driftwarden.builders import names

Json = dict[str, Any]

REQUEST_TIMEOUT: Final = 30.0
# Accept header of a metadata-only read (PartialObjectMetadata): no data, no spec.
MERGE_PATCH: Final = "application/merge-patch+json"


class ApiError(Exception):
    """An API call failed for a reason other than NotFoundError or Conflict."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    """409: the object exists already (create), or it changed since it was read (patch)."""


def _error(exc: ApiException) -> ApiError:
    status = int(exc.status or 0)
    message = str(exc.reason or "")
    try:
        body = json.loads(exc.body or "{}")
        message = str(body.get("message") or message)
    except (ValueError, AttributeError):
        pass
    if status == 404:
        return NotFoundError(status, message)
    if status == 409:
        return ConflictError(status, message)
    return ApiError(status, message)


def _raw(response: Any) -> Json:
    data: Json = json.loads(response.data)
    return data


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """In-cluster credentials when running in a Pod, else the kubeconfig (KUBECONFIG)."""
    if kubeconfig is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            return client.ApiClient()
        except config.ConfigException:
            pass
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=kubeconfig, client_configuration=configuration
    )
    return client.ApiClient(configuration)


class Kube:
    """The API calls the services make, nothing more."""

    def __init__(self, api_client: client.ApiClient, *, instance: str | None = None) -> None:
        self._client = api_client
        self._core = client.CoreV1Api(api_client)
        self._batch = client.BatchV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self.instance = instance or socket.gethostname()
        self._lock = threading.Lock()

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Json:
        try:
            response = method(
                *args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs
            )
        except ApiException as exc:
            raise _error(exc) from None
        return _raw(response)

    # -- ModelOptimization -----------------------------------------------------------

    def get_optimization(self, namespace: str, name: str) -> Json | None:
        try:
            return self._call(
                self._custom.get_namespaced_custom_object,
                names.GROUP,
                names.VERSION,
                namespace,
                names.PLURAL,
                name,
            )
        except NotFoundError:
            return None

    def patch_optimization_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str
    ) -> Json:
        """Merge-patch the status subresource, only if the object is still at
        `resource_version` (else Conflict): status is computed from what was read, and a
        merge patch replaces lists (runs, conditions) whole."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status)}
        return self._call(
            self._custom.patch_namespaced_custom_object_status,
            names.GROUP,
            names.VERSION,
            namespace,
            names.PLURAL,
            name,
            body,
            field_manager=names.FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )

    # -- Jobs and their Pods ---------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> Json | None:
        try:
            return self._call(self._batch.read_namespaced_job, name, namespace)
        except NotFoundError:
            return None

    def list_jobs(self, namespace: str, label_selector: str) -> list[Json]:
        listing = self._call(
            self._batch.list_namespaced_job, namespace, label_selector=label_selector
        )
        items: list[Json] = listing.get("items", [])
        return items

    def create_job(self, namespace: str, body: Json) -> tuple[Json, bool]:
        """Create, or return the existing object of that name: (job, created)."""
        try:
            return self._call(
                self._batch.create_namespaced_job,
                namespace,
                body,
                field_manager=names.FIELD_MANAGER,
            ), True
        except ConflictError:
            existing = self.get_job(namespace, body["metadata"]["name"])
            if existing is None:  # deleted in between: let the caller try again
                raise
            return existing, False

    def patch_job(self, namespace: str, name: str, patch: Json) -> Json:
        return self._call(
            self._batch.patch_namespaced_job,
            name,
            namespace,
            patch,
            field_manager=names.FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )

    def list_job_pods(self, namespace: str, job_name: str, job_uid: str) -> list[Json]:
        """The Job's Pods (by the Job controller's label, checked against the owner uid so a
        re-created Job of the same name does not see its predecessor's Pods)."""
        listing = self._call(
            self._core.list_namespaced_pod,
            namespace,
            label_selector=f"batch.kubernetes.io/job-name={job_name}",
        )
        return [
            pod
            for pod in listing.get("items", [])
            if any(ref.get("uid") == job_uid for ref in pod["metadata"].get("ownerReferences", []))
        ]

    # -- ConfigMaps and claims -------------------------------------------------------

    def create_configmap(self, namespace: str, body: Json) -> tuple[Json, bool]:
        try:
            return self._call(
                self._core.create_namespaced_config_map,
                namespace,
                body,
                field_manager=names.FIELD_MANAGER,
            ), True
        except ConflictError:
            try:
                return self._call(
                    self._core.read_namespaced_config_map, body["metadata"]["name"], namespace
                ), False
            except NotFoundError:
                raise ConflictError(409, "configmap deleted while being adopted") from None

    def create_service(self, namespace: str, body: Json) -> tuple[Json, bool]:
        """Create, or return the existing Service of that name: (service, created)."""
        try:
            return self._call(
                self._core.create_namespaced_service,
                namespace,
                body,
                field_manager=names.FIELD_MANAGER,
            ), True
        except ConflictError:
            try:
                return self._call(
                    self._core.read_namespaced_service, body["metadata"]["name"], namespace
                ), False
            except NotFoundError:
                raise ConflictError(409, "service deleted while being adopted") from None

    def get_configmap(self, namespace: str, name: str) -> Json | None:
        try:
            return self._call(self._core.read_namespaced_config_map, name, namespace)
        except NotFoundError:
            return None

    def get_pvc(self, namespace: str, name: str) -> Json | None:
        try:
            return self._call(self._core.read_namespaced_persistent_volume_claim, name, namespace)
        except NotFoundError:
            return None

    # -- Events ----------------------------------------------------------------------

    def post_event(
        self, involved: Mapping[str, Any], *, type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about `involved` (a full object), as `kubectl describe` lists it."""
        metadata = involved["metadata"]
        now = now_rfc3339()
        # Unique, not deterministic: events are a log, not state.
        name = f"{metadata['name'][:200]}.{uuid.uuid4().hex[:16]}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
                "resourceVersion": metadata.get("resourceVersion", ""),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": names.FIELD_MANAGER},
            "reportingComponent": names.FIELD_MANAGER,
            "reportingInstance": self.instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call(self._core.create_namespaced_event, metadata["namespace"], body)
