"""A list-then-watch cache of API objects that survives dropped connections.

The watch resumes from the last resourceVersion it saw (bookmarks keep that fresh); when the
server answers 410 Gone, the cache is rebuilt from a new list. Callers read a snapshot and are
woken on every change; they also resync from the snapshot on their own timer, so a lost event
delays work instead of losing it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from devcluster.node_agent.kube import ApiError, Kube, Obj, WatchExpiredError

log = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 300


class Informer:
    def __init__(
        self,
        kube: Kube,
        path: str,
        *,
        field_selector: str | None = None,
        on_change: Callable[[], None] = lambda: None,
        stop: threading.Event,
        retry_seconds: float = 1.0,
    ) -> None:
        self._kube = kube
        self._path = path
        self._field_selector = field_selector
        self._on_change = on_change
        self._stop = stop
        self._retry = retry_seconds
        self._objects: dict[str, Obj] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()

    def snapshot(self) -> dict[str, Obj]:
        """uid -> the newest version of each object."""
        with self._lock:
            return dict(self._objects)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                version = self._list()
                self._watch_from(version)
            except WatchExpiredError:
                log.info("watch on %s expired; listing again", self._path)
            except (ApiError, OSError, ValueError) as error:
                log.warning("watch on %s failed: %s; retrying", self._path, error)
                self._stop.wait(self._retry)
            except Exception:
                log.exception("watch on %s crashed; retrying", self._path)
                self._stop.wait(self._retry)

    def _query(self) -> dict[str, str]:
        return {"fieldSelector": self._field_selector} if self._field_selector else {}

    def _list(self) -> str:
        answer = self._kube.get(self._path, **self._query())
        objects = {item["metadata"]["uid"]: item for item in answer.get("items", [])}
        with self._lock:
            self._objects = objects
        self.synced.set()
        self._on_change()
        return str(answer.get("metadata", {}).get("resourceVersion", ""))

    def _watch_from(self, version: str) -> None:
        while not self._stop.is_set():
            events = self._kube.watch(
                self._path,
                timeout_seconds=WATCH_TIMEOUT_SECONDS,
                resourceVersion=version,
                allowWatchBookmarks="true",
                **self._query(),
            )
            for event in events:
                obj = event.get("object", {})
                version = obj.get("metadata", {}).get("resourceVersion", version)
                kind = event.get("type")
                if kind == "BOOKMARK":
                    continue
                uid = obj["metadata"]["uid"]
                with self._lock:
                    if kind == "DELETED":
                        self._objects.pop(uid, None)
                    else:
                        self._objects[uid] = obj
                self._on_change()
                if self._stop.is_set():
                    return
