"""The devcluster's S3 server: versitygw with its POSIX backend (a bucket is a directory).

Started by ``Cluster.start_s3()`` (or ``devcluster up --s3``) on 127.0.0.1 and a free
port, with root credentials generated per cluster and kept in ``<state>/s3.json`` (mode
0600). They reach versitygw through its environment, never its command line. Object
metadata goes to a sidecar directory, so any filesystem works (no user xattrs needed).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

COMPONENT = "s3"
HEALTH_PATH = "/health"
REGION = "us-east-1"
_FILE = "s3.json"


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str
    region: str = REGION

    def env(self) -> dict[str, str]:
        """The endpoint as the AWS SDKs' environment names it (the keys of a Secret)."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def __repr__(self) -> str:  # never print the secret
        return f"S3Endpoint(url={self.url!r}, region={self.region!r})"


def prepare(
    state_dir: Path, binary: Path, port: int
) -> tuple[S3Endpoint, list[str], dict[str, str]]:
    """(endpoint, argv, env) of a versitygw serving ``<state_dir>/s3/data``."""
    root = state_dir / COMPONENT
    data, sidecar = root / "data", root / "meta"
    data.mkdir(parents=True, exist_ok=True)
    sidecar.mkdir(parents=True, exist_ok=True)
    endpoint = S3Endpoint(
        url=f"http://127.0.0.1:{port}",
        access_key=f"dw{secrets.token_hex(8)}",
        secret_key=secrets.token_urlsafe(30),
    )
    env = {
        **os.environ,
        "ROOT_ACCESS_KEY_ID": endpoint.access_key,
        "ROOT_SECRET_ACCESS_KEY": endpoint.secret_key,
    }
    argv = [
        str(binary),
        "--port",
        f"127.0.0.1:{port}",
        "--region",
        endpoint.region,
        "--health",
        HEALTH_PATH,
        "posix",
        "--sidecar",
        str(sidecar),
        str(data),
    ]
    return endpoint, argv, env


def healthy(endpoint: S3Endpoint) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint.url}{HEALTH_PATH}", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def save_endpoint(state_dir: Path, endpoint: S3Endpoint) -> None:
    path = state_dir / _FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(endpoint), handle)


def load_endpoint(state_dir: Path) -> S3Endpoint | None:
    path = state_dir / _FILE
    if not path.is_file():
        return None
    return S3Endpoint(**json.loads(path.read_text()))


def create_bucket(state_dir: Path, name: str) -> None:
    """Create a bucket (with the POSIX backend, a directory under the data root)."""
    if "/" in name or name in ("", ".", "..") or name != name.lower():
        raise ValueError(f"bad bucket name {name!r}")
    (state_dir / COMPONENT / "data" / name).mkdir(exist_ok=True)


@contextlib.contextmanager
def serve(
    directory: Path, binary: Path | None = None, timeout: float = 60.0
) -> Iterator[S3Endpoint]:
    """A versitygw of its own under ``directory`` for as long as the block runs (job tests
    that need an S3 server but no cluster). Buckets: ``create_bucket(directory, name)``."""
    from devcluster import build

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    endpoint, argv, env = prepare(directory, binary or build.binary("versitygw"), port)
    log = (directory / "s3.log").open("ab")
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not healthy(endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"versitygw did not come up; see {directory / 's3.log'}")
            time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
