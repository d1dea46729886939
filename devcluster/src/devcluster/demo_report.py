"""demo-report.html: what `make demo` showed, as one self-contained page in the checkout.

The evaluation history over time (drift score, p95 latency against the SLO, accuracy) with
the runs, the promotions and the temporary fix marked on it, the runs' table with their gate
results, and copies of the runs' and evaluations' own report.html files (the Job wrote them
on the demo's volume; they are copied beside the page, in ``demo-reports/``, so that they
outlive the devcluster). Built from the ModelOptimization's status and the evaluations the
demo saw; drawn with the job's report helpers (``optimizer_job.report``).
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from optimizer_job import report

Json = dict[str, Any]
REPORTS_FOLDER = "demo-reports"
OUTCOME_COLOURS = {
    "Promoted": "#2a7a2a",
    "Rejected": "#b02a2a",
    "Failed": "#b02a2a",
    "Succeeded": "#4c72b0",
    "RolledBack": "#8172b2",
}


@dataclass
class DemoHistory:
    """What the demo saw besides the final status."""

    slo_ms: int
    latency_batch: int
    evaluations: list[Json] = field(default_factory=list)  # every lastEvaluation, in order
    fix_reverted_at: datetime | None = None


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    Path(tmp).replace(path)


def copy_reports(
    status: Json, history: DemoHistory, resolve: Callable[[str], Path | None], out_dir: Path
) -> dict[str, str]:
    """Copies of the runs' and evaluations' report.html into ``out_dir``; returns
    id -> path relative to the page, for the ones found."""
    out_dir.mkdir(parents=True, exist_ok=True)
    copied: dict[str, str] = {}
    sources = [(run["id"], run.get("reportUri")) for run in status.get("runs") or []]
    sources += [(e["id"], e.get("reportUri")) for e in history.evaluations if e.get("id")]
    for item_id, uri in sources:
        local = resolve(str(uri)) if uri else None
        if local is None or not local.is_file():
            continue
        target = out_dir / f"{item_id}.html"
        shutil.copyfile(local, target)
        copied[str(item_id)] = f"{out_dir.name}/{target.name}"
    return copied


def render(status: Json, history: DemoHistory, links: dict[str, str]) -> str:
    sections = [
        _history_plot(status, history),
        _runs_section(status, links),
        _evaluations_section(history, links),
        _fix_section(status, history),
    ]
    return report.page("DriftWarden demo: what happened", "\n".join(sections))


def _history_plot(status: Json, history: DemoHistory) -> str:
    points = [(t, e) for e in history.evaluations if (t := _time(e.get("time"))) is not None]
    runs = status.get("runs") or []
    fix = status.get("temporaryFix") or {}
    fix_start = _time(fix.get("appliedAt"))
    fix_end = None if fix.get("active") else history.fix_reverted_at or _time(fix.get("expiresAt"))

    def draw(figure: Figure) -> None:
        axes = figure.subplots(3, 1, sharex=True)
        times = [t for t, _ in points]
        series = [
            ("drift score", [e.get("driftScore") for _, e in points], None),
            (
                f"p95 ms (batch {history.latency_batch})",
                [(e.get("latency") or {}).get("p95Ms") for _, e in points],
                history.slo_ms,
            ),
            ("accuracy %", [e.get("accuracyPercent") for _, e in points], None),
        ]
        for index, (label, values, limit) in enumerate(series):
            ax = axes[index]
            shown = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
            if shown:
                ax.plot(
                    [t for t, _ in shown],
                    [v for _, v in shown],
                    marker="o",
                    color=report.BASELINE_COLOUR,
                )
            if index == 0:
                drifted = [
                    (t, e.get("driftScore"))
                    for t, e in points
                    if e.get("driftDetected") and e.get("driftScore") is not None
                ]
                if drifted:
                    ax.scatter(
                        [t for t, _ in drifted],
                        [v for _, v in drifted],
                        s=60,
                        color=report.DRIFTED_COLOUR,
                        zorder=3,
                        label="drift detected",
                    )
                    ax.legend(loc="upper left", fontsize=8)
            if limit is not None:
                ax.axhline(
                    limit, color="#b02a2a", linestyle="--", linewidth=1, label=f"SLO {limit} ms"
                )
                ax.legend(loc="upper left", fontsize=8)
            ax.set_ylabel(label, fontsize=8)
            if fix_start is not None:
                ax.axvspan(fix_start, fix_end or datetime.now(UTC), color="#f2b134", alpha=0.25)
            for run in runs:
                finished = _time(run.get("finishedAt"))
                if finished is None:
                    continue
                outcome = str(run.get("outcome"))
                ax.axvline(
                    finished,
                    color=OUTCOME_COLOURS.get(outcome, "#555"),
                    linestyle="-" if outcome == "Promoted" else ":",
                    linewidth=1.5,
                )
        top = axes[0]
        for run in runs:
            finished = _time(run.get("finishedAt"))
            if finished is not None:
                top.annotate(
                    f"{run.get('trigger')} run: {run.get('outcome')}",
                    (finished, 1.0),
                    xycoords=("data", "axes fraction"),
                    rotation=90,
                    va="top",
                    ha="right",
                    fontsize=7,
                )
        if fix_start is not None:
            top.annotate(
                "temporary fix",
                (fix_start, 1.0),
                xycoords=("data", "axes fraction"),
                va="top",
                ha="left",
                fontsize=7,
                color="#9a6a00",
            )
        axes[-1].set_xlabel("time (UTC)")
        figure.autofmt_xdate()
        figure.tight_layout()

    caption = (
        "Evaluation history: drift score, p95 latency vs SLO, accuracy "
        "(lines: runs finishing, solid = promoted; shaded: temporary fix active)"
    )
    return "<h2>Evaluation history</h2>" + report.plot(caption, draw, (10.0, 7.0))


def _link(item_id: str, links: dict[str, str]) -> str:
    target = links.get(item_id)
    if target is None:
        return html.escape(item_id)
    return f'<a href="{html.escape(target)}">{html.escape(item_id)}</a>'


def _runs_section(status: Json, links: dict[str, str]) -> str:
    runs = status.get("runs") or []
    if not runs:
        return "<h2>Runs</h2><p class='muted'>no runs recorded</p>"
    rows = []
    gate_tables = []
    for run in runs:
        base, cand = run.get("baseline") or {}, run.get("candidate") or {}
        rows.append(
            [
                _link(str(run["id"]), links),
                html.escape(str(run.get("trigger"))),
                html.escape(str(run.get("outcome"))),
                html.escape(str(run.get("finishedAt") or "")),
                f"{base.get('accuracyPercent', '–')} → {cand.get('accuracyPercent', '–')}",
                html.escape(str(run.get("reportUri") or "")),
            ]
        )
        gates = run.get("gates") or []
        if gates:
            gate_tables.append(
                f"<h3>Gates of run {html.escape(str(run['id']))}</h3>"
                + report.table(
                    ["gate", "passed", "value", "limit", "message"],
                    [
                        [
                            g.get("name"),
                            g.get("passed"),
                            g.get("value"),
                            g.get("limit"),
                            g.get("message"),
                        ]
                        for g in gates
                    ],
                    "gates",
                )
            )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("run (report)", "trigger", "outcome", "finished", "accuracy %", "reportUri")
    )
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f"<h2>Runs</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        + "".join(gate_tables)
    )


def _evaluations_section(history: DemoHistory, links: dict[str, str]) -> str:
    rows = []
    for e in history.evaluations:
        latency = e.get("latency") or {}
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{c}</td>"
                for c in (
                    _link(str(e.get("id")), links),
                    html.escape(str(e.get("time"))),
                    html.escape(str(e.get("modelUri"))),
                    html.escape(
                        f"{e.get('driftScore', '–')}"
                        + (" (drift)" if e.get("driftDetected") else "")
                    ),
                    html.escape(f"{latency.get('p95Ms', '–')}"),
                    html.escape(f"{e.get('accuracyPercent', '–')}"),
                )
            )
            + "</tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("evaluation (report)", "time", "model", "drift score", "p95 ms", "accuracy %")
    )
    return (
        f"<h2>Evaluations</h2><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _fix_section(status: Json, history: DemoHistory) -> str:
    fix = status.get("temporaryFix") or {}
    if not fix:
        return "<h2>Temporary fix</h2><p class='muted'>never applied</p>"
    reverted = history.fix_reverted_at.isoformat() if history.fix_reverted_at else "–"
    return "<h2>Temporary fix</h2>" + report.table(
        ["", ""],
        [
            ["active", bool(fix.get("active"))],
            ["applied at", fix.get("appliedAt")],
            ["expires at", fix.get("expiresAt")],
            ["reverted (seen by the demo)", reverted],
            ["reason", fix.get("reason")],
        ],
    )


def write(
    path: Path, status: Json, history: DemoHistory, resolve: Callable[[str], Path | None]
) -> Path:
    """Write ``path`` (atomically) and the copies of the reports beside it."""
    links = copy_reports(status, history, resolve, path.parent / REPORTS_FOLDER)
    _atomic_write(path, render(status, history, links))
    return path
