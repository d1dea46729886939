"""driftwarden.scheduler: passes when due, one at a time per resource, bounded threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

import pytest

from driftwarden.scheduler import Scheduler

pytestmark = pytest.mark.unit


def wait_until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def test_a_woken_resource_runs_and_comes_back_when_its_pass_asks() -> None:
    runs: list[Hashable] = []

    def run(key: Hashable) -> float | None:
        runs.append(key)
        return 0.05 if len(runs) < 3 else None

    scheduler = Scheduler(run, workers=2)
    scheduler.start()
    try:
        scheduler.wake("a")
        wait_until(lambda: len(runs) >= 3)
        time.sleep(0.2)
        assert runs == ["a", "a", "a"]  # None: only an event brings it back
        assert scheduler.pending() == 0
    finally:
        scheduler.stop()


def test_one_pass_per_resource_at_a_time_and_a_wake_during_it_runs_once_more() -> None:
    inside = threading.Event()
    release = threading.Event()
    active: list[int] = [0]
    most: list[int] = [0]
    runs: list[Hashable] = []
    lock = threading.Lock()

    def run(key: Hashable) -> float | None:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
            runs.append(key)
        if len(runs) == 1:
            inside.set()
            release.wait(5)
        with lock:
            active[0] -= 1
        return None

    scheduler = Scheduler(run, workers=4)
    scheduler.start()
    try:
        scheduler.wake("a")
        assert inside.wait(5)
        for _ in range(5):
            scheduler.wake("a")
        release.set()
        wait_until(lambda: len(runs) >= 2)
        time.sleep(0.2)
        assert runs == ["a", "a"]
        assert most[0] == 1
    finally:
        scheduler.stop()


def test_a_slow_pass_holds_one_thread_and_others_proceed() -> None:
    release = threading.Event()
    done: list[Hashable] = []

    def run(key: Hashable) -> float | None:
        if key == "slow":
            release.wait(10)
        done.append(key)
        return None

    scheduler = Scheduler(run, workers=2)
    scheduler.start()
    try:
        scheduler.wake("slow")
        for i in range(20):
            scheduler.wake(f"fast-{i}")
        wait_until(lambda: len(done) == 20)
        assert "slow" not in done
        release.set()
        wait_until(lambda: "slow" in done)
    finally:
        scheduler.stop()


def test_a_failing_pass_is_retried_with_backoff_and_a_forgotten_one_stops() -> None:
    calls: list[float] = []

    def run(key: Hashable) -> float | None:
        calls.append(time.monotonic())
        raise RuntimeError("API down")

    clock_offset = [0.0]
    scheduler = Scheduler(run, workers=1, clock=lambda: time.monotonic() + clock_offset[0])
    scheduler.start()
    try:
        scheduler.wake("a")
        wait_until(lambda: len(calls) == 1)
        time.sleep(0.3)
        assert len(calls) == 1  # the first retry is 2 s away
        clock_offset[0] += 2.5
        scheduler.wake("b", delay=0.0)  # any notify re-evaluates the due times
        wait_until(lambda: len(calls) >= 2)
        scheduler.forget("a")
        clock_offset[0] += 100
        scheduler.wake("b", delay=0.0)
        time.sleep(0.3)
        assert scheduler.pending() <= 1
    finally:
        scheduler.stop()


def test_standing_by_no_pass_starts_a_running_one_finishes_due_ones_run_on_resume() -> None:
    inside, release, finished = threading.Event(), threading.Event(), threading.Event()
    runs: list[Hashable] = []

    def run(key: Hashable) -> float | None:
        runs.append(key)
        if key == "slow" and runs.count("slow") == 1:
            inside.set()
            release.wait(5)
            finished.set()
        return 0.01  # due again at once: an ungated scheduler would run it ~30 times below

    scheduler = Scheduler(run, workers=4)
    scheduler.start()
    try:
        scheduler.wake("slow")
        assert inside.wait(5)
        scheduler.set_active(False)
        assert not scheduler.active
        scheduler.wake("woken")  # an event while standing by: kept, not run
        release.set()
        assert finished.wait(5)  # the pass that was running finished
        time.sleep(0.3)
        assert runs == ["slow"]
        assert scheduler.pending() == 2  # both due, neither started
        scheduler.set_active(True)
        wait_until(lambda: "woken" in runs and runs.count("slow") >= 3)
    finally:
        scheduler.stop()
