"""One task, start to finish.

``evaluate``: metrics of the model in use on the holdout, drift of the current data
against the reference, and drift of the model's predictions.

``optimize``: baseline metrics, the pipeline's stages in order (each measured before
and after on the same holdout), then the candidate is written to
``<artifacts_uri>/<optimization>/<run_id>/`` — built in a temporary sibling, reloaded
from those files and measured again side by side with the model in use (so the
result's baseline and candidate are of what was written, under the same machine
load), ``result.json`` beside it, and renamed into place. A run directory that is
already there with a valid MANIFEST and the result of the same run means the run is
done: the recorded result is returned and nothing is redone.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from optimizer_job import dataio, distributed, hf, memory, storage
from optimizer_job import report as report_module
from optimizer_job.contract import (
    REPORT_NAME,
    BadInputError,
    ConfusionMatrix,
    DriftReport,
    FeatureHistogram,
    ModelMetrics,
    ReportData,
    RunResult,
    StageReport,
    Task,
    evaluation_artifact_uri,
    is_s3_uri,
    report_uri_of,
    run_artifact_uri,
)
from optimizer_job.dataio import Table
from optimizer_job.evaluate import MeasureDetails, measure, measure_pair
from optimizer_job.manifest import ManifestError, verify_manifest, write_manifest
from optimizer_job.modelio import LoadedModel, load_model, save_model
from optimizer_job.progress import get_logger
from optimizer_job.publish import RunDirectoryExistsError, publish_run_directory
from optimizer_job.strategies import StageContext, apply_stage
from optimizer_job.strategies.base import Notes
from optimizer_job.training import predict_proba, rank_and_world

RESULT_NAME = "result.json"
DEFAULT_VALIDATION_PERCENT = 20
# Prediction drift needs the model's outputs on both tables; a sample this big gives a
# stable test and keeps evaluation of very large tables quick.
PREDICTION_DRIFT_ROWS = 50_000
# model.json keys that describe the weights themselves; the rest is carried over.
_WEIGHT_META_KEYS = frozenset({"format", "factory", "kwargs", "dtype", "quantization"})


@dataclass
class Inputs:
    loaded: LoadedModel
    reference: Table | None
    current: Table | None
    holdout: Table | None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        # Not bad input: the same task may land on a node with a GPU when retried.
        raise RuntimeError("device cuda requested but CUDA is not available on this node")
    return torch.device(name)


def run_task(task: Task) -> RunResult:
    started = time.perf_counter()
    log = get_logger()
    # One of several torchrun workers (job.workers > 1): join the process group first.
    device = distributed.init_from_env(resolve_device(task.device))
    log.info(
        "run %s: %s of %s/%s on %s, stages: %s",
        task.run_id,
        task.kind,
        task.namespace,
        task.optimization,
        device,
        ",".join(s.type for s in task.stages) or "-",
    )
    torch.manual_seed(task.seed)
    if task.kind == "evaluate":
        result = evaluate_task(task, device, log, started)
    else:
        result = optimize_task(task, device, log, started)
    log.info("run %s: done in %.1fs", task.run_id, result.seconds)
    return result


def load_inputs(task: Task, device: torch.device | str = "cpu") -> Inputs:
    """The model and its tables, each checked against the model's input spec. An ONNX
    model's execution provider follows ``device`` (a torch model loads on the CPU)."""
    loaded = load_model(storage.local_directory(task.model_uri), device=device)
    features = task.data.features or loaded.feature_names or None
    text_column = task.data.text_column
    tokenizer = None
    if text_column is not None:
        if loaded.directory is None:
            raise BadInputError("data.textColumn needs a model directory with a tokenizer")
        tokenizer = hf.load_tokenizer(loaded.directory)

    def read(uri: str | None, what: str, require_labels: bool) -> Table | None:
        if uri is None:
            return None
        try:
            if text_column is not None:
                table = dataio.load_text_table(
                    uri,
                    task.data.label_column,
                    text_column,
                    tokenizer,
                    task.data.max_length,
                    require_labels=require_labels,
                )
                if loaded.num_classes is not None:
                    dataio.check_labels(table, loaded.num_classes, what)
                return table
            table = dataio.load_table(
                uri, task.data.label_column, features, require_labels=require_labels
            )
        except BadInputError as error:
            raise BadInputError(f"{what}: {error}") from error
        if loaded.feature_names:
            table = dataio.align_features(table, loaded.feature_names, what)
        dataio.check_shape(table, loaded.input_shape, what)
        if loaded.num_classes is not None:
            dataio.check_labels(table, loaded.num_classes, what)
        return table

    return Inputs(
        loaded=loaded,
        reference=read(task.data.reference, "data.reference", False),
        current=read(task.data.current, "data.current", False),
        holdout=read(task.data.holdout, "data.holdout", True),
    )


