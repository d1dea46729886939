"""One container of a Pod as a local process: start it, watch it, stop it, describe it."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from devcluster.node_agent.kube import Obj
from devcluster.node_agent.launch_spec import LaunchSpec

TERMINATION_MESSAGE_LIMIT = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
START_ERROR_EXIT_CODE = 128


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> datetime:
    return datetime.now(UTC)


def exit_code_of(returncode: int) -> int:
    """Popen's -N (killed by signal N) as a shell and the kubelet report it: 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


@dataclass(frozen=True)
class ContainerPaths:
    """Where one container's files live on the host."""

    dir: Path
    log: Path

    @property
    def termination_log(self) -> Path:
        return self.dir / "termination-log"

    @property
    def start_error(self) -> Path:
        return self.dir / "start-error"

    @property
    def launch_spec(self) -> Path:
        return self.dir / "launch.json"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    @property
    def scratch_root(self) -> Path:
        return self.dir / "root"


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of a process, to tell a PID from a later reuse of it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def kill_leftover(pid_file: Path) -> None:
    """Stop a container a previous agent left running (its PID file outlived the agent)."""
    try:
        pid_text, start = pid_file.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return
    if process_start_time(pid) == start:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)


@dataclass
class ContainerRun:
    """One run (process) of a container."""

    process: subprocess.Popen[bytes]
    paths: ContainerPaths
    started_at: datetime
    log_offset: int
    termination_message_policy: str
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    kill_requested_at: float | None = None
    kill_deadline: float | None = None
    exec_pipe: int | None = None  # read end; EOF once container_init exec'd the command
    _exec_seen: bool = False

    def exec_done(self) -> bool:
        """Has the command replaced container_init (namespaces and mounts in place)?"""
        if self._exec_seen:
            return True
        if self.exec_pipe is None:
            return False
        readable, _, _ = select.select([self.exec_pipe], [], [], 0)
        if readable:
            os.close(self.exec_pipe)
            self.exec_pipe = None
            self._exec_seen = True
        return self._exec_seen

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.exit_code is None

    def poll(self) -> bool:
        """Collect the exit if the process ended; True once it has."""
        if self.exit_code is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            info = None
        if info is None and self.process.returncode is None:
            self._escalate_kill()
            return False
        # The main process is gone: end what it left in its process group before reaping it,
        # so the group id cannot have been reused yet.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        returncode = self.process.wait()
        if self.exec_pipe is not None:
            os.close(self.exec_pipe)
            self.exec_pipe = None
        self._finish(exit_code_of(returncode))
        return True

    def _finish(self, exit_code: int) -> None:
        self.finished_at = now()
        self.exit_code = exit_code
        self.paths.pid_file.unlink(missing_ok=True)
        start_error = _read_text(self.paths.start_error, TERMINATION_MESSAGE_LIMIT)
        if start_error and exit_code == START_ERROR_EXIT_CODE:
            self.reason, self.message = "StartError", start_error
            return
        self.reason = "Completed" if exit_code == 0 else "Error"
        self.message = _read_text(self.paths.termination_log, TERMINATION_MESSAGE_LIMIT)
        if (
            not self.message
            and exit_code != 0
            and self.termination_message_policy == "FallbackToLogsOnError"
        ):
            self.message = _log_tail(self.paths.log, self.log_offset)

    def request_stop(self, grace_seconds: float) -> None:
        """SIGTERM the container's process group now and SIGKILL it after the grace period."""
        if self.exit_code is not None:
            return
        current = time.monotonic()
        deadline = current + max(grace_seconds, 0.0)
        if self.kill_requested_at is None:
            self.kill_requested_at = current
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM if grace_seconds > 0 else signal.SIGKILL)
        # A shorter grace period (a second delete) takes over; a longer one never does.
        if self.kill_deadline is None or deadline < self.kill_deadline:
            self.kill_deadline = deadline
        self._escalate_kill()

    def _escalate_kill(self) -> None:
        if self.kill_deadline is not None and time.monotonic() >= self.kill_deadline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def state(self) -> Obj:
        if self.exit_code is None:
            return {"running": {"startedAt": rfc3339(self.started_at)}}
        terminated: Obj = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": rfc3339(self.started_at),
            "finishedAt": rfc3339(self.finished_at or now()),
            "containerID": self.container_id,
        }
        if self.message:
            terminated["message"] = self.message
        return {"terminated": terminated}

    @property
    def container_id(self) -> str:
        return f"process://{self.pid}"


def _read_text(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as handle:
            return handle.read(limit).decode(errors="replace")
    except OSError:
        return ""


def _log_tail(log: Path, offset: int) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()[-FALLBACK_LOG_LINES:]
    return "\n".join(lines)[-FALLBACK_LOG_BYTES:]


@dataclass
class Launcher:
    """Starts container processes through `container_init`."""

    python: str = field(default_factory=lambda: sys.executable)

    def start(self, spec: LaunchSpec, paths: ContainerPaths, message_policy: str) -> ContainerRun:
        paths.dir.mkdir(parents=True, exist_ok=True)
        paths.log.parent.mkdir(parents=True, exist_ok=True)
        paths.scratch_root.mkdir(mode=0o700, exist_ok=True)
        for path in (paths.termination_log, paths.start_error):
            path.write_bytes(b"")
            path.chmod(0o666)  # the container's own user writes its termination message
        spec.write(paths.launch_spec)
        exec_read, exec_write = os.pipe()
        try:
            with paths.log.open("ab") as log:
                offset = log.tell()
                process = subprocess.Popen(
                    [
                        self.python,
                        "-I",
                        "-m",
                        "devcluster.node_agent.container_init",
                        str(paths.launch_spec),
                        str(exec_write),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=(exec_write,),
                    cwd="/",
                    env={"PATH": "/usr/bin:/bin"},
                )
        except OSError:
            os.close(exec_read)
            raise
        finally:
            os.close(exec_write)
        paths.pid_file.write_text(f"{process.pid} {process_start_time(process.pid) or 0}")
        return ContainerRun(
            process=process,
            paths=paths,
            started_at=now(),
            log_offset=offset,
            termination_message_policy=message_policy,
            exec_pipe=exec_read,
        )
