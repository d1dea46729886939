"""Start and stop the operator as a real process against a devcluster, as a user runs it:
`python -m driftwarden --namespace <ns>` with the cluster's kubeconfig.

`kill()` sends SIGKILL (no cleanup at all), `stop()` SIGTERM and a wait. `start(crash_at=)`
sets DRIFTWARDEN_TEST_CRASH_AT so the process exits with 137 at a named point of a run; `wait()`
then returns that code. The log goes to a file so a failing test can show it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from devcluster.controlplane import Cluster
from devcluster.ports import free_port

T = TypeVar("T")


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        namespaces: Sequence[str],
        log_path: Path,
        *,
        resync_seconds: float | None = 2.0,
        extra_env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
        peering: bool = False,
        peering_priority: int | None = None,
    ) -> None:
        """``peering``: run as one of several replicas (`--peering`; the highest priority
        works, by default the oldest replica) instead of `--standalone`;
        ``peering_priority`` sets that priority."""
        self.kubeconfig = kubeconfig
        self.namespaces = list(namespaces)
        self.log_path = log_path
        self.resync_seconds = resync_seconds
        self.extra_env = dict(extra_env or {})
        self.extra_args = list(extra_args)
        self.peering = peering or peering_priority is not None
        self.peering_priority = peering_priority
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.crash_at: str | None = None

    def start(self, *, crash_at: str | None = None, ready_timeout: float = 60.0) -> OperatorProcess:
        """Start (again); `crash_at` applies to this start only."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the operator is already running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
        env["KUBECONFIG"] = str(self.kubeconfig)
        env |= self.extra_env
        self.crash_at = crash_at
        if crash_at:
            env["DRIFTWARDEN_TEST_CRASH_AT"] = crash_at
        argv = [sys.executable, "-m", "driftwarden"]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        if not self.peering:
            argv += ["--standalone"]
        else:
            argv += ["--peering"]
            if self.peering_priority is not None:
                argv += ["--peering-priority", str(self.peering_priority)]
        if self.resync_seconds is not None:  # None: the operator's own default
            argv += ["--resync-seconds", str(self.resync_seconds)]
        argv += [
            "--liveness-endpoint",
            f"http://127.0.0.1:{self.health_port}/healthz",
            "--metrics-port",
            str(self.metrics_port),
            "--verbose",
            *self.extra_args,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {' '.join(argv)} crash_at={crash_at}\n".encode())
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
                if self.crash_at:
                    return  # a crash point may be reached quickly; the caller waits for that exit
                raise RuntimeError(
                    f"the operator exited with {self.proc and self.proc.returncode} while "
                    f"starting:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

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

    def passes(self) -> int:
        """Reconcile passes this process has run (its reconcile histogram's count): what a
        test waits on to know the operator looked again, e.g. at its safety resync."""
        for line in self.metrics().splitlines():
            if line.startswith("driftwarden_reconcile_duration_seconds_count "):
                return int(float(line.split()[1]))
        return 0

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


# -- what the operator's e2e tests share ------------------------------------------------

E2E_ROOT = Path("/var/tmp/driftwarden-e2e")  # not /tmp: a Job's /tmp is its own emptyDir
JOB_USER = 65532  # the Jobs' non-root user (driftwarden.builders.job.JOB_USER)
_PROJECT = Path(__file__).resolve().parents[2]


def _chown_tree(root: Path, uid: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)


def example_dir() -> Path:
    """`python -m optimizer_job make-example` once per version of the job's sources (it
    trains a model: about a minute on two busy cores), owned by the Jobs' user like a
    volume the Job writes to. Read-only input for the tests; each test writes its
    artifacts elsewhere."""
    sources = sorted((_PROJECT / "optimizer_job" / "src" / "optimizer_job").rglob("*.py"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    target = E2E_ROOT / f"example-{digest}"
    E2E_ROOT.mkdir(parents=True, exist_ok=True)
    E2E_ROOT.chmod(0o755)
    with (E2E_ROOT / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").exists():
            building = target.with_name(target.name + ".building")
            subprocess.run(["rm", "-rf", str(building)], check=True)
            subprocess.run(
                [sys.executable, "-m", "optimizer_job", "make-example", "--out", str(building)],
                check=True,
                capture_output=True,
                timeout=600,
            )
            _chown_tree(building, JOB_USER)
            (building / ".complete").touch()
            subprocess.run(["rm", "-rf", str(target)], check=True)
            building.rename(target)
    return target


def scratch_dir(prefix: str) -> Path:
    """A fresh directory the Jobs' user can write to (artifacts, PV contents)."""
    E2E_ROOT.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=E2E_ROOT))
    path.chmod(0o755)
    os.chown(path, JOB_USER, JOB_USER)
    return path


def example_uris(example: Path) -> dict[str, str]:
    return {
        "model": f"file://{example}/model",
        "reference": f"file://{example}/data/reference.parquet",
        "current": f"file://{example}/data/current.parquet",
        "holdout": f"file://{example}/data/holdout.parquet",
    }


def mo_manifest(
    name: str,
    namespace: str,
    uris: dict[str, str],
    artifacts: str,
    *,
    run_request: str | None = "first",
    pipeline: str = "[{quantize: {mode: int8}}]",
    suspend: bool = False,
    ttl_seconds: int = 3600,
    cooldown: str = "0s",
    job_extra: str = "",
) -> str:
    """A ModelOptimization as a user writes it: a small pipeline and a quick latency
    benchmark, so a run takes seconds. No cooldown by default: a runRequest obeys it (the
    default is 30 minutes), and these tests ask for runs one after another."""
    request = f"  runRequest: {json.dumps(run_request)}\n" if run_request is not None else ""
    return f"""apiVersion: driftwarden.io/v1alpha1
kind: ModelOptimization
metadata:
  name: {name}
  namespace: {namespace}
spec:
{request}  suspend: {json.dumps(suspend)}
  model: {{uri: "{uris["model"]}"}}
  data:
    reference: "{uris["reference"]}"
    current: "{uris["current"]}"
    holdout: "{uris["holdout"]}"
  artifacts: {{uri: "{artifacts}"}}
  promotion: {{mode: Manual}}
  pipeline: {pipeline}
  triggers: {{cooldown: {cooldown}}}
  monitoring:
    latency: {{batchSizes: [1], warmup: 2, iterations: 5}}
  job:
    resources: {{cpu: 500m, memory: 1Gi}}
    backoffLimit: 1
    ttlSecondsAfterFinished: {ttl_seconds}
{job_extra}"""


def get_json(cluster: Cluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def mo_status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    status: dict[str, Any] = get_json(cluster, "mo", name, "-n", namespace).get("status") or {}
    return status


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    for item in status.get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    raise AssertionError(f"no condition {type_} in {status.get('conditions')}")


def jobs_of(
    cluster: Cluster, namespace: str, name: str, kind: str = "optimize"
) -> list[dict[str, Any]]:
    """The resource's Jobs of one kind: `optimize` (runs) or `evaluate` (evaluations)."""
    selector = f"driftwarden.io/optimization={name},driftwarden.io/kind={kind}"
    found = get_json(cluster, "jobs", "-n", namespace, "-l", selector)
    return list(found["items"])


def events_of(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    found = get_json(
        cluster,
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name},involvedObject.kind=ModelOptimization",
    )
    return list(found["items"])


def wait_for(
    what: str,
    check: Callable[[], T | None],
    timeout: float,
    operator: OperatorProcess | None = None,
    interval: float = 0.5,
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if operator is not None and operator.proc is not None and not operator.running:
            raise AssertionError(
                f"the operator exited ({operator.proc.returncode}) while waiting for {what}:\n"
                f"{operator.log_tail()}"
            )
        time.sleep(interval)
    tail = f"\noperator log:\n{operator.log_tail()}" if operator is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")


def finished_runs(cluster: Cluster, namespace: str, name: str, count: int) -> Callable[[], Any]:
    def check() -> dict[str, Any] | None:
        status = mo_status(cluster, namespace, name)
        runs = status.get("runs") or []
        return status if len(runs) >= count and not status.get("activeRun") else None

    return check


def evaluated_after_runs(
    cluster: Cluster, namespace: str, name: str, count: int
) -> Callable[[], Any]:
    """`count` runs recorded, none active, and an evaluation recorded with none active: the
    status a resource settles in, whatever order its run and evaluation finished in."""
    runs_done = finished_runs(cluster, namespace, name, count)

    def check() -> dict[str, Any] | None:
        status = runs_done()
        if status is None or not status.get("lastEvaluation") or status.get("activeEvaluation"):
            return None
        return dict(status)

    return check


RESYNC = 2.0  # the operator's resync period in tests (production: 15 s)


def start_operator(
    devcluster: Cluster,
    namespace: str,
    log_dir: Path,
    *,
    crash_at: str | None = None,
    operators: list[OperatorProcess] | None = None,
) -> OperatorProcess:
    """The operator for one namespace, started; appended to ``operators`` (the fixture that
    stops them all at the end of a test) before it starts, so a failed start is cleaned up."""
    operator = OperatorProcess(
        devcluster.kubeconfig, [namespace], log_dir / "operator.log", resync_seconds=RESYNC
    )
    if operators is not None:
        operators.append(operator)
    return operator.start(crash_at=crash_at)


def report_timing(**numbers: Any) -> None:
    """Print a timing a test measured (for bench/RESULTS.md); HA_REPORT names a JSON-lines
    file to append it to."""
    line = json.dumps(numbers)
    print(line)
    if target := os.environ.get("HA_REPORT"):
        with Path(target).open("a") as out:
            out.write(line + "\n")
