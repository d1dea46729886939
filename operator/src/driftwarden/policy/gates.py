"""Gates: may a run's candidate replace the model in use?

Both models were measured by the same run on the same holdout and the same device
(``contract.ModelMetrics``: baseline = the model in use, candidate = the new one). Each gate
yields a ``GateResult`` whose message names the gate and its numbers, so a rejection can be
reported as it is (condition reason ``PromotionRejected``). A gate whose measurement is
missing fails: a candidate is never promoted on numbers nobody took.

Comparisons are done in Decimal on the floats' shortest representation, so a drop of
exactly the allowed points passes (0.95 - 0.94 is 0.01, not 0.010000000000000009).

Speed is judged by purpose (``speed_gate``): a run started for latency must make the model
faster (Speedup, ``minSpeedupPercent``); a run started for drift or accuracy is judged on
accuracy and must only not be slower beyond a tolerance (MaxSlowdown,
``maxSlowdownPercent``); a manual, scheduled or initial run gets Speedup when the spec sets
``minSpeedupPercent``, else no speed gate (as a latency run without it). Either decides on
the confidence interval of the speed ratio the Job measured at one batch size
(``contract.SpeedRatio``): it passes when the interval's lower bound meets the required
ratio, fails when its upper bound does not, and is inconclusive in between
(InconclusiveLatency): not promoted, and not called slower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

from optimizer_job.contract import ModelMetrics, SpeedDecision, SpeedRatio

GateName = Literal["AccuracyDrop", "MinAccuracy", "Speedup", "MaxSlowdown", "Size"]

DEFAULT_LATENCY_BATCH = 32
DEFAULT_MAX_SLOWDOWN_PERCENT = 10
INCONCLUSIVE_LATENCY = "InconclusiveLatency"
# Triggers whose runs exist to restore accuracy: speed must only not regress.
ACCURACY_TRIGGERS = frozenset({"Drift", "Accuracy"})
LATENCY_TRIGGER = "Latency"
_RATIO_PLACES = Decimal("0.0001")


@dataclass(frozen=True)
class GateSettings:
    """``spec.gates``; None leaves a gate out."""

    max_accuracy_drop_percent: int | None = 1
    min_accuracy_percent: int | None = None
    min_speedup_percent: int | None = None
    max_slowdown_percent: int | None = None
    max_size_bytes: Decimal | None = None
    # The batch size the speed gate protects (gates.latencyBatchSize, else the latency
    # trigger's, else 32).
    latency_batch: int = DEFAULT_LATENCY_BATCH


@dataclass(frozen=True)
class SpeedGate:
    """The speed gate that applies to a run, and why."""

    name: Literal["Speedup", "MaxSlowdown"]
    limit: int  # percent: the speedup required, or the slowdown allowed
    batch_size: int
    why: str

    @property
    def required_ratio(self) -> Decimal:
        """Baseline / candidate latency the gate requires, to 4 places."""
        if self.name == "Speedup":
            ratio = 1 + Decimal(self.limit) / 100
        else:
            ratio = 1 / (1 + Decimal(self.limit) / 100)
        return ratio.quantize(_RATIO_PLACES, rounding=ROUND_HALF_EVEN)

    def decision(self) -> SpeedDecision:
        """What the Job is told, so that it measures until it can decide."""
        return SpeedDecision(batch_size=self.batch_size, min_ratio=str(self.required_ratio))


def speed_gate(settings: GateSettings, trigger: str | None) -> SpeedGate | None:
    """Which speed gate a run started by ``trigger`` (a RunRecord trigger) faces."""
    batch = settings.latency_batch
    speedup, slowdown = settings.min_speedup_percent, settings.max_slowdown_percent
    started = f"the run was started by {trigger or 'hand'}"
    if speedup is not None and trigger == LATENCY_TRIGGER:
        return SpeedGate("Speedup", speedup, batch, f"{started}: it must make the model faster")
    if speedup is not None and trigger not in ACCURACY_TRIGGERS:
        return SpeedGate("Speedup", speedup, batch, f"{started} and gates.minSpeedupPercent is set")
    if slowdown is None or trigger not in ACCURACY_TRIGGERS:
        return None
    why = f"{started}: it is judged on accuracy and may not make the model much slower"
    return SpeedGate("MaxSlowdown", slowdown, batch, why)


@dataclass(frozen=True)
class GateResult:
    name: GateName
    passed: bool
    value: float | None  # what was observed (points, percent, bytes)
    limit: float
    message: str
    # Speed gates: the batch size protected and the ratio interval decided on.
    batch_size: int | None = None
    low: float | None = None
    high: float | None = None
    rounds: int | None = None
    inconclusive: bool = False


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    results: tuple[GateResult, ...]

    @property
    def failed(self) -> tuple[GateResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def inconclusive(self) -> bool:
        """Not passed only because a speed interval could not decide."""
        failed = self.failed
        return bool(failed) and all(r.inconclusive for r in failed)

    @property
    def message(self) -> str:
        """One paragraph: the failing gates' messages, or a summary of the passed ones."""
        if not self.passed:
            return " ".join(r.message for r in self.failed)
        if not self.results:
            return "No gates are configured; the candidate passes."
        return "All gates passed: " + " ".join(r.message for r in self.results)


