"""Runs each resource's reconcile pass when it is due, on a bounded pool of threads.

kopf's handlers only *wake* a resource (created, changed, resumed, one of its Jobs changed,
a claim it waits for appeared); the pass itself runs here. Each pass returns when it wants
to run again (driftwarden.policy.pacing: a policy's next check, else the safety resync), so
an idle resource costs nothing between its checks, and no fixed short resync re-reads
every resource.

- At most one pass per resource at a time; a wake during a pass runs one more pass after it.
- At most ``workers`` passes at once, the earliest due first: a pass blocked on a slow
  dependency (each outbound call has its own deadline) holds one of these threads, never
  kopf's own, and never more than one per resource.
- A pass that raised is tried again with backoff (2, 5, 10, 30, 60 s).
- While this replica stands by (``set_active(False)``: another replica works, kopf
  peering) no pass starts at all; wakes and due times are kept, and when it works again
  every pass that fell due meanwhile runs. A pass already running finishes (its writes
  are conditional on what it read).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Final

_log = logging.getLogger(__name__)

RETRY_BACKOFF: Final = (2.0, 5.0, 10.0, 30.0, 60.0)

# A pass: the seconds until it wants to run again (None: only when woken).
Pass = Callable[[Hashable], float | None]


class Scheduler:
    def __init__(
        self,
        run: Pass,
        *,
        workers: int,
        clock: Callable[[], float] = time.monotonic,
        active: bool = True,
    ) -> None:
        self._run = run
        self._active = active
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._due: dict[Hashable, float] = {}  # the one valid heap entry per key
        self._running: set[Hashable] = set()
        self._again: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._forgotten: set[Hashable] = set()
        self._slots = threading.Semaphore(workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
        self._stopped = False
        self._thread = threading.Thread(target=self._dispatch, name="scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def set_active(self, active: bool) -> None:
        """Work (True) or stand by (False): no pass starts while standing by."""
        with self._cond:
            self._active = active
            self._cond.notify_all()

    @property
    def active(self) -> bool:
        with self._cond:
            return self._active

    def wake(self, key: Hashable, delay: float = 0.0) -> None:
        """Run the pass of ``key`` in ``delay`` seconds, or sooner if it was due sooner."""
        with self._cond:
            self._forgotten.discard(key)
            if key in self._running and delay <= 0:
                self._again.add(key)
                return
            self._schedule(key, self._clock() + max(delay, 0.0))

    def forget(self, key: Hashable) -> None:
        """The resource is gone: no more passes (one that is running finishes)."""
        with self._cond:
            self._due.pop(key, None)
            self._again.discard(key)
            self._failures.pop(key, None)
            self._forgotten.add(key)

    def pending(self) -> int:
        with self._cond:
            return len(self._due)

    def _schedule(self, key: Hashable, at: float) -> None:
        current = self._due.get(key)
        if current is not None and current <= at:
            return
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._seq), key))
        self._cond.notify()

    def _next_due(self) -> Hashable | None:
        """Under the lock: the earliest due key, waiting until it is due."""
        while not self._stopped:
            if not self._active:
                self._cond.wait()
                continue
            while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
                heapq.heappop(self._heap)  # superseded or forgotten
            if not self._heap:
                self._cond.wait()
                continue
            at, _, key = self._heap[0]
            wait = at - self._clock()
            if wait > 0:
                self._cond.wait(wait)
                continue
            heapq.heappop(self._heap)
            del self._due[key]
            if key in self._running:
                self._again.add(key)
                continue
            self._running.add(key)
            return key
        return None

    def _dispatch(self) -> None:
        while True:
            self._slots.acquire()
            with self._cond:
                key = self._next_due()
            if key is None:
                return
            try:
                self._pool.submit(self._work, key)
            except RuntimeError:  # shut down
                return

    def _work(self, key: Hashable) -> None:
        with self._cond:
            if not self._active:  # stood by between its dispatch and now: due again at once
                self._running.discard(key)
                self._again.discard(key)
                self._slots.release()
                if key not in self._forgotten:
                    self._schedule(key, self._clock())
                return
        delay: float | None
        try:
            delay = self._run(key)
            failures = 0
        except Exception as error:
            with self._cond:
                failures = self._failures.get(key, 0) + 1
            delay = RETRY_BACKOFF[min(failures, len(RETRY_BACKOFF)) - 1]
            _log.info("pass of %s failed (%s); again in %.0f s", key, error, delay)
        finally:
            self._slots.release()
        with self._cond:
            self._running.discard(key)
            if failures:
                self._failures[key] = failures
            else:
                self._failures.pop(key, None)
            if key in self._forgotten:
                return
            if key in self._again:
                self._again.discard(key)
                self._schedule(key, self._clock())
            elif delay is not None:
                self._schedule(key, self._clock() + max(delay, 0.0))
