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
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, Final, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from driftwarden.builders import names

Json = dict[str, Any]

REQUEST_TIMEOUT: Final = 30.0
# A watch: the apiserver ends it after WATCH_SECONDS; a stream silent for longer than
# WATCH_INACTIVITY (no event, no bookmark) is given up (a dead connection, kopf#1276).
WATCH_SECONDS: Final = 270
WATCH_INACTIVITY: Final = 70.0
CONNECT_TIMEOUT: Final = 10.0
# Accept header of a metadata-only read (PartialObjectMetadata): no data, no spec.
MERGE_PATCH: Final = "application/merge-patch+json"


PEERING_GROUP: Final = "kopf.dev"
PEERING_VERSION: Final = "v1"


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


class Rest:
    """Raw REST calls through the kubernetes client's ApiClient (auth, TLS, pooling): a
    method, a path, JSON in and out. Not the generated API classes: importing those (all
    their models) costs the operator ~90 MiB of memory for the few calls it makes."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._client = api_client

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> Json:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        params = self._client.param_serialize(
            method,
            path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(*params, _request_timeout=REQUEST_TIMEOUT)
            response.read()  # type: ignore[no-untyped-call]
        except ApiException as exc:
            raise _error(exc) from None
        if not 200 <= int(response.status) < 300:
            raise _error(ApiException(http_resp=response))
        data: Json = json.loads(cast(bytes, response.data))
        return data

    def stream(self, path: str, *, query: Mapping[str, Any]) -> Iterator[Json]:
        """A watch: one JSON document per line until the server ends it. A read that
        waits longer than WATCH_INACTIVITY, or a broken connection, raises ApiError."""
        params = self._client.param_serialize(
            "GET",
            path,
            query_params=[(k, v) for k, v in query.items() if v is not None],
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(
                *params, _request_timeout=(CONNECT_TIMEOUT, WATCH_INACTIVITY)
            )
        except ApiException as exc:
            raise _error(exc) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(0, f"watch: {exc}") from None
        raw = response.response
        try:
            if not 200 <= int(response.status) < 300:
                response.read()  # type: ignore[no-untyped-call]
                raise _error(ApiException(http_resp=response))
            pending = b""
            for chunk in raw.stream(amt=None):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield cast(Json, json.loads(line))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(0, f"watch: {exc}") from None
        finally:
            raw.close()  # never back into the pool half read
            raw.release_conn()


def _custom_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{namespace}/{names.PLURAL}"
    return path if name is None else f"{path}/{name}"


def _core_path(namespace: str, plural: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/{plural}"
    return path if name is None else f"{path}/{name}"


def _jobs_path(namespace: str, name: str | None = None) -> str:
    path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    return path if name is None else f"{path}/{name}"


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
        self._rest = Rest(api_client)
        self.instance = instance or socket.gethostname()
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, **kwargs: Any) -> Json:
        return self._rest.request(method, path, **kwargs)

    # -- ModelOptimization -----------------------------------------------------------

    def get_optimization(self, namespace: str, name: str) -> Json | None:
        try:
            return self._call("GET", _custom_path(namespace, name))
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
            "PATCH",
            _custom_path(namespace, name) + "/status",
            query={"fieldManager": names.FIELD_MANAGER},
            body=body,
            content_type=MERGE_PATCH,
        )

    # -- Jobs and their Pods ---------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> Json | None:
        try:
            return self._call("GET", _jobs_path(namespace, name))
        except NotFoundError:
            return None

    def list_jobs(self, namespace: str, label_selector: str) -> list[Json]:
        listing = self._call("GET", _jobs_path(namespace), query={"labelSelector": label_selector})
        items: list[Json] = listing.get("items", [])
        return items

    def create_job(self, namespace: str, body: Json) -> tuple[Json, bool]:
        """Create, or return the existing object of that name: (job, created)."""
        try:
            return self._call(
                "POST",
                _jobs_path(namespace),
                query={"fieldManager": names.FIELD_MANAGER},
                body=body,
            ), True
        except ConflictError:
            existing = self.get_job(namespace, body["metadata"]["name"])
            if existing is None:  # deleted in between: let the caller try again
                raise
            return existing, False

    def patch_job(self, namespace: str, name: str, patch: Json) -> Json:
        return self._call(
            "PATCH",
            _jobs_path(namespace, name),
            query={"fieldManager": names.FIELD_MANAGER},
            body=patch,
            content_type=MERGE_PATCH,
        )

    def list_job_pods(self, namespace: str, job_name: str, job_uid: str) -> list[Json]:
        """The Job's Pods (by the Job controller's label, checked against the owner uid so a
        re-created Job of the same name does not see its predecessor's Pods)."""
        listing = self._call(
            "GET",
            _core_path(namespace, "pods"),
            query={"labelSelector": f"batch.kubernetes.io/job-name={job_name}"},
        )
        return [
            pod
            for pod in listing.get("items", [])
            if any(ref.get("uid") == job_uid for ref in pod["metadata"].get("ownerReferences", []))
        ]

    # -- ConfigMaps and claims -------------------------------------------------------

    def _create_or_adopt(self, namespace: str, plural: str, body: Json) -> tuple[Json, bool]:
        """Create, or return the existing object of that name (409 = done): (object, created).
        One deleted in between is a Conflict: the caller's pass runs again."""
        try:
            return self._call(
                "POST",
                _core_path(namespace, plural),
                query={"fieldManager": names.FIELD_MANAGER},
                body=body,
            ), True
        except ConflictError:
            try:
                return self._call(
                    "GET", _core_path(namespace, plural, body["metadata"]["name"])
                ), False
            except NotFoundError:
                raise ConflictError(409, f"{plural[:-1]} deleted while being adopted") from None

    def create_configmap(self, namespace: str, body: Json) -> tuple[Json, bool]:
        return self._create_or_adopt(namespace, "configmaps", body)

    def create_service(self, namespace: str, body: Json) -> tuple[Json, bool]:
        """Create, or return the existing Service of that name: (service, created)."""
        return self._create_or_adopt(namespace, "services", body)

    def get_configmap(self, namespace: str, name: str) -> Json | None:
        try:
            return self._call("GET", _core_path(namespace, "configmaps", name))
        except NotFoundError:
            return None

    def get_pvc(self, namespace: str, name: str) -> Json | None:
        try:
            return self._call("GET", _core_path(namespace, "persistentvolumeclaims", name))
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
        self._call("POST", _core_path(metadata["namespace"], "events"), body=body)

    # -- kopf peering ------------------------------------------------------------------

    def announce_peer(
        self, namespace: str | None, peering: str, identity: str, record: Mapping[str, Any]
    ) -> bool:
        """Merge this replica's keep-alive record (kopf's format) into the status of the
        peering object, as kopf's own keep-alive does; False when the object is absent."""
        path = f"{_peerings_path(namespace)}/{peering}"
        try:
            self._call(
                "PATCH", path, body={"status": {identity: dict(record)}}, content_type=MERGE_PATCH
            )
        except NotFoundError:
            return False
        return True

    def list_peering(self, namespace: str | None, peering: str) -> tuple[Json | None, str]:
        """The peering object (None: absent) and the resourceVersion to watch from.
        NotFoundError: the peering CRD is not installed."""
        found = self._call(
            "GET",
            _peerings_path(namespace),
            query={"fieldSelector": f"metadata.name={peering}"},
        )
        items = found.get("items") or []
        return (items[0] if items else None), str(found["metadata"]["resourceVersion"])

    def watch_peering(
        self, namespace: str | None, peering: str, resource_version: str
    ) -> Iterator[Json]:
        """Watch events of the peering object from ``resource_version`` (with bookmarks)
        until the server ends the watch (WATCH_SECONDS)."""
        return self._rest.stream(
            _peerings_path(namespace),
            query={
                "watch": "true",
                "fieldSelector": f"metadata.name={peering}",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": WATCH_SECONDS,
            },
        )


def _peerings_path(namespace: str | None) -> str:
    base = f"/apis/{PEERING_GROUP}/{PEERING_VERSION}"
    if namespace is None:
        return f"{base}/clusterkopfpeerings"
    return f"{base}/namespaces/{namespace}/kopfpeerings"
