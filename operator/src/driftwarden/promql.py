"""Serving latency from the user's own Prometheus (spec.monitoring.prometheus).

A small typed client for the Prometheus HTTP API's instant query (``/api/v1/query``) and
the one function the operator calls, ``serving_latency``. The query in the spec takes one
of two shapes (docs/troubleshooting.md and docs/metrics.md show examples):

- with the placeholder ``{{quantile}}``: a template, run three times with 0.5, 0.95 and
  0.99 in its place, giving p50, p95 and p99, e.g.::

      histogram_quantile({{quantile}}, sum by (le) (rate(
        http_request_duration_seconds_bucket{namespace="prod", app="fraud"}[5m])))

- without it: one expression whose result is the p95 (the quantity the SLO is about);
  p50 and p99 stay unknown.

Each run must give exactly one sample (a scalar, or an instant vector of one series) in
**seconds**. Everything that stops that - the server cannot be reached, refuses the
credentials, refuses or fails the query, or has no sample - raises ``PrometheusError``
with a CamelCase ``reason`` for a condition and a short message in words. It never
raises anything else for a bad answer, so a bad query is a condition, never a crash.

Credentials: a bearer token read from a file at every query (projected tokens rotate),
never logged and never sent on a redirect (redirects are refused: urllib would forward
the Authorization header to whatever host a redirect names, and turn a POST into a GET).

Bounded, whatever the server does (the URL is the user's; the operator's worker threads
serve every tenant):
- each query has an overall deadline (``timeout_seconds``): a watchdog shuts its socket
  down when it passes, so a server that drips a byte every few seconds - into the headers
  or the body - frees the thread at the deadline, not when it is done;
- at most ``MAX_QUERIES_PER_TENANT`` queries run at once per tenant (namespace); one more
  is refused at once (PrometheusBusy) rather than queued on a thread;
- nothing of a response body reaches a message (status, events): a message says what
  failed - the HTTP status, content type and size, Prometheus' errorType - never the
  server's text, which could be anything the URL points at.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

_Conn = TypeVar("_Conn", bound=http.client.HTTPConnection)

QUANTILE_PLACEHOLDER: Final = "{{quantile}}"
# Spaces inside the braces are accepted too: "{{ quantile }}".
_PLACEHOLDER_RE: Final = re.compile(r"\{\{\s*quantile\s*\}\}")
LatencyKey = Literal["p50", "p95", "p99"]
QUANTILES: Final[dict[LatencyKey, str]] = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}

DEFAULT_TIMEOUT_SECONDS: Final = 5.0
# An instant query for one sample answers in a few hundred bytes; a megabyte means the
# query returns far too many series, and the operator should not hold it in memory.
MAX_RESPONSE_BYTES: Final = 1 << 20
# Queries in flight per tenant (namespace): the operator's handler threads are shared.
MAX_QUERIES_PER_TENANT: Final = 2
# Prometheus' own error types (its API documentation); anything else is not repeated.
_ERROR_TYPES: Final = frozenset(
    {"bad_data", "timeout", "canceled", "execution", "internal", "unavailable", "not_found"}
)


class PrometheusReason(StrEnum):
    """Condition reasons, one per thing the user fixes."""

    UNREACHABLE = "PrometheusUnreachable"  # the URL, network, TLS, or not a Prometheus API
    UNAUTHORIZED = "PrometheusUnauthorized"  # the credentials (401/403, unreadable token)
    QUERY_FAILED = "PrometheusQueryFailed"  # the PromQL: refused, failed, wrong shape
    NO_DATA = "PrometheusNoData"  # no sample, or NaN (no requests in the window)
    BUSY = "PrometheusBusy"  # the tenant's queries already in flight: tried again next time


class PrometheusError(Exception):
    """A latency that could not be read: ``reason`` for a condition, ``message`` in words
    (never a credential)."""

    def __init__(self, reason: PrometheusReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ClientSettings:
    """How the operator talks to Prometheus: set once per installation, not per model."""

    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    verify_tls: bool = True
    # PEM bundle of the CA(s) that signed the server's certificate; None: the system's.
    ca_file: Path | None = None
    # A file holding a bearer token (e.g. a projected ServiceAccount token); read per query.
    bearer_token_file: Path | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout_seconds) and self.timeout_seconds > 0):
            raise ValueError(f"timeout must be > 0 s, got {self.timeout_seconds!r}")


@dataclass(frozen=True)
class Sample:
    labels: dict[str, str]
    timestamp: float
    value: float


@dataclass(frozen=True)
class QueryResult:
    """What one instant query returned: a scalar is one sample without labels."""

    result_type: str
    samples: list[Sample]
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServingLatency:
    """Latency quantiles in milliseconds; None where the query shape does not give them."""

    p50_ms: float | None
    p95_ms: float
    p99_ms: float | None

    def as_ms(self) -> dict[LatencyKey, float]:
        values: dict[LatencyKey, float | None] = {
            "p50": self.p50_ms,
            "p95": self.p95_ms,
            "p99": self.p99_ms,
        }
        return {key: value for key, value in values.items() if value is not None}


def redact_url(url: str) -> str:
    """The URL without user:password@ and without its query string, for messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port is not None else "")
    except ValueError:  # a bad port or bracket: show nothing that could be a secret
        return f"{url.split(':', 1)[0][:10]}://(not a valid URL)"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _check_url(url: str) -> None:
    bad = f"not a valid http(s) URL: {redact_url(url)}"
    if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
        raise PrometheusError(PrometheusReason.UNREACHABLE, bad)
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError:
        raise PrometheusError(PrometheusReason.UNREACHABLE, bad) from None
    if not parts.hostname or any(ord(c) < 32 for c in url):
        raise PrometheusError(PrometheusReason.UNREACHABLE, bad)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        raise PrometheusError(
            PrometheusReason.UNREACHABLE,
            f"{redact_url(req.full_url)} redirected ({code}) to {redact_url(newurl)}; "
            "set spec.monitoring.prometheus.url to the final address",
        )


