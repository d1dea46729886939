"""spec -> optimizer_job.contract: the stage fields map 1:1, with the same defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from driftwarden.api.mapping import data_refs, evaluation_settings, to_contract_stages
from driftwarden.api.openapi import load_crd, root_schema
from driftwarden.api.spec import ModelOptimizationSpec
from optimizer_job import contract

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
STAGES = root_schema(load_crd(ROOT / "crds" / "modeloptimization.yaml"))["properties"]["spec"][
    "properties"
]["pipeline"]["items"]["properties"]
CONTRACT: dict[str, type[BaseModel]] = {
    "retrain": contract.RetrainStage,
    "prune": contract.PruneStage,
    "distill": contract.DistillStage,
    "quantize": contract.QuantizeStage,
    "export": contract.ExportStage,
}


def _spec(name: str) -> ModelOptimizationSpec:
    doc = yaml.safe_load((ROOT / "examples" / name).read_text())
    return ModelOptimizationSpec.model_validate(doc["spec"])


@pytest.mark.parametrize("stage", sorted(CONTRACT))
def test_crd_stage_fields_are_the_contracts(stage: str) -> None:
    crd_fields: dict[str, Any] = STAGES[stage]["properties"]
    model = CONTRACT[stage]
    contract_fields = {to_camel(name): name for name in model.model_fields if name != "type"}
    assert set(crd_fields) == set(contract_fields)
    for crd_name, schema in crd_fields.items():
        field = model.model_fields[contract_fields[crd_name]]
        if "default" in schema:
            assert schema["default"] == field.default, crd_name
        if "enum" in schema:
            assert tuple(schema["enum"]) == get_args(field.annotation), crd_name


def test_pipeline_maps_in_order_with_every_setting() -> None:
    spec = _spec("complete.yaml")
    stages = to_contract_stages(spec)
    assert [s.type for s in stages] == ["distill", "retrain", "prune", "quantize"]
    distill, retrain, prune, quantize = stages
    assert isinstance(distill, contract.DistillStage)
    assert (distill.method, distill.fraction_percent) == ("kcenter", 50)
    assert isinstance(retrain, contract.RetrainStage)
    assert (retrain.epochs, retrain.learning_rate, retrain.data) == (
        20,
        "0.001",
        "ReferenceAndCurrent",
    )
    assert isinstance(prune, contract.PruneStage)
    assert (prune.amount_percent, prune.importance, prune.fine_tune_epochs) == (30, "l2", 5)
    assert isinstance(quantize, contract.QuantizeStage)
    assert quantize.mode == "fp16"


def test_unset_stage_settings_take_the_contracts_defaults() -> None:
    (retrain,) = to_contract_stages(_spec("minimal.yaml"))
    assert retrain == contract.RetrainStage(epochs=20)


def test_a_task_accepts_the_mapped_stages() -> None:
    spec = _spec("latency-prune-quantize.yaml")
    task = contract.Task(
        kind="optimize",
        namespace="ml",
        optimization="image-tagger",
        run_id="r-1",
        model_uri=spec.model.uri,
        data=data_refs(spec),
        stages=to_contract_stages(spec),
        artifacts_uri=spec.artifacts.uri,
        evaluation=evaluation_settings(spec),
    )
    again = contract.Task.model_validate_json(task.model_dump_json())
    assert again == task
    assert [s.type for s in again.stages] == ["prune", "quantize"]


def test_evaluation_settings_come_from_the_drift_trigger_and_the_benchmark() -> None:
    settings = evaluation_settings(_spec("drift-retrain.yaml"))
    assert (settings.drift_metric, settings.drift_threshold, settings.alpha) == (
        "psi",
        "0.25",
        "0.05",
    )
    assert settings.latency_batch_sizes == [1, 32]
    complete = evaluation_settings(_spec("complete.yaml"))
    assert (complete.latency_iterations, complete.threads) == (100, 1)


def test_without_a_drift_trigger_drift_is_measured_with_the_defaults() -> None:
    settings = evaluation_settings(_spec("latency-prune-quantize.yaml"))
    default = contract.EvaluationSettings()
    assert (settings.drift_metric, settings.drift_threshold) == (
        default.drift_metric,
        default.drift_threshold,
    )
    assert settings.latency_iterations == 200


def test_data_refs() -> None:
    refs = data_refs(_spec("manual-promotion.yaml"))
    assert refs.label_column == "is_fraud"
    assert refs.features == ["amount", "merchant_risk", "hour", "country_risk", "velocity_1h"]
    assert refs.holdout == "pvc://data/fraud/holdout.parquet"
    assert data_refs(_spec("minimal.yaml")).features is None


def test_an_export_stage_maps_with_its_ort_settings() -> None:
    doc = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    doc["spec"]["pipeline"] = [
        {"prune": {"amountPercent": 50}},
        {"export": {"quantize": "static-int8", "graphOptimization": "extended"}},
    ]
    stages = to_contract_stages(ModelOptimizationSpec.model_validate(doc["spec"]))
    assert stages[1] == contract.ExportStage(
        format="onnx", quantize="static-int8", graph_optimization="extended"
    )
    doc["spec"]["pipeline"] = [{"export": {}}]
    (only,) = to_contract_stages(ModelOptimizationSpec.model_validate(doc["spec"]))
    assert only == contract.ExportStage()
