"""The operator <-> Job contract: the task a Job runs and the result it reports.

This module must stay importable without torch: the operator imports it to render
tasks and to parse results. Everything here is plain pydantic.

A task travels as JSON in a ConfigMap mounted into the Job. The Job writes a compact
result (``CompactResult``, at most 4 KiB) to its termination message and the full
``RunResult`` to ``result.json`` in the run's artifact directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field

TASK_API_VERSION: Final = "driftwarden.io/task/v1"

# Exit codes. The Job's podFailurePolicy fails the Job at once on EXIT_BAD_INPUT
# instead of retrying: the same input would fail the same way again.
EXIT_OK = 0
EXIT_BAD_INPUT = 65  # sysexits EX_DATAERR
EXIT_INTERNAL = 70  # sysexits EX_SOFTWARE; retried up to backoffLimit

TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096

# Where a Job sees the PersistentVolumeClaims its task refers to: pvc://<claim>/<path>
# resolves to <PVC_MOUNT_ROOT>/<claim>/<path>.
PVC_MOUNT_ROOT = "/mnt/driftwarden/pvc"


# report.html of a run or evaluation sits beside its result.json (optimizer_job.report).
REPORT_NAME = "report.html"
REPORT_MAX_BINS = 40
REPORT_MAX_CLASSES = 20  # a confusion matrix is drawn for at most this many classes
REPORT_MAX_FEATURES = 6  # histograms of the most drifted features


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataRefs(_Strict):
    """Labelled tables (Parquet, CSV or NPZ) the task reads."""

    reference: str | None = None
    current: str | None = None
    holdout: str | None = None
    label_column: str = "label"
    features: list[str] | None = None
    # Text data: this column is tokenized with the model directory's tokenizer, padded or
    # cut to max_length tokens.
    text_column: str | None = None
    max_length: int = Field(default=128, ge=8, le=4096)


class RetrainStage(_Strict):
    type: Literal["retrain"] = "retrain"
    epochs: int = Field(default=20, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    learning_rate: str = "0.001"  # decimal string: the CRD has no floats
    weight_decay: str = "0.0001"
    dropout_percent: int = Field(default=0, ge=0, le=90)
    label_smoothing_percent: int = Field(default=0, ge=0, le=50)
    early_stopping_patience: int = Field(default=3, ge=0, le=1000)  # 0 disables
    validation_percent: int = Field(default=20, ge=5, le=50)
    # Which labelled data to train on: both tables (better, fresher data) or the
    # current one alone (the old distribution no longer matters).
    data: Literal["ReferenceAndCurrent", "Current", "Reference"] = "ReferenceAndCurrent"


class PruneStage(_Strict):
    type: Literal["prune"] = "prune"
    method: Literal["structured", "unstructured"] = "structured"
    amount_percent: int = Field(default=50, ge=1, le=95)
    importance: Literal["l1", "l2", "taylor", "random"] = "l2"
    fine_tune_epochs: int = Field(default=5, ge=0, le=10_000)


class DistillStage(_Strict):
    type: Literal["distill"] = "distill"
    method: Literal["herding", "kcenter", "random"] = "kcenter"
    fraction_percent: int = Field(default=50, ge=1, le=100)


class QuantizeStage(_Strict):
    type: Literal["quantize"] = "quantize"
    mode: Literal["int8", "fp16", "bf16"] = "int8"


class ExportStage(_Strict):
    """The framework switch: the candidate becomes an ONNX graph served by ONNX Runtime.

    ``quantize`` is ONNX Runtime's int8 quantization of the exported graph (static
    calibrates activation ranges on reference rows); ``graph_optimization`` is the ORT
    session's level, applied when the model loads.
    """

    type: Literal["export"] = "export"
    format: Literal["onnx"] = "onnx"
    quantize: Literal["none", "dynamic-int8", "static-int8"] = "none"
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = "all"


Stage = Annotated[
    RetrainStage | PruneStage | DistillStage | QuantizeStage | ExportStage,
    Field(discriminator="type"),
]


DriftMetric = Literal["ks", "psi", "wasserstein", "jensenshannon", "multivariate"]
# KS is the default: a level-alpha test at any sample size (issue 13); PSI over a
# fixed threshold fires on chance alone with small current samples.
DEFAULT_DRIFT_METRIC: Final = "ks"
# Metrics whose verdict is a test at level alpha, not a score over the threshold.
TEST_DRIFT_METRICS: Final = frozenset({"ks", "multivariate"})


class EvaluationSettings(_Strict):
    drift_metric: DriftMetric = DEFAULT_DRIFT_METRIC
    drift_threshold: str = "0.2"
    alpha: str = "0.05"  # significance level of the per-feature tests
    latency_batch_sizes: list[int] = Field(default_factory=lambda: [1, 32])
    latency_warmup: int = Field(default=10, ge=0)
    latency_iterations: int = Field(default=100, ge=5)
    threads: int = Field(default=1, ge=1, le=256)


class SpeedDecision(_Strict):
    """The speed gate a run's candidate will face, so the Job measures until its ratio
    interval lies on one side of it (or its round budget is spent)."""

    batch_size: int = Field(ge=1, le=65_536)
    # Baseline latency / candidate latency the gate requires, as a decimal string:
    # "1.25" for 25 % faster, "0.909" for at most 10 % slower.
    min_ratio: str


class Task(_Strict):
    api_version: Literal["driftwarden.io/task/v1"] = TASK_API_VERSION
    kind: Literal["optimize", "evaluate"]
    namespace: str
    optimization: str
    run_id: str
    model_uri: str
    data: DataRefs
    stages: list[Stage] = Field(default_factory=list)
    # Root of the artifacts: the run writes <artifacts_uri>/<optimization>/<run_id>/.
    artifacts_uri: str | None = None
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    speed_decision: SpeedDecision | None = None


class ModelMetrics(_Strict):
    """What evaluate measured of one model on one holdout and one device."""

    accuracy: float | None = None  # fraction 0..1 on the holdout
    latency_ms: dict[str, float] = Field(default_factory=dict)  # e.g. {"b1_p95": .., "b32_p50": ..}
    size_bytes: int | None = None
    parameters: int | None = None
    macs: int | None = None
    device: str | None = None


class SpeedRatio(_Strict):
    """How much faster the candidate is than the baseline at one batch size: the median of
    paired ABBA block ratios (baseline time / candidate time, above 1 is faster) and its
    bootstrap confidence interval (``optimizer_job.speed``)."""

    batch_size: int
    ratio: float
    low: float
    high: float
    rounds: int  # timed rounds per model
    confidence: float = 0.95
    # Set when a speed decision was asked for at this batch size: pass, fail or inconclusive.
    decision: Literal["pass", "fail", "inconclusive"] | None = None


class FeatureContribution(_Strict):
    name: str
    importance: float  # drop of the classifier's AUROC when the feature is shuffled


class MultivariateDrift(_Strict):
    """A domain classifier told reference rows from current rows (drift.multivariate)."""

    method: Literal["domain_classifier"] = "domain_classifier"
    auroc: float  # cross-validated, 0.5 = indistinguishable
    p_value: float  # one-sided: AUROC above 0.5 by more than chance
    rows_per_side: int
    folds: int
    top_features: list[FeatureContribution] = Field(default_factory=list)


class DriftReport(_Strict):
    metric: str
    # Dataset-level score of the chosen metric: the mean over features, or the
    # domain classifier's AUROC for "multivariate".
    score: float
    share_drifted: float  # share of features drifted after the multiple-test correction
    drifted_features: list[str] = Field(default_factory=list)
    detected: bool
    prediction_drift_p: float | None = None
    per_feature: dict[str, dict[str, float]] = Field(default_factory=dict)
    # Too few rows for the metric to mean anything: why, for a person. detected is
    # then False and says nothing; the operator reports InsufficientData.
    insufficient_data: str | None = None
    minimum_rows: int | None = None  # the metric's minimum (current rows)
    multivariate: MultivariateDrift | None = None
    warnings: list[str] = Field(default_factory=list)  # e.g. a column compared inexactly


class FeatureHistogram(_Strict):
    """Reference and current rows of one feature, binned alike: numeric features over shared
    ``edges`` (one more than the counts), categorical ones (few distinct integer values) as
    one bar per ``categories`` value."""

    name: str
    kind: Literal["numeric", "categorical"] = "numeric"
    edges: list[float] = Field(default_factory=list, max_length=REPORT_MAX_BINS + 1)
    categories: list[str] = Field(default_factory=list, max_length=REPORT_MAX_BINS)
    reference: list[int] = Field(default_factory=list, max_length=REPORT_MAX_BINS)
    current: list[int] = Field(default_factory=list, max_length=REPORT_MAX_BINS)


class LatencyHistogram(_Strict):
    """Per-call latencies (ms) of one model at one batch size, binned."""

    model: Literal["baseline", "candidate"]
    batch_size: int
    edges: list[float] = Field(default_factory=list, max_length=REPORT_MAX_BINS + 1)
    counts: list[int] = Field(default_factory=list, max_length=REPORT_MAX_BINS)


class ConfusionMatrix(_Strict):
    """Rows: true class, columns: predicted class, on the holdout."""

    model: Literal["baseline", "candidate"]
    labels: list[str] = Field(max_length=REPORT_MAX_CLASSES)
    counts: list[list[int]] = Field(max_length=REPORT_MAX_CLASSES)


class ReportData(_Strict):
    """What report.html plots beyond the metrics: small binned summaries of the raw values
    (a few KiB), so that the report renders again from result.json alone."""

    drift_threshold: float | None = None
    alpha: float | None = None
    drift_histograms: list[FeatureHistogram] = Field(
        default_factory=list, max_length=REPORT_MAX_FEATURES
    )
    latency: list[LatencyHistogram] = Field(default_factory=list, max_length=32)
    confusion: list[ConfusionMatrix] = Field(default_factory=list, max_length=2)


class StageReport(_Strict):
    type: str
    seconds: float
    before: ModelMetrics | None = None
    after: ModelMetrics | None = None
    notes: dict[str, str | float | int] = Field(default_factory=dict)


class RunResult(_Strict):
    """The full result, written as result.json beside the model."""

    api_version: Literal["driftwarden.io/task/v1"] = TASK_API_VERSION
    kind: Literal["optimize", "evaluate"]
    run_id: str
    ok: bool
    reason: str = ""  # one line, for a person, when not ok
    seconds: float = 0.0
    baseline: ModelMetrics | None = None
    candidate: ModelMetrics | None = None
    speed: list[SpeedRatio] = Field(default_factory=list)  # one per measured batch size
    drift: DriftReport | None = None
    stages: list[StageReport] = Field(default_factory=list)
    artifact_uri: str | None = None
    manifest_sha256: str | None = None
    # <artifact_uri>/report.html: the run's self-contained HTML report (in the MANIFEST).
    report_uri: str | None = None
    report_data: ReportData | None = None


class CompactResult(_Strict):
    """The summary in the termination message (<= 4 KiB) that the operator reads."""

    kind: Literal["optimize", "evaluate"]
    run_id: str
    ok: bool
    reason: str = ""
    baseline: ModelMetrics | None = None
    candidate: ModelMetrics | None = None
    speed: list[SpeedRatio] = Field(default_factory=list)
    drift_score: float | None = None
    drift_detected: bool | None = None
    drifted_features: list[str] = Field(default_factory=list)
    drift_metric: str | None = None
    drift_insufficient: str | None = None  # DriftReport.insufficient_data, cut to 300
    drift_p_value: float | None = None  # multivariate: the domain classifier's p-value
    drift_top_features: list[str] = Field(default_factory=list)  # multivariate, at most 5
    artifact_uri: str | None = None
    manifest_sha256: str | None = None
    report_uri: str | None = None
    seconds: float = 0.0

    @classmethod
    def from_result(cls, result: RunResult) -> CompactResult:
        multivariate = result.drift.multivariate if result.drift else None
        return cls(
            kind=result.kind,
            run_id=result.run_id,
            ok=result.ok,
            reason=result.reason[:500],
            baseline=result.baseline,
            candidate=result.candidate,
            speed=result.speed[:8],
            drift_score=result.drift.score if result.drift else None,
            drift_detected=result.drift.detected if result.drift else None,
            drifted_features=result.drift.drifted_features[:20] if result.drift else [],
            drift_metric=result.drift.metric if result.drift else None,
            drift_insufficient=(result.drift.insufficient_data or "")[:300] or None
            if result.drift
            else None,
            drift_p_value=multivariate.p_value if multivariate else None,
            drift_top_features=[f.name[:128] for f in multivariate.top_features[:5]]
            if multivariate
            else [],
            artifact_uri=result.artifact_uri,
            manifest_sha256=result.manifest_sha256,
            report_uri=result.report_uri,
            seconds=result.seconds,
        )

    def to_message(self) -> str:
        """JSON that fits the termination message; long lists are cut first."""
        text = self.model_dump_json(exclude_none=True)
        if len(text.encode()) <= TERMINATION_MESSAGE_LIMIT:
            return text
        slim = self.model_copy(
            update={
                "drifted_features": self.drifted_features[:3],
                "drift_top_features": self.drift_top_features[:3],
            }
        )
        return slim.model_dump_json(exclude_none=True)[:TERMINATION_MESSAGE_LIMIT]


class BadInputError(Exception):
    """Input the same task would fail on again: exit EXIT_BAD_INPUT, no retry."""


# A '..' segment, or an encoded '.', '/' or '\\' that could make one once decoded: refused
# in any URI (the CRD refuses them too; this is the Job's own check).
_URI_ESCAPE: Final = re.compile(r"(^|/)[.][.](/|$)|%(2e|2f|5c)", re.IGNORECASE)
_CLAIM_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def resolve_uri(uri: str, pvc_root: str = PVC_MOUNT_ROOT) -> Path:
    """Map a model or data URI to a local path.

    ``file:///abs/path`` is the path itself; ``pvc://claim/sub/path`` is the claim's
    mount under ``pvc_root``, and never leaves it: '..' segments and encoded dots or
    slashes are bad input, and so is a path whose real location (symbolic links
    followed) is outside the claim. Other schemes are bad input.
    """
    parsed = urlparse(uri)
    if _URI_ESCAPE.search(parsed.path) or _URI_ESCAPE.search(unquote(parsed.path)):
        raise BadInputError(
            f"URI {uri!r} contains a '..' segment or an encoded '.', '/' or '\\': refused"
        )
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise BadInputError(f"file URI must be file:///absolute/path, got {uri!r}")
        return Path(unquote(parsed.path))
    if parsed.scheme == "pvc":
        if not _CLAIM_NAME.match(parsed.netloc):
            raise BadInputError(f"pvc URI must be pvc://<claim>/<path>, got {uri!r}")
        claim = Path(pvc_root) / parsed.netloc
        path = claim / unquote(parsed.path).lstrip("/")
        real_claim, real_path = os.path.realpath(claim), os.path.realpath(path)
        if os.path.commonpath([real_claim, real_path]) != real_claim:
            raise BadInputError(f"URI {uri!r} resolves to {real_path}, outside its claim")
        return path
    raise BadInputError(f"unsupported URI scheme in {uri!r}: use file:/// or pvc://")


S3_SCHEME = "s3"
# S3 bucket naming rules (lowercase letters, digits, dots, hyphens; 3-63 characters).
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3_uri(uri: str | None) -> bool:
    return bool(uri) and urlparse(str(uri)).scheme == S3_SCHEME


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``; the key has no leading or trailing slash.

    A key with an empty, ``.`` or ``..`` segment (also percent-encoded) is bad input: a
    resolved object never leaves the prefix the spec names.
    """
    parsed = urlparse(uri)
    if parsed.scheme != S3_SCHEME or not _S3_BUCKET.match(parsed.netloc or ""):
        raise BadInputError(f"s3 URI must be s3://<bucket>/<prefix>, got {uri!r}")
    if parsed.query or parsed.fragment or parsed.params:
        raise BadInputError(f"s3 URI {uri!r} must not carry a query or fragment")
    key = parsed.path.strip("/")
    for segment in key.split("/") if key else []:
        if unquote(segment) in ("", ".", "..") or "\\" in segment:
            raise BadInputError(f"s3 URI {uri!r}: the key has an empty, '.' or '..' segment")
    return parsed.netloc, key


