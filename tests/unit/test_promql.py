"""driftwarden.promql against a tiny local HTTP server that answers like the Prometheus API.

The server is the client's own test double: canned /api/v1/query answers, recording what
the client sent. tests/e2e/test_prometheus_latency.py runs the same client against a real
Prometheus.
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devcluster.pki import CertificateAuthority
from driftwarden.promql import (
    MAX_RESPONSE_BYTES,
    ClientSettings,
    PrometheusClient,
    PrometheusError,
    PrometheusReason,
    latency_queries,
    redact_url,
    serving_latency,
)

pytestmark = pytest.mark.unit

TOKEN = "s3cr3t-token-value"


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]


class FakePrometheus:
    """Answers every request with `answer(query)`; records what arrived."""

    def __init__(self, answer: Callable[[str], Reply], tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.received: list[Received] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                parsed = urllib.parse.urlsplit(self.path)
                form = dict(urllib.parse.parse_qsl(raw or parsed.query))
                fake.received.append(
                    Received(self.command, parsed.path, form, dict(self.headers.items()))
                )
                reply = fake.answer(form.get("query", ""))
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            do_GET = _handle  # noqa: N815 - http.server's naming
            do_POST = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ok(result_type: str, result: Any, **extra: Any) -> Reply:
    payload = {"status": "success", "data": {"resultType": result_type, "result": result}}
    return Reply(body=json.dumps(payload | extra).encode())


def vector(*values: str, labels: dict[str, str] | None = None) -> Reply:
    return ok(
        "vector",
        [
            {
                "metric": {**(labels or {}), "i": str(i)} if len(values) > 1 else (labels or {}),
                "value": [1700000000.123, v],
            }
            for i, v in enumerate(values)
        ],
    )


@pytest.fixture
def serve() -> Iterator[Callable[..., FakePrometheus]]:
    started: list[FakePrometheus] = []

    def start(answer: Callable[[str], Reply], tls: ssl.SSLContext | None = None) -> FakePrometheus:
        fake = FakePrometheus(answer, tls)
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def error_of(call: Callable[[], object]) -> PrometheusError:
    with pytest.raises(PrometheusError) as caught:
        call()
    return caught.value


# -- the query shapes ----------------------------------------------------------------------


def test_template_runs_once_per_quantile(serve: Callable[..., FakePrometheus]) -> None:
    seconds = {"0.5": "0.012", "0.95": "0.0875", "0.99": "0.25"}

    def answer(query: str) -> Reply:
        quantile = query.split("(")[1].split(",")[0]
        return vector(seconds[quantile])

    fake = serve(answer)
    query = 'histogram_quantile({{quantile}}, sum by (le) (rate(x_bucket{app="a"}[5m])))'
    latency = serving_latency(fake.url, query)
    assert (latency.p50_ms, latency.p95_ms, latency.p99_ms) == (12.0, 87.5, 250.0)
    assert latency.as_ms() == {"p50": 12.0, "p95": 87.5, "p99": 250.0}
    sent = [r.form["query"] for r in fake.received]
    assert sent == [query.replace("{{quantile}}", q) for q in ("0.5", "0.95", "0.99")]
    assert {(r.method, r.path) for r in fake.received} == {("POST", "/api/v1/query")}
    assert {r.form["timeout"] for r in fake.received} == {"5s"}


def test_plain_query_is_the_p95(serve: Callable[..., FakePrometheus]) -> None:
    fake = serve(lambda _q: ok("scalar", [1700000000, "0.042"]))
    latency = serving_latency(fake.url + "/", "some_p95_seconds")
    assert (latency.p50_ms, latency.p95_ms, latency.p99_ms) == (None, 42.0, None)
    assert latency.as_ms() == {"p95": 42.0}
    assert [r.form["query"] for r in fake.received] == ["some_p95_seconds"]


def test_placeholder_may_have_spaces_and_repeat() -> None:
    queries = latency_queries("a{{ quantile }} + b{{quantile}}")
    assert queries == {"p50": "a0.5 + b0.5", "p95": "a0.95 + b0.95", "p99": "a0.99 + b0.99"}
    assert latency_queries("no placeholder {{other}}") == {"p95": "no placeholder {{other}}"}


def test_route_prefix_is_kept(serve: Callable[..., FakePrometheus]) -> None:
    fake = serve(lambda _q: vector("1"))
    assert PrometheusClient(fake.url + "/prometheus/").query_value("up") == 1.0
    assert fake.received[0].path == "/prometheus/api/v1/query"


def test_malformed_warnings_are_ignored(serve: Callable[..., FakePrometheus]) -> None:
    fake = serve(lambda _q: ok("vector", [{"metric": {}, "value": [1, "2"]}], warnings=5))
    result = PrometheusClient(fake.url).query("x")
    assert (result.warnings, [s.value for s in result.samples]) == ([], [2.0])


def test_query_result_keeps_labels_and_warnings(serve: Callable[..., FakePrometheus]) -> None:
    answer = ok(
        "vector",
        [{"metric": {"job": "serving"}, "value": [1700000000.5, "3"]}],
        warnings=["partial data"],
    )
    fake = serve(lambda _q: answer)
    result = PrometheusClient(fake.url).query("x")
    assert result.result_type == "vector"
    assert result.warnings == ["partial data"]
    assert [(s.labels, s.timestamp, s.value) for s in result.samples] == [
        ({"job": "serving"}, 1700000000.5, 3.0)
    ]


# -- what goes wrong becomes a reason --------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "reason", "words"),
    [
        (vector(), PrometheusReason.NO_DATA, "no sample"),
        (vector("NaN"), PrometheusReason.NO_DATA, "NaN"),
        (vector("+Inf"), PrometheusReason.QUERY_FAILED, "highest finite bucket"),
        (vector("-1"), PrometheusReason.QUERY_FAILED, "not a latency"),
        (vector("1", "2", "3", "4"), PrometheusReason.QUERY_FAILED, "4 series"),
        (
            ok("matrix", [{"metric": {}, "values": [[1, "1"]]}]),
            PrometheusReason.QUERY_FAILED,
            "drop the range selector",
        ),
        (ok("string", [1, "x"]), PrometheusReason.QUERY_FAILED, "returned a string"),
        (ok("vector", [{"metric": {}, "value": "bad"}]), PrometheusReason.QUERY_FAILED, "sample"),
        (ok("vector", [{"metric": {}, "value": [1]}]), PrometheusReason.QUERY_FAILED, "sample"),
        (
            ok("vector", [{"metric": {}, "value": ["t", "1"]}]),
            PrometheusReason.QUERY_FAILED,
            "time",
        ),
        (
            ok("vector", [{"metric": [1], "value": [1, "1"]}]),
            PrometheusReason.QUERY_FAILED,
            "labels",
        ),
        (ok("vector", ["x"]), PrometheusReason.QUERY_FAILED, "not a list of series"),
        (ok("scalar", {"1": 1}), PrometheusReason.QUERY_FAILED, "sample"),
        (ok("vector", None), PrometheusReason.QUERY_FAILED, "not a list of series"),
        (ok("scalar", None), PrometheusReason.QUERY_FAILED, "sample"),
        (Reply(body=b'{"status": "success"}'), PrometheusReason.QUERY_FAILED, "no data"),
        (
            Reply(
                status=400,
                body=b'{"status":"error","errorType":"bad_data","error":"parse error at char 5"}',
            ),
            PrometheusReason.QUERY_FAILED,
            "(bad_data, HTTP 400, application/json, 73 bytes)",
        ),
        (
            Reply(status=422, body=b'{"status":"error","errorType":"execution","error":"boom"}'),
            PrometheusReason.QUERY_FAILED,
            "execution",
        ),
        (Reply(status=401, body=b"Unauthorized"), PrometheusReason.UNAUTHORIZED, "HTTP 401"),
        (Reply(status=403, body=b"{}"), PrometheusReason.UNAUTHORIZED, "HTTP 403"),
        (
            Reply(status=404, body=b"404 page not found", headers={}),
            PrometheusReason.UNREACHABLE,
            "not answer as a Prometheus API (HTTP 404, no content type, 18 bytes)",
        ),
        (
            Reply(status=502, body=b"<html>Bad Gateway</html>", headers={}),
            PrometheusReason.UNREACHABLE,
            "HTTP 502",
        ),
        (Reply(body=b"<html>Prometheus UI</html>"), PrometheusReason.UNREACHABLE, "HTTP 200"),
        (
            Reply(body=b"x" * (MAX_RESPONSE_BYTES + 10)),
            PrometheusReason.QUERY_FAILED,
            "too many series",
        ),
    ],
)
def test_bad_answers_raise_a_reason(
    serve: Callable[..., FakePrometheus], reply: Reply, reason: PrometheusReason, words: str
) -> None:
    fake = serve(lambda _q: reply)
    error = error_of(lambda: serving_latency(fake.url, "q"))
    assert error.reason == reason
    assert words in error.message
    assert str(error).startswith(str(reason))


def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    error = error_of(lambda: serving_latency(url, "q"))
    assert error.reason == PrometheusReason.UNREACHABLE
    assert "refused" in error.message.lower()


def test_unresolvable_host() -> None:
    error = error_of(lambda: serving_latency("http://prometheus.invalid:9090", "q"))
    assert error.reason == PrometheusReason.UNREACHABLE


def test_slow_server_times_out(serve: Callable[..., FakePrometheus]) -> None:
    fake = serve(lambda _q: Reply(body=b"{}", delay=2.0))
    started = time.monotonic()
    error = error_of(lambda: serving_latency(fake.url, "q", ClientSettings(timeout_seconds=0.3)))
    assert time.monotonic() - started < 1.9
    assert error.reason == PrometheusReason.UNREACHABLE
    assert "0.3 s" in error.message or "timed out" in error.message
    assert fake.received[0].form["timeout"] == "0.3s"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x:1",
        "http://",
        "http://[::1",
        "http://host:notaport/",
        "https://127.0.0.1:99999",
        "http://a\x00b",
        "http:// spaces",
    ],
)
def test_not_a_usable_url(url: str) -> None:
    error = error_of(lambda: serving_latency(url, "q"))
    assert error.reason == PrometheusReason.UNREACHABLE
    assert "not a valid" in error.message


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        ClientSettings(timeout_seconds=0)


# -- credentials ------------------------------------------------------------------------------


def test_bearer_token_read_per_query(serve: Callable[..., FakePrometheus], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    fake = serve(lambda _q: vector("0.1"))
    settings = ClientSettings(bearer_token_file=token_file)
    client = PrometheusClient(fake.url, settings)
    client.query_value("q")
    token_file.write_text("rotated")
    client.query_value("q")
    assert [r.headers.get("Authorization") for r in fake.received] == [
        f"Bearer {TOKEN}",
        "Bearer rotated",
    ]


def test_no_authorization_header_without_token(serve: Callable[..., FakePrometheus]) -> None:
    fake = serve(lambda _q: vector("0.1"))
    PrometheusClient(fake.url).query_value("q")
    assert "Authorization" not in fake.received[0].headers


def test_refused_token_is_not_in_the_message(
    serve: Callable[..., FakePrometheus], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    fake = serve(lambda _q: Reply(status=401, body=b"bad token"))
    error = error_of(
        lambda: serving_latency(fake.url, "q", ClientSettings(bearer_token_file=token_file))
    )
    assert error.reason == PrometheusReason.UNAUTHORIZED
    assert TOKEN not in str(error)


@pytest.mark.parametrize("content", [None, "  \n"])
def test_unusable_token_file(tmp_path: Path, content: str | None) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    settings = ClientSettings(bearer_token_file=token_file)
    error = error_of(lambda: serving_latency(f"http://127.0.0.1:{closed_port()}", "q", settings))
    assert error.reason == PrometheusReason.UNAUTHORIZED
    assert str(token_file) in error.message


def test_redirect_is_refused_and_token_not_forwarded(
    serve: Callable[..., FakePrometheus], tmp_path: Path
) -> None:
    elsewhere = serve(lambda _q: vector("0.1"))
    redirect = Reply(status=307, headers={"Location": elsewhere.url + "/api/v1/query"})
    fake = serve(lambda _q: redirect)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    error = error_of(
        lambda: serving_latency(fake.url, "q", ClientSettings(bearer_token_file=token_file))
    )
    assert error.reason == PrometheusReason.UNREACHABLE
    assert "redirected (307)" in error.message
    assert len(fake.received) == 1
    assert elsewhere.received == []


def test_url_credentials_are_redacted() -> None:
    url = f"http://user:pw@127.0.0.1:{closed_port()}/prom?x=1"
    error = error_of(lambda: serving_latency(url, "q"))
    assert "pw" not in str(error) and "user" not in str(error)
    assert redact_url("https://u:p@[::1]:9090/a?b=c") == "https://[::1]:9090/a"


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ssl.SSLContext]:
    ca = CertificateAuthority(tmp_path_factory.mktemp("ca"))
    pair = ca.issue("prometheus", "prometheus", server=True, ips=("127.0.0.1",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pair.cert, pair.key)
    return ca.pair.cert, context


def test_tls_with_the_ca_file(
    serve: Callable[..., FakePrometheus], tls_pair: tuple[Path, ssl.SSLContext]
) -> None:
    ca_file, context = tls_pair
    fake = serve(lambda _q: vector("0.2"), tls=context)
    latency = serving_latency(fake.url, "q", ClientSettings(ca_file=ca_file))
    assert latency.p95_ms == 200.0


def test_tls_untrusted_certificate(
    serve: Callable[..., FakePrometheus], tls_pair: tuple[Path, ssl.SSLContext]
) -> None:
    _ca_file, context = tls_pair
    fake = serve(lambda _q: vector("0.2"), tls=context)
    error = error_of(lambda: serving_latency(fake.url, "q"))
    assert error.reason == PrometheusReason.UNREACHABLE
    assert "certificate" in error.message.lower()


def test_tls_verification_off(
    serve: Callable[..., FakePrometheus], tls_pair: tuple[Path, ssl.SSLContext]
) -> None:
    _ca_file, context = tls_pair
    fake = serve(lambda _q: vector("0.2"), tls=context)
    latency = serving_latency(fake.url, "q", ClientSettings(verify_tls=False))
    assert latency.p95_ms == 200.0


def test_missing_ca_file(tmp_path: Path) -> None:
    settings = ClientSettings(ca_file=tmp_path / "nope.pem")
    error = error_of(lambda: serving_latency("https://127.0.0.1:1", "q", settings))
    assert error.reason == PrometheusReason.UNREACHABLE
    assert "CA file" in error.message


# -- bounded, whatever the server does ------------------------------------------------------


class DrippingServer:
    """A real TCP server that sends its answer one byte every `every` seconds: into the
    status line and headers (`stage="headers"`) or after complete headers (`"body"`)."""

    def __init__(self, stage: str, every: float = 0.5) -> None:
        self.stage, self.every = stage, every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopped = threading.Event()
        self.served = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        body = json.dumps(
            {"status": "success", "data": {"resultType": "scalar", "result": [1, "0.1"]}}
        ).encode()
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            fast, slow = (b"", head + body) if self.stage == "headers" else (head, body)
            try:
                conn.sendall(fast)
                for i in range(len(slow)):
                    if self.stopped.wait(self.every):
                        return
                    conn.sendall(slow[i : i + 1])
            except OSError:
                pass  # the client hung up: what the test wants
            finally:
                self.served.set()

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.mark.parametrize("stage", ["headers", "body"])
def test_a_dripping_server_is_cut_at_the_overall_deadline(stage: str) -> None:
    """Each byte arrives well within the per-read timeout, so only an overall deadline
    stops the query: it must end at 1 s, not when the server is done (minutes)."""
    server = DrippingServer(stage, every=0.3)
    try:
        started = time.monotonic()
        error = error_of(
            lambda: serving_latency(server.url, "q", ClientSettings(timeout_seconds=1.0))
        )
        elapsed = time.monotonic() - started
        assert error.reason == PrometheusReason.UNREACHABLE
        assert "did not answer within 1 s" in error.message
        assert elapsed < 2.5, elapsed
        # The client hung up: the server's next byte fails and it stops.
        assert server.served.wait(10)
    finally:
        server.close()


def test_one_tenant_cannot_hold_every_thread(serve: Callable[..., FakePrometheus]) -> None:
    slow = serve(lambda _q: Reply(body=b"{}", delay=1.5))
    fast = serve(lambda _q: ok("scalar", [1, "0.1"]))
    settings = ClientSettings(timeout_seconds=5.0)
    errors: list[PrometheusError] = []

    def query_slow() -> None:
        try:
            serving_latency(slow.url, "q", settings, tenant="team-a")
        except PrometheusError as error:
            errors.append(error)

    threads = [threading.Thread(target=query_slow) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(slow.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(slow.received) == 2  # both of team-a's slots are taken
    busy = error_of(lambda: serving_latency(fast.url, "q", settings, tenant="team-a"))
    assert busy.reason == PrometheusReason.BUSY
    assert "team-a" in busy.message
    # Another tenant is not held up.
    assert serving_latency(fast.url, "q", settings, tenant="team-b").p95_ms == 100.0
    for thread in threads:
        thread.join()
    # Slots come back when the queries end.
    assert serving_latency(fast.url, "q", settings, tenant="team-a").p95_ms == 100.0


SECRET = "internal-secret-4242"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(status=404, body=f"<html>{SECRET}</html>".encode(), headers={}),
        Reply(status=200, body=f"not json {SECRET}".encode()),
        Reply(
            status=400,
            body=json.dumps({"status": "error", "errorType": SECRET, "error": SECRET}).encode(),
        ),
        ok(
            "vector",
            [
                {"metric": {"secret": SECRET}, "value": [1, "1"]},
                {"metric": {"secret": "x"}, "value": [1, "2"]},
            ],
        ),
        ok("vector", [{"metric": {"a": SECRET}, "value": [1, SECRET]}]),
        ok("scalar", [SECRET]),
    ],
)
def test_no_message_repeats_the_response_body(
    serve: Callable[..., FakePrometheus], reply: Reply
) -> None:
    """The URL is the user's: whatever it points at, its content never reaches status or
    events. A message says what came (status, content type, size), never what it said."""
    fake = serve(lambda _q: reply)
    error = error_of(lambda: serving_latency(fake.url, "q"))
    assert SECRET not in str(error)
