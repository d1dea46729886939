"""Kubernetes Events about Pods (Started, Killing, BackOff, ...), sent in the background.

Events are what `kubectl describe pod` shows; sending them must never slow a Pod down or
fail it, so they go through a bounded queue and are dropped when the API is unreachable.
"""

from __future__ import annotations

import logging
import queue
import threading

from devcluster.node_agent.container import now, rfc3339
from devcluster.node_agent.kube import ApiError, Kube, Obj, path_quote

log = logging.getLogger(__name__)


class EventRecorder:
    def __init__(self, kube: Kube, node_name: str) -> None:
        self._kube = kube
        self._node = node_name
        self._queue: queue.Queue[Obj | None] = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._send_all, name="events", daemon=True)
        self._thread.start()

    def pod_event(
        self, pod: Obj, reason: str, message: str, *, warning: bool = False, container: str = ""
    ) -> None:
        metadata = pod["metadata"]
        stamp = rfc3339(now())
        involved: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata["uid"],
        }
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{metadata['name']}.",
                "namespace": metadata["namespace"],
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": "kubelet", "host": self._node},
            "reportingComponent": "kubelet",
            "reportingInstance": self._node,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.debug("event queue full; dropping %s", reason)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _send_all(self) -> None:
        while (event := self._queue.get()) is not None:
            namespace = event["metadata"]["namespace"]
            try:
                self._kube.request(
                    "POST",
                    f"/api/v1/namespaces/{path_quote(namespace)}/events",
                    body=event,
                    timeout=5,
                )
            except (ApiError, OSError) as error:
                log.debug("event %s not recorded: %s", event["reason"], error)
