"""Pydantic models of ModelOptimization.spec, in agreement with crds/modeloptimization.yaml.

Same field names (camelCase aliases), types, limits and defaults as the CRD, and the CRD's CEL
rules as validators with the same messages (driftwarden.api.rules). The models are strict like
the apiserver: "10" is not an integer, 0.001 is not a decimal string, unknown fields are
refused. Unit and e2e tests check the agreement against the CRD and the real apiserver.

    spec = ModelOptimizationSpec.model_validate(body["spec"])
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

from driftwarden.api import rules
from driftwarden.api.durations import (
    DURATION_MAX_LENGTH,
    DURATION_MIN_LENGTH,
    DURATION_PATTERN,
    parse_duration,
)
from driftwarden.api.quantity import parse_quantity

# Patterns, kept identical to the CRD's (a unit test compares them).
URI_PATTERN = (
    r"^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?|file://|s3://[a-z0-9][-a-z0-9.]{1,61}[a-z0-9])/\S*$"
)
DECIMAL_PATTERN = r"^[0-9]{1,10}(\.[0-9]{1,10})?([eE]-?[0-9]{1,2})?$"
QUANTITY_PATTERN = (
    r"^(\+)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Data-parallel retraining: more workers than this is not what a single run should ask for.
MAX_WORKERS = 16
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _cron_field(value: str) -> str:
    """A cron field: comma-separated *, values or ranges of `value`, each with a /step."""
    item = rf"(\*|{value}(-{value})?)(/[0-9]{{1,2}})?"
    return rf"{item}(,{item})*"


# Each field in its range (croniter refuses "0 25 * * 0"; so does the CRD).
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    + r"\s+".join(
        _cron_field(value)
        for value in (
            r"[0-5]?[0-9]",  # minute
            r"([01]?[0-9]|2[0-3])",  # hour
            r"(0?[1-9]|[12][0-9]|3[01])",  # day of month
            r"(0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))",  # month
            r"([0-7]|(?i:sun|mon|tue|wed|thu|fri|sat))",  # day of week
        )
    )
    + ")$"
)
# Label syntax (a node selector's keys and values).
LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A '..' segment, or an encoded '.', '/' or '\' that could make one once decoded.
URI_ESCAPE = re.compile(r"(^|/)[.][.](/|$)|%(2e|2f|5c)", re.IGNORECASE)
PROMETHEUS_URL_PATTERN = r"^https?://\S+$"

MIN_INTERVAL = timedelta(seconds=10)
MIN_EXPIRES_AFTER = timedelta(seconds=10)

_H = TypeVar("_H", bound=Hashable)

StageType = Literal["retrain", "prune", "distill", "quantize", "export"]


def _require(rule: rules.Rule, ok: bool) -> None:
    if not ok:
        raise rule.error()


def _learning_rate(value: str) -> str:
    _require(rules.LEARNING_RATE_RANGE, Decimal(0) < Decimal(value) <= Decimal(10))
    return value


def _weight_decay(value: str) -> str:
    _require(rules.WEIGHT_DECAY_RANGE, Decimal(value) <= Decimal(1))
    return value


def _drift_threshold(value: str) -> str:
    _require(rules.DRIFT_THRESHOLD_RANGE, Decimal(value) > 0)
    return value


def _drift_alpha(value: str) -> str:
    _require(rules.DRIFT_ALPHA_RANGE, Decimal(0) < Decimal(value) < Decimal(1))
    return value


def _interval(value: str) -> str:
    _require(rules.INTERVAL_MINIMUM, parse_duration(value) >= MIN_INTERVAL)
    return value


def _expires_after(value: str) -> str:
    _require(rules.EXPIRES_AFTER_MINIMUM, parse_duration(value) >= MIN_EXPIRES_AFTER)
    return value


def _positive_quantity(value: int | str) -> int | str:
    # All quantity rules share one message, so any of them words the error.
    _require(rules.QUANTITY_POSITIVE_RULES[0], parse_quantity(value) > 0)
    return value


def _contained_uri(value: str) -> str:
    _require(rules.URI_CONTAINED_RULES[0], URI_ESCAPE.search(value) is None)
    return value


def _label_keys(selector: dict[str, str]) -> dict[str, str]:
    _require(
        rules.NODE_SELECTOR_LABEL_KEYS,
        all(len(k) <= 317 and re.match(LABEL_KEY_PATTERN, k) for k in selector),
    )
    return selector


def _unique(values: list[_H]) -> list[_H]:
    # x-kubernetes-list-type: set refuses duplicates.
    seen: set[_H] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"Duplicate value: {value!r}")
        seen.add(value)
    return values


Uri = Annotated[
    str,
    StringConstraints(min_length=8, max_length=1024, pattern=URI_PATTERN),
    AfterValidator(_contained_uri),
]
DecimalString = Annotated[str, StringConstraints(max_length=24, pattern=DECIMAL_PATTERN)]
Duration = Annotated[
    str,
    StringConstraints(
        min_length=DURATION_MIN_LENGTH, max_length=DURATION_MAX_LENGTH, pattern=DURATION_PATTERN
    ),
]
QuantityString = Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY_PATTERN)]
# An int-or-string Kubernetes quantity such as 4, "500m" or "2Gi"; above zero.
Quantity = Annotated[int | QuantityString, AfterValidator(_positive_quantity)]
FeatureName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
BatchSize = Annotated[int, Field(ge=1, le=4096)]


class SpecModel(BaseModel):
    """Strict, immutable, camelCase like the CRD; field names stay snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )


