"""The export stage: torch -> ONNX -> ONNX Runtime, verified, quantized, saved and reloaded."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fitting import fit_seeded
from sklearn.datasets import load_digits
from torch import Tensor, nn

from optimizer_job import modelio, onnxmodel, training, zoo
from optimizer_job.contract import (
    EXIT_BAD_INPUT,
    BadInputError,
    CompactResult,
    ExportStage,
    PruneStage,
    RetrainStage,
    Task,
)
from optimizer_job.dataio import Table
from optimizer_job.example import make_example
from optimizer_job.manifest import ManifestError, verify_manifest, write_manifest
from optimizer_job.runner import run_task
from optimizer_job.strategies import apply_stage
from optimizer_job.strategies.base import StageContext

pytestmark = pytest.mark.job

CPU = torch.device("cpu")
KWARGS: dict[str, Any] = {"in_features": 64, "num_classes": 10, "hidden": [256, 256]}
CNN_KWARGS: dict[str, Any] = {
    "in_channels": 1,
    "num_classes": 10,
    "image_size": 8,
    "channels": [32, 64, 64],
    "hidden": 64,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _ctx(shape: tuple[int, ...]) -> StageContext:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, *shape)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    names = [f"pixel_{i}" for i in range(64)]
    return StageContext(
        device=CPU,
        seed=0,
        train=Table(x[:1100], y[:1100], names),
        validation=Table(x[1100:1400], y[1100:1400], names),
        holdout=Table(x[1400:], y[1400:], names),
        log=logging.getLogger("test_export"),
        factory=zoo.MLP_FACTORY,
        kwargs=KWARGS,
    )


@pytest.fixture(scope="module")
def ctx() -> StageContext:
    return _ctx((64,))


@pytest.fixture(scope="module")
def trained(ctx: StageContext) -> nn.Module:
    return fit_seeded(zoo.mlp(**KWARGS), ctx, epochs=10).eval()


def accuracy(model: nn.Module, ctx: StageContext) -> float:
    assert ctx.holdout is not None
    return training.accuracy(model, ctx.holdout, CPU)


def test_export_verifies_against_pytorch_and_keeps_accuracy(
    ctx: StageContext, trained: nn.Module, tmp_path: Path
) -> None:
    outcome = apply_stage(ExportStage(), copy.deepcopy(trained), ctx)
    model = outcome.model
    assert isinstance(model, onnxmodel.OnnxModule)
    assert outcome.notes["opset"] == onnxmodel.EXPORT_OPSET
    assert 0 <= float(outcome.notes["verify_max_abs_diff"]) <= onnxmodel.VERIFY_TOLERANCE
    assert outcome.notes["verified_rows"] == onnxmodel.VERIFY_ROWS
    # A CPU run computes on the CPU provider, with nothing to explain.
    assert outcome.notes["execution_provider"] == onnxmodel.CPU_PROVIDER
    assert "execution_provider_note" not in outcome.notes
    # Accuracy from ORT's own outputs equals the torch model's (same predictions).
    assert accuracy(model, ctx) == pytest.approx(accuracy(trained, ctx), abs=1e-9)
    # The batch axis is dynamic: any batch size runs.
    for rows in (1, 7, 300):
        x = torch.from_numpy(ctx.train.X[:rows])
        with torch.inference_mode():
            assert torch.allclose(model(x), trained(x), atol=1e-4)

    digest = modelio.save_model(
        model, zoo.MLP_FACTORY, KWARGS, tmp_path, {"input": {"shape": [64]}, "num_classes": 10}
    )
    assert digest == verify_manifest(tmp_path, required=("model.onnx", "model.json"))
    assert not (tmp_path / modelio.WEIGHTS_NAME).exists()
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["format"] == "onnx"
    assert meta["onnx"]["opset"] == onnxmodel.EXPORT_OPSET
    assert meta["onnx"]["onnxruntime"] == onnxmodel.ORT_VERSION
    assert meta["onnx"]["inputs"] == [{"name": "input", "shape": ["batch", 64], "dtype": "float32"}]
    assert meta["onnx"]["outputs"][0]["shape"] == ["batch", 10]
    assert meta["source"] == {"factory": zoo.MLP_FACTORY, "kwargs": KWARGS}
    assert meta["input"] == {"shape": [64]} and meta["num_classes"] == 10
    assert meta["macs"] == 64 * 256 + 256 * 256 + 256 * 10

    loaded = modelio.load_model(tmp_path)
    assert loaded.is_onnx and loaded.input_shape == [64]
    x = torch.from_numpy(ctx.holdout.X if ctx.holdout is not None else ctx.train.X)
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), model(x))

    # A changed model.onnx is refused before it is used.
    (tmp_path / "model.onnx").write_bytes((tmp_path / "model.onnx").read_bytes() + b"\0")
    with pytest.raises(ManifestError, match=r"model\.onnx"):
        modelio.load_model(tmp_path)


class ExportsDifferently(nn.Module):
    """Computes one thing eagerly and another when torch.export traces it: the exported
    graph's outputs are off by 0.01 on output 3."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x)
        if torch.compiler.is_exporting():
            out = out + 0.01 * nn.functional.one_hot(torch.tensor(3), out.shape[1])
        return out


