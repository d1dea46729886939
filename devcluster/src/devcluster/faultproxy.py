"""A fault-injecting proxy in front of kube-apiserver, for chaos tests.

It serves TLS with a certificate from the devcluster's CA and asks for client
certificates. Each request is forwarded to the apiserver as the caller: a bearer token is
passed through unchanged; a client certificate is turned into impersonation headers
(user = its CN, groups = its O) on the proxy's own admin connection. Watches and other
long responses are streamed.

A seeded fraction of the requests that match the configured methods and path pattern is
answered with a fault instead:

- ``conflict``: 409 (a Kubernetes Status, reason Conflict), without forwarding; only on
  requests the apiserver itself can answer with 409 (``can_conflict``): a create
  (AlreadyExists), an update, a server-side apply without force, and a write that carries
  a precondition (``metadata.resourceVersion``, a JSON patch ``test`` of it, delete
  preconditions). A read, or a merge patch without a resourceVersion (the apiserver
  retries its own conflicts for those), that draws ``conflict`` is forwarded unharmed: a
  client may rightly treat such a 409 as a bug (kopf's API discovery exits the operator
  on one; a 409 on kopf's own annotation patch ends its handling of the object until
  the next watch event);
- ``throttle``: 429 with Retry-After, without forwarding;
- ``error``: 500 or 503;
- ``reset``: the connection is cut without an answer;
- ``stall``: no answer for ``stall_seconds`` (past the client's timeout), then a cut.

``error``, ``reset`` and ``stall`` happen either before forwarding or, with probability
``after_share``, after the apiserver has done the request: the change happened, the client
never learns it (the hardest case for idempotency).

A silent watch (kopf#1276: a stream that stops delivering without closing, as behind a
load balancer that dropped the flow): ``POST /silence`` with ``{"path_pattern": "..."}``
silences the watch streams open at that moment whose path matches: the proxy keeps the
client's connection open and sends it nothing more, ever (no events, no bookmarks, no end
of stream), until the client gives up. Watches opened later are not affected. Each watch
request is counted in the stats as ``watch <path>``.

Counts of what was injected are served,
with the configuration, on a plain-HTTP control port: ``GET /stats``, ``PUT /config``
(a JSON object with any of the fields of ``FaultConfig``; ``{"enabled": false}`` stops
the faults, so a test can let the system converge).

Run as ``python -m devcluster.faultproxy`` (``Cluster.start_fault_proxy`` or
``devcluster faultproxy`` start it as a devcluster component).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import socket
import ssl
import struct
import sys
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from multidict import CIMultiDict

FAULTS = ("conflict", "throttle", "error", "reset", "stall")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Hop-by-hop headers and those the proxy sets itself.
_DROP_REQUEST = {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "content-length"}
_IMPERSONATE = re.compile(r"^impersonate-", re.IGNORECASE)


@dataclass
class FaultConfig:
    """What to inject. Rates are per matching request, each in [0, 1], summed <= 1."""

    seed: int = 0
    enabled: bool = True
    conflict: float = 0.0
    throttle: float = 0.0
    error: float = 0.0
    reset: float = 0.0
    stall: float = 0.0
    after_share: float = 0.5
    stall_seconds: float = 40.0
    # Which requests may get a fault: HTTP methods ("WATCH" is a GET with watch=true) and
    # a regular expression searched in the path.
    methods: list[str] = field(default_factory=lambda: ["GET", *WRITE_METHODS])
    path_pattern: str = ""

    def update(self, changes: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        for name, value in changes.items():
            setattr(self, name, value)
        total = sum(getattr(self, f) for f in FAULTS)
        if any(not 0 <= getattr(self, f) <= 1 for f in FAULTS) or total > 1:
            raise ValueError(f"fault rates must lie in [0, 1] and sum to <= 1, got {total}")


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        upstream_ssl: ssl.SSLContext,
        token_ssl: ssl.SSLContext,
        config: FaultConfig,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.config = config
        self.random = random.Random(config.seed)  # noqa: S311 - seeded faults, not secrets
        self.stats: Counter[str] = Counter()
        self._upstream_ssl = upstream_ssl
        self._token_ssl = token_ssl
        self._sessions: dict[str, ClientSession] = {}
        self._watches: dict[int, tuple[str, asyncio.Event]] = {}  # open: path, silenced

    def silence(self, path_pattern: str) -> int:
        """Silence the open watch streams whose path matches; how many."""
        count = 0
        for path, silenced in self._watches.values():
            if re.search(path_pattern, path) and not silenced.is_set():
                silenced.set()
                count += 1
        self.stats["silenced"] += count
        return count

    def session(self, kind: str) -> ClientSession:
        if kind not in self._sessions:
            context = self._upstream_ssl if kind == "cert" else self._token_ssl
            self._sessions[kind] = ClientSession(
                connector=TCPConnector(ssl=context, limit=0),
                timeout=ClientTimeout(total=None, sock_connect=10),
                auto_decompress=False,
            )
        return self._sessions[kind]

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()

    def _choose(self, request: web.Request, body: bytes) -> str | None:
        """The fault for this request, or None. One random draw per matching request, so
        a seed gives the same sequence of decisions for the same sequence of requests."""
        config = self.config
        method = request.method
        if method == "GET" and request.query.get("watch") in ("true", "1"):
            method = "WATCH"
        if not config.enabled or method not in config.methods:
            return None
        if config.path_pattern and not re.search(config.path_pattern, request.path):
            return None
        draw = self.random.random()
        for fault in FAULTS:
            rate = float(getattr(config, fault))
            if draw < rate:
                if fault == "conflict" and not can_conflict(
                    method, request.query.get("force"), request.content_type, body
                ):
                    return None  # the apiserver would never answer this one with 409
                return fault
            draw -= rate
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.stats["requests"] += 1
        body = await request.read()
        fault = self._choose(request, body)
        after = (
            fault in ("error", "reset", "stall") and self.random.random() < self.config.after_share
        )
        if fault is not None:
            self.stats[f"{fault}{'-after' if after else ''}"] += 1
            self.stats["faults"] += 1
        if fault == "conflict":
            return _status(409, "Conflict", "the object has been modified (injected by faultproxy)")
        if fault == "throttle":
            response = _status(429, "TooManyRequests", "too many requests (injected by faultproxy)")
            response.headers["Retry-After"] = "1"
            return response
        if fault is not None and not after:
            return await self._fail(request, fault)
        headers, kind = self._upstream_headers(request)
        url = self.upstream + request.rel_url.path_qs
        async with self.session(kind).request(
            request.method,
            url,
            headers=headers,
            data=body or None,
            allow_redirects=False,
            # A body without a Content-Type (the Python client sends some) must reach the
            # apiserver so, not as the application/octet-stream aiohttp would add.
            skip_auto_headers=() if "Content-Type" in headers else ("Content-Type",),
        ) as upstream:
            if fault is not None:  # the apiserver did it; the client will not know
                await upstream.read()
                return await self._fail(request, fault)
            streamed = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _DROP_RESPONSE:
                    streamed.headers.add(name, value)
            await streamed.prepare(request)
            if request.method != "GET" or request.query.get("watch") not in ("true", "1"):
                async for chunk in upstream.content.iter_any():
                    await streamed.write(chunk)
                await streamed.write_eof()
                return streamed
            self.stats[f"watch {request.path}"] += 1
            silenced = asyncio.Event()
            self._watches[id(silenced)] = (request.path, silenced)
            try:
                async for chunk in upstream.content.iter_any():
                    if not silenced.is_set():
                        await streamed.write(chunk)
                if silenced.is_set():
                    await _until_closed(request)
                    raise asyncio.CancelledError
                await streamed.write_eof()
                return streamed
            finally:
                self._watches.pop(id(silenced), None)

    async def _fail(self, request: web.Request, fault: str) -> web.StreamResponse:
        if fault == "error":
            code = 500 if self.random.random() < 0.5 else 503
            reason = "InternalError" if code == 500 else "ServiceUnavailable"
            return _status(code, reason, "injected by faultproxy")
        if fault == "stall":
            await asyncio.sleep(self.config.stall_seconds)
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                # SO_LINGER 0: the close sends a RST, as a crashed peer would.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        raise asyncio.CancelledError  # aiohttp drops the handler; nothing is sent

    def _upstream_headers(self, request: web.Request) -> tuple[CIMultiDict[str], str]:
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in _DROP_REQUEST and not _IMPERSONATE.match(k)
        )
        if request.headers.get("Authorization"):
            return headers, "token"  # the caller's own credentials, unchanged
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        user, groups = _subject(peer or {})
        if not user:  # no certificate, no token: anonymous, as the apiserver would see it
            user, groups = "system:anonymous", ["system:unauthenticated"]
        headers["Impersonate-User"] = user
        for group in groups:
            headers.add("Impersonate-Group", group)
        return headers, "cert"

    def stats_document(self) -> dict[str, Any]:
        return {"counts": dict(self.stats), "config": asdict(self.config)}


def can_conflict(method: str, force: str | None, content_type: str, body: bytes) -> bool:
    """Whether kube-apiserver could answer this request with 409 Conflict."""
    if method in ("POST", "PUT"):
        return True  # AlreadyExists; an update's resourceVersion
    if method not in ("PATCH", "DELETE"):
        return False
    try:
        document = json.loads(body) if body else None
    except ValueError:  # an apply in YAML: only its own field conflicts
        document = None
    if content_type == "application/apply-patch+yaml" and force not in ("true", "1"):
        return True  # field conflicts with other managers
    if method == "DELETE":
        return isinstance(document, dict) and bool(document.get("preconditions"))
    if isinstance(document, list):  # a JSON patch: a test of the resourceVersion
        return any(
            isinstance(op, dict) and op.get("op") == "test"
            and op.get("path") == "/metadata/resourceVersion"
            for op in document
        )  # fmt: skip
    metadata = document.get("metadata") if isinstance(document, dict) else None
    return isinstance(metadata, dict) and bool(metadata.get("resourceVersion"))


async def _until_closed(request: web.Request) -> None:
    """Wait, sending nothing, until the client closes its connection."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(0.5)