class ModelRef(SpecModel):
    uri: Uri


class DataSpec(SpecModel):
    reference: Uri
    current: Uri
    holdout: Uri
    label_column: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "label"
    features: (
        Annotated[list[FeatureName], Field(max_length=1024), AfterValidator(_unique)] | None
    ) = None
    text_column: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    max_length: Annotated[int, Field(ge=8, le=4096)] = 128

    @model_validator(mode="after")
    def _label_is_not_a_feature(self) -> DataSpec:
        _require(
            rules.FEATURES_INCLUDE_LABEL,
            self.features is None or self.label_column not in self.features,
        )
        return self


class ArtifactsSpec(SpecModel):
    uri: Uri


class TargetSpec(SpecModel):
    deployment: Annotated[
        str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    ]
    container: (
        Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
        | None
    ) = None
    model_env: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=ENV_NAME_PATTERN)
    ] = "MODEL_URI"


class RetrainSettings(SpecModel):
    epochs: Annotated[int, Field(ge=1, le=10_000)]
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 64
    learning_rate: Annotated[DecimalString, AfterValidator(_learning_rate)] = "0.001"
    weight_decay: Annotated[DecimalString, AfterValidator(_weight_decay)] = "0.0001"
    dropout_percent: Annotated[int, Field(ge=0, le=90)] = 0
    label_smoothing_percent: Annotated[int, Field(ge=0, le=50)] = 0
    early_stopping_patience: Annotated[int, Field(ge=0, le=1000)] = 3
    validation_percent: Annotated[int, Field(ge=5, le=50)] = 20
    data: Literal["ReferenceAndCurrent", "Current", "Reference"] = "ReferenceAndCurrent"


class PruneSettings(SpecModel):
    method: Literal["structured", "unstructured"] = "structured"
    amount_percent: Annotated[int, Field(ge=1, le=95)]
    importance: Literal["l1", "l2", "taylor", "random"] = "l2"
    fine_tune_epochs: Annotated[int, Field(ge=0, le=10_000)] = 5


class DistillSettings(SpecModel):
    method: Literal["herding", "kcenter", "random"] = "kcenter"
    fraction_percent: Annotated[int, Field(ge=1, le=100)]


class QuantizeSettings(SpecModel):
    mode: Literal["int8", "fp16", "bf16"]


class ExportSettings(SpecModel):
    # One value today; shown as the CRD's enum (pydantic writes a lone literal as const).
    format: Annotated[Literal["onnx"], Field(json_schema_extra={"enum": ["onnx"]})] = "onnx"
    quantize: Literal["none", "dynamic-int8", "static-int8"] = "none"
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = "all"


StageSettings = (
    RetrainSettings | PruneSettings | DistillSettings | QuantizeSettings | ExportSettings
)


class PipelineStage(SpecModel):
    """One stage of a run: exactly one of the five is set."""

    retrain: RetrainSettings | None = None
    prune: PruneSettings | None = None
    distill: DistillSettings | None = None
    quantize: QuantizeSettings | None = None
    export: ExportSettings | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PipelineStage:
        present = [
            s
            for s in (self.retrain, self.prune, self.distill, self.quantize, self.export)
            if s is not None
        ]
        _require(rules.STAGE_EXACTLY_ONE, len(present) == 1)
        return self

    @property
    def type(self) -> StageType:
        if self.retrain is not None:
            return "retrain"
        if self.prune is not None:
            return "prune"
        if self.distill is not None:
            return "distill"
        if self.quantize is not None:
            return "quantize"
        return "export"

    @property
    def settings(self) -> StageSettings:
        settings = self.retrain or self.prune or self.distill or self.quantize or self.export
        assert settings is not None  # the validator guarantees exactly one
        return settings


