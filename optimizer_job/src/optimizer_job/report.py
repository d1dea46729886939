"""report.html: one self-contained page per run or evaluation, for a person to look at.

Everything the page shows comes from the ``RunResult`` (result.json beside it): the metrics,
the speed ratios, the drift report, the stages, and ``ReportData`` — small binned summaries
of the raw values (feature histograms, per-call latencies, confusion matrices) that the Job
collects while it measures (``collect_*`` below). Plots are matplotlib figures (Agg
backend, no display) embedded as base64 PNG ``<img>`` elements: the page needs no network
and no JavaScript, and opens from a file, an object store or an email attachment alike.
Text from the data (feature names, notes) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")  # before pyplot: never a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from optimizer_job.contract import (
    REPORT_MAX_CLASSES,
    REPORT_MAX_FEATURES,
    TEST_DRIFT_METRICS,
    ConfusionMatrix,
    DriftReport,
    FeatureHistogram,
    LatencyHistogram,
    ModelMetrics,
    ReportData,
    RunResult,
    SpeedRatio,
    StageReport,
)

HISTOGRAM_BINS: Final = 30
CATEGORICAL_MAX_VALUES: Final = 20
# Figures are drawn at this many pixels per inch: a 6.4 x 3.2 inch plot is 512 x 256 px.
DPI: Final = 80
FIGURE_SIZE: Final = (6.4, 3.2)
BASELINE_COLOUR: Final = "#4c72b0"
CANDIDATE_COLOUR: Final = "#dd8452"
CURRENT_COLOUR: Final = "#dd8452"
DRIFTED_COLOUR: Final = "#c44e52"

# ---------------------------------------------------------------------------------------
# Collecting what the page plots (numpy only; called by the runner while it measures)
# ---------------------------------------------------------------------------------------


def feature_histograms(
    reference: np.ndarray,
    current: np.ndarray,
    names: Sequence[str],
    drift: DriftReport,
    limit: int = REPORT_MAX_FEATURES,
) -> list[FeatureHistogram]:
    """Histograms of the ``limit`` most drifted features (highest score of the report's
    metric; drifted ones first), reference and current binned alike. A feature the drift
    report scored as categorical (chi-squared) gets one bar per value."""
    if not names or reference.ndim != 2 or current.ndim != 2:
        return []
    index = {name: i for i, name in enumerate(names)}
    drifted = set(drift.drifted_features)
    ranked = sorted(
        (name for name in names if name in drift.per_feature),
        key=lambda n: (n not in drifted, -feature_score(drift, n)),
    )
    out = []
    for name in ranked[:limit]:
        column = index[name]
        ref = reference[:, column].astype(np.float64)
        cur = current[:, column].astype(np.float64)
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        categorical = "chi2" in drift.per_feature[name]
        values = np.unique(np.concatenate([ref, cur]))
        if categorical and len(values) <= CATEGORICAL_MAX_VALUES:
            out.append(
                FeatureHistogram(
                    name=name,
                    kind="categorical",
                    categories=[_number(v) for v in values],
                    reference=[int(c) for c in _value_counts(ref, values)],
                    current=[int(c) for c in _value_counts(cur, values)],
                )
            )
            continue
        both = np.concatenate([ref, cur])
        if both.size == 0:
            continue
        low, high = float(both.min()), float(both.max())
        if high <= low:
            high = low + 1.0
        edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
        out.append(
            FeatureHistogram(
                name=name,
                edges=[float(e) for e in edges],
                reference=[int(c) for c in np.histogram(ref, edges)[0]],
                current=[int(c) for c in np.histogram(cur, edges)[0]],
            )
        )
    return out


def _value_counts(values: np.ndarray, categories: np.ndarray) -> np.ndarray:
    positions = np.searchsorted(categories, values)
    return np.bincount(positions, minlength=len(categories))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def latency_histograms(
    samples: Mapping[str, Mapping[int, np.ndarray]],
) -> list[LatencyHistogram]:
    """Per-call latencies of each model ("baseline", "candidate") at each batch size, binned
    over edges shared by the models at that batch size (so the bars compare)."""
    out: list[LatencyHistogram] = []
    batch_sizes = sorted({b for per_batch in samples.values() for b in per_batch})
    for batch_size in batch_sizes:
        arrays = {
            model: np.asarray(per_batch[batch_size], dtype=np.float64)
            for model, per_batch in samples.items()
            if batch_size in per_batch and len(per_batch[batch_size])
        }
        if not arrays:
            continue
        both = np.concatenate(list(arrays.values()))
        # Log-spaced bins from the fastest to the slowest call: a busy machine's rare slow
        # calls (100x the median) stay on the plot without squeezing the rest into one bar.
        low, high = max(float(both.min()), 1e-6), max(float(both.max()), 1e-6)
        if high <= low * 1.01:
            high = low * 1.01
        edges = np.geomspace(low, high, HISTOGRAM_BINS + 1)
        for model, values in arrays.items():
            counts = np.histogram(np.clip(values, low, high), edges)[0]
            out.append(
                LatencyHistogram(
                    model="candidate" if model == "candidate" else "baseline",
                    batch_size=batch_size,
                    edges=[float(f"{e:.6g}") for e in edges],
                    counts=[int(c) for c in counts],
                )
            )
    return out


def confusion_matrix(
    model: str, labels: np.ndarray, predicted: np.ndarray, classes: int
) -> ConfusionMatrix | None:
    """The holdout's confusion matrix (rows true, columns predicted); None beyond
    ``REPORT_MAX_CLASSES`` classes (the page would not show it legibly)."""
    if classes < 1 or classes > REPORT_MAX_CLASSES:
        return None
    counts = np.zeros((classes, classes), dtype=np.int64)
    valid = (labels >= 0) & (labels < classes) & (predicted >= 0) & (predicted < classes)
    np.add.at(counts, (labels[valid].astype(np.int64), predicted[valid].astype(np.int64)), 1)
    return ConfusionMatrix(
        model="candidate" if model == "candidate" else "baseline",
        labels=[str(i) for i in range(classes)],
        counts=counts.tolist(),
    )


def feature_score(drift: DriftReport, name: str) -> float:
    """The per-feature value of the report's metric (the statistic, not its p-value)."""
    values = drift.per_feature.get(name, {})
    keys = {
        "ks": ("ks", "chi2"),
        "multivariate": ("ks", "chi2"),
        "psi": ("psi",),
        "jensenshannon": ("jensenshannon",),
        "wasserstein": ("wasserstein", "psi"),
    }.get(drift.metric, (drift.metric,))
    for key in keys:
        if key in values and math.isfinite(values[key]):
            return float(values[key])
    return 0.0


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def _figure(draw: Callable[[Figure], None], size: tuple[float, float] = FIGURE_SIZE) -> str:
    """A figure drawn by ``draw`` as an ``<img>`` (base64 PNG) with its pixel size.

    Margins are fixed (in inches, so labels fit at any figure size) rather than computed by
    ``tight_layout``, which draws every figure twice: a third of a report's CPU time."""
    figure = plt.figure(figsize=size, dpi=DPI)
    figure.subplots_adjust(
        left=min(0.4, 0.75 / size[0]),
        right=1 - 0.2 / size[0],
        bottom=min(0.4, 0.55 / size[1]),
        top=1 - 0.15 / size[1],
    )
    try:
        draw(figure)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(figure)
    width, height = round(size[0] * DPI), round(size[1] * DPI)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<img class="plot" width="{width}" height="{height}" '
        f'src="data:image/png;base64,{data}" alt="plot">'
    )