def _subject(peercert: dict[str, Any]) -> tuple[str, list[str]]:
    user, groups = "", []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                user = value
            elif key == "organizationName":
                groups.append(value)
    return user, groups


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


def _contexts(pki: Path) -> tuple[ssl.SSLContext, ssl.SSLContext, ssl.SSLContext]:
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
    serving.load_cert_chain(str(pki / "faultproxy.crt"), str(pki / "faultproxy.key"))
    serving.verify_mode = ssl.CERT_OPTIONAL  # a bearer token needs no client certificate
    upstream = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    upstream.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    token = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    return serving, upstream, token


async def serve(args: argparse.Namespace) -> None:
    config = FaultConfig()
    config.update(json.loads(args.config))
    serving, upstream, token = _contexts(args.pki)
    proxy = FaultProxy(args.upstream, upstream, token, config)

    async def control_stats(_: web.Request) -> web.Response:
        return web.json_response(proxy.stats_document())

    async def control_config(request: web.Request) -> web.Response:
        try:
            proxy.config.update(await request.json())
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if "seed" in await request.json():
            proxy.random.seed(proxy.config.seed)
        return web.json_response(proxy.stats_document())

    async def control_silence(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"silenced": proxy.silence(str(body.get("path_pattern", "")))})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    control = web.Application()
    control.router.add_get("/stats", control_stats)
    control.router.add_put("/config", control_config)
    control.router.add_post("/silence", control_silence)
    runners = [web.AppRunner(app, handle_signals=False), web.AppRunner(control)]
    for runner in runners:
        await runner.setup()
    await web.TCPSite(runners[0], "127.0.0.1", args.port, ssl_context=serving).start()
    await web.TCPSite(runners[1], "127.0.0.1", args.control_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"faultproxy: https://127.0.0.1:{args.port} -> {args.upstream}", flush=True)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster.faultproxy", description=__doc__)
    parser.add_argument("--upstream", required=True, help="https://127.0.0.1:<apiserver port>")
    parser.add_argument("--pki", type=Path, required=True, help="the devcluster's pki directory")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--config", default="{}", help="FaultConfig fields as JSON")
    args = parser.parse_args(argv)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())


@dataclass(frozen=True)
class FaultProxyControl:
    """The running proxy as a test sees it: a kubeconfig that goes through it, and its
    control port (counts, configuration)."""

    kubeconfig: Path
    url: str
    control_port: int

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control_port}{path}", data=data, method=method
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            document: dict[str, Any] = json.load(response)
        return document

    def stats(self) -> dict[str, int]:
        counts: dict[str, int] = self._call("GET", "/stats")["counts"]
        return counts

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change the faults at run time, e.g. ``configure(enabled=False)``."""
        return self._call("PUT", "/config", changes)

    def silence_watches(self, path_pattern: str) -> int:
        """Silence the open watch streams whose path matches (kopf#1276); how many."""
        silenced: int = self._call("POST", "/silence", {"path_pattern": path_pattern})["silenced"]
        return silenced