def check_memory(task: Task) -> int | None:
    """The evaluation's memory estimate from its tables' headers; over the container's
    limit it is bad input naming job.resources.memory (optimizer_job.memory)."""
    shapes = {
        what: memory.table_shape(dataio.path_of(uri)) if uri else None
        for what, uri in (
            ("reference", task.data.reference),
            ("current", task.data.current),
            ("holdout", task.data.holdout),
        )
    }
    return memory.check_evaluate_memory(
        shapes,
        workers=min(8, len(os.sched_getaffinity(0))),  # drift.scoring's most threads
        multivariate=task.evaluation.drift_metric == "multivariate",
        limit=memory.memory_limit_bytes(),
    )


def _decimal(value: str, name: str) -> float:
    try:
        number = Decimal(value)
    except InvalidOperation as error:
        raise BadInputError(f"evaluation.{name} {value!r} is not a decimal number") from error
    if not number.is_finite():
        raise BadInputError(f"evaluation.{name} {value!r} is not finite")
    return float(number)


def evaluate_task(
    task: Task, device: torch.device, log: logging.Logger, started: float
) -> RunResult:
    estimate = check_memory(task)  # before reading the data: refuses what cannot fit
    inputs = load_inputs(task, device)
    model = inputs.loaded.module
    notes: Notes = {}
    if inputs.loaded.is_onnx:
        from optimizer_job import onnxmodel  # loaded already: modelio imported it for this model

        assert isinstance(model, onnxmodel.OnnxModule)
        notes.update(model.provider_notes())
        if "execution_provider_note" in notes:
            log.warning("evaluate: %s", notes["execution_provider_note"])
    if estimate is not None:
        notes["memory_estimate_mib"] = estimate // memory.MIB
    table, name = next(
        (
            (t, n)
            for t, n in ((inputs.holdout, "holdout"), (inputs.current, "current"))
            if t is not None
        ),
        (None, ""),
    )
    if table is None:
        raise BadInputError("evaluate needs data.holdout or data.current")
    notes["metrics_on"] = name
    stage_started = time.perf_counter()
    details = MeasureDetails()
    metrics = measure(model, table, device, task.evaluation, details)
    log.info("evaluate: %s", _summary(metrics))
    drift, drift_notes, histograms = measure_drift(task, inputs, device, log)
    notes.update(drift_notes)
    result = RunResult(
        kind="evaluate",
        run_id=task.run_id,
        ok=True,
        seconds=round(time.perf_counter() - started, 3),
        baseline=metrics,
        drift=drift,
        stages=[
            StageReport(
                type="evaluate",
                seconds=round(time.perf_counter() - stage_started, 3),
                after=metrics,
                notes=notes,
            )
        ],
        report_data=report_data(task, details, table, inputs.loaded.num_classes, histograms),
    )
    return publish_evaluation(task, result, log)


