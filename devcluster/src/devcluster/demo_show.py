"""What the demo prints: progress, `kubectl get mo`, the resource's events, the operator's
metrics, and the closing report read from the resource's status."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from devcluster.demo_kube import DemoKube

Json = dict[str, Any]

# The operator's per-resource series worth watching in the demo (docs/metrics.md).
WATCHED_METRICS = (
    "driftwarden_drift_score",
    "driftwarden_drift_detected",
    "driftwarden_model_latency_seconds",
    "driftwarden_latency_slo_seconds",
    "driftwarden_model_accuracy",
    "driftwarden_optimization_runs_total",
    "driftwarden_temporary_fix_active",
)


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.number = 0
        self.started = time.monotonic()

    def elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60}:{seconds % 60:02d}"

    def step(self, text: str) -> None:
        self.number += 1
        print(f"\n==> [{self.number}/{self.total}] {text}   ({self.elapsed()})", flush=True)


def say(text: str) -> None:
    print(f"    {text}", flush=True)


def command(text: str) -> None:
    """A command the user can type to see the same."""
    print(f"    $ {text}", flush=True)


def indented(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"      {line}", flush=True)


class EventLog:
    """The ModelOptimization's events, each printed once, oldest first."""

    def __init__(self, kube: DemoKube, name: str) -> None:
        self.kube = kube
        self.name = name
        self.seen: set[str] = set()

    def show_new(self) -> int:
        items = sorted(
            self.kube.events_of("ModelOptimization", self.name),
            key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "",
        )
        shown = 0
        for event in items:
            key = f"{event['metadata']['uid']}/{event.get('count', 1)}"
            if key in self.seen:
                continue
            self.seen.add(key)
            when = (event.get("lastTimestamp") or event.get("eventTime") or "")[11:19]
            message = " ".join(str(event.get("message", "")).split())
            print(f"      {when} {event.get('type', ''):7} {event.get('reason', '')}: {message}")
            shown += 1
        return shown


def show_mo(kube: DemoKube) -> None:
    command(f"kubectl get mo -n {kube.namespace}")
    indented(kube.ns("get", "mo"))


def metrics_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a local URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def operator_metrics(url: str, name: str) -> list[str]:
    """The watched driftwarden_* samples of one resource, as exposed."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a local URL
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as error:
        return [f"(metrics unavailable: {error})"]
    lines = []
    for line in text.splitlines():
        if line.startswith("#") or f'name="{name}"' not in line:
            continue
        if line.split("{", 1)[0] in WATCHED_METRICS:
            lines.append(line)
    return lines


def show_metrics(url: str, name: str) -> None:
    command(f"curl -s {url} | grep 'name=\"{name}\"'")
    lines = operator_metrics(url, name)
    indented("\n".join(lines) if lines else "(no series for this resource yet)")


def condition(status: Json, type_: str) -> Json:
    for item in status.get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return {}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _kib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


RUN_HEADER = ["run", "why", "drift", "outcome", "accuracy", "p95 ms b{batch}", "size KiB", "gates"]


def run_header(batch: int) -> list[str]:
    return [h.format(batch=batch) for h in RUN_HEADER]


def drift_at_start(run: Json, evaluations: list[Json]) -> float | None:
    """The drift score of the last evaluation seen before the run started."""
    started = str(run.get("startedAt") or "")
    before = [e for e in evaluations if str(e.get("time") or "") <= started]
    score = before[-1].get("driftScore") if before else None
    return None if score is None else float(score)


def run_rows(status: Json, batch: int, evaluations: list[Json] | None = None) -> list[list[str]]:
    """One row per run: why it ran (and the drift score then), what it did, before and
    after on the same holdout."""
    rows = []
    key = f"b{batch}_p95"
    for run in status.get("runs") or []:
        drift = drift_at_start(run, evaluations or [])
        before = run.get("baseline") or {}
        after = run.get("candidate") or {}
        gates = ", ".join(
            f"{g['name']} {'ok' if g.get('passed') else 'FAILED'}" for g in run.get("gates") or []
        )
        rows.append(
            [
                run["id"],
                run.get("trigger", "?"),
                "-" if drift is None else f"{drift:.3g}",
                run.get("outcome", "?"),
                f"{_pct(before.get('accuracyPercent'))} -> {_pct(after.get('accuracyPercent'))}",
                f"{_ms((before.get('latencyMs') or {}).get(key))} -> "
                f"{_ms((after.get('latencyMs') or {}).get(key))}",
                f"{_kib(before.get('sizeBytes'))} -> {_kib(after.get('sizeBytes'))}",
                gates or "-",
            ]
        )
    return rows


def evaluation_rows(evaluations: list[Json]) -> list[list[str]]:
    """One row per evaluation the demo saw: which model, drift, latency, accuracy."""
    rows = []
    for evaluation in evaluations:
        latency = evaluation.get("latency") or {}
        drift = evaluation.get("driftScore")
        rows.append(
            [
                str(evaluation.get("id")),
                str(evaluation.get("time", ""))[11:19],
                str(evaluation.get("modelUri", "")).rsplit("/", 1)[-1],
                "-"
                if drift is None
                else f"{drift:.3g}" + (" *" if evaluation.get("driftDetected") else ""),
                _ms(latency.get("p95Ms")),
                _pct(evaluation.get("accuracyPercent")),
            ]
        )
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