def pvc_claims(uris: list[str | None]) -> list[str]:
    """The distinct PVC claim names a set of URIs refers to, sorted."""
    return sorted({urlparse(u).netloc for u in uris if u and urlparse(u).scheme == "pvc"})


def run_artifact_uri(artifacts_uri: str, optimization: str, run_id: str) -> str:
    return f"{artifacts_uri.rstrip('/')}/{optimization}/{run_id}"


# Evaluations publish their result.json and report.html (no model) under this folder of
# the optimization's artifacts: <artifacts_uri>/<optimization>/evaluations/<run_id>/.
EVALUATIONS_FOLDER = "evaluations"


def evaluation_artifact_uri(artifacts_uri: str, optimization: str, run_id: str) -> str:
    return f"{artifacts_uri.rstrip('/')}/{optimization}/{EVALUATIONS_FOLDER}/{run_id}"


def report_uri_of(directory_uri: str) -> str:
    """The report beside a run's or evaluation's result."""
    return f"{directory_uri.rstrip('/')}/{REPORT_NAME}"


def own_report_uri(reported: str | None, directory_uri: str | None) -> str | None:
    """``reported`` when it is the report of ``directory_uri`` (the run's or evaluation's own
    directory); anything else a Job reports is not shown to people as its report."""
    if not reported or not directory_uri or reported != report_uri_of(directory_uri):
        return None
    return reported


# The Job takes the Secret of spec.storage.secretRef whole (``envFrom``, not optional: while
# the Secret is missing its Pod waits in CreateContainerConfigError, which the operator
# reports as Ready=False MissingSecret without any right on Secrets). Every key arrives
# prefixed, so no key of the Secret can set a variable the Job reads for anything else; the
# S3 client reads only these keys, named as the AWS SDKs name them, back from the prefix.
STORAGE_ENV_PREFIX: Final = "DRIFTWARDEN_STORAGE_"
STORAGE_SECRET_KEYS: Final = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def storage_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment an S3 client reads: the storage Secret's keys (prefixed in a Job)
    over the plain AWS names (a serving Pod's own env, workload identity)."""
    merged = dict(env)
    for key in STORAGE_SECRET_KEYS:
        value = env.get(STORAGE_ENV_PREFIX + key)
        if value:
            merged[key] = value
    return merged
