"""Gates: pass/fail on the numbers, messages that name the gate and its numbers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from driftwarden.policy.gates import GateSettings, evaluate_gates, speedup_percent
from optimizer_job.contract import ModelMetrics

pytestmark = pytest.mark.unit

BASE = ModelMetrics(
    accuracy=0.95, latency_ms={"b32_p95": 12.0, "b1_p95": 1.0}, size_bytes=4_000_000
)


def cand(**kwargs: object) -> ModelMetrics:
    return BASE.model_copy(update=kwargs)


def test_accuracy_drop_exactly_at_the_limit_passes() -> None:
    verdict = evaluate_gates(GateSettings(max_accuracy_drop_percent=1), BASE, cand(accuracy=0.94))
    assert verdict.passed
    (result,) = verdict.results
    assert result.name == "AccuracyDrop" and result.value == pytest.approx(1.0)
    assert "fell 1.00 points" in result.message and "95.00% -> 94.00%" in result.message


def test_accuracy_drop_over_the_limit_fails_with_its_numbers() -> None:
    verdict = evaluate_gates(GateSettings(max_accuracy_drop_percent=1), BASE, cand(accuracy=0.925))
    assert not verdict.passed
    assert verdict.message == (
        "Gate AccuracyDrop failed: accuracy fell 2.50 points (95.00% -> 92.50%), "
        "more than the allowed 1."
    )


def test_a_better_candidate_passes_a_zero_drop_gate() -> None:
    verdict = evaluate_gates(GateSettings(max_accuracy_drop_percent=0), BASE, cand(accuracy=0.97))
    assert verdict.passed and "rose 2.00 points" in verdict.results[0].message


def test_min_accuracy() -> None:
    settings = GateSettings(max_accuracy_drop_percent=None, min_accuracy_percent=95)
    assert evaluate_gates(settings, BASE, cand(accuracy=0.95)).passed
    failed = evaluate_gates(settings, BASE, cand(accuracy=0.9499))
    assert not failed.passed
    assert (
        failed.message
        == "Gate MinAccuracy failed: candidate accuracy 94.99% is under the minimum 95%."
    )


def test_speedup_at_the_configured_batch() -> None:
    settings = GateSettings(max_accuracy_drop_percent=None, min_speedup_percent=50)
    fast = evaluate_gates(settings, BASE, cand(latency_ms={"b32_p95": 8.0}))  # exactly 1.5x
    assert fast.passed and fast.results[0].value == pytest.approx(50.0)
    slow = evaluate_gates(settings, BASE, cand(latency_ms={"b32_p95": 9.0}))
    assert not slow.passed
    assert slow.message == (
        "Gate Speedup failed: p95 at batch 32 went from 12.000 ms to 9.000 ms "
        "(1.33x, +33.3%), less than the required +50%."
    )
    batch1 = GateSettings(max_accuracy_drop_percent=None, min_speedup_percent=50, latency_batch=1)
    one = evaluate_gates(batch1, BASE, cand(latency_ms={"b1_p95": 0.5, "b32_p95": 12.0}))
    assert one.passed and "batch 1" in one.results[0].message


def test_a_slower_candidate_shows_a_negative_speedup() -> None:
    assert speedup_percent(10.0, 12.5) == Decimal("-20.0")
    settings = GateSettings(max_accuracy_drop_percent=None, min_speedup_percent=1)
    verdict = evaluate_gates(settings, BASE, cand(latency_ms={"b32_p95": 15.0}))
    assert not verdict.passed and "-20.0%" in verdict.message


def test_size_gate() -> None:
    settings = GateSettings(max_accuracy_drop_percent=None, max_size_bytes=Decimal(2 * 1024**2))
    assert evaluate_gates(settings, BASE, cand(size_bytes=2 * 1024**2)).passed
    verdict = evaluate_gates(settings, BASE, cand(size_bytes=3 * 1024**2))
    assert not verdict.passed
    assert "Gate Size failed" in verdict.message and "3.00 MiB" in verdict.message
    assert "2.00 MiB" in verdict.message


def test_missing_measurements_fail_their_gate() -> None:
    settings = GateSettings(
        max_accuracy_drop_percent=1, min_speedup_percent=10, max_size_bytes=Decimal(10**9)
    )
    verdict = evaluate_gates(settings, BASE, ModelMetrics())
    assert [r.name for r in verdict.failed] == ["AccuracyDrop", "Speedup", "Size"]
    assert "accuracy of the candidate was not measured" in verdict.message
    no_baseline = evaluate_gates(GateSettings(), None, cand())
    assert not no_baseline.passed and "the model in use" in no_baseline.message


def test_all_failing_gates_are_named_and_passing_ones_are_not_in_the_rejection() -> None:
    settings = GateSettings(
        max_accuracy_drop_percent=1, min_speedup_percent=50, max_size_bytes=Decimal(10**9)
    )
    verdict = evaluate_gates(settings, BASE, cand(accuracy=0.90, latency_ms={"b32_p95": 11.0}))
    assert [r.name for r in verdict.failed] == ["AccuracyDrop", "Speedup"]
    assert (
        "Gate AccuracyDrop failed" in verdict.message and "Gate Speedup failed" in verdict.message
    )
    assert "Size" not in verdict.message


def test_all_passed_summary_and_no_gates() -> None:
    verdict = evaluate_gates(GateSettings(), BASE, cand(accuracy=0.95))
    assert verdict.passed and verdict.message.startswith(
        "All gates passed: Gate AccuracyDrop passed"
    )
    none = evaluate_gates(GateSettings(max_accuracy_drop_percent=None), BASE, cand())
    assert none.passed and none.results == ()
