"""A small JSON client for the Kubernetes API.

The agent works on raw API objects (dicts with the API's own camelCase names) instead of the
generated models: status patches, watches and the kubelet-like logic read and write the wire
format directly, and there is no model round trip that could drop fields.
Credentials come from a kubeconfig through the `kubernetes` package's loader.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

Obj = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): the caller must list again."""


def path_quote(segment: str) -> str:
    return quote(segment, safe="")


class Kube:
    """Synchronous, thread-safe access to one API server."""

    def __init__(self, kubeconfig: Path, *, pool_size: int = 32) -> None:
        configuration = k8s_client.Configuration()
        load: Any = k8s_config.load_kube_config  # untyped in the kubernetes package
        load(config_file=str(kubeconfig), client_configuration=configuration)
        self.host: str = configuration.host.rstrip("/")
        ssl_context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            ssl_context.load_cert_chain(configuration.cert_file, configuration.key_file)
        if not configuration.verify_ssl:
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        self._headers: dict[str, str] = {"User-Agent": "devcluster-node-agent"}
        token = configuration.api_key.get("authorization") or configuration.api_key.get(
            "BearerToken"
        )
        if token:
            self._headers["Authorization"] = (
                token if token.lower().startswith("bearer ") else f"Bearer {token}"
            )
        self._pool = urllib3.PoolManager(
            num_pools=4, maxsize=pool_size, block=False, ssl_context=ssl_context
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Obj:
        response = self._send(method, path, query, body, content_type, timeout, stream=False)
        data = response.data
        if not data:
            return {}
        decoded: Obj = json.loads(data)
        return decoded

    def get(self, path: str, **query: Any) -> Obj:
        return self.request("GET", path, query=query or None)

    def create(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body=body)

    def patch(self, path: str, body: Obj, content_type: str = MERGE_PATCH) -> Obj:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def put(self, path: str, body: Obj) -> Obj:
        return self.request("PUT", path, body=body)

    def delete(self, path: str, body: Obj | None = None) -> Obj:
        return self.request("DELETE", path, body=body)

    def watch(self, path: str, *, timeout_seconds: int, **query: Any) -> Iterator[Obj]:
        """Yield watch events ({type, object}) until the server ends the watch."""
        query = {**query, "watch": "true", "timeoutSeconds": str(timeout_seconds)}
        response = self._send(
            "GET", path, query, None, "application/json", timeout_seconds + 30, stream=True
        )
        try:
            buffer = b""
            for chunk in response.stream(64 * 1024, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if not line.strip():
                        continue
                    event: Obj = json.loads(line)
                    if event.get("type") == "ERROR":
                        status = event.get("object", {})
                        if status.get("code") == 410:
                            raise WatchExpiredError(
                                status.get("message", "resource version expired")
                            )
                        raise ApiError(
                            int(status.get("code", 500)),
                            str(status.get("reason", "")),
                            str(status.get("message", "")),
                        )
                    yield event
        finally:
            response.release_conn()

    def _send(
        self,
        method: str,
        path: str,
        query: dict[str, Any] | None,
        body: Any,
        content_type: str,
        timeout: float,
        *,
        stream: bool,
    ) -> urllib3.BaseHTTPResponse:
        url = self.host + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        headers = dict(self._headers)
        headers["Accept"] = "application/json"
        payload = None
        if body is not None:
            headers["Content-Type"] = content_type
            payload = json.dumps(body).encode()
        response = self._pool.request(
            method,
            url,
            body=payload,
            headers=headers,
            timeout=urllib3.Timeout(connect=10.0, read=timeout),
            preload_content=not stream,
            retries=False,
        )
        if not 200 <= response.status <= 299:
            raw = response.data if stream is False else response.read()
            reason, message = "", raw.decode(errors="replace")
            try:
                status_obj = json.loads(raw)
                reason = str(status_obj.get("reason", ""))
                message = str(status_obj.get("message", message))
            except ValueError:
                pass
            response.release_conn()
            raise ApiError(response.status, reason, message)
        return response
