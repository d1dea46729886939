"""Which ONNX Runtime execution provider a model gets (``optimizer_job.onnxmodel``): CUDA on a
CUDA device where the installed wheel has it, else the CPU, and a CUDA device that ends up on
the CPU is said plainly. The selection is pure; the last test runs a one-node graph on this
machine's wheel (the CPU one, as ``make venv`` installs)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from optimizer_job import onnxmodel
from optimizer_job.onnxmodel import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    OnnxModule,
    choose_providers,
    provider_note,
)

pytestmark = pytest.mark.unit

CPU_WHEEL = ["AzureExecutionProvider", CPU_PROVIDER]
GPU_WHEEL = ["TensorrtExecutionProvider", CUDA_PROVIDER, CPU_PROVIDER]


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("cuda", GPU_WHEEL, [CUDA_PROVIDER, CPU_PROVIDER]),
        ("cuda", CPU_WHEEL, [CPU_PROVIDER]),
        ("cpu", GPU_WHEEL, [CPU_PROVIDER]),  # a CPU run stays on the CPU on a GPU node
        ("cpu", CPU_WHEEL, [CPU_PROVIDER]),
        ("mps", GPU_WHEEL, [CPU_PROVIDER]),
        ("cuda", [], [CPU_PROVIDER]),
    ],
)
def test_cuda_first_only_for_a_cuda_device_whose_wheel_has_it(
    device: str, available: list[str], expected: list[str]
) -> None:
    assert choose_providers(device, available) == expected


def test_a_cuda_device_on_the_cpu_wheel_is_said_plainly() -> None:
    note = provider_note("cuda", [CPU_PROVIDER], CPU_PROVIDER)
    assert note is not None
    assert f"has no {CUDA_PROVIDER}" in note and "ORT=cuda" in note
    assert note.endswith(f"runs on {CPU_PROVIDER}")


def test_a_cuda_provider_ort_could_not_start_is_said_plainly() -> None:
    note = provider_note("cuda", [CUDA_PROVIDER, CPU_PROVIDER], CPU_PROVIDER)
    assert note is not None and "could not start" in note


@pytest.mark.parametrize(
    ("device", "requested", "actual"),
    [
        ("cuda", [CUDA_PROVIDER, CPU_PROVIDER], CUDA_PROVIDER),
        ("cpu", [CPU_PROVIDER], CPU_PROVIDER),
    ],
)
def test_nothing_to_say_when_the_device_gets_its_provider(
    device: str, requested: list[str], actual: str
) -> None:
    assert provider_note(device, requested, actual) is None


def _identity_graph() -> bytes:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    return bytes(model.SerializeToString())


@pytest.mark.skipif(
    CUDA_PROVIDER in ort.get_available_providers(), reason="this wheel has the CUDA provider"
)
def test_a_model_meant_for_cuda_on_the_cpu_wheel_runs_on_the_cpu_and_notes_why() -> None:
    onnx.checker.check_model(_identity_graph())
    module = OnnxModule(_identity_graph(), device="cuda")
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(module.run(rows), rows)
    notes = module.provider_notes()
    assert notes["execution_provider"] == CPU_PROVIDER
    wanted = f"onnxruntime {onnxmodel.ORT_VERSION} has no {CUDA_PROVIDER}"
    assert wanted in notes["execution_provider_note"]
    assert OnnxModule(_identity_graph()).provider_notes() == {"execution_provider": CPU_PROVIDER}


@pytest.mark.skipif(
    CUDA_PROVIDER not in ort.get_available_providers() or torch.cuda.is_available(),
    reason="needs onnxruntime-gpu on a machine without a usable GPU",
)
def test_a_cuda_provider_that_cannot_start_leaves_the_model_on_the_cpu_and_says_so() -> None:
    """onnxruntime-gpu lists its CUDA provider everywhere; without the driver ORT drops it."""
    module = OnnxModule(_identity_graph(), device="cuda")
    assert module.providers == [CUDA_PROVIDER, CPU_PROVIDER]
    notes = module.provider_notes()
    assert notes["execution_provider"] == CPU_PROVIDER
    assert "could not start" in notes["execution_provider_note"]