def report_data(
    task: Task,
    details: MeasureDetails,
    holdout: Table,
    classes: int | None,
    histograms: list[FeatureHistogram],
) -> ReportData:
    """The binned summaries report.html plots (``optimizer_job.report``)."""
    models = ("baseline", "candidate")
    confusion: list[ConfusionMatrix] = []
    for model, predicted in zip(models, details.predictions, strict=False):
        if predicted is None or holdout.y is None:
            continue
        count = classes or int(max(holdout.y.max(initial=0), predicted.max(initial=0))) + 1
        matrix = report_module.confusion_matrix(model, holdout.y, predicted, count)
        if matrix is not None:
            confusion.append(matrix)
    return ReportData(
        drift_threshold=_decimal(task.evaluation.drift_threshold, "driftThreshold"),
        alpha=_decimal(task.evaluation.alpha, "alpha"),
        drift_histograms=histograms,
        latency=report_module.latency_histograms(
            dict(zip(models, details.latencies, strict=False))
        ),
        confusion=confusion,
    )


def write_report(directory: Path, result: RunResult, task: Task, log: logging.Logger) -> str:
    """report.html into a run or evaluation directory being built, then its MANIFEST
    again so that the report is listed; returns the MANIFEST's sha256."""
    started = time.perf_counter()
    text = report_module.render(result, optimization=f"{task.namespace}/{task.optimization}")
    (directory / REPORT_NAME).write_text(text, encoding="utf-8")
    log.info(
        "report: %s (%d KiB) in %.2fs",
        REPORT_NAME,
        len(text.encode()) // 1024,
        time.perf_counter() - started,
    )
    return write_manifest(directory)


def publish_evaluation(task: Task, result: RunResult, log: logging.Logger) -> RunResult:
    """An evaluation with an artifacts root publishes result.json and report.html under
    ``<artifacts>/<optimization>/evaluations/<run_id>/`` (atomically, never replaced, the
    report in the MANIFEST). A report that cannot be written is logged, not fatal: the
    evaluation's measurements stand without it."""
    if not task.artifacts_uri:
        return result
    uri = evaluation_artifact_uri(task.artifacts_uri, task.optimization, task.run_id)

    def build(directory: Path) -> RunResult:
        published = result.model_copy(update={"report_uri": report_uri_of(uri)})
        digest = write_report(directory, published, task, log)
        published = published.model_copy(update={"manifest_sha256": digest})
        (directory / RESULT_NAME).write_text(published.model_dump_json(indent=2) + "\n")
        return published

    try:
        recorded = recorded_at(uri, task.run_id)
        if recorded is not None:
            return recorded
        return storage.publish(build, uri, publish_run_directory)
    except (RunDirectoryExistsError, storage.PrefixExistsError):
        recorded = recorded_at(uri, task.run_id)
        return recorded if recorded is not None else result
    except Exception as error:  # the report is an extra: never fail the evaluation on it
        log.warning("evaluation report not published at %s: %s", uri, error)
        return result


def _sample(x: np.ndarray, rows: int, seed: int) -> np.ndarray:
    if len(x) <= rows:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), rows, replace=False))]