def _what_came(status: int, content_type: str, body: bytes) -> str:
    """A response in words without its content: status, content type and size."""
    kind = content_type.split(";", 1)[0].strip()[:64] or "no content type"
    return f"HTTP {status}, {kind}, {len(body)} bytes"


class _Deadline:
    """Shuts down the sockets of one query when its overall deadline passes: a blocked
    read then returns at once, however slowly the server sends."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _watched(base: type[_Conn], deadline: _Deadline) -> type[_Conn]:
    """`base` whose socket the deadline watches from the moment it connects, so the TLS
    handshake, the headers and the body are all under it."""

    def create(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        sock = socket.create_connection(address, *args, **kwargs)
        deadline.watch(sock)
        return sock

    class Connection(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._create_connection = create

    return Connection


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self.deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_watched(http.client.HTTPConnection, self.deadline), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self.deadline = deadline
        self.context = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        connection = _watched(http.client.HTTPSConnection, self.deadline)
        return self.do_open(connection, req, context=self.context)


class _TenantLimiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}

    @contextmanager
    def slot(self, tenant: str) -> Iterator[None]:
        with self._lock:
            if self._in_flight.get(tenant, 0) >= self.limit:
                raise PrometheusError(
                    PrometheusReason.BUSY,
                    f"{self.limit} Prometheus queries of namespace {tenant or '(none)'} are "
                    "still running (a slow server); this one is tried again at the next "
                    "evaluation",
                )
            self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._in_flight[tenant] - 1
                if left:
                    self._in_flight[tenant] = left
                else:
                    del self._in_flight[tenant]


_limiter = _TenantLimiter(MAX_QUERIES_PER_TENANT)


def _sample(raw: Any, labels: Any) -> Sample:
    # The API sends [<unix time>, "<value>"]; the value is a string so NaN and Inf survive.
    if not (isinstance(raw, list) and len(raw) == 2):
        raise PrometheusError(PrometheusReason.QUERY_FAILED, "a sample is not [time, value]")
    try:
        timestamp, value = float(raw[0]), float(raw[1])
    except (TypeError, ValueError) as error:
        raise PrometheusError(
            PrometheusReason.QUERY_FAILED, "a sample has no valid time or value"
        ) from error
    if not isinstance(labels, dict):
        raise PrometheusError(PrometheusReason.QUERY_FAILED, "a series has no labels object")
    names = {str(k): str(v) for k, v in labels.items()}
    return Sample(labels=names, timestamp=timestamp, value=value)


class PrometheusClient:
    """Instant queries against one Prometheus-compatible API (Prometheus, Thanos, Mimir,
    VictoriaMetrics all serve ``/api/v1/query``)."""

    def __init__(self, base_url: str, settings: ClientSettings | None = None) -> None:
        _check_url(base_url)
        self.base_url = base_url.rstrip("/")
        self.settings = settings or ClientSettings()
        self._tls = self._tls_context() if self.base_url.startswith("https://") else None

    def _opener(self, deadline: _Deadline) -> urllib.request.OpenerDirector:
        handlers: list[urllib.request.BaseHandler] = [
            _RefuseRedirects(),
            _DeadlineHTTPHandler(deadline),
        ]
        if self._tls is not None:
            handlers.append(_DeadlineHTTPSHandler(deadline, self._tls))
        return urllib.request.build_opener(*handlers)

    @property
    def display_url(self) -> str:
        return redact_url(self.base_url)

    def _tls_context(self) -> ssl.SSLContext:
        ca = self.settings.ca_file
        try:
            context = ssl.create_default_context(cafile=str(ca) if ca else None)
        except (OSError, ssl.SSLError) as error:
            raise PrometheusError(
                PrometheusReason.UNREACHABLE, f"cannot load the CA file {ca}: {error}"
            ) from error
        if not self.settings.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _headers(self) -> dict[str, str]:
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "driftwarden",
        }
        token_file = self.settings.bearer_token_file
        if token_file is not None:
            try:
                token = token_file.read_text().strip()
            except OSError as error:
                raise PrometheusError(
                    PrometheusReason.UNAUTHORIZED,
                    f"cannot read the bearer token file {token_file}: {error.strerror}",
                ) from error
            if not token:
                raise PrometheusError(
                    PrometheusReason.UNAUTHORIZED, f"the bearer token file {token_file} is empty"
                )
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def query(self, promql: str) -> QueryResult:
        """One instant query at the server's current time. POST, so a long query is not
        cut by a URL length limit on the way."""
        timeout = self.settings.timeout_seconds
        form = {"query": promql, "timeout": f"{timeout:g}s"}
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked in __init__
            self.base_url + "/api/v1/query",
            data=urllib.parse.urlencode(form).encode(),
            headers=self._headers(),
            method="POST",
        )
        late = PrometheusError(
            PrometheusReason.UNREACHABLE,
            f"{self.display_url} did not answer within {timeout:g} s",
        )
        deadline = _Deadline(timeout)
        started = time.monotonic()
        try:
            with self._opener(deadline).open(request, timeout=timeout) as response:
                status = int(response.status)
                content_type = str(response.headers.get("Content-Type") or "")
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            status = error.code
            content_type = str(error.headers.get("Content-Type") or "")
            try:
                body = error.read(MAX_RESPONSE_BYTES + 1)
            except (OSError, http.client.HTTPException):
                body = b""
            finally:
                error.close()
        except urllib.error.URLError as error:
            if deadline.expired:
                raise late from error
            raise PrometheusError(
                PrometheusReason.UNREACHABLE, f"{self.display_url}: {_reason_text(error.reason)}"
            ) from error
        except TimeoutError as error:
            raise late from error
        except (OSError, ValueError, http.client.HTTPException) as error:
            # connection reset, bad status line, cut short by the deadline, ...
            if deadline.expired:
                raise late from error
            raise PrometheusError(
                PrometheusReason.UNREACHABLE,
                f"{self.display_url}: the connection failed ({type(error).__name__})",
            ) from error
        finally:
            deadline.cancel()
        if deadline.expired or time.monotonic() - started > timeout:
            raise late  # whatever arrived before the deadline cut it is not the answer
        if len(body) > MAX_RESPONSE_BYTES:
            raise PrometheusError(
                PrometheusReason.QUERY_FAILED,
                f"the answer is larger than {MAX_RESPONSE_BYTES} bytes: the query returns "
                "far too many series; aggregate it to one",
            )
        return self._parse(status, content_type, body)

    def _parse(self, status: int, content_type: str, body: bytes) -> QueryResult:
        if status in (401, 403):
            raise PrometheusError(
                PrometheusReason.UNAUTHORIZED,
                f"{self.display_url} refused the credentials (HTTP {status})",
            )
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or payload.get("status") not in ("success", "error"):
            # Not the Prometheus API: a proxy's error page, a wrong path, an HTML UI.
            raise PrometheusError(
                PrometheusReason.UNREACHABLE,
                f"{self.display_url} did not answer as a Prometheus API "
                f"({_what_came(status, content_type, body)})",
            )
        if payload["status"] == "error":
            kind = payload.get("errorType")
            kind = kind if kind in _ERROR_TYPES else "error"
            raise PrometheusError(
                PrometheusReason.QUERY_FAILED,
                f"Prometheus refused the query ({kind}, {_what_came(status, content_type, body)}"
                "); run it in Prometheus' own UI to see why",
            )
        data = payload.get("data")
        if not isinstance(data, dict):
            raise PrometheusError(PrometheusReason.QUERY_FAILED, "the answer has no data")
        result_type = str(data.get("resultType"))
        result = data.get("result")
        listed = payload.get("warnings")
        warnings = [str(w) for w in listed] if isinstance(listed, list) else []
        if result_type == "scalar":
            return QueryResult(result_type, [_sample(result, {})], warnings)
        if result_type == "vector":
            if not isinstance(result, list) or not all(isinstance(i, dict) for i in result):
                raise PrometheusError(
                    PrometheusReason.QUERY_FAILED, "the answer's vector is not a list of series"
                )
            samples = [_sample(item.get("value"), item.get("metric", {})) for item in result]
            return QueryResult(result_type, samples, warnings)
        raise PrometheusError(
            PrometheusReason.QUERY_FAILED,
            f"the query returned a {result_type}, not an instant vector or a scalar"
            + (
                ": drop the range selector [..] or wrap it in a function"
                if result_type == "matrix"
                else ""
            ),
        )

    def query_value(self, promql: str) -> float:
        """The one finite sample the query must return."""
        result = self.query(promql)
        if not result.samples:
            raise PrometheusError(
                PrometheusReason.NO_DATA,
                "the query returned no sample: no series matches its selectors (check the "
                "labels) or none was scraped in its window",
            )
        if len(result.samples) > 1:
            raise PrometheusError(
                PrometheusReason.QUERY_FAILED,
                f"the query returned {len(result.samples)} series; aggregate them to one, "
                "e.g. sum by (le) (...) inside histogram_quantile",
            )
        value = result.samples[0].value
        if math.isnan(value):
            raise PrometheusError(
                PrometheusReason.NO_DATA,
                "the query returned NaN: no requests in its window (histogram_quantile of "
                "a zero rate)",
            )
        if math.isinf(value) or value < 0:
            hint = ""
            if value > 0:
                hint = ": the quantile lies above the histogram's highest finite bucket"
            raise PrometheusError(
                PrometheusReason.QUERY_FAILED, f"the query returned {value!r}, not a latency{hint}"
            )
        return value


def _reason_text(reason: object) -> str:
    if isinstance(reason, PrometheusError):
        return reason.message
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {reason.verify_message}"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return type(reason).__name__


def latency_queries(query: str) -> dict[LatencyKey, str]:
    """The query for each quantile the spec's query shape gives."""
    if _PLACEHOLDER_RE.search(query) is None:
        return {"p95": query}
    return {key: _PLACEHOLDER_RE.sub(value, query) for key, value in QUANTILES.items()}


def serving_latency(
    url: str, query: str, settings: ClientSettings | None = None, *, tenant: str = ""
) -> ServingLatency:
    """spec.monitoring.prometheus {url, query} -> latency in milliseconds.

    `tenant` (the resource's namespace) shares MAX_QUERIES_PER_TENANT slots with the
    tenant's other queries. Raises PrometheusError (never another exception for a bad
    server or a bad query)."""
    client = PrometheusClient(url, settings)
    millis: dict[LatencyKey, float] = {}
    with _limiter.slot(tenant):
        for key, promql in latency_queries(query).items():
            millis[key] = round(client.query_value(promql) * 1000.0, 4)
    return ServingLatency(p50_ms=millis.get("p50"), p95_ms=millis["p95"], p99_ms=millis.get("p99"))
