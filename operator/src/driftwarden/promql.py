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
"""

from __future__ import annotations

import json
import math
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

QUANTILE_PLACEHOLDER: Final = "{{quantile}}"
# Spaces inside the braces are accepted too: "{{ quantile }}".
_PLACEHOLDER_RE: Final = re.compile(r"\{\{\s*quantile\s*\}\}")
LatencyKey = Literal["p50", "p95", "p99"]
QUANTILES: Final[dict[LatencyKey, str]] = {"p50": "0.5", "p95": "0.95", "p99": "0.99"}

DEFAULT_TIMEOUT_SECONDS: Final = 5.0
# An instant query for one sample answers in a few hundred bytes; a megabyte means the
# query returns far too many series, and the operator should not hold it in memory.
MAX_RESPONSE_BYTES: Final = 1 << 20
_MAX_DETAIL: Final = 300  # characters of the server's own error text kept in a message


class PrometheusReason(StrEnum):
    """Condition reasons, one per thing the user fixes."""

    UNREACHABLE = "PrometheusUnreachable"  # the URL, network, TLS, or not a Prometheus API
    UNAUTHORIZED = "PrometheusUnauthorized"  # the credentials (401/403, unreadable token)
    QUERY_FAILED = "PrometheusQueryFailed"  # the PromQL: refused, failed, wrong shape
    NO_DATA = "PrometheusNoData"  # no sample, or NaN (no requests in the window)


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


def _detail(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _sample(raw: Any, labels: Any) -> Sample:
    # The API sends [<unix time>, "<value>"]; the value is a string so NaN and Inf survive.
    if not (isinstance(raw, list) and len(raw) == 2):
        raise PrometheusError(
            PrometheusReason.QUERY_FAILED, f"a sample is not [time, value]: {_detail(str(raw))}"
        )
    try:
        timestamp, value = float(raw[0]), float(raw[1])
    except (TypeError, ValueError) as error:
        raise PrometheusError(
            PrometheusReason.QUERY_FAILED,
            f"a sample has no valid time or value: {_detail(str(raw))}",
        ) from error
    if not isinstance(labels, dict):
        raise PrometheusError(
            PrometheusReason.QUERY_FAILED, f"a series has no labels object: {_detail(str(labels))}"
        )
    names = {str(k): str(v) for k, v in labels.items()}
    return Sample(labels=names, timestamp=timestamp, value=value)


class PrometheusClient:
    """Instant queries against one Prometheus-compatible API (Prometheus, Thanos, Mimir,
    VictoriaMetrics all serve ``/api/v1/query``)."""

    def __init__(self, base_url: str, settings: ClientSettings | None = None) -> None:
        _check_url(base_url)
        self.base_url = base_url.rstrip("/")
        self.settings = settings or ClientSettings()
        handlers: list[urllib.request.BaseHandler] = [_RefuseRedirects()]
        if self.base_url.startswith("https://"):
            handlers.append(urllib.request.HTTPSHandler(context=self._tls_context()))
        self._opener = urllib.request.build_opener(*handlers)

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
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status = int(response.status)
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            status = error.code
            try:
                body = error.read(MAX_RESPONSE_BYTES + 1)
            except OSError:
                body = b""
            finally:
                error.close()
        except urllib.error.URLError as error:
            raise PrometheusError(
                PrometheusReason.UNREACHABLE, f"{self.display_url}: {_reason_text(error.reason)}"
            ) from error
        except TimeoutError as error:
            raise PrometheusError(
                PrometheusReason.UNREACHABLE,
                f"{self.display_url} did not answer within {timeout:g} s",
            ) from error
        except (OSError, ValueError) as error:  # connection reset, bad status line, ...
            raise PrometheusError(
                PrometheusReason.UNREACHABLE, f"{self.display_url}: {_detail(str(error))}"
            ) from error
        if len(body) > MAX_RESPONSE_BYTES:
            raise PrometheusError(
                PrometheusReason.QUERY_FAILED,
                f"the answer is larger than {MAX_RESPONSE_BYTES} bytes: the query returns "
                "far too many series; aggregate it to one",
            )
        return self._parse(status, body)

    def _parse(self, status: int, body: bytes) -> QueryResult:
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
            text = body.decode("utf-8", errors="replace")
            raise PrometheusError(
                PrometheusReason.UNREACHABLE,
                f"{self.display_url} did not answer as a Prometheus API (HTTP {status}"
                + (f": {_detail(text)}" if text.strip() else "")
                + ")",
            )
        if payload["status"] == "error":
            kind = payload.get("errorType") or "error"
            raise PrometheusError(
                PrometheusReason.QUERY_FAILED,
                f"Prometheus refused the query ({kind}, HTTP {status}): "
                f"{_detail(str(payload.get('error') or ''))}",
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
                    PrometheusReason.QUERY_FAILED,
                    f"the answer's vector is not a list of series: {_detail(str(result))}",
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
            shown = ", ".join(_series(s.labels) for s in result.samples[:3])
            raise PrometheusError(
                PrometheusReason.QUERY_FAILED,
                f"the query returned {len(result.samples)} series ({shown}"
                f"{', ...' if len(result.samples) > 3 else ''}); aggregate them to one, "
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
    return _detail(str(reason))


def _series(labels: dict[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def latency_queries(query: str) -> dict[LatencyKey, str]:
    """The query for each quantile the spec's query shape gives."""
    if _PLACEHOLDER_RE.search(query) is None:
        return {"p95": query}
    return {key: _PLACEHOLDER_RE.sub(value, query) for key, value in QUANTILES.items()}


def serving_latency(url: str, query: str, settings: ClientSettings | None = None) -> ServingLatency:
    """spec.monitoring.prometheus {url, query} -> latency in milliseconds.

    Raises PrometheusError (never another exception for a bad server or a bad query)."""
    client = PrometheusClient(url, settings)
    millis: dict[LatencyKey, float] = {}
    for key, promql in latency_queries(query).items():
        millis[key] = round(client.query_value(promql) * 1000.0, 4)
    return ServingLatency(p50_ms=millis.get("p50"), p95_ms=millis["p95"], p99_ms=millis.get("p99"))
