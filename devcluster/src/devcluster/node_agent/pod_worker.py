"""One Pod's life on this node, as the kubelet leads it.

A PodWorker thread owns the Pod's processes. Each tick it looks at the newest Pod it was
given and moves it forward: address and volumes, init containers in order, then the
containers; exits are collected and restarted by the restart policy with back-off, probes are
run, the deadline is enforced; the resulting status is patched when it changed. Deletion stops
the processes gracefully and then removes the Pod from the API, as the kubelet does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from devcluster.node_agent.container import (
    ContainerPaths,
    ContainerRun,
    kill_leftover,
    now,
    rfc3339,
)
from devcluster.node_agent.container_spec import LaunchContext, build_launch_spec
from devcluster.node_agent.downward import DownwardError
from devcluster.node_agent.envvars import EnvError
from devcluster.node_agent.gpus import GpuAllocator, gpus_requested
from devcluster.node_agent.kube import ApiError, Obj, path_quote
from devcluster.node_agent.launch_spec import LaunchSpec
from devcluster.node_agent.pod_ips import HOST_NETWORK_IP
from devcluster.node_agent.pod_status import ContainerView, PodView, build_status
from devcluster.node_agent.probes import ProbeState, run_probe
from devcluster.node_agent.volumes import PodVolumes, VolumeError

if TYPE_CHECKING:
    from devcluster.node_agent.runtime import NodeRuntime

log = logging.getLogger(__name__)

ACTIVE_TICK = 0.2
IDLE_TICK = 2.0
VOLUME_REFRESH_SECONDS = 30.0
# How soon a container whose config (a ConfigMap, a Secret, a claim) is missing is tried again.
CONFIG_RETRY_SECONDS = 1.0
BACKOFF_RESET_AFTER = 600.0
DEFAULT_GRACE_SECONDS = 30
MIN_GRACE_AFTER_HOOKS = 2.0
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


@dataclass
class Slot:
    """A container of the Pod across its restarts."""

    spec: Obj
    kind: str  # "init", "sidecar" (an init container with restartPolicy Always) or "main"
    restart_count: int = 0
    run: ContainerRun | None = None
    finished: Obj | None = None  # terminated state of the latest finished run
    last_state: Obj = field(default_factory=dict)
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    restart_at: float | None = None
    backoff: float = 0.0
    succeeded: bool = False
    startup: ProbeState | None = None
    readiness: ProbeState | None = None
    liveness: ProbeState | None = None
    env: dict[str, str] = field(default_factory=dict)
    launch: LaunchSpec | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.run is not None and self.run.running

    @property
    def started(self) -> bool:
        return self.running and (self.startup is None or self.startup.result)

    @property
    def ready(self) -> bool:
        return self.started and (self.readiness is None or self.readiness.result)

    @property
    def exit_code(self) -> int | None:
        return None if self.finished is None else int(self.finished["exitCode"])

    def state(self) -> Obj:
        if self.run is not None and self.run.running:
            return self.run.state()
        if self.waiting is not None:
            reason, message = self.waiting
            return {"waiting": {"reason": reason, **({"message": message} if message else {})}}
        if self.finished is not None:
            return {"terminated": self.finished}
        return {"waiting": {"reason": "ContainerCreating"}}

    def status(self) -> Obj:
        image = str(self.spec.get("image", ""))
        status: Obj = {
            "name": self.name,
            "state": self.state(),
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": image,
            "imageID": f"devcluster://{image}",
            "started": self.started,
        }
        if self.run is not None:
            status["containerID"] = self.run.container_id
        return status


class PodWorker:
    def __init__(self, pod: Obj, runtime: NodeRuntime) -> None:
        self._runtime = runtime
        self._pod = pod
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._gone = False
        self._shutdown_grace: float | None = None
        spec = pod.get("spec", {})
        self.uid: str = pod["metadata"]["uid"]
        self._restart_policy = spec.get("restartPolicy", "Always")
        self._init = [
            Slot(c, "sidecar" if c.get("restartPolicy") == "Always" else "init")
            for c in spec.get("initContainers") or []
        ]
        self._main = [Slot(c, "main") for c in spec.get("containers") or []]
        self._ip = ""
        self._volumes: PodVolumes | None = None
        self._volumes_at = 0.0
        self._volumes_retry_at = 0.0
        self._start_time: str | None = pod.get("status", {}).get("startTime")
        self._started_monotonic: float | None = None
        self._terminal: tuple[str, str, str] | None = None  # phase, reason, message
        self._adopted_terminal = False
        self._last_reported: Obj | None = None
        self._events_sent: set[str] = set()
        self.done = threading.Event()
        self.crashed_at: float | None = None
        self.thread = threading.Thread(target=self._main_loop, name=f"pod-{self._key}", daemon=True)

    # --- called by the agent --------------------------------------------------------------

    @property
    def _key(self) -> str:
        metadata = self._pod["metadata"]
        return f"{metadata['namespace']}/{metadata['name']}"

    def start(self) -> None:
        self.thread.start()

    def update(self, pod: Obj) -> None:
        with self._lock:
            changed = pod["metadata"].get("resourceVersion") != self._pod["metadata"].get(
                "resourceVersion"
            )
            self._pod = pod
        if changed:
            self._wake.set()

    def mark_gone(self) -> None:
        self._gone = True
        self._wake.set()

    def shut_down(self, grace_seconds: float) -> None:
        self._shutdown_grace = grace_seconds
        self._wake.set()

    @property
    def pod_ip(self) -> str:
        return self._ip

    # --- the loop -------------------------------------------------------------------------

    def _main_loop(self) -> None:
        try:
            self._adopt_previous_state()
            while True:
                with self._lock:
                    pod = self._pod
                if self._shutdown_grace is not None:
                    self._stop_for_shutdown(pod, self._shutdown_grace)
                    return
                if self._gone:
                    self._stop_all(self._grace_of(pod))
                    self._wait_stopped(pod, deletion=False)
                    return
                if pod["metadata"].get("deletionTimestamp"):
                    self._terminate_for_deletion()
                    return
                try:
                    self._sync(pod)
                except Exception:
                    log.exception("pod %s: sync failed", self._key)
                self._report(pod)
                active = self._terminal is None and any(
                    s.running or s.restart_at is not None or s.waiting for s in self._slots()
                )
                self._wake.wait(ACTIVE_TICK if active else IDLE_TICK)
                self._wake.clear()
        except Exception:
            log.exception("pod %s: worker crashed; stopping its containers", self._key)
            self.crashed_at = time.monotonic()
            self._stop_all(0)
        finally:
            self.done.set()

    def _slots(self) -> list[Slot]:
        return self._init + self._main

    # --- moving the Pod forward -----------------------------------------------------------

    def _sync(self, pod: Obj) -> None:
        if self._terminal is not None:
            return
        if self._start_time is None:
            self._start_time = rfc3339(now())
        if self._started_monotonic is None:
            self._started_monotonic = time.monotonic() - self._age_seconds()
        deadline = pod.get("spec", {}).get("activeDeadlineSeconds")
        if deadline is not None and time.monotonic() - self._started_monotonic >= float(deadline):
            self._fail_deadline(pod)
            return
        if not self._ip:
            self._ip = self._allocate_ip(pod)
        if not self._ensure_volumes(pod):
            return
        for slot in self._init:
            if not self._advance_init(pod, slot):
                self._set_waiting(self._main, "PodInitializing")
                return
        for slot in self._main:
            self._advance(pod, slot)
        self._maybe_finish(pod)

    def _age_seconds(self) -> float:
        if self._start_time is None:
            return 0.0
        started = datetime.strptime(self._start_time, "%Y-%m-%dT%H:%M:%S%z")
        return max(0.0, (now() - started).total_seconds())

    def _allocate_ip(self, pod: Obj) -> str:
        if pod.get("spec", {}).get("hostNetwork"):
            return HOST_NETWORK_IP
        previous = pod.get("status", {}).get("podIP")
        return self._runtime.ips.allocate(self.uid, previous)

    def _ensure_volumes(self, pod: Obj) -> bool:
        due = time.monotonic() - self._volumes_at >= VOLUME_REFRESH_SECONDS
        if self._volumes is not None and not due:
            return True
        if time.monotonic() < self._volumes_retry_at:
            return self._volumes is not None
        try:
            self._volumes = self._runtime.volumes.setup(pod, self._ip, self._volumes)
            self._volumes_at = time.monotonic()
            return True
        except (VolumeError, ApiError, OSError) as error:
            reason = error.reason if isinstance(error, VolumeError) else "ContainerCreating"
            self._volumes_retry_at = time.monotonic() + CONFIG_RETRY_SECONDS
            if self._volumes is None:
                self._set_waiting(self._init + self._main, reason, str(error))
                self._event_once(pod, "FailedMount", f"MountVolume.SetUp failed: {error}")
                return False
            log.warning("pod %s: volume refresh failed: %s", self._key, error)
            return True

    def _set_waiting(self, slots: list[Slot], reason: str, message: str = "") -> None:
        for slot in slots:
            if slot.run is None and slot.finished is None:
                slot.waiting = (reason, message)

    def _advance_init(self, pod: Obj, slot: Slot) -> bool:
        """Move one init container; True when the next one may start."""
        if slot.kind == "sidecar":
            self._advance(pod, slot)
            return slot.started
        if slot.succeeded:
            return True
        self._advance(pod, slot)
        if slot.run is not None and not slot.running and slot.exit_code == 0:
            slot.succeeded = True
            return True
        if slot.finished is not None and slot.restart_at is None and slot.exit_code != 0:
            self._finish(pod, "Failed", "", "")
        return False

    def _advance(self, pod: Obj, slot: Slot) -> None:
        """Start, watch, probe or restart one container."""
        if slot.run is not None and slot.running:
            if not slot.run.poll():
                self._probe(pod, slot)
                return
            self._on_exit(pod, slot)
        if slot.restart_at is not None:
            if time.monotonic() >= slot.restart_at:
                self._start(pod, slot)
            return
        if slot.run is None and slot.finished is None:
            self._start(pod, slot)

    def _should_restart(self, slot: Slot) -> bool:
        if slot.kind == "sidecar":
            return True
        if slot.kind == "init" and slot.exit_code == 0:
            return False
        if self._restart_policy == "Always":
            return True
        return self._restart_policy == "OnFailure" and slot.exit_code != 0

    def _on_exit(self, pod: Obj, slot: Slot) -> None:
        run = slot.run
        assert run is not None
        slot.finished = run.state()["terminated"]
        slot.readiness = slot.liveness = slot.startup = None
        if run.reason == "StartError":
            self._event(pod, "Failed", run.message, warning=True, container=slot.name)
        if not self._should_restart(slot):
            return
        lasted = (run.finished_at or now()) - run.started_at
        if lasted.total_seconds() >= BACKOFF_RESET_AFTER:
            slot.backoff = 0.0
        delay = slot.backoff
        config = self._runtime.config
        slot.backoff = min(
            config.crash_backoff_max,
            config.crash_backoff_initial if slot.backoff == 0 else slot.backoff * 2,
        )
        slot.restart_at = time.monotonic() + delay
        metadata = pod["metadata"]
        message = (
            f"back-off {int(delay)}s restarting failed container={slot.name} "
            f"pod={metadata['name']}_{metadata['namespace']}({self.uid})"
        )
        slot.waiting = ("CrashLoopBackOff", message)
        if delay > 0:
            self._event(
                pod,
                "BackOff",
                "Back-off restarting failed container",
                warning=True,
                container=slot.name,
            )

    def _start(self, pod: Obj, slot: Slot) -> None:
        runtime = self._runtime
        metadata = pod["metadata"]
        paths = runtime.container_paths(pod, slot.name)
        assert self._volumes is not None
        gpu_owner = f"{self.uid}/{slot.name}"
        try:
            devices = runtime.gpus.assign(gpu_owner, gpus_requested(slot.spec))
            context = LaunchContext(
                python_bin_dir=runtime.config.python_bin_dir,
                apiserver_host=runtime.config.apiserver_host,
                apiserver_port=runtime.config.apiserver_port,
                inherited_env=runtime.inherited_env,
                keep_reachable=runtime.keep_reachable,
                node_allocatable=runtime.allocatable,
                host_ip=runtime.host_ip,
                pod_ip=self._ip,
                pod_dir=runtime.volumes.pod_dir(self.uid),
                gpu_env=GpuAllocator.visible_devices_env(devices),
                cluster_dns=runtime.config.cluster_dns,
                cluster_domain=runtime.config.cluster_domain,
            )
            spec = build_launch_spec(
                pod,
                slot.spec,
                self._volumes,
                context,
                get=lambda kind, name: runtime.get_object(metadata["namespace"], kind, name),
                termination_log=paths.termination_log,
                start_error=paths.start_error,
                scratch_dir=paths.scratch_root,
            )
        except (EnvError, DownwardError, VolumeError, ApiError, RuntimeError, OSError) as error:
            slot.waiting = ("CreateContainerConfigError", str(error))
            slot.restart_at = time.monotonic() + CONFIG_RETRY_SECONDS
            self._event_once(pod, f"Failed/{slot.name}", f"Error: {error}", container=slot.name)
            return
        try:
            run = runtime.launcher.start(
                spec, paths, slot.spec.get("terminationMessagePolicy") or "File"
            )
        except OSError as error:
            slot.waiting = ("RunContainerError", str(error))
            slot.restart_at = time.monotonic() + CONFIG_RETRY_SECONDS
            self._event(pod, "Failed", f"Error: {error}", warning=True, container=slot.name)
            return
        if slot.finished is not None:
            slot.last_state = {"terminated": slot.finished}
            slot.restart_count += 1
        slot.run, slot.finished, slot.waiting, slot.restart_at = run, None, None, None
        slot.env, slot.launch = spec.env, spec
        slot.startup = self._probe_state(slot, "startupProbe", initial=False)
        slot.readiness = self._probe_state(slot, "readinessProbe", initial=False)
        slot.liveness = self._probe_state(slot, "livenessProbe", initial=True)
        self._event(pod, "Started", f"Started container {slot.name}", container=slot.name)

    @staticmethod
    def _probe_state(slot: Slot, key: str, *, initial: bool) -> ProbeState | None:
        probe = slot.spec.get(key)
        return ProbeState.begin(probe, initial=initial) if probe else None

    def _probe(self, pod: Obj, slot: Slot) -> None:
        run = slot.run
        assert run is not None
        if run.kill_requested_at is not None or not run.exec_done():
            return
        startup_pending = slot.startup is not None and not slot.startup.result
        for kind, probe in (
            ("Startup", slot.startup),
            ("Liveness", slot.liveness),
            ("Readiness", slot.readiness),
        ):
            if probe is None or not probe.due():
                continue
            if (kind == "Startup") != startup_pending:
                continue  # startup runs until it passes; the others only after that
            ok, message = run_probe(
                probe.probe, slot.spec, self._ip, lambda argv, t: self._exec(slot, argv, t)
            )
            probe.record(ok, message)
            if ok:
                continue
            self._event(
                pod,
                "Unhealthy",
                f"{kind} probe failed: {message}",
                warning=True,
                container=slot.name,
            )
            threshold = int(probe.probe.get("failureThreshold") or 3)
            if kind != "Readiness" and probe.failures >= threshold:
                grace = probe.probe.get("terminationGracePeriodSeconds")
                self._event(
                    pod,
                    "Killing",
                    f"Container {slot.name} failed {kind.lower()} probe, will be restarted",
                    container=slot.name,
                )
                run.request_stop(float(grace if grace is not None else self._grace_of(pod)))
                return

    def _exec(self, slot: Slot, argv: list[str], timeout: float) -> int:
        """Run a probe command in the container's namespaces, as its user."""
        run, launch = slot.run, slot.launch
        if run is None or launch is None:
            return 1
        spec = LaunchSpec(
            argv=argv,
            env=slot.env,
            working_dir=launch.working_dir,
            uid=launch.uid,
            gid=launch.gid,
            groups=launch.groups,
            no_new_privileges=launch.no_new_privileges,
            join_pid=run.pid,
        )
        spec_path = run.paths.dir / f"exec-{time.monotonic_ns()}.json"
        spec.write(spec_path)
        try:
            process = subprocess.Popen(
                [
                    self._runtime.launcher.python,
                    "-I",
                    "-m",
                    "devcluster.node_agent.container_init",
                    str(spec_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
                env={"PATH": "/usr/bin:/bin"},
            )
        except OSError:
            spec_path.unlink(missing_ok=True)
            return 1
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
            raise

    def _maybe_finish(self, pod: Obj) -> None:
        if self._terminal is not None or self._restart_policy == "Always" or not self._main:
            return
        if any(s.running or s.restart_at is not None or s.finished is None for s in self._main):
            return
        failed = any(s.exit_code != 0 for s in self._main)
        self._finish(pod, "Failed" if failed else "Succeeded", "", "")

    def _finish(self, pod: Obj, phase: str, reason: str, message: str) -> None:
        """The Pod is done: stop what still runs (sidecars) and remember the phase."""
        self._terminal = (phase, reason, message)
        self._stop_all(self._grace_of(pod))
        self._wait_stopped(pod, deletion=False)
        self._release_devices()

    def _fail_deadline(self, pod: Obj) -> None:
        self._event(pod, "DeadlineExceeded", DEADLINE_MESSAGE, warning=True)
        self._finish(pod, "Failed", "DeadlineExceeded", DEADLINE_MESSAGE)

    # --- stopping -------------------------------------------------------------------------

    @staticmethod
    def _grace_of(pod: Obj) -> float:
        metadata_grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if metadata_grace is not None:
            return float(metadata_grace)
        spec_grace = pod.get("spec", {}).get("terminationGracePeriodSeconds")
        return float(spec_grace if spec_grace is not None else DEFAULT_GRACE_SECONDS)

    def _stop_all(self, grace: float) -> None:
        for slot in self._slots():
            slot.restart_at = None
            if slot.finished is not None:
                slot.waiting = None  # no restart is coming: show how it ended
            if slot.run is not None and slot.running:
                slot.run.request_stop(grace)

    def _wait_stopped(self, pod: Obj, *, deletion: bool) -> None:
        """Collect every exit, taking a shorter grace period from a newer delete into account."""
        while True:
            running = [s for s in self._slots() if s.run is not None and s.running]
            for slot in running:
                assert slot.run is not None
                if slot.run.poll():
                    slot.finished = slot.run.state()["terminated"]
                    slot.waiting = None
            if not any(s.running for s in self._slots()):
                return
            self._wake.wait(0.1)
            self._wake.clear()
            if deletion:
                with self._lock:
                    newest = self._pod
                self._stop_all(self._grace_of(newest))

    def _terminate_for_deletion(self) -> None:
        with self._lock:
            pod = self._pod
        if any(s.running for s in self._slots()):
            self._event(pod, "Killing", "Stopping pod")
        deadline = time.monotonic() + self._grace_of(pod)
        self._run_pre_stop_hooks(pod, deadline)
        # preStop hooks spend part of the grace period; SIGTERM still gets a moment.
        self._stop_all(max(MIN_GRACE_AFTER_HOOKS, deadline - time.monotonic()))
        self._wait_stopped(pod, deletion=True)
        self._release_devices()
        with self._lock:
            pod = self._pod
        if self._terminal is None and not self._adopted_terminal:
            # The kubelet ends a deleted Pod in a terminal phase before it lets it go.
            ok = all(s.exit_code == 0 for s in self._main if s.finished is not None)
            self._terminal = ("Succeeded" if ok and self._main else "Failed", "", "")
        self._report(pod)
        metadata = pod["metadata"]
        try:
            self._runtime.kube.delete(
                f"/api/v1/namespaces/{path_quote(metadata['namespace'])}/pods/"
                f"{path_quote(metadata['name'])}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": self.uid},
                },
            )
        except ApiError as error:
            if error.status not in (404, 409):
                log.warning("pod %s: final delete failed: %s", self._key, error)

    def _run_pre_stop_hooks(self, pod: Obj, deadline: float) -> None:
        for slot in self._slots():
            hook = (slot.spec.get("lifecycle") or {}).get("preStop")
            if not hook or not slot.running:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if "sleep" in hook:
                self._wake.wait(min(float(hook["sleep"].get("seconds", 0)), remaining))
                continue
            ok, message = run_probe(
                {**hook, "timeoutSeconds": max(1, int(remaining))},
                slot.spec,
                self._ip,
                functools.partial(self._exec, slot),
            )
            if not ok:
                self._event(pod, "FailedPreStopHook", message, warning=True, container=slot.name)

    def _stop_for_shutdown(self, pod: Obj, grace: float) -> None:
        had_running = any(s.running for s in self._slots())
        self._stop_all(min(grace, self._grace_of(pod)))
        self._wait_stopped(pod, deletion=False)
        if had_running and self._terminal is None and not self._adopted_terminal:
            self._terminal = (
                "Failed",
                "Terminated",
                "Pod was terminated in response to imminent node shutdown.",
            )
            self._report(pod, timeout=3.0)

    def _release_devices(self) -> None:
        self._runtime.gpus.release_prefix(f"{self.uid}/")

    # --- after an agent restart -----------------------------------------------------------

    def _adopt_previous_state(self) -> None:
        """Take over a Pod a previous agent ran: its processes are gone or are ended now."""
        with self._lock:
            pod = self._pod
        containers_dir = self._runtime.volumes.pod_dir(self.uid) / "containers"
        if containers_dir.is_dir():
            for pid_file in containers_dir.glob("*/pid"):
                kill_leftover(pid_file)
        status = pod.get("status", {})
        if status.get("phase") in ("Succeeded", "Failed"):
            self._adopted_terminal = True
            self._terminal = (status["phase"], status.get("reason", ""), status.get("message", ""))
            return
        previous = {
            s["name"]: s
            for s in (status.get("initContainerStatuses") or [])
            + (status.get("containerStatuses") or [])
        }
        for slot in self._slots():
            before = previous.get(slot.name)
            if not before:
                continue
            state = before.get("state") or {}
            slot.restart_count = int(before.get("restartCount") or 0)
            slot.last_state = before.get("lastState") or {}
            if "terminated" in state:
                slot.finished = state["terminated"]
            elif "running" in state:
                slot.finished = {
                    "exitCode": 137,
                    "reason": "Error",
                    "message": "the node agent restarted while the container ran",
                    "startedAt": state["running"].get("startedAt"),
                    "finishedAt": rfc3339(now()),
                }
            else:
                continue
            slot.waiting = None
            if slot.kind == "init" and slot.exit_code == 0:
                slot.succeeded = True
            elif self._should_restart(slot):
                slot.restart_at = time.monotonic()

    # --- status ---------------------------------------------------------------------------

    def _phase(self) -> str:
        if self._terminal is not None:
            return self._terminal[0]
        if any(not s.succeeded and s.kind == "init" for s in self._init):
            return "Pending"
        if any(s.kind == "sidecar" and not s.started for s in self._init):
            return "Pending"
        if any(s.run is None and s.finished is None for s in self._main):
            return "Pending"
        return "Running"

    def _view(self) -> PodView:
        terminal = self._terminal
        return PodView(
            phase=self._phase(),
            sandbox_ready=bool(self._ip) and self._volumes is not None,
            init=[
                ContainerView(
                    s.name, s.status(), s.ready, s.succeeded if s.kind == "init" else s.started
                )
                for s in self._init
            ],
            main=[ContainerView(s.name, s.status(), s.ready, s.started) for s in self._main],
            pod_ip=self._ip,
            host_ip=self._runtime.host_ip,
            start_time=self._start_time,
            reason=terminal[1] if terminal else "",
            message=terminal[2] if terminal else "",
        )

    def _report(self, pod: Obj, *, timeout: float = 10.0) -> None:
        if self._adopted_terminal:
            return
        status = build_status(pod, self._view(), rfc3339(now()))
        if status == self._last_reported:
            return
        metadata = pod["metadata"]
        try:
            self._runtime.kube.request(
                "PATCH",
                f"/api/v1/namespaces/{path_quote(metadata['namespace'])}/pods/"
                f"{path_quote(metadata['name'])}/status",
                body={"metadata": {"uid": self.uid}, "status": status},
                content_type="application/merge-patch+json",
                timeout=timeout,
            )
            self._last_reported = status
        except ApiError as error:
            if error.status in (404, 409):  # gone, or a new Pod of the same name
                self._gone = True
            else:
                log.warning("pod %s: status update failed: %s", self._key, error)
        except OSError as error:
            log.warning("pod %s: status update failed: %s", self._key, error)

    # --- events ---------------------------------------------------------------------------

    def _event(
        self, pod: Obj, reason: str, message: str, *, warning: bool = False, container: str = ""
    ) -> None:
        self._runtime.events.pod_event(pod, reason, message, warning=warning, container=container)

    def _event_once(self, pod: Obj, key: str, message: str, container: str = "") -> None:
        if key in self._events_sent:
            return
        self._events_sent.add(key)
        self._event(pod, key.split("/")[0], message, warning=True, container=container)


def pod_log_dir(logs_root: Path, pod: Obj) -> Path:
    metadata = pod["metadata"]
    return logs_root / f"{metadata['namespace']}_{metadata['name']}_{metadata['uid']}"


def container_paths(pods_root: Path, logs_root: Path, pod: Obj, container: str) -> ContainerPaths:
    uid = pod["metadata"]["uid"]
    return ContainerPaths(
        dir=pods_root / uid / "containers" / container,
        log=pod_log_dir(logs_root, pod) / f"{container}.log",
    )
