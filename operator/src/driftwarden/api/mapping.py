"""From the resource's spec to the Job's task (optimizer_job.contract).

The CRD's stage and evaluation fields map 1:1 onto the contract's (camelCase there,
snake_case here): a unit test checks that the field sets and the defaults are the same, so
this mapping stays a plain copy.
"""

from __future__ import annotations

from driftwarden.api.spec import DriftTrigger, ModelOptimizationSpec, PipelineStage
from optimizer_job import contract


def to_contract_stage(stage: PipelineStage) -> contract.Stage:
    fields = stage.settings.model_dump(by_alias=False)
    match stage.type:
        case "retrain":
            return contract.RetrainStage(**fields)
        case "prune":
            return contract.PruneStage(**fields)
        case "distill":
            return contract.DistillStage(**fields)
        case "quantize":
            return contract.QuantizeStage(**fields)
        case "export":
            return contract.ExportStage(**fields)


def to_contract_stages(spec: ModelOptimizationSpec) -> list[contract.Stage]:
    """spec.pipeline, in order, as the task's stages."""
    return [to_contract_stage(stage) for stage in spec.pipeline]


def evaluation_settings(spec: ModelOptimizationSpec) -> contract.EvaluationSettings:
    """How an evaluation measures drift (triggers.drift) and latency (monitoring.latency).

    Without a drift trigger, drift is still measured (and reported) with the defaults.
    """
    drift = spec.triggers.drift or DriftTrigger()
    latency = spec.monitoring.latency
    return contract.EvaluationSettings(
        drift_metric=drift.metric,
        drift_threshold=drift.threshold,
        alpha=drift.alpha,
        latency_batch_sizes=list(latency.batch_sizes),
        latency_warmup=latency.warmup,
        latency_iterations=latency.iterations,
        threads=latency.threads,
    )


def data_refs(spec: ModelOptimizationSpec) -> contract.DataRefs:
    """spec.data as the task's data references."""
    return contract.DataRefs(
        reference=spec.data.reference,
        current=spec.data.current,
        holdout=spec.data.holdout,
        label_column=spec.data.label_column,
        features=list(spec.data.features) if spec.data.features is not None else None,
        text_column=spec.data.text_column,
        max_length=spec.data.max_length,
    )