def plot(
    title: str, draw: Callable[[Figure], None], size: tuple[float, float] = FIGURE_SIZE
) -> str:
    """A titled figure: ``<figure>`` with the image and a ``<figcaption>``."""
    return (
        f'<figure class="plot">{_figure(draw, size)}'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
    )


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(value)}</td>" for value in row) + "</tr>" for row in rows
    )
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")
    if isinstance(value, int):
        return html.escape(f"{value:,}")
    return html.escape(str(value))


STYLE: Final = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure.plot { display: inline-block; margin: .5em; vertical-align: top; }
figcaption { font-size: .9em; text-align: center; }
.ok { color: #2a7a2a; } .bad { color: #b02a2a; } .muted { color: #777; }
"""


def page(title: str, body: str) -> str:
    """A complete HTML document: inline style, no script, no external resource."""
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
        f"{body}\n</body></html>\n"
    )


def render(result: RunResult, *, optimization: str | None = None) -> str:
    """report.html of a run or evaluation result."""
    what = "Evaluation" if result.kind == "evaluate" else "Optimization run"
    title = f"{what} {result.run_id}" + (f" of {optimization}" if optimization else "")
    data = result.report_data or ReportData()
    sections = [_overview(result)]
    if result.kind == "optimize":
        sections.append(_gate_inputs(result))
    if result.drift is not None:
        sections.append(_drift_section(result.drift, data))
    sections.append(_latency_section(result, data))
    if data.confusion:
        sections.append(_confusion_section(data.confusion))
    if result.stages:
        sections.append(_stages_section(result.stages))
    return page(title, "\n".join(sections))


def _overview(result: RunResult) -> str:
    state = (
        '<span class="ok">succeeded</span>'
        if result.ok
        else f'<span class="bad">failed: {html.escape(result.reason)}</span>'
    )
    rows: list[tuple[str, Any]] = [("run", result.run_id), ("seconds", result.seconds)]
    if result.artifact_uri:
        rows.append(("artifact", result.artifact_uri))
    if result.kind == "optimize" and result.manifest_sha256:
        rows.append(("MANIFEST sha256", result.manifest_sha256))
    metrics = [("model in use", result.baseline), ("candidate", result.candidate)]
    present = [(name, m) for name, m in metrics if m is not None]
    return (
        f"<h2>Summary</h2><p>{state}</p>"
        + table(["", ""], rows)
        + (_metrics_table(present) if present else "")
    )


def _metrics_table(models: Sequence[tuple[str, ModelMetrics]]) -> str:
    keys = sorted(
        {k for _, m in models for k in m.latency_ms},
        key=lambda k: (int(k.split("_")[0][1:]), k),
    )
    rows: list[list[Any]] = [
        [
            "accuracy %",
            *[None if m.accuracy is None else round(100 * m.accuracy, 2) for _, m in models],
        ],
        *[[f"latency {k} ms", *[m.latency_ms.get(k) for _, m in models]] for k in keys],
        ["size bytes", *[m.size_bytes for _, m in models]],
        ["parameters", *[m.parameters for _, m in models]],
        ["MACs", *[m.macs for _, m in models]],
        ["device", *[m.device for _, m in models]],
    ]
    return table(["metric", *[name for name, _ in models]], rows, "metrics")


def _gate_inputs(result: RunResult) -> str:
    """The numbers the operator's gates decide on (the limits are the spec's, applied by
    the operator: its status.runs[].gates says which passed)."""
    base, cand = result.baseline, result.candidate
    rows: list[list[Any]] = []
    if base and cand and base.accuracy is not None and cand.accuracy is not None:
        drop = round(100 * (base.accuracy - cand.accuracy), 3)
        rows.append(["accuracy drop (points)", drop, "AccuracyDrop / MinAccuracy"])
    for speed in result.speed:
        rows.append(
            [
                f"speed ratio at batch {speed.batch_size}",
                f"{speed.ratio:.3f}x ({round(speed.confidence * 100)} % interval "
                f"{speed.low:.3f}–{speed.high:.3f}, {speed.rounds} rounds)"
                + (f", decision {speed.decision}" if speed.decision else ""),
                "Speedup / MaxSlowdown",
            ]
        )
    if base and cand and base.size_bytes and cand.size_bytes:
        rows.append(
            [
                "size bytes",
                f"{base.size_bytes:,} → {cand.size_bytes:,} "
                f"({cand.size_bytes / base.size_bytes:.2f}x)",
                "Size",
            ]
        )
    if not rows:
        return "<h2>Gate inputs</h2><p class='muted'>no measurements</p>"
    figure = _speed_plot(result.speed) if result.speed else ""
    return (
        "<h2>Gate inputs</h2><p class='muted'>The numbers the gates decide on; the limits "
        "and verdicts are in the resource's status.runs[].gates.</p>"
        + table(["measure", "value", "gate"], rows, "gates")
        + figure
    )


def _speed_plot(speeds: Sequence[SpeedRatio]) -> str:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        labels = [str(s.batch_size) for s in speeds]
        positions = np.arange(len(speeds))
        ratios = np.array([s.ratio for s in speeds])
        errors = np.array([[s.ratio - s.low for s in speeds], [s.high - s.ratio for s in speeds]])
        axes.bar(positions, ratios, color=CANDIDATE_COLOUR, yerr=errors, capsize=6)
        axes.axhline(1.0, color="#555", linestyle="--", linewidth=1, label="as fast")
        axes.set_xticks(positions, labels)
        axes.set_xlabel("batch size")
        axes.set_ylabel("baseline time / candidate time")
        axes.legend(loc="best")

    return plot("Candidate speedup per batch size (95 % interval)", draw)


def _drift_section(drift: DriftReport, data: ReportData) -> str:
    verdict = (
        f'<span class="muted">insufficient data: {html.escape(drift.insufficient_data)}</span>'
        if drift.insufficient_data
        else ('<span class="bad">drift detected</span>' if drift.detected else "no drift")
    )
    drifted = ", ".join(drift.drifted_features[:20]) or "none"
    parts = [
        "<h2>Drift</h2>",
        f"<p>{verdict} — metric {html.escape(drift.metric)}, score {drift.score:.4g}, "
        f"{100 * drift.share_drifted:.1f} % of features drifted: {html.escape(drifted)}</p>",
    ]
    if drift.prediction_drift_p is not None:
        parts.append(f"<p>prediction drift p-value {drift.prediction_drift_p:.3g}</p>")
    for warning in drift.warnings:
        parts.append(f'<p class="muted">{html.escape(warning)}</p>')
    if drift.per_feature:
        parts.append(_feature_scores_plot(drift, data))
    for histogram in data.drift_histograms:
        parts.append(_histogram_plot(histogram, histogram.name in drift.drifted_features))
    return "\n".join(parts)


def _feature_scores_plot(drift: DriftReport, data: ReportData) -> str:
    names = sorted(drift.per_feature, key=lambda n: -feature_score(drift, n))[:40]
    drifted = set(drift.drifted_features)
    scores = [feature_score(drift, n) for n in names]
    threshold = data.drift_threshold if drift.metric not in TEST_DRIFT_METRICS else None
    height = max(FIGURE_SIZE[1], 0.9 + 0.22 * len(names))

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        positions = np.arange(len(names))[::-1]
        colours = [DRIFTED_COLOUR if n in drifted else BASELINE_COLOUR for n in names]
        axes.barh(positions, scores, color=colours)
        axes.set_yticks(positions, [n[:24] for n in names], fontsize=8)
        if threshold is not None:
            axes.axvline(threshold, color="#333", linestyle="--", label=f"threshold {threshold}")
            axes.legend(loc="lower right")
        axes.set_xlabel(f"{drift.metric} statistic (red: drifted)")
        figure.subplots_adjust(left=0.9 / FIGURE_SIZE[0])

    what = (
        f"against the threshold {threshold}"
        if threshold is not None
        else (f"red: drifted at alpha {data.alpha}" if data.alpha is not None else "red: drifted")
    )
    return plot(f"Per-feature drift scores ({what})", draw, (FIGURE_SIZE[0], height))


def _histogram_plot(histogram: FeatureHistogram, drifted: bool) -> str:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        ref = np.array(histogram.reference, dtype=np.float64)
        cur = np.array(histogram.current, dtype=np.float64)
        ref_share = ref / max(ref.sum(), 1)
        cur_share = cur / max(cur.sum(), 1)
        if histogram.kind == "categorical":
            positions = np.arange(len(histogram.categories))
            axes.bar(positions - 0.2, ref_share, 0.4, label="reference", color=BASELINE_COLOUR)
            axes.bar(positions + 0.2, cur_share, 0.4, label="current", color=CURRENT_COLOUR)
            axes.set_xticks(positions, histogram.categories)
        else:
            edges = np.array(histogram.edges)
            _step_fill(axes, edges, ref_share, BASELINE_COLOUR, "reference")
            _step_fill(axes, edges, cur_share, CURRENT_COLOUR, "current")
        axes.set_ylabel("share of rows")
        axes.legend(loc="best")

    mark = " (drifted)" if drifted else ""
    return plot(f"Feature {histogram.name}{mark}: reference vs current", draw)


def _step_fill(axes: Axes, edges: np.ndarray, shares: np.ndarray, colour: str, label: str) -> None:
    axes.stairs(shares, edges, fill=True, alpha=0.45, color=colour, label=label)
    axes.stairs(shares, edges, color=colour)


def _latency_section(result: RunResult, data: ReportData) -> str:
    parts = ["<h2>Latency</h2>"]
    by_batch: dict[int, list[LatencyHistogram]] = {}
    for histogram in data.latency:
        by_batch.setdefault(histogram.batch_size, []).append(histogram)
    for batch_size, histograms in sorted(by_batch.items()):
        parts.append(_latency_plot(batch_size, histograms))
    if len(parts) == 1:
        parts.append("<p class='muted'>no per-call latencies recorded</p>")
    return "\n".join(parts)


def _latency_plot(batch_size: int, histograms: Sequence[LatencyHistogram]) -> str:
    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        for histogram in sorted(histograms, key=lambda h: h.model):
            colour = CANDIDATE_COLOUR if histogram.model == "candidate" else BASELINE_COLOUR
            label = "candidate" if histogram.model == "candidate" else "model in use"
            counts = np.array(histogram.counts, dtype=np.float64)
            shares = counts / max(counts.sum(), 1)
            _step_fill(axes, np.array(histogram.edges), shares, colour, label)
        axes.set_xscale("log")
        axes.set_xlabel("milliseconds per call (log scale)")
        axes.set_ylabel("share of calls")
        axes.legend(loc="best")

    names = " vs ".join(
        "candidate" if h.model == "candidate" else "model in use"
        for h in sorted(histograms, key=lambda h: h.model)
    )
    return plot(f"Latency at batch size {batch_size}: {names}", draw)


def _confusion_section(matrices: Sequence[ConfusionMatrix]) -> str:
    parts = ["<h2>Accuracy</h2>"]
    for matrix in sorted(matrices, key=lambda m: m.model):
        parts.append(_confusion_plot(matrix))
    return "\n".join(parts)


def _confusion_plot(matrix: ConfusionMatrix) -> str:
    counts = np.array(matrix.counts, dtype=np.int64)
    total = int(counts.sum())
    correct = int(np.trace(counts))
    name = "candidate" if matrix.model == "candidate" else "model in use"
    side = min(6.4, 2.4 + 0.3 * len(matrix.labels))

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        image = axes.imshow(counts, cmap="Blues")
        figure.colorbar(image, ax=axes, fraction=0.046)
        ticks = np.arange(len(matrix.labels))
        axes.set_xticks(ticks, matrix.labels)
        axes.set_yticks(ticks, matrix.labels)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        if len(matrix.labels) <= 10:
            limit = counts.max() / 2 if counts.size else 0
            for (row, column), value in np.ndenumerate(counts):
                axes.text(
                    column,
                    row,
                    str(value),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value > limit else "black",
                )

    accuracy = f"{100 * correct / total:.2f} %" if total else "–"
    return plot(f"Confusion matrix, {name} (accuracy {accuracy})", draw, (side, side))


def _stages_section(stages: Sequence[StageReport]) -> str:
    rows = []
    for index, stage in enumerate(stages, start=1):
        before, after = stage.before, stage.after
        rows.append(
            [
                f"{index}. {stage.type}",
                stage.seconds,
                _change(before, after, "accuracy", scale=100),
                _change(before, after, "size_bytes"),
                _change(before, after, "parameters"),
                _change(before, after, "macs"),
                "; ".join(f"{k}={v}" for k, v in sorted(stage.notes.items())),
            ]
        )

    def draw(figure: Figure) -> None:
        axes = figure.add_subplot()
        labels = [f"{i}. {s.type}" for i, s in enumerate(stages, start=1)]
        positions = np.arange(len(stages))[::-1]
        axes.barh(positions, [s.seconds for s in stages], color=BASELINE_COLOUR)
        axes.set_yticks(positions, labels)
        axes.set_xlabel("seconds")
        figure.subplots_adjust(left=1.1 / FIGURE_SIZE[0])

    height = max(2.0, 0.8 + 0.4 * len(stages))
    return (
        "<h2>What ran</h2>"
        + table(
            ["stage", "seconds", "accuracy %", "size bytes", "parameters", "MACs", "notes"],
            rows,
            "stages",
        )
        + plot("Seconds per stage", draw, (FIGURE_SIZE[0], height))
    )


def _change(
    before: ModelMetrics | None, after: ModelMetrics | None, field: str, scale: float = 1
) -> str:
    def value(metrics: ModelMetrics | None) -> str:
        raw = getattr(metrics, field) if metrics is not None else None
        if raw is None:
            return "–"
        number = raw * scale
        return f"{number:.2f}" if scale != 1 else f"{int(number):,}"

    old, new = value(before), value(after)
    return new if before is None or old == new else f"{old} → {new}"
