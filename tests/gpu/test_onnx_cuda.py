"""The export stage on a CUDA node (skipped where there is no GPU).

The job image carries the CPU wheel of ONNX Runtime: on a CUDA node the stage exports and
verifies a model trained on the GPU and the ORT model runs on the CPU provider, fed from
CUDA tensors. Where the installed wheel has the CUDA execution provider (onnxruntime-gpu),
the ORT model runs on it and must reproduce PyTorch within the same 1e-4.
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.datasets import load_digits

from optimizer_job import onnxmodel, training, zoo
from optimizer_job.contract import ExportStage
from optimizer_job.dataio import Table
from optimizer_job.strategies import apply_stage
from optimizer_job.strategies.base import StageContext

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CUDA = torch.device("cuda")


def _ctx() -> StageContext:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    names = [f"pixel_{i}" for i in range(64)]
    return StageContext(
        device=CUDA,
        seed=0,
        train=Table(x[:1200], y[:1200], names),
        validation=Table(x[1200:1500], y[1200:1500], names),
        holdout=Table(x[1500:], y[1500:], names),
        log=logging.getLogger("test_onnx_cuda"),
        factory=zoo.MLP_FACTORY,
        kwargs={"in_features": 64, "num_classes": 10, "hidden": [256, 256]},
    )


def test_a_gpu_trained_model_exports_verifies_and_keeps_its_accuracy() -> None:
    ctx = _ctx()
    torch.manual_seed(0)
    model = zoo.mlp(**ctx.kwargs).to(CUDA)
    training.fit(
        model,
        ctx.train,
        ctx.validation,
        epochs=5,
        batch_size=64,
        lr=3e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=0,
        device=CUDA,
        seed=0,
        log=ctx.log,
    )
    outcome = apply_stage(ExportStage(), model, ctx)
    assert next(model.parameters()).device.type == "cuda"  # the caller's model stays
    assert float(outcome.notes["verify_max_abs_diff"]) <= onnxmodel.VERIFY_TOLERANCE
    assert ctx.holdout is not None
    exported = training.accuracy(outcome.model, ctx.holdout, CUDA)
    assert exported == pytest.approx(training.accuracy(model.eval(), ctx.holdout, CUDA), abs=1e-9)


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="the installed onnxruntime wheel has no CUDA execution provider",
)
def test_the_cuda_execution_provider_reproduces_pytorch() -> None:
    ctx = _ctx()
    torch.manual_seed(0)
    model = zoo.mlp(**ctx.kwargs).eval()
    assert ctx.holdout is not None
    rows = np.ascontiguousarray(ctx.holdout.X)
    onnx_model = onnxmodel.OnnxModule(onnxmodel.export(model, onnxmodel.signature_for([64], rows)))
    assert onnx_model.execution_provider == "CUDAExecutionProvider"
    assert onnxmodel.compare(model, onnx_model, rows).max_abs_diff <= onnxmodel.VERIFY_TOLERANCE


def test_a_hugging_face_bert_on_cuda_exports_with_its_token_inputs() -> None:
    """A Transformers sequence classifier on the GPU exports as input_ids / attention_mask /
    token_type_ids (dynamic batch and sequence), verified against PyTorch; on the CUDA
    execution provider where the wheel has it."""
    from optimizer_job import hf
    from optimizer_job.example_hf import tiny_bert

    torch.manual_seed(0)
    model = hf.SequenceClassifier(tiny_bert(200, 0)).to(CUDA).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 200, (96, 24))
    ids[:, 18:] = 0  # padding
    x, y = ids.astype(np.float32), rng.integers(0, 2, 96)
    ctx = StageContext(
        device=CUDA,
        seed=0,
        train=Table(x[:64], y[:64], []),
        validation=Table(x[64:80], y[64:80], []),
        holdout=Table(x[80:], y[80:], []),
        log=logging.getLogger("test_onnx_cuda"),
        factory=hf.SEQUENCE_FACTORY,
        kwargs={"config": model.model.config.to_dict()},
    )
    outcome = apply_stage(ExportStage(quantize="dynamic-int8"), model, ctx)
    assert outcome.notes["inputs"] == "input_ids,attention_mask,token_type_ids"
    assert float(outcome.notes["verify_max_abs_diff"]) <= onnxmodel.VERIFY_TOLERANCE
    exported = outcome.model
    assert isinstance(exported, onnxmodel.OnnxModule)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert exported.execution_provider == "CUDAExecutionProvider"
    assert ctx.holdout is not None
    assert 0 <= training.accuracy(exported, ctx.holdout, CUDA) <= 1
