"""The kubelet's log endpoint, so that `kubectl logs` works.

The API server fetches logs from `https://<node InternalIP>:<daemonEndpoints port>/containerLogs/
<namespace>/<pod>/<container>`. This serves those files over TLS with a throwaway self-signed
certificate (the API server does not verify kubelet certificates unless told to).
It does not check who asks: the devcluster listens on 127.0.0.1 only and is for development.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devcluster.node_agent.log_files import find_log, is_running, tail_bytes

log = logging.getLogger(__name__)

FOLLOW_POLL_SECONDS = 0.2


def _self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"devcluster-kubelet@{host}")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "kubelet.crt", directory / "kubelet.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state_dir: Path
    stop: threading.Event

    def log_message(self, format: str, *args: object) -> None:
        log.debug("log server: " + format, *args)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts == ["healthz"]:
            self._plain(200, b"ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._plain(404, b"not found")
            return
        _, namespace, pod, container = parts
        query = parse_qs(url.query)
        path = find_log(self.state_dir, namespace, pod, container)
        if path is None:
            self._plain(404, f"no log for {namespace}/{pod}/{container}".encode())
            return
        lines = int(query["tailLines"][0]) if "tailLines" in query else None
        limit = int(query["limitBytes"][0]) if "limitBytes" in query else None
        follow = query.get("follow", ["false"])[0] == "true"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        whole = path.read_bytes()
        self._chunk(tail_bytes(whole, lines, limit))
        offset = len(whole)
        while follow and not self.stop.is_set():
            with path.open("rb") as handle:
                handle.seek(offset)
                more = handle.read()
            if more:
                offset += len(more)
                self._chunk(more)
            elif not is_running(self.state_dir, path):
                break
            time.sleep(FOLLOW_POLL_SECONDS)
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _plain(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class LogServer:
    def __init__(self, state_dir: Path, stop: threading.Event, host: str = "127.0.0.1") -> None:
        handler = type("Handler", (_Handler,), {"state_dir": state_dir, "stop": stop})
        self._server = ThreadingHTTPServer((host, 0), handler)
        self._server.daemon_threads = True
        with tempfile.TemporaryDirectory() as scratch:
            cert, key = _self_signed(Path(scratch), host)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="log-server", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
