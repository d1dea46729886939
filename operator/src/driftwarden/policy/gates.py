"""Gates: may a run's candidate replace the model in use?

Both models were measured by the same run on the same holdout and the same device
(``contract.ModelMetrics``: baseline = the model in use, candidate = the new one). Each gate
yields a ``GateResult`` whose message names the gate and its numbers, so a rejection can be
reported as it is (condition reason ``PromotionRejected``). A gate whose measurement is
missing fails: a candidate is never promoted on numbers nobody took.

Comparisons are done in Decimal on the floats' shortest representation, so a drop of
exactly the allowed points passes (0.95 - 0.94 is 0.01, not 0.010000000000000009).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from optimizer_job.contract import ModelMetrics

GateName = Literal["AccuracyDrop", "MinAccuracy", "Speedup", "Size"]

DEFAULT_LATENCY_BATCH = 32


@dataclass(frozen=True)
class GateSettings:
    """``spec.gates``; None leaves a gate out."""

    max_accuracy_drop_percent: int | None = 1
    min_accuracy_percent: int | None = None
    min_speedup_percent: int | None = None
    max_size_bytes: Decimal | None = None
    # The batch size whose p95 the speed gate compares (the latency trigger's, else 32).
    latency_batch: int = DEFAULT_LATENCY_BATCH


@dataclass(frozen=True)
class GateResult:
    name: GateName
    passed: bool
    value: float | None  # what was observed (points, percent, bytes)
    limit: float
    message: str


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    results: tuple[GateResult, ...]

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def message(self) -> str:
        """One paragraph: the failing gates' messages, or a summary of the passed ones."""
        if not self.passed:
            return " ".join(r.message for r in self.failed)
        if not self.results:
            return "No gates are configured; the candidate passes."
        return "All gates passed: " + " ".join(r.message for r in self.results)


def evaluate_gates(
    settings: GateSettings, baseline: ModelMetrics | None, candidate: ModelMetrics | None
) -> GateVerdict:
    base = baseline or ModelMetrics()
    cand = candidate or ModelMetrics()
    results: list[GateResult] = []
    if settings.max_accuracy_drop_percent is not None:
        results.append(_accuracy_drop(settings.max_accuracy_drop_percent, base, cand))
    if settings.min_accuracy_percent is not None:
        results.append(_min_accuracy(settings.min_accuracy_percent, cand))
    if settings.min_speedup_percent is not None:
        results.append(_speedup(settings.min_speedup_percent, settings.latency_batch, base, cand))
    if settings.max_size_bytes is not None:
        results.append(_size(settings.max_size_bytes, cand))
    return GateVerdict(passed=all(r.passed for r in results), results=tuple(results))


def speedup_percent(baseline_ms: float, candidate_ms: float) -> Decimal:
    """(baseline / candidate - 1) x 100: 50 means 1.5x faster, negative means slower."""
    return (_exact(baseline_ms) / _exact(candidate_ms) - 1) * 100


def latency_key(batch: int, quantile: str = "p95") -> str:
    """The key of ``ModelMetrics.latency_ms`` for a batch size, e.g. b32_p95."""
    return f"b{batch}_{quantile}"


def _accuracy_drop(limit: int, base: ModelMetrics, cand: ModelMetrics) -> GateResult:
    name: GateName = "AccuracyDrop"
    if base.accuracy is None or cand.accuracy is None:
        which = "the model in use" if base.accuracy is None else "the candidate"
        return GateResult(
            name,
            False,
            None,
            limit,
            f"Gate {name} failed: the accuracy of {which} was not measured.",
        )
    drop = (_exact(base.accuracy) - _exact(cand.accuracy)) * 100
    passed = drop <= limit
    numbers = f"{_pct(base.accuracy)} -> {_pct(cand.accuracy)}"
    if passed:
        change = f"fell {drop:.2f} points" if drop > 0 else f"rose {-drop:.2f} points"
        message = f"Gate {name} passed: accuracy {change} ({numbers}), at most {limit} allowed."
    else:
        message = (
            f"Gate {name} failed: accuracy fell {drop:.2f} points ({numbers}), "
            f"more than the allowed {limit}."
        )
    return GateResult(name, passed, float(drop), limit, message)


def _min_accuracy(limit: int, cand: ModelMetrics) -> GateResult:
    name: GateName = "MinAccuracy"
    if cand.accuracy is None:
        return GateResult(
            name,
            False,
            None,
            limit,
            f"Gate {name} failed: the candidate's accuracy was not measured.",
        )
    percent = _exact(cand.accuracy) * 100
    passed = percent >= limit
    verb = "passed" if passed else "failed"
    relation = "at least" if passed else "under the minimum"
    return GateResult(
        name,
        passed,
        float(percent),
        limit,
        f"Gate {name} {verb}: candidate accuracy {percent:.2f}% is {relation} {limit}%.",
    )


def _speedup(limit: int, batch: int, base: ModelMetrics, cand: ModelMetrics) -> GateResult:
    name: GateName = "Speedup"
    key = latency_key(batch)
    base_ms, cand_ms = base.latency_ms.get(key), cand.latency_ms.get(key)
    if base_ms is None or cand_ms is None or base_ms <= 0 or cand_ms <= 0:
        which = "the model in use" if base_ms is None or base_ms <= 0 else "the candidate"
        return GateResult(
            name,
            False,
            None,
            limit,
            f"Gate {name} failed: the p95 latency of {which} at batch {batch} was not measured.",
        )
    gained = speedup_percent(base_ms, cand_ms)
    passed = gained >= limit
    numbers = (
        f"p95 at batch {batch} went from {base_ms:.3f} ms to {cand_ms:.3f} ms "
        f"({_exact(base_ms) / _exact(cand_ms):.2f}x, {gained:+.1f}%)"
    )
    if passed:
        message = f"Gate {name} passed: {numbers}, at least +{limit}% required."
    else:
        message = f"Gate {name} failed: {numbers}, less than the required +{limit}%."
    return GateResult(name, passed, float(gained), limit, message)


def _size(limit: Decimal, cand: ModelMetrics) -> GateResult:
    name: GateName = "Size"
    if cand.size_bytes is None:
        return GateResult(
            name,
            False,
            None,
            float(limit),
            f"Gate {name} failed: the candidate's size was not measured.",
        )
    passed = cand.size_bytes <= limit
    verb, relation = ("passed", "within") if passed else ("failed", "over")
    return GateResult(
        name,
        passed,
        float(cand.size_bytes),
        float(limit),
        f"Gate {name} {verb}: the candidate's weights take {_bytes(cand.size_bytes)}, "
        f"{relation} the limit of {_bytes(limit)}.",
    )


def _exact(value: float) -> Decimal:
    return Decimal(repr(value))


def _pct(fraction: float) -> str:
    return f"{_exact(fraction) * 100:.2f}%"


def _bytes(size: int | Decimal) -> str:
    mib = Decimal(size) / (1024 * 1024)
    return f"{int(size)} bytes ({mib:.2f} MiB)"