def _pipeline_order(stages: list[PipelineStage]) -> list[PipelineStage]:
    types = [stage.type for stage in stages]
    if "quantize" in types:
        _require(rules.QUANTIZE_LAST, types.index("quantize") == len(types) - 1)
    if "export" in types:
        _require(rules.EXPORT_LAST, types.index("export") == len(types) - 1)
    _require(rules.QUANTIZE_AND_EXPORT_EXCLUSIVE, not {"quantize", "export"} <= set(types))
    if "distill" in types:
        last_distill = max(i for i, t in enumerate(types) if t == "distill")
        last_training = max(
            (i for i, t in enumerate(types) if t in ("retrain", "prune")), default=-1
        )
        _require(rules.DISTILL_NEEDS_TRAINING_AFTER, last_distill < last_training)
    return stages


class DriftTrigger(SpecModel):
    metric: Literal["ks", "psi", "wasserstein", "jensenshannon", "multivariate"] = "ks"
    threshold: Annotated[DecimalString, AfterValidator(_drift_threshold)] = "0.2"
    alpha: Annotated[DecimalString, AfterValidator(_drift_alpha)] = "0.05"
    consecutive_windows: Annotated[int, Field(ge=1, le=100)] = 2


class LatencyTrigger(SpecModel):
    p95_ms: Annotated[int, Field(ge=1, le=600_000)]
    batch_size: BatchSize = 1
    consecutive_breaches: Annotated[int, Field(ge=1, le=100)] = 1


class AccuracyTrigger(SpecModel):
    min_percent: Annotated[int, Field(ge=1, le=100)]


class Triggers(SpecModel):
    drift: DriftTrigger | None = None
    latency: LatencyTrigger | None = None
    accuracy: AccuracyTrigger | None = None
    schedule: Annotated[str, StringConstraints(max_length=128, pattern=CRON_PATTERN)] | None = None
    cooldown: Duration = "30m"
    max_runs_per_day: Annotated[int, Field(ge=1, le=100)] = 4

    @property
    def cooldown_delta(self) -> timedelta:
        return parse_duration(self.cooldown)


class LatencyBenchmark(SpecModel):
    batch_sizes: Annotated[
        list[BatchSize], Field(min_length=1, max_length=8), AfterValidator(_unique)
    ] = Field(default_factory=lambda: [1, 32])
    warmup: Annotated[int, Field(ge=0, le=10_000)] = 10
    iterations: Annotated[int, Field(ge=5, le=100_000)] = 100
    threads: Annotated[int, Field(ge=1, le=256)] = 1


class PrometheusSource(SpecModel):
    url: Annotated[
        str, StringConstraints(min_length=8, max_length=2048, pattern=PROMETHEUS_URL_PATTERN)
    ]
    query: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class Monitoring(SpecModel):
    interval: Annotated[Duration, AfterValidator(_interval)] = "5m"
    latency: LatencyBenchmark = Field(default_factory=LatencyBenchmark)
    prometheus: PrometheusSource | None = None

    @property
    def interval_delta(self) -> timedelta:
        return parse_duration(self.interval)


class Gates(SpecModel):
    max_accuracy_drop_percent: Annotated[int, Field(ge=0, le=100)] = 1
    min_accuracy_percent: Annotated[int, Field(ge=0, le=100)] | None = None
    min_speedup_percent: Annotated[int, Field(ge=1, le=10_000)] | None = None
    max_slowdown_percent: Annotated[int, Field(ge=0, le=1000)] = 10
    latency_batch_size: BatchSize | None = None
    max_size: Quantity | None = None


class Promotion(SpecModel):
    mode: Literal["Automatic", "Manual"] = "Automatic"
    approved_run_id: (
        Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
        | None
    ) = None
    rollback: bool = True

    @model_validator(mode="after")
    def _approval_is_manual(self) -> Promotion:
        _require(
            rules.APPROVED_RUN_NEEDS_MANUAL, self.approved_run_id is None or self.mode == "Manual"
        )
        return self


class TemporaryFix(SpecModel):
    enabled: bool = True
    cpu_percent: Annotated[int, Field(ge=100, le=1000)] = 200
    memory_percent: Annotated[int, Field(ge=100, le=1000)] = 150
    max_cpu: Quantity | None = None
    max_memory: Quantity | None = None
    extra_gpus: Annotated[int, Field(ge=0, le=8)] = 0
    expires_after: Annotated[Duration, AfterValidator(_expires_after)] = "2h"

    @model_validator(mode="after")
    def _raises_something(self) -> TemporaryFix:
        _require(
            rules.TEMPORARY_FIX_RAISES_NOTHING,
            not self.enabled
            or self.cpu_percent > 100
            or self.memory_percent > 100
            or self.extra_gpus > 0,
        )
        return self

    @property
    def expires_after_delta(self) -> timedelta:
        return parse_duration(self.expires_after)


