"""The CRD's CEL rules, mirrored for the pydantic models.

Each rule names where it sits in the schema, the field the apiserver reports (its
``fieldPath``) and its message, word for word as in crds/modeloptimization.yaml. A unit test
reads the CRD and checks that this catalogue and the CRD's rules are the same set, so the
models refuse what the apiserver refuses with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    # Where the rule is declared, in the apiserver's notation with [*] for list items,
    # e.g. "spec", "spec.pipeline[*]".
    schema_path: str
    # The CEL fieldPath relative to schema_path, without the leading dot ("" for none).
    field_path: str
    message: str

    @property
    def reported_path(self) -> str:
        """Where the apiserver reports a violation, e.g. "spec.target"."""
        return f"{self.schema_path}.{self.field_path}" if self.field_path else self.schema_path

    def error(self) -> ValueError:
        """The error a model validator raises; it names the field like the apiserver does."""
        if self.field_path:
            return ValueError(f"{self.field_path}: {self.message}")
        return ValueError(self.message)


STAGE_EXACTLY_ONE = Rule(
    "spec.pipeline[*]",
    "",
    "a pipeline stage has exactly one of retrain, prune, distill, quantize or export",
)
QUANTIZE_LAST = Rule(
    "spec.pipeline",
    "",
    "quantize may appear once and must be the last stage: later stages cannot train a "
    "quantized model",
)
EXPORT_LAST = Rule(
    "spec.pipeline",
    "",
    "export may appear once and must be the last stage: later stages cannot train an ONNX model",
)
QUANTIZE_AND_EXPORT_EXCLUSIVE = Rule(
    "spec.pipeline",
    "",
    "quantize and export do not combine: int8 on ONNX Runtime is export.quantize",
)
DISTILL_NEEDS_TRAINING_AFTER = Rule(
    "spec.pipeline",
    "",
    "a distill stage must be followed by a retrain or prune stage: distill only selects the "
    "data they train on",
)
SPEEDUP_NEEDS_PRUNE_OR_QUANTIZE = Rule(
    "spec",
    "gates.minSpeedupPercent",
    "gates.minSpeedupPercent needs a prune, quantize or export stage in the pipeline: "
    "retrain and distill do not make a model faster",
)
PROMOTION_NEEDS_TARGET = Rule(
    "spec",
    "target",
    "promotion needs spec.target, the Deployment to point at the new model (or use "
    "promotion.mode Manual without approvedRunId)",
)
TEMPORARY_FIX_NEEDS_TARGET = Rule(
    "spec",
    "target",
    "temporaryFix needs spec.target, the Deployment whose resources it raises",
)
TEMPORARY_FIX_NEEDS_LATENCY_TRIGGER = Rule(
    "spec",
    "triggers.latency",
    "temporaryFix needs triggers.latency: the fix is applied while the latency SLO is breached",
)
ACCURACY_GATE_UNDER_TRIGGER = Rule(
    "spec",
    "gates.minAccuracyPercent",
    "gates.minAccuracyPercent must be at least triggers.accuracy.minPercent: a promoted model "
    "under the trigger would start another run at once",
)
LATENCY_BATCH_SIZE_NOT_MEASURED = Rule(
    "spec",
    "triggers.latency.batchSize",
    "triggers.latency.batchSize must be one of monitoring.latency.batchSizes: the evaluation "
    "measures only those",
)
GATE_BATCH_SIZE_NOT_MEASURED = Rule(
    "spec",
    "gates.latencyBatchSize",
    "gates.latencyBatchSize must be one of monitoring.latency.batchSizes: the Job measures "
    "only those",
)
FEATURES_INCLUDE_LABEL = Rule(
    "spec.data",
    "features",
    "features must not include labelColumn: the label is not an input",
)
LEARNING_RATE_RANGE = Rule(
    "spec.pipeline[*].retrain.learningRate",
    "",
    "learningRate must be above 0 and at most 10",
)
WEIGHT_DECAY_RANGE = Rule(
    "spec.pipeline[*].retrain.weightDecay",
    "",
    "weightDecay must be at most 1",
)
DRIFT_THRESHOLD_RANGE = Rule(
    "spec.triggers.drift.threshold",
    "",
    "threshold must be above 0",
)
DRIFT_ALPHA_RANGE = Rule(
    "spec.triggers.drift.alpha",
    "",
    "alpha must be between 0 and 1",
)
INTERVAL_MINIMUM = Rule(
    "spec.monitoring.interval",
    "",
    "interval must be at least 10s",
)
APPROVED_RUN_NEEDS_MANUAL = Rule(
    "spec.promotion",
    "approvedRunId",
    "approvedRunId is for promotion.mode Manual: Automatic promotes every candidate that "
    "passes the gates",
)
TEMPORARY_FIX_RAISES_NOTHING = Rule(
    "spec.temporaryFix",
    "",
    "an enabled temporaryFix must raise something: cpuPercent or memoryPercent above 100, or "
    "extraGpus above 0",
)
EXPIRES_AFTER_MINIMUM = Rule(
    "spec.temporaryFix.expiresAfter",
    "",
    "expiresAfter must be at least 10s",
)
QUANTITY_POSITIVE_RULES = tuple(
    Rule(path, "", "must be a quantity above 0")
    for path in (
        "spec.gates.maxSize",
        "spec.temporaryFix.maxCpu",
        "spec.temporaryFix.maxMemory",
        "spec.job.resources.cpu",
        "spec.job.resources.memory",
    )
)
TOLERATION_EXISTS_WITH_VALUE = Rule(
    "spec.job.tolerations[*]",
    "value",
    "value must be empty when operator is Exists",
)
TOLERATION_SECONDS_NEEDS_NO_EXECUTE = Rule(
    "spec.job.tolerations[*]",
    "tolerationSeconds",
    "tolerationSeconds needs effect NoExecute",
)
TOLERATION_EQUAL_NEEDS_KEY = Rule(
    "spec.job.tolerations[*]",
    "operator",
    "operator must be Exists when key is empty",
)
URI_CONTAINED_RULES = tuple(
    Rule(
        path,
        "",
        "must not contain '..' path segments or encoded dots, slashes or backslashes "
        "(%2e, %2f, %5c): a resolved path stays inside its claim or directory",
    )
    for path in (
        "spec.model.uri",
        "spec.data.reference",
        "spec.data.current",
        "spec.data.holdout",
        "spec.artifacts.uri",
    )
)
NODE_SELECTOR_LABEL_KEYS = Rule(
    "spec.job.nodeSelector",
    "",
    "keys must be label keys: an optional DNS subdomain prefix and '/', then a name of at "
    "most 63 characters (letters, digits, '-', '_', '.'), starting and ending with a letter "
    "or digit",
)

ALL_RULES: tuple[Rule, ...] = (
    STAGE_EXACTLY_ONE,
    QUANTIZE_LAST,
    EXPORT_LAST,
    QUANTIZE_AND_EXPORT_EXCLUSIVE,
    DISTILL_NEEDS_TRAINING_AFTER,
    SPEEDUP_NEEDS_PRUNE_OR_QUANTIZE,
    PROMOTION_NEEDS_TARGET,
    TEMPORARY_FIX_NEEDS_TARGET,
    TEMPORARY_FIX_NEEDS_LATENCY_TRIGGER,
    ACCURACY_GATE_UNDER_TRIGGER,
    LATENCY_BATCH_SIZE_NOT_MEASURED,
    GATE_BATCH_SIZE_NOT_MEASURED,
    FEATURES_INCLUDE_LABEL,
    LEARNING_RATE_RANGE,
    WEIGHT_DECAY_RANGE,
    DRIFT_THRESHOLD_RANGE,
    DRIFT_ALPHA_RANGE,
    INTERVAL_MINIMUM,
    APPROVED_RUN_NEEDS_MANUAL,
    TEMPORARY_FIX_RAISES_NOTHING,
    EXPIRES_AFTER_MINIMUM,
    *QUANTITY_POSITIVE_RULES,
    TOLERATION_EXISTS_WITH_VALUE,
    TOLERATION_SECONDS_NEEDS_NO_EXECUTE,
    TOLERATION_EQUAL_NEEDS_KEY,
    *URI_CONTAINED_RULES,
    NODE_SELECTOR_LABEL_KEYS,
)
