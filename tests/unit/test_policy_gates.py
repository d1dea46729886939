"""Gates: pass/fail on the numbers, messages that name the gate and its numbers."""

from __future__ import annotations

from decimal import Decimal

import pytest

from driftwarden.policy.gates import GateSettings, evaluate_gates, speed_gate
from optimizer_job.contract import ModelMetrics, SpeedDecision, SpeedRatio

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


def ratio(batch: int, value: float, low: float, high: float, rounds: int = 40) -> SpeedRatio:
    return SpeedRatio(batch_size=batch, ratio=value, low=low, high=high, rounds=rounds)


SPEEDUP_50 = GateSettings(max_accuracy_drop_percent=None, min_speedup_percent=50)


def test_speedup_decides_on_the_lower_bound_of_the_interval() -> None:
    exactly = evaluate_gates(SPEEDUP_50, BASE, cand(), [ratio(32, 1.6, 1.5, 1.7)], "Latency")
    assert exactly.passed and exactly.results[0].value == pytest.approx(50.0)
    (result,) = exactly.results
    assert (result.batch_size, result.low, result.high, result.rounds) == (32, 1.5, 1.7, 40)
    assert result.message == (
        "Gate Speedup passed (applies because the run was started by Latency: it must make "
        "the model faster): at batch 32 the candidate is 1.60x as fast (95% interval "
        "1.50-1.70x, 40 rounds); its lower bound meets the required 1.50x (+50%)."
    )
    # A point estimate far above the limit does not pass when the interval reaches under it.
    noisy = evaluate_gates(SPEEDUP_50, BASE, cand(), [ratio(32, 2.5, 1.2, 3.9)], "Latency")
    assert not noisy.passed and noisy.inconclusive
    assert "Gate Speedup inconclusive (InconclusiveLatency" in noisy.message
    slow = evaluate_gates(SPEEDUP_50, BASE, cand(), [ratio(32, 1.3, 1.25, 1.4)], "Latency")
    assert not slow.passed and not slow.inconclusive
    assert "even its upper bound is under the required 1.50x (+50%)" in slow.message


def test_the_speed_gate_protects_its_batch_size_and_reports_the_others() -> None:
    batch1 = GateSettings(max_accuracy_drop_percent=None, min_speedup_percent=50, latency_batch=1)
    speed = [ratio(1, 0.63, 0.6, 0.66), ratio(32, 2.1, 2.0, 2.2)]
    verdict = evaluate_gates(batch1, BASE, cand(), speed, "Latency")
    assert not verdict.passed and verdict.results[0].batch_size == 1
    assert "at batch 1 the candidate is 0.63x" in verdict.message
    assert "Other batch sizes: b32 2.10x (2.00-2.20)." in verdict.message
    at32 = evaluate_gates(SPEEDUP_50, BASE, cand(), speed, "Latency")
    assert at32.passed and "Other batch sizes: b1 0.63x (0.60-0.66)." in at32.message


def test_a_missing_interval_fails_the_speed_gate() -> None:
    verdict = evaluate_gates(SPEEDUP_50, BASE, cand(), [ratio(1, 2.0, 1.9, 2.1)], "Latency")
    assert not verdict.passed and not verdict.inconclusive
    assert "measured no speed ratio interval at batch 32" in verdict.message


@pytest.mark.parametrize(
    ("trigger", "name"),
    [
        ("Latency", "Speedup"),
        ("Manual", "Speedup"),
        ("Schedule", "Speedup"),
        (None, "Speedup"),
        ("Drift", "MaxSlowdown"),
        ("Accuracy", "MaxSlowdown"),
    ],
)
def test_the_speed_gate_follows_the_runs_purpose(trigger: str | None, name: str) -> None:
    settings = GateSettings(min_speedup_percent=25, max_slowdown_percent=10)
    gate = speed_gate(settings, trigger)
    assert gate is not None and gate.name == name
    assert f"started by {trigger or 'hand'}" in gate.why


def test_without_a_speedup_only_drift_and_accuracy_runs_get_the_slowdown_tolerance() -> None:
    settings = GateSettings(max_slowdown_percent=10)
    for trigger in ("Drift", "Accuracy"):
        gate = speed_gate(settings, trigger)
        assert gate is not None and gate.name == "MaxSlowdown"
    for other in ("Latency", "Manual", "Schedule", None):
        assert speed_gate(settings, other) is None
    assert speed_gate(GateSettings(), "Drift") is None


def test_required_ratios_and_what_the_job_is_told() -> None:
    speedup = speed_gate(GateSettings(min_speedup_percent=25, latency_batch=64), "Latency")
    slowdown = speed_gate(GateSettings(max_slowdown_percent=10, latency_batch=64), "Drift")
    assert speedup is not None and slowdown is not None
    assert speedup.required_ratio == Decimal("1.2500")
    assert slowdown.required_ratio == Decimal("0.9091")  # 1 / 1.1
    assert speedup.decision() == SpeedDecision(batch_size=64, min_ratio="1.2500")
    assert slowdown.decision() == SpeedDecision(batch_size=64, min_ratio="0.9091")


def test_a_drift_run_is_not_rejected_for_being_about_as_fast() -> None:
    # The demo's drift run: accuracy restored, p95 11.2 -> 11.8 ms (0.95x). A speedup gate
    # rejected it; the drift run's gate is the slowdown tolerance.
    settings = GateSettings(
        max_accuracy_drop_percent=2,
        min_speedup_percent=25,
        max_slowdown_percent=10,
        latency_batch=64,
    )
    retrained = cand(accuracy=0.97)
    speed = [ratio(64, 0.95, 0.93, 0.97)]
    drift = evaluate_gates(settings, BASE, retrained, speed, "Drift")
    assert drift.passed
    (_, slowdown) = drift.results
    assert slowdown.name == "MaxSlowdown" and slowdown.value == pytest.approx(7.53)
    assert "judged on accuracy and may not make the model much slower" in slowdown.message
    assert "meets the required 0.91x (-10%)" in slowdown.message
    latency = evaluate_gates(settings, BASE, retrained, speed, "Latency")
    assert not latency.passed and latency.failed[0].name == "Speedup"
    much_slower = evaluate_gates(settings, BASE, retrained, [ratio(64, 0.8, 0.75, 0.85)], "Drift")
    assert not much_slower.passed and "Gate MaxSlowdown failed" in much_slower.message


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
    verdict = evaluate_gates(settings, BASE, ModelMetrics(), trigger="Latency")
    assert [r.name for r in verdict.failed] == ["AccuracyDrop", "Speedup", "Size"]
    assert "accuracy of the candidate was not measured" in verdict.message
    no_baseline = evaluate_gates(GateSettings(), None, cand())
    assert not no_baseline.passed and "the model in use" in no_baseline.message


def test_all_failing_gates_are_named_and_passing_ones_are_not_in_the_rejection() -> None:
    settings = GateSettings(
        max_accuracy_drop_percent=1, min_speedup_percent=50, max_size_bytes=Decimal(10**9)
    )
    verdict = evaluate_gates(
        settings, BASE, cand(accuracy=0.90), [ratio(32, 1.1, 1.0, 1.2)], "Latency"
    )
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