class JobResources(SpecModel):
    gpu: Annotated[int, Field(ge=0, le=16)] = 0
    cpu: Quantity = "1"
    memory: Quantity = "2Gi"


class Toleration(SpecModel):
    key: Annotated[str, StringConstraints(max_length=316)] | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: Annotated[str, StringConstraints(max_length=63)] | None = None
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        _require(rules.TOLERATION_EXISTS_WITH_VALUE, self.operator != "Exists" or not self.value)
        _require(
            rules.TOLERATION_SECONDS_NEEDS_NO_EXECUTE,
            self.toleration_seconds is None or self.effect == "NoExecute",
        )
        _require(rules.TOLERATION_EQUAL_NEEDS_KEY, bool(self.key) or self.operator == "Exists")
        return self


class SecretRef(SpecModel):
    name: Annotated[
        str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    ]


class StorageSpec(SpecModel):
    secret_ref: SecretRef | None = None


class JobSpec(SpecModel):
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    service_account_name: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
        ]
        | None
    ) = None
    resources: JobResources = Field(default_factory=JobResources)
    node_selector: (
        Annotated[
            dict[
                str, Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
            ],
            Field(max_length=32),
            AfterValidator(_label_keys),
        ]
        | None
    ) = None
    tolerations: Annotated[list[Toleration], Field(max_length=16)] | None = None
    backoff_limit: Annotated[int, Field(ge=0, le=10)] = 2
    active_deadline_seconds: Annotated[int, Field(ge=60, le=604_800)] = 3600
    ttl_seconds_after_finished: Annotated[int, Field(ge=60, le=604_800)] = 3600
    workers: Annotated[int, Field(ge=1, le=MAX_WORKERS)] = 1
    gang_timeout_seconds: Annotated[int, Field(ge=30, le=86_400)] = 600
    queue_name: (
        Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
        | None
    ) = None


class ModelOptimizationSpec(SpecModel):
    suspend: bool = False
    run_request: Annotated[str, StringConstraints(max_length=253)] | None = None
    model: ModelRef
    data: DataSpec
    artifacts: ArtifactsSpec
    target: TargetSpec | None = None
    pipeline: Annotated[
        list[PipelineStage], Field(min_length=1, max_length=8), AfterValidator(_pipeline_order)
    ]
    triggers: Triggers = Field(default_factory=Triggers)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    gates: Gates = Field(default_factory=Gates)
    promotion: Promotion = Field(default_factory=Promotion)
    temporary_fix: TemporaryFix | None = None
    storage: StorageSpec | None = None
    job: JobSpec = Field(default_factory=JobSpec)

    @model_validator(mode="after")
    def _cross_field_rules(self) -> ModelOptimizationSpec:
        # In the CRD's order, so the first violation reported is the apiserver's first.
        types = {stage.type for stage in self.pipeline}
        _require(
            rules.SPEEDUP_NEEDS_PRUNE_OR_QUANTIZE,
            self.gates.min_speedup_percent is None or bool(types & {"prune", "quantize", "export"}),
        )
        _require(
            rules.PROMOTION_NEEDS_TARGET,
            self.target is not None
            or (self.promotion.mode == "Manual" and self.promotion.approved_run_id is None),
        )
        fix_enabled = self.temporary_fix is not None and self.temporary_fix.enabled
        _require(rules.TEMPORARY_FIX_NEEDS_TARGET, self.target is not None or not fix_enabled)
        _require(
            rules.TEMPORARY_FIX_NEEDS_LATENCY_TRIGGER,
            self.triggers.latency is not None or not fix_enabled,
        )
        _require(
            rules.ACCURACY_GATE_UNDER_TRIGGER,
            self.gates.min_accuracy_percent is None
            or self.triggers.accuracy is None
            or self.gates.min_accuracy_percent >= self.triggers.accuracy.min_percent,
        )
        _require(
            rules.LATENCY_BATCH_SIZE_NOT_MEASURED,
            self.triggers.latency is None
            or self.monitoring.prometheus is not None
            or self.triggers.latency.batch_size in self.monitoring.latency.batch_sizes,
        )
        _require(
            rules.GATE_BATCH_SIZE_NOT_MEASURED,
            self.gates.latency_batch_size is None
            or self.gates.latency_batch_size in self.monitoring.latency.batch_sizes,
        )
        return self

    @property
    def stage_types(self) -> list[StageType]:
        return [stage.type for stage in self.pipeline]
