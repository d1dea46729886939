"""Start and stop the operator as a real process against a devcluster, as a user runs it:
`python -m driftwarden --namespace <ns>` with the cluster's kubeconfig.

`kill()` sends SIGKILL (no cleanup at all), `stop()` SIGTERM and a wait. `crash_at` sets
DRIFTWARDEN_TEST_CRASH_AT so the process exits with 137 at a named point of a run; `wait()`
then returns that code. The log goes to a file so a failing test can show it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        namespaces: Sequence[str],
        log_path: Path,
        *,
        resync_seconds: float = 2.0,
        crash_at: str | None = None,
        extra_env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespaces = list(namespaces)
        self.log_path = log_path
        self.resync_seconds = resync_seconds
        self.crash_at = crash_at
        self.extra_env = dict(extra_env or {})
        self.extra_args = list(extra_args)
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, crash_at: str | None = None, ready_timeout: float = 60.0) -> OperatorProcess:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the operator is already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env |= self.extra_env
        point = crash_at if crash_at is not None else self.crash_at
        if point:
            env["DRIFTWARDEN_TEST_CRASH_AT"] = point
        argv = [sys.executable, "-m", "driftwarden"]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        argv += [
            "--standalone",
            "--resync-seconds",
            str(self.resync_seconds),
            "--liveness-endpoint",
            f"http://127.0.0.1:{self.health_port}/healthz",
            "--metrics-port",
            str(self.metrics_port),
            "--verbose",
            *self.extra_args,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {' '.join(argv)} crash_at={point}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        self._wait_healthy(ready_timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                # A crash point may be reached quickly; the caller waits for that exit.
                return
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own (a crash point); its exit code."""
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"operator still running after {timeout:.0f} s:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to finish anything."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> OperatorProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
