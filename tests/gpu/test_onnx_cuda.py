"""The export stage on a CUDA node (skipped where there is no GPU).

ONNX Runtime is one of two wheels (the extras ort-cpu and ort-cuda; the Job image's build
argument ORT picks one). With the CPU wheel, a run on a CUDA device exports and verifies a
model trained on the GPU on the CPU provider, fed from CUDA tensors, and its notes say that
CUDA was wanted. With onnxruntime-gpu (the ort-cuda extra; bench/gpu_check.sh installs it
into a throwaway directory where it can) the ORT model of a CUDA run computes on the CUDA
execution provider and must reproduce PyTorch within the same 1e-4; the tests that need it
skip, saying so, where it is not installed.
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
HAS_CUDA_PROVIDER = onnxmodel.CUDA_PROVIDER in ort.get_available_providers()
needs_onnxruntime_gpu = pytest.mark.skipif(
    not HAS_CUDA_PROVIDER,
    reason=(
        f"onnxruntime {ort.__version__} here has no {onnxmodel.CUDA_PROVIDER}: install "
        "onnxruntime-gpu (the ort-cuda extra; bench/gpu_check.sh does where it can)"
    ),
)


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
    if HAS_CUDA_PROVIDER:  # verified on the GPU, as the run's device asks
        assert outcome.notes["execution_provider"] == onnxmodel.CUDA_PROVIDER, outcome.notes
        assert "execution_provider_note" not in outcome.notes
    else:  # the CPU wheel: on the CPU, and the notes say CUDA was wanted
        assert outcome.notes["execution_provider"] == onnxmodel.CPU_PROVIDER
        assert "ORT=cuda" in str(outcome.notes["execution_provider_note"])
    assert ctx.holdout is not None
    exported = training.accuracy(outcome.model, ctx.holdout, CUDA)
    assert exported == pytest.approx(training.accuracy(model.eval(), ctx.holdout, CUDA), abs=1e-9)


@needs_onnxruntime_gpu
def test_the_cuda_execution_provider_reproduces_pytorch() -> None:
    ctx = _ctx()
    torch.manual_seed(0)
    model = zoo.mlp(**ctx.kwargs).eval()
    assert ctx.holdout is not None
    rows = np.ascontiguousarray(ctx.holdout.X)
    data = onnxmodel.export(model, onnxmodel.signature_for([64], rows))
    onnx_model = onnxmodel.OnnxModule(data, device=CUDA)
    assert onnx_model.execution_provider == onnxmodel.CUDA_PROVIDER, onnx_model.provider_note
    assert onnxmodel.compare(model, onnx_model, rows).max_abs_diff <= onnxmodel.VERIFY_TOLERANCE
    # A CPU run on the same GPU node stays on the CPU provider.
    assert onnxmodel.OnnxModule(data).execution_provider == onnxmodel.CPU_PROVIDER


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
    if HAS_CUDA_PROVIDER:
        assert exported.execution_provider == onnxmodel.CUDA_PROVIDER, exported.provider_note
    assert ctx.holdout is not None
    assert 0 <= training.accuracy(exported, ctx.holdout, CUDA) <= 1
