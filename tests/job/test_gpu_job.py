"""The job on CUDA: training, metrics and a whole optimize run on the GPU."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from optimizer_job import zoo
from optimizer_job.contract import EvaluationSettings, RetrainStage, Task
from optimizer_job.dataio import split_stratified
from optimizer_job.evaluate import measure
from optimizer_job.example import digits_tables, make_example
from optimizer_job.modelio import load_model
from optimizer_job.runner import run_task
from optimizer_job.training import fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

LOG = logging.getLogger("test")


def test_training_on_cuda_is_deterministic_and_measured_on_cuda() -> None:
    cuda = torch.device("cuda")
    tables = digits_tables("cnn", seed=0)
    train, val = split_stratified(tables["reference"], 20, seed=0)
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = zoo.small_cnn(1, 10, 16, channels=[16, 32, 32], hidden=32)
        report = fit(
            model,
            train,
            val,
            epochs=3,
            batch_size=64,
            lr=1e-3,
            weight_decay=1e-4,
            label_smoothing=0.0,
            patience=0,
            device=cuda,
            seed=0,
            log=LOG,
        )
        states.append({k: v.cpu() for k, v in model.state_dict().items()})
    for name, tensor in states[0].items():
        assert torch.equal(tensor, states[1][name]), name
    assert report.val_accuracy is not None and report.val_accuracy > 0.3
    metrics = measure(model, tables["holdout"], cuda, EvaluationSettings(latency_iterations=20))
    assert metrics.device == "cuda" and metrics.latency_ms["b32_p50"] > 0


def test_an_optimize_run_on_cuda_publishes_a_model_that_loads_on_cpu(tmp_path: Path) -> None:
    example = make_example(tmp_path / "example", LOG, epochs=10)
    task = Task.model_validate_json(Path(example["tasks"][1]).read_text()).model_copy(
        update={
            "device": "cuda",
            "stages": [RetrainStage(epochs=5, early_stopping_patience=0)],
            "run_id": "gpu-1",
        }
    )
    result = run_task(task)
    assert result.ok and result.candidate is not None and result.candidate.device == "cuda"
    assert result.baseline is not None and result.baseline.accuracy is not None
    assert result.candidate.accuracy is not None
    assert result.candidate.accuracy > result.baseline.accuracy
    assert result.artifact_uri is not None
    loaded = load_model(result.artifact_uri)
    assert next(loaded.module.parameters()).device.type == "cpu"