def measure_drift(
    task: Task, inputs: Inputs, device: torch.device, log: logging.Logger
) -> tuple[DriftReport | None, Notes, list[FeatureHistogram]]:
    """Feature drift of current vs reference, the p-value of prediction drift, and the
    histograms of the most drifted features (for report.html)."""
    if inputs.reference is None or inputs.current is None:
        return None, {"drift": "skipped: needs data.reference and data.current"}, []
    try:
        from optimizer_job import drift as drift_module
    except ImportError as error:
        return None, {"drift": f"skipped: drift statistics unavailable ({error})"}, []
    compare = getattr(drift_module, "compare", None)
    prediction_drift = getattr(drift_module, "prediction_drift", None)
    if compare is None:
        return None, {"drift": "skipped: drift statistics unavailable (no drift.compare)"}, []
    alpha = _decimal(task.evaluation.alpha, "alpha")
    threshold = _decimal(task.evaluation.drift_threshold, "driftThreshold")
    reference, names = dataio.flat_features(inputs.reference)
    current, _ = dataio.flat_features(inputs.current)
    started = time.perf_counter()
    try:
        report: DriftReport = compare(
            reference,
            current,
            names,
            metric=task.evaluation.drift_metric,
            alpha=alpha,
            threshold=threshold,
        )
    except ValueError as error:
        raise BadInputError(f"drift: {error}") from error
    notes: Notes = {"drift_seconds": round(time.perf_counter() - started, 3)}
    inexact = sorted(set(inputs.reference.inexact_columns) | set(inputs.current.inexact_columns))
    if inexact:
        # The tables are float32 (dataio): integers beyond 2**24 in these columns may
        # have merged. Say so by name rather than report their drift as exact.
        warning = (
            f"integer columns compared at float32 precision (values beyond 2^24 may "
            f"have merged): {', '.join(inexact[:10])}"
        )
        report = report.model_copy(update={"warnings": [*report.warnings, warning]})
        log.warning("drift: %s", warning)
    if prediction_drift is not None:
        model = inputs.loaded.module
        p_reference = predict_proba(
            model, _sample(inputs.reference.X, PREDICTION_DRIFT_ROWS, task.seed), device
        )
        p_current = predict_proba(
            model, _sample(inputs.current.X, PREDICTION_DRIFT_ROWS, task.seed), device
        )
        p_value = float(prediction_drift(p_reference, p_current))
        report = report.model_copy(update={"prediction_drift_p": p_value})
    else:
        notes["prediction_drift"] = "skipped: no drift.prediction_drift"
    log.info(
        "drift: %s score=%.4f detected=%s drifted=%d/%d prediction_p=%s",
        report.metric,
        report.score,
        report.detected,
        len(report.drifted_features),
        len(names),
        report.prediction_drift_p,
    )
    histograms = report_module.feature_histograms(reference, current, names, report)
    return report, notes, histograms


TRANSFORMERS_FACTORIES = frozenset({hf.SEQUENCE_FACTORY, hf.IMAGE_FACTORY})
# Stages written for the layers they know: a Transformers model goes through retrain,
# prune (heads and MLP width, strategies/_prune_hf.py), quantize and evaluate; distilling
# its data (coresets of tabular/image rows) is not done here.
_UNSUPPORTED = {"distill": TRANSFORMERS_FACTORIES}


def refuse_unsupported_stages(task: Task, loaded: LoadedModel) -> None:
    """Bad input, before any work, when a stage cannot handle the model's kind."""
    for stage in task.stages:
        if loaded.factory in _UNSUPPORTED.get(stage.type, frozenset()):
            raise BadInputError(
                f"stage {stage.type} does not support {hf.model_type(loaded.meta)} models "
                f"(Transformers); use retrain, prune and quantize"
            )


def _empty_like(table: Table) -> Table:
    return Table(
        X=np.empty((0, *table.sample_shape), dtype=np.float32),
        y=np.empty(0, dtype=np.int64),
        feature_names=table.feature_names,
        source=np.empty(0, dtype=np.int8),
    )


def training_pool(task: Task, inputs: Inputs, like: Table) -> tuple[Table, Table]:
    """(train, validation) from the labelled reference and current rows, tagged by source.

    The validation share is the first retrain stage's, else 20 %; the split is
    stratified and fixed by the task's seed.
    """
    parts = [
        table.with_source(source)
        for table, source in (
            (inputs.reference, dataio.SOURCE_REFERENCE),
            (inputs.current, dataio.SOURCE_CURRENT),
        )
        if table is not None and table.y is not None
    ]
    if not parts:
        return _empty_like(like), _empty_like(like)
    percent = next(
        (s.validation_percent for s in task.stages if s.type == "retrain"),
        DEFAULT_VALIDATION_PERCENT,
    )
    return dataio.split_stratified(dataio.concat(parts), percent, task.seed)


def recorded_at(artifact_uri: str, run_id: str) -> RunResult | None:
    """``recorded_result`` of a run directory anywhere: an s3:// prefix counts as there
    once its MANIFEST is (it is downloaded and verified first)."""
    if not is_s3_uri(artifact_uri):
        return recorded_result(dataio.path_of(artifact_uri), run_id)
    if not storage.has_manifest(artifact_uri):
        return None
    local = storage.fetch_directory(artifact_uri)
    with contextlib.suppress(FileNotFoundError):  # then recorded_result says what is wrong
        storage.fetch_unlisted(artifact_uri, RESULT_NAME, local)
    return recorded_result(local, run_id, shown_as=artifact_uri)


