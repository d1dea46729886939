"""Metrics of a model: MACs against hand counts, size against the written file, latency keys,
and the speed ratio's interval under a load burst."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from optimizer_job import evaluate, zoo
from optimizer_job.contract import EvaluationSettings, SpeedDecision
from optimizer_job.dataio import Table
from optimizer_job.evaluate import (
    count_macs,
    count_parameters,
    measure,
    measure_pair,
    measure_side_by_side,
)
from optimizer_job.modelio import save_model
from optimizer_job.speed import RatioInterval

pytestmark = pytest.mark.job

CPU = torch.device("cpu")


def _conv_macs(c_in: int, c_out: int, size: int) -> int:
    return c_out * size * size * c_in * 9


def test_macs_of_the_zoo_models_match_the_hand_count() -> None:
    mlp = zoo.mlp(64, 10, hidden=[128, 64])
    assert count_macs(mlp, np.zeros((1, 64), np.float32), CPU) == 64 * 128 + 128 * 64 + 64 * 10
    cnn = zoo.small_cnn(1, 10, 32)
    expected = (
        _conv_macs(1, 64, 32)
        + _conv_macs(64, 128, 32)
        + _conv_macs(128, 128, 16)
        + 128 * 128
        + 128 * 10
    )
    assert count_macs(cnn, np.zeros((1, 1, 32, 32), np.float32), CPU) == expected
    assert expected >= 50_000_000  # big enough for structured pruning to show on a CPU


def test_measure_reports_accuracy_latency_size_parameters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.mlp(8, 3, hidden=[16])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    with torch.inference_mode():
        predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    labels = predicted.copy()
    labels[:10] = (labels[:10] + 1) % 3  # exactly 10 of 50 wrong
    holdout = Table(x, labels.astype(np.int64), [f"f{i}" for i in range(8)])
    settings = EvaluationSettings(
        latency_batch_sizes=[1, 4], latency_iterations=20, latency_warmup=2
    )
    metrics = measure(model, holdout, CPU, settings)
    assert metrics.accuracy == pytest.approx(0.8)
    assert set(metrics.latency_ms) == {f"b{b}_p{p}" for b in (1, 4) for p in (50, 95, 99)}
    assert all(v > 0 for v in metrics.latency_ms.values())
    assert metrics.latency_ms["b1_p50"] <= metrics.latency_ms["b1_p99"]
    assert metrics.parameters == 8 * 16 + 16 + 16 * 3 + 3 == count_parameters(model)
    save_model(
        model, zoo.MLP_FACTORY, {"in_features": 8, "num_classes": 3, "hidden": [16]}, tmp_path
    )
    assert metrics.size_bytes == (tmp_path / "model.safetensors").stat().st_size
    assert metrics.device == "cpu"


def test_measure_without_labels_reports_no_accuracy() -> None:
    model = zoo.mlp(4, 2, hidden=[4])
    table = Table(np.zeros((3, 4), np.float32), None, list("abcd"))
    metrics = measure(model, table, CPU, EvaluationSettings(latency_iterations=5, latency_warmup=0))
    assert metrics.accuracy is None and metrics.macs == 4 * 4 + 4 * 2


def test_side_by_side_measurement_tells_a_heavy_model_from_a_light_one() -> None:
    light = zoo.mlp(64, 10, hidden=[16])
    heavy = zoo.mlp(64, 10, hidden=[1024, 1024])
    table = Table(np.random.default_rng(0).random((40, 64), dtype=np.float32), None, [])
    settings = EvaluationSettings(latency_batch_sizes=[32], latency_iterations=30, latency_warmup=2)
    light_metrics, heavy_metrics = measure_side_by_side([light, heavy], table, CPU, settings)
    assert heavy_metrics.macs is not None and light_metrics.macs is not None
    assert heavy_metrics.macs > 100 * light_metrics.macs
    assert heavy_metrics.latency_ms["b32_p50"] > 3 * light_metrics.latency_ms["b32_p50"]


BURST_ATTEMPTS = 8


class Hogs:
    """``count`` CPU hog processes pinned to ``cpu``, stopped until ``start``."""

    def __init__(self, cpu: int, count: int) -> None:
        spin = f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
        self.processes = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]
        self.running = True
        self.stop()

    def start(self) -> None:
        if not self.running:
            for process in self.processes:
                os.kill(process.pid, signal.SIGCONT)
            self.running = True

    def stop(self) -> None:
        if self.running:
            for process in self.processes:
                os.kill(process.pid, signal.SIGSTOP)
            self.running = False

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            os.kill(process.pid, signal.SIGCONT)
            process.wait(timeout=30)


class Timed(nn.Module):
    """One model of a measured pair: calls to it tell the hogs which model's round runs.

    The baseline's wrapper starts the hogs at the first call of every ``every``-th round
    of it (a round starts when the other model ran last); the candidate's stops them: a
    CPU hog during one model's rounds, the load that fooled the old timer.
    """

    last: Timed | None = None

    def __init__(self, model: nn.Module, hogs: Hogs | None, every: int = 0) -> None:
        super().__init__()
        self.model, self.hogs, self.every = model, hogs, every
        self.rounds = self.bursts = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if Timed.last is not self:
            Timed.last = self
            self.rounds += 1
            if self.hogs is not None:
                if self.every and self.rounds % self.every == 0:
                    self.hogs.start()
                    time.sleep(0.002)  # let the hogs take the CPU before this round's calls
                    self.bursts += 1
                else:
                    self.hogs.stop()
        out: torch.Tensor = self.model(x)
        return out


@pytest.fixture
def one_cpu() -> Iterator[int]:
    """Pin this process to one CPU for the test, so a hog on it competes with the timing."""
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def test_a_load_burst_during_one_models_rounds_fools_the_p95_but_passes_no_gate(
    one_cpu: int,
) -> None:
    torch.manual_seed(0)
    model = zoo.mlp(256, 10, hidden=[1024, 1024])
    table = Table(np.random.default_rng(0).random((64, 256), dtype=np.float32), None, [])
    settings = EvaluationSettings(latency_batch_sizes=[32], latency_iterations=200)
    hogs = Hogs(one_cpu, count=8)
    try:
        # The same model twice: the true ratio is 1.0.
        quiet_pair = (Timed(model, None), Timed(copy.deepcopy(model), None))
        *_, (quiet,) = measure_pair(*quiet_pair, table, CPU, settings)
        # Whether a burst round's calls get preempted is the scheduler's choice: measure
        # until a burst did fool the p95 (the event this test is about), and check the
        # gate on every attempt, fooled or not.
        fooled: list[float] = []
        for _ in range(BURST_ATTEMPTS):
            baseline = Timed(model, hogs, every=3)
            candidate = Timed(copy.deepcopy(model), hogs)
            base, cand, (burst,) = measure_pair(baseline, candidate, table, CPU, settings)
            hogs.stop()
            p95_ratio = base.latency_ms["b32_p95"] / cand.latency_ms["b32_p95"]
            print(f"\nburst {burst} ({baseline.bursts} bursts), p95 ratio {p95_ratio}")
            assert baseline.bursts >= 5
            # The speed ratio times rounds by their fastest call in CPU time: the bursts
            # barely move it, and its lower bound, what the gate decides on, does not say
            # 25 % faster. (How the interval widens when a burst does get into rounds:
            # tests/unit/test_job_speed.)
            assert 0.8 < burst.ratio < 1.25 and burst.low < 1.25
            # The old gate compared p95s: a burst makes the same model look 25 % faster.
            if p95_ratio >= 1.25:
                fooled.append(p95_ratio)
                break
    finally:
        hogs.close()
    print(f"quiet {quiet}")
    assert fooled, f"no burst fooled the p95 in {BURST_ATTEMPTS} attempts"
    assert 0.8 < quiet.ratio < 1.25 and quiet.low < 1.25


@pytest.mark.parametrize(("verdict", "factor"), [("inconclusive", 4), ("pass", 1), ("fail", 1)])
def test_an_undecided_speed_gate_is_measured_again(
    monkeypatch: pytest.MonkeyPatch, verdict: str, factor: int
) -> None:
    decided: list[int] = []

    def decide(interval: RatioInterval, required: float) -> str:
        decided.append(interval.rounds)
        assert required == 1.25
        return verdict

    monkeypatch.setattr(evaluate, "decide", decide)
    light = zoo.mlp(64, 10, hidden=[16])
    table = Table(np.random.default_rng(0).random((40, 64), dtype=np.float32), None, [])
    settings = EvaluationSettings(latency_batch_sizes=[1, 4], latency_iterations=20)
    gate = SpeedDecision(batch_size=4, min_ratio="1.25")
    _, _, (at1, at4) = measure_pair(light, copy.deepcopy(light), table, CPU, settings, gate)
    assert at1.decision is None and at4.decision == verdict
    assert at4.rounds == factor * at1.rounds == factor * evaluate.MIN_ROUNDS
    assert decided == [evaluate.MIN_ROUNDS * k for k in range(1, factor + 1)]


def test_measure_pair_reports_every_batch_size_with_an_interval() -> None:
    light = zoo.mlp(64, 10, hidden=[16])
    heavy = zoo.mlp(64, 10, hidden=[1024, 1024])
    table = Table(np.random.default_rng(0).random((40, 64), dtype=np.float32), None, [])
    settings = EvaluationSettings(latency_batch_sizes=[1, 32], latency_iterations=30)
    _, _, speed = measure_pair(heavy, light, table, CPU, settings)
    assert [s.batch_size for s in speed] == [1, 32]
    for entry in speed:
        assert entry.low <= entry.ratio <= entry.high
        assert entry.low > 3  # the light candidate is far faster at both batch sizes
        assert entry.rounds >= 20 and entry.decision is None