def evaluate_gates(
    settings: GateSettings,
    baseline: ModelMetrics | None,
    candidate: ModelMetrics | None,
    speed: Sequence[SpeedRatio] = (),
    trigger: str | None = None,
) -> GateVerdict:
    """The gates for a run started by ``trigger``; ``speed`` is the Job's speed ratios."""
    base = baseline or ModelMetrics()
    cand = candidate or ModelMetrics()
    results: list[GateResult] = []
    if settings.max_accuracy_drop_percent is not None:
        results.append(_accuracy_drop(settings.max_accuracy_drop_percent, base, cand))
    if settings.min_accuracy_percent is not None:
        results.append(_min_accuracy(settings.min_accuracy_percent, cand))
    gate = speed_gate(settings, trigger)
    if gate is not None:
        results.append(_speed(gate, speed))
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


def _speed(gate: SpeedGate, speed: Sequence[SpeedRatio]) -> GateResult:
    name = gate.name
    batch = gate.batch_size
    required = gate.required_ratio
    limit = f"+{gate.limit}%" if name == "Speedup" else f"-{gate.limit}%"
    applies = f"applies because {gate.why}"
    entry = next((s for s in speed if s.batch_size == batch), None)
    if entry is None or entry.low <= 0 or entry.high <= 0:
        return GateResult(
            name,
            False,
            None,
            gate.limit,
            f"Gate {name} failed ({applies}): the Job measured no speed ratio interval at "
            f"batch {batch}; a candidate is never promoted on speed nobody measured.",
            batch_size=batch,
        )
    low, high = _exact(entry.low), _exact(entry.high)
    numbers = (
        f"at batch {batch} the candidate is {entry.ratio:.2f}x as fast "
        f"({entry.confidence:.0%} interval {entry.low:.2f}-{entry.high:.2f}x, "
        f"{entry.rounds} rounds)"
    )
    need = f"the required {required:.2f}x ({limit})"
    if low >= required:
        passed, inconclusive = True, False
        verdict = f"passed ({applies}): {numbers}; its lower bound meets {need}."
    elif high < required:
        passed, inconclusive = False, False
        verdict = f"failed ({applies}): {numbers}; even its upper bound is under {need}."
    else:
        passed, inconclusive = False, True
        verdict = (
            f"inconclusive ({INCONCLUSIVE_LATENCY}, {applies}): {numbers}; the interval "
            f"straddles {need} after measuring again, so the candidate is not promoted on it."
        )
    others = "; ".join(
        f"b{s.batch_size} {s.ratio:.2f}x ({s.low:.2f}-{s.high:.2f})"
        for s in speed
        if s.batch_size != batch
    )
    message = f"Gate {name} {verdict}" + (f" Other batch sizes: {others}." if others else "")
    # value: the worst case the interval allows, as the gate's own percent.
    value = (low - 1) * 100 if name == "Speedup" else (1 / low - 1) * 100
    return GateResult(
        name,
        passed,
        float(round(value, 2)),
        gate.limit,
        message,
        batch_size=batch,
        low=entry.low,
        high=entry.high,
        rounds=entry.rounds,
        inconclusive=inconclusive,
    )


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