def recorded_result(final_dir: Path, run_id: str, shown_as: str | None = None) -> RunResult | None:
    """The result of a run already published at ``final_dir``, or None if there is none.

    A directory that is there but is not a complete result of this run is never
    replaced: that is bad input.
    """
    if not final_dir.exists():
        return None
    where = shown_as or final_dir
    try:
        result = RunResult.model_validate_json((final_dir / RESULT_NAME).read_text())
        digest = verify_manifest(final_dir)
    except (OSError, ValidationError, ManifestError) as error:
        raise BadInputError(
            f"{where} exists but is not a complete run ({error}); it is never replaced"
        ) from error
    if result.run_id != run_id or not result.ok or result.manifest_sha256 != digest:
        raise BadInputError(f"{where} holds another result; it is never replaced")
    return result


def _summary(metrics: ModelMetrics) -> str:
    parts = []
    if metrics.accuracy is not None:
        parts.append(f"accuracy={metrics.accuracy:.4f}")
    parts += [f"{k}={v:.3f}ms" for k, v in metrics.latency_ms.items() if k.endswith("_p50")]
    parts.append(f"size={metrics.size_bytes}B params={metrics.parameters} macs={metrics.macs}")
    return " ".join(parts)


def _data_parallel_worker(
    task: Task,
    module: nn.Module,
    ctx: StageContext,
    log: logging.Logger,
    rank: int,
    world: int,
    started: float,
) -> RunResult:
    """A torchrun worker other than rank 0: train with the others through the retrain
    stages at the head of the pipeline, then leave. It measures, writes and reports nothing
    (the result it returns is not written anywhere; see cli.main)."""
    model = copy.deepcopy(module)
    trained = 0
    for stage in task.stages:
        if stage.type != "retrain":
            break
        outcome = apply_stage(stage, model, ctx)
        model, ctx = outcome.model, outcome.ctx
        trained += 1
    distributed.leave()
    log.info("rank %d of %d: %d data-parallel stage(s) done; rank 0 goes on", rank, world, trained)
    return RunResult(
        kind="optimize",
        run_id=task.run_id,
        ok=True,
        seconds=round(time.perf_counter() - started, 3),
        reason=f"worker rank {rank}: data-parallel training done",
    )


