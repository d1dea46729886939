"""The agent: one Node, a PodWorker per Pod bound to it, and the node-wide loops."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable

from devcluster.node_agent.config import AgentConfig
from devcluster.node_agent.informer import Informer
from devcluster.node_agent.kube import ApiError, Kube
from devcluster.node_agent.log_server import LogServer
from devcluster.node_agent.node import NodeLifecycle, capacity
from devcluster.node_agent.pod_worker import PodWorker
from devcluster.node_agent.provisioner import LocalProvisioner
from devcluster.node_agent.runtime import NodeRuntime

log = logging.getLogger(__name__)

REGISTER_RETRY_SECONDS = 1.0
WORKER_RESTART_SECONDS = 5.0


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.stop = threading.Event()
        self._wake = threading.Event()
        for directory in (config.state_dir, config.logs_dir, config.pods_dir, config.pvc_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.kube = Kube(config.kubeconfig)
        self.log_server = LogServer(config.state_dir, self.stop) if config.serve_logs else None
        self.node = NodeLifecycle(config, self.kube, self.log_server.port if self.log_server else 0)
        self.runtime = NodeRuntime.create(config, self.kube, capacity(config))
        self.workers: dict[str, PodWorker] = {}
        self.informer = Informer(
            self.kube,
            "/api/v1/pods",
            field_selector=f"spec.nodeName={config.node_name}",
            on_change=self._wake.set,
            stop=self.stop,
        )
        self._swept_leftovers = False

    def request_stop(self) -> None:
        self.stop.set()
        self._wake.set()

    def run(self) -> None:
        if self.log_server:
            self.log_server.start()
        if not self._register():
            self._close()
            return
        self._spawn("heartbeat", lambda: self.node.run(self.stop))
        self._spawn("pod-informer", self.informer.run)
        if self.config.storage_provisioner:
            provisioner = LocalProvisioner(self.kube, self.config.pvc_dir)
            self._spawn("provisioner", lambda: provisioner.run(self.stop))
        log.info("node %s is registered and ready", self.config.node_name)
        while not self.stop.is_set():
            self._wake.wait(self.config.resync_seconds)
            self._wake.clear()
            if self.stop.is_set():
                break
            if self.informer.synced.is_set():
                try:
                    self.sync()
                except Exception:
                    log.exception("pod sync failed; retrying")
        self._shut_down()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        threading.Thread(target=target, name=name, daemon=True).start()

    def _register(self) -> bool:
        while not self.stop.is_set():
            try:
                self.node.register()
                return True
            except (ApiError, OSError) as error:
                log.warning("node registration failed (%s); retrying", error)
                self.stop.wait(REGISTER_RETRY_SECONDS)
        return False

    def sync(self) -> None:
        """Level-based: one worker per Pod bound here, cleaned up once the Pod is gone."""
        pods = self.informer.snapshot()
        for uid, pod in pods.items():
            worker = self.workers.get(uid)
            if worker is not None and worker.crashed_at is not None and worker.done.is_set():
                # A bug hit this Pod's worker; a new one takes over from the Pod's status.
                if time.monotonic() - worker.crashed_at < WORKER_RESTART_SECONDS:
                    continue
                log.warning("restarting the worker of pod %s", uid)
                worker = None
            if worker is None:
                worker = PodWorker(pod, self.runtime)
                self.workers[uid] = worker
                worker.start()
            else:
                worker.update(pod)
        for uid, worker in list(self.workers.items()):
            if uid in pods:
                continue
            if not worker.done.is_set():
                worker.mark_gone()
                continue
            self.runtime.volumes.remove(uid)
            self.runtime.ips.release(uid)
            self.runtime.gpus.release_prefix(f"{uid}/")
            del self.workers[uid]
        if not self._swept_leftovers:
            self._sweep_leftovers(set(pods))

    def _sweep_leftovers(self, live: set[str]) -> None:
        """Pod directories of Pods deleted while no agent ran."""
        self._swept_leftovers = True
        for directory in self.config.pods_dir.iterdir():
            if directory.name not in live and directory.name not in self.workers:
                shutil.rmtree(directory, ignore_errors=True)

    def _shut_down(self) -> None:
        grace = self.config.shutdown_grace_seconds
        log.info("stopping %d pod(s), at most %.0fs each", len(self.workers), grace)
        for worker in self.workers.values():
            worker.shut_down(grace)
        deadline = time.monotonic() + grace + 5
        for worker in self.workers.values():
            worker.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        try:
            self.node.heartbeat(ready=False)
        except (ApiError, OSError) as error:
            log.debug("could not mark the node NotReady: %s", error)
        self._close()
        log.info("node agent stopped")

    def _close(self) -> None:
        self.runtime.events.close()
        if self.log_server:
            self.log_server.close()