def test_a_model_whose_onnx_outputs_differ_is_refused_naming_the_deviation(
    ctx: StageContext, trained: nn.Module
) -> None:
    with pytest.raises(
        BadInputError, match=r"max abs difference 0\.01 at holdout row \d+, output 3"
    ):
        apply_stage(ExportStage(), ExportsDifferently(copy.deepcopy(trained)), ctx)


def test_ort_dynamic_int8_is_smaller_and_keeps_accuracy(
    ctx: StageContext, trained: nn.Module
) -> None:
    fp32 = apply_stage(ExportStage(), copy.deepcopy(trained), ctx).model
    outcome = apply_stage(ExportStage(quantize="dynamic-int8"), copy.deepcopy(trained), ctx)
    model = outcome.model
    assert isinstance(model, onnxmodel.OnnxModule) and isinstance(fp32, onnxmodel.OnnxModule)
    assert fp32.size_bytes / model.size_bytes >= 3.0
    assert outcome.notes["quantize"] == "dynamic-int8"
    assert 0 < float(outcome.notes["quantized_max_abs_diff"]) < 1.0
    assert accuracy(model, ctx) >= accuracy(trained, ctx) - 0.01


def test_ort_static_int8_calibrates_on_reference_rows_and_keeps_accuracy() -> None:
    ctx = _ctx((1, 8, 8))
    ctx.train = ctx.train.with_source(0)
    cnn = fit_seeded(zoo.small_cnn(**CNN_KWARGS), ctx, epochs=4).eval()
    fp32 = apply_stage(ExportStage(), copy.deepcopy(cnn), ctx).model
    outcome = apply_stage(ExportStage(quantize="static-int8"), copy.deepcopy(cnn), ctx)
    model = outcome.model
    assert isinstance(model, onnxmodel.OnnxModule) and isinstance(fp32, onnxmodel.OnnxModule)
    assert outcome.notes["calibration_rows"] == onnxmodel.CALIBRATION_ROWS
    # QDQ: the graph carries QuantizeLinear/DequantizeLinear around Conv and Gemm.
    ops = {node.op_type for node in onnxmodel.onnx.load_model_from_string(model.data).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert fp32.size_bytes / model.size_bytes >= 2.0
    assert accuracy(model, ctx) >= accuracy(cnn, ctx) - 0.02


@pytest.mark.skipif(
    onnxmodel.CUDA_PROVIDER in ort.get_available_providers(),
    reason="the installed onnxruntime has the CUDA provider (tests/gpu covers it)",
)
def test_a_cuda_run_on_the_cpu_wheel_says_so_in_the_stage_notes(
    ctx: StageContext, trained: nn.Module, caplog: pytest.LogCaptureFixture
) -> None:
    """The CPU wheel (ort-cpu) has no CUDA provider: a run on a CUDA device exports and
    verifies on the CPU provider, and the notes say so - no silent fall-back."""
    cuda_ctx = dataclasses.replace(ctx, device=torch.device("cuda"))
    with caplog.at_level(logging.WARNING, logger="test_export"):
        outcome = apply_stage(ExportStage(), copy.deepcopy(trained), cuda_ctx)
    assert outcome.notes["execution_provider"] == onnxmodel.CPU_PROVIDER
    note = str(outcome.notes["execution_provider_note"])
    assert f"has no {onnxmodel.CUDA_PROVIDER}" in note and "ORT=cuda" in note
    assert note in caplog.text
    assert float(outcome.notes["verify_max_abs_diff"]) <= onnxmodel.VERIFY_TOLERANCE


def expected_provider() -> str:
    """What a task with device auto gets here (the CPU wheel of make venv: the CPU's)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return onnxmodel.choose_providers(device, ort.get_available_providers())[0]


def test_ort_follows_torch_thread_count(trained: nn.Module, ctx: StageContext) -> None:
    model = apply_stage(ExportStage(), copy.deepcopy(trained), ctx).model
    assert isinstance(model, onnxmodel.OnnxModule)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert model.session() is model.session(2)
        torch.set_num_threads(1)
        assert model.session() is model.session(1) and model.session(1) is not model.session(2)
    finally:
        torch.set_num_threads(previous)


def test_prune_then_export_publishes_an_onnx_model_measured_side_by_side(
    tmp_path: Path,
) -> None:
    example = make_example(tmp_path / "example", logging.getLogger("test"), "cnn", epochs=3)
    raw = json.loads(Path(example["out"], "task-optimize.json").read_text())
    raw["stages"] = [
        PruneStage(amount_percent=50, fine_tune_epochs=1).model_dump(),
        ExportStage().model_dump(),
    ]
    raw["evaluation"] = {"latency_iterations": 10, "latency_warmup": 2}
    result = run_task(Task.model_validate(raw))
    assert result.ok and result.artifact_uri and result.candidate and result.baseline
    assert [s.type for s in result.stages] == ["prune", "export"]
    export_report = result.stages[1]
    assert float(export_report.notes["verify_max_abs_diff"]) <= 1e-4
    assert export_report.notes["execution_provider"] == expected_provider()
    # Accuracy of the ONNX candidate is measured from ORT's outputs and matches the pruned
    # torch model it came from.
    assert export_report.before is not None and export_report.after is not None
    assert export_report.after.accuracy == pytest.approx(export_report.before.accuracy, abs=1e-9)
    assert result.candidate.accuracy == export_report.after.accuracy
    assert set(result.candidate.latency_ms) == set(result.baseline.latency_ms)
    assert result.candidate.macs == export_report.before.macs > 0
    directory = Path(result.artifact_uri.removeprefix("file://"))
    assert sorted(p.name for p in directory.iterdir()) == [
        "MANIFEST",
        "model.json",
        "model.onnx",
        "report.html",
        "result.json",
    ]
    meta = json.loads((directory / "model.json").read_text())
    assert meta["format"] == "onnx" and meta["lineage"]["run_id"] == raw["run_id"]

    # An evaluate task runs on the ONNX model; an optimize task from it is bad input.
    raw_eval = json.loads(Path(example["out"], "task-evaluate.json").read_text())
    raw_eval["model_uri"] = result.artifact_uri
    raw_eval["evaluation"] = {"latency_iterations": 5, "latency_warmup": 1}
    evaluated = run_task(Task.model_validate(raw_eval))
    assert evaluated.baseline is not None
    assert evaluated.baseline.accuracy == pytest.approx(result.candidate.accuracy, abs=1e-9)
    assert evaluated.stages[0].notes["execution_provider"] == expected_provider()
    raw["model_uri"], raw["run_id"] = result.artifact_uri, "again"
    raw["stages"] = [RetrainStage(epochs=1).model_dump()]
    with pytest.raises(BadInputError, match="ONNX model"):
        run_task(Task.model_validate(raw))


SKEWED_FACTORY = '''
import torch
from torch import nn
from optimizer_job import zoo


class Skewed(nn.Sequential):
    """zoo.mlp's layers; output 3 is 0.01 higher in the exported graph than in eager torch."""

    def forward(self, x):
        out = super().forward(x)
        if torch.compiler.is_exporting():
            out = out + 0.01 * nn.functional.one_hot(torch.tensor(3), out.shape[1])
        return out


def build(**kwargs):
    return Skewed(*zoo.mlp(**kwargs).children())
'''


def test_the_job_exits_bad_input_when_ort_does_not_reproduce_pytorch(tmp_path: Path) -> None:
    example = make_example(tmp_path / "example", logging.getLogger("test"), epochs=2)
    source = tmp_path / "src"
    source.mkdir()
    (source / "skewed_models.py").write_text(SKEWED_FACTORY)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    original = Path(example["out"], "model")
    (model_dir / modelio.WEIGHTS_NAME).write_bytes((original / modelio.WEIGHTS_NAME).read_bytes())
    meta = json.loads((original / "model.json").read_text())
    meta["factory"] = "skewed_models:build"
    (model_dir / "model.json").write_text(json.dumps(meta))
    write_manifest(model_dir)
    raw = json.loads(Path(example["out"], "task-optimize.json").read_text())
    raw.update(model_uri=model_dir.as_uri(), stages=[ExportStage().model_dump()])
    task = tmp_path / "task.json"
    task.write_text(Task.model_validate(raw).model_dump_json())
    termination = tmp_path / "termination-log"
    done = subprocess.run(
        [sys.executable, "-m", "optimizer_job", "--task", str(task)],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": str(source),
            "DRIFTWARDEN_TERMINATION_LOG": str(termination),
        },
        timeout=600,
    )
    assert done.returncode == EXIT_BAD_INPUT, done.stderr[-3000:]
    compact = CompactResult.model_validate_json(termination.read_text())
    assert not compact.ok
    assert "ONNX Runtime does not reproduce PyTorch: max abs difference 0.01" in compact.reason
    assert "output 3" in compact.reason and "over the 0.0001 limit" in compact.reason
    # Nothing was published.
    assert not any(Path(example["artifacts"].removeprefix("file://")).rglob("MANIFEST"))