def optimize_task(
    task: Task, device: torch.device, log: logging.Logger, started: float
) -> RunResult:
    if not task.artifacts_uri:
        raise BadInputError("optimize needs artifacts_uri")
    if not task.stages:
        raise BadInputError("optimize needs at least one pipeline stage")
    artifact_uri = run_artifact_uri(task.artifacts_uri, task.optimization, task.run_id)
    recorded = recorded_at(artifact_uri, task.run_id)
    if recorded is not None:
        log.info("run %s already published at %s: returning its result", task.run_id, artifact_uri)
        distributed.leave()
        return recorded
    inputs = load_inputs(task, device)
    holdout = inputs.holdout
    if holdout is None or holdout.y is None:
        raise BadInputError("optimize needs a labelled data.holdout to measure the candidate")
    loaded = inputs.loaded
    if loaded.is_onnx:
        source = loaded.meta.get("lineage", {}).get("parent")
        raise BadInputError(
            "model.uri is an ONNX model: pipeline stages start from a torch model"
            + (f" (it was exported from {source})" if source else "")
        )
    train, validation = training_pool(task, inputs, holdout)
    ctx = StageContext(
        device=device,
        seed=task.seed,
        train=train,
        validation=validation,
        holdout=holdout,
        log=log,
        factory=loaded.factory,
        kwargs=loaded.kwargs,
        meta=loaded.meta,
        threads=task.evaluation.threads,
    )
    rank, world = rank_and_world()
    if rank != 0:
        return _data_parallel_worker(task, loaded.module, ctx, log, rank, world, started)
    baseline = measure(loaded.module, holdout, device, task.evaluation)
    log.info("baseline: %s", _summary(baseline))
    model = copy.deepcopy(loaded.module)
    reports: list[StageReport] = []
    before = baseline
    refuse_unsupported_stages(task, loaded)
    for index, stage in enumerate(task.stages, start=1):
        if stage.type != "retrain":
            distributed.leave()  # the data-parallel head of the pipeline is over
        log.info("stage %d/%d %s: start", index, len(task.stages), stage.type)
        stage_started = time.perf_counter()
        outcome = apply_stage(stage, model, ctx)
        seconds = time.perf_counter() - stage_started
        after = measure(outcome.model, holdout, device, task.evaluation)
        log.info(
            "stage %d/%d %s: %.1fs, %s",
            index,
            len(task.stages),
            stage.type,
            seconds,
            _summary(after),
        )
        reports.append(
            StageReport(
                type=stage.type,
                seconds=round(seconds, 3),
                before=before,
                after=after,
                notes=outcome.notes,
            )
        )
        model, ctx, before = outcome.model, outcome.ctx, after
    distributed.leave()
    extra_meta: dict[str, Any] = {
        k: v for k, v in loaded.meta.items() if k not in _WEIGHT_META_KEYS
    }
    copy_files: list[Path] = []
    if loaded.directory is not None and loaded.factory in TRANSFORMERS_FACTORIES:
        copy_files = [
            loaded.directory / name
            for name in (hf.CONFIG_NAME, *hf.TOKENIZER_FILES)
            if (loaded.directory / name).is_file()
        ]
    if task.data.text_column is not None:
        extra_meta["input"] = {"shape": [task.data.max_length], "text": True}
    extra_meta["lineage"] = {
        "parent": task.model_uri,
        "optimization": f"{task.namespace}/{task.optimization}",
        "run_id": task.run_id,
        "stages": [stage.model_dump() for stage in task.stages],
    }

    def build(directory: Path) -> RunResult:
        save_model(model, ctx.factory, ctx.kwargs, directory, extra_meta, copy_files=copy_files)
        # Measure what was written, as a reader will load it, side by side with the
        # model in use: the gates compare these two.
        written = load_model(directory, device=device).module
        details = MeasureDetails()
        paired_baseline, candidate, speed = measure_pair(
            loaded.module, written, holdout, device, task.evaluation, task.speed_decision, details
        )
        log.info("baseline (side by side): %s", _summary(paired_baseline))
        log.info("candidate (side by side): %s", _summary(candidate))
        for entry in speed:
            log.info(
                "speedup at batch %d: %.3fx (%d%% interval %.3f-%.3f, %d rounds)%s",
                entry.batch_size,
                entry.ratio,
                round(entry.confidence * 100),
                entry.low,
                entry.high,
                entry.rounds,
                f", decision {entry.decision}" if entry.decision else "",
            )
        result = RunResult(
            kind="optimize",
            run_id=task.run_id,
            ok=True,
            seconds=round(time.perf_counter() - started, 3),
            baseline=paired_baseline,
            candidate=candidate,
            speed=speed,
            stages=reports,
            artifact_uri=artifact_uri,
            report_uri=report_uri_of(artifact_uri),
            report_data=report_data(task, details, holdout, loaded.num_classes, []),
        )
        # The report goes into the MANIFEST: the digest that names this version covers it.
        digest = write_report(directory, result, task, log)
        result = result.model_copy(update={"manifest_sha256": digest})
        (directory / RESULT_NAME).write_text(result.model_dump_json(indent=2) + "\n")
        return result

    try:
        result = storage.publish(build, artifact_uri, publish_run_directory)
    except (RunDirectoryExistsError, storage.PrefixExistsError):
        # Another attempt of the same run published first: its result stands.
        recorded = recorded_at(artifact_uri, task.run_id)
        if recorded is None:
            raise
        return recorded
    log.info("published %s (MANIFEST sha256 %s)", artifact_uri, result.manifest_sha256)
    return result
