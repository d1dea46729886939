"""The export stage on Hugging Face models built from tiny configs (no downloads): a
sequence classifier exports as input_ids / attention_mask / token_type_ids with dynamic batch
and sequence axes, an image classifier as pixel_values; both are verified against PyTorch,
quantized by ONNX Runtime (dynamic and static int8) and served from their ONNX directory."""

from __future__ import annotations

import copy
import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fitting import fit_seeded
from sklearn.datasets import load_digits
from torch import nn

from optimizer_job import hf, modelio, onnxmodel, training
from optimizer_job.contract import DataRefs, ExportStage, Task
from optimizer_job.dataio import Table
from optimizer_job.example_hf import make_text_example
from optimizer_job.manifest import verify_manifest
from optimizer_job.runner import load_inputs, run_task
from optimizer_job.serving import ModelServer
from optimizer_job.strategies import apply_stage
from optimizer_job.strategies.base import StageContext

pytestmark = pytest.mark.job

CPU = torch.device("cpu")
TEXT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
# A 2-layer ViT on the 8x8 digits: 4x4 patches, one channel.
VIT_CONFIG: dict[str, Any] = {
    "model_type": "vit",
    "image_size": 8,
    "patch_size": 4,
    "num_channels": 1,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "num_labels": 10,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def text_example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_text_example(tmp_path_factory.mktemp("text"))


def _text_task(example: dict[str, Any], artifacts: Path, stages: list[Any], kind: str) -> Task:
    data = Path(example["data"])
    return Task(
        kind=kind,  # type: ignore[arg-type]
        namespace="ns",
        optimization="bert",
        run_id="r-1",
        model_uri=example["model"],
        data=DataRefs(
            reference=str(data / "reference.parquet"),
            current=str(data / "current.parquet"),
            holdout=str(data / "holdout.parquet"),
            text_column="text",
            max_length=example["max_length"],
        ),
        stages=stages,
        artifacts_uri=str(artifacts) if kind == "optimize" else None,
        device="cpu",
        evaluation={"latency_iterations": 5, "latency_warmup": 1},  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def exported_text(
    text_example: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The tiny BERT exported by an optimize task (stages: export only)."""
    artifacts = tmp_path_factory.mktemp("artifacts")
    result = run_task(_text_task(text_example, artifacts, [ExportStage()], "optimize"))
    assert result.ok and result.artifact_uri, result
    return {"result": result, "directory": Path(result.artifact_uri.removeprefix("file://"))}


def test_a_bert_exports_with_token_inputs_and_dynamic_batch_and_sequence(
    text_example: dict[str, Any], exported_text: dict[str, Any]
) -> None:
    result, directory = exported_text["result"], exported_text["directory"]
    (report,) = result.stages
    assert report.type == "export"
    assert float(report.notes["verify_max_abs_diff"]) <= onnxmodel.VERIFY_TOLERANCE
    assert report.notes["inputs"] == ",".join(TEXT_INPUTS)
    # Accuracy from ORT's outputs equals the torch model's.
    assert report.before is not None and report.after is not None
    assert report.after.accuracy == pytest.approx(report.before.accuracy, abs=1e-9)

    verify_manifest(directory, required=("model.onnx", "model.json", "tokenizer.json"))
    meta = json.loads((directory / "model.json").read_text())
    assert meta["format"] == "onnx" and meta["onnx"]["opset"] == onnxmodel.EXPORT_OPSET
    assert [i["name"] for i in meta["onnx"]["inputs"]] == TEXT_INPUTS
    for given in meta["onnx"]["inputs"]:
        assert given["shape"] == ["batch", "sequence"] and given["dtype"] == "int64"
    assert meta["onnx"]["outputs"][0]["shape"] == ["batch", 2]
    assert meta["onnx"]["feed"] == {"kind": "text", "pad_token_id": 0}
    assert meta["source"]["factory"] == hf.SEQUENCE_FACTORY
    assert meta["input"] == {"shape": [text_example["max_length"]], "text": True}

    # The graph is the one Transformers users feed: any batch, any sequence length.
    torch_model = modelio.load_model(text_example["model"]).module.eval()
    session = modelio.load_model(directory).module.session()  # type: ignore[operator]
    generator = torch.Generator().manual_seed(0)
    vocabulary = int(torch_model.model.config.vocab_size)
    for batch, length in ((1, 5), (3, 24), (7, 40)):
        ids = torch.randint(5, vocabulary, (batch, length), generator=generator)
        ids[0, length - 2 :] = 0  # padding
        mask = (ids != 0).long()
        with torch.inference_mode():
            expected = torch_model.model(input_ids=ids, attention_mask=mask).logits.numpy()
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        (logits,) = session.run(["logits"], feed)
        np.testing.assert_allclose(logits, expected, atol=onnxmodel.VERIFY_TOLERANCE)


def test_an_exported_bert_is_evaluated_on_text_with_its_tokenizer(
    text_example: dict[str, Any], exported_text: dict[str, Any], tmp_path: Path
) -> None:
    result, directory = exported_text["result"], exported_text["directory"]
    task = _text_task(text_example, tmp_path, [], "evaluate")
    evaluated = run_task(task.model_copy(update={"model_uri": str(directory)}))
    assert evaluated.ok and evaluated.baseline is not None
    assert evaluated.baseline.accuracy == pytest.approx(result.candidate.accuracy, abs=1e-9)
    assert evaluated.drift is not None and set(evaluated.drift.per_feature) == {
        "text_length",
        "oov_rate",
    }


@pytest.mark.parametrize("mode", ["dynamic-int8", "static-int8"])
def test_ort_int8_of_a_bert_keeps_its_inputs_and_accuracy(
    text_example: dict[str, Any], exported_text: dict[str, Any], tmp_path: Path, mode: str
) -> None:
    inputs = load_inputs(_text_task(text_example, tmp_path, [], "optimize"))
    assert inputs.holdout is not None
    fp32 = modelio.load_model(exported_text["directory"]).module
    assert isinstance(fp32, onnxmodel.OnnxModule)
    assert inputs.reference is not None
    calibration = inputs.reference.X[: onnxmodel.CALIBRATION_ROWS]
    data = onnxmodel.quantize(fp32.data, mode, calibration, fp32.feed)  # type: ignore[arg-type]
    int8 = onnxmodel.OnnxModule(data, feed=fp32.feed)
    assert int8.input_names == TEXT_INPUTS
    assert [i["shape"] for i in int8.info["inputs"]] == [["batch", "sequence"]] * 3
    graph = onnxmodel.onnx.load_model_from_string(data).graph
    ops = {node.op_type for node in graph.node}
    if mode == "static-int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    else:
        assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops
    int8_weights = [t for t in graph.initializer if t.data_type == onnxmodel.onnx.TensorProto.INT8]
    assert len(int8_weights) >= 8  # the encoder's Linear layers (2 layers x Q, K, V, out, MLP)
    # The example's BERT has random weights: its accuracy is chance, so what is compared is
    # that int8 predicts like fp32 (the trained ViT below compares accuracy).
    x = torch.from_numpy(inputs.holdout.X)
    with torch.inference_mode():
        agree = (int8(x).argmax(1) == fp32(x).argmax(1)).float().mean().item()
    assert agree >= 0.8, agree


def _image_ctx() -> StageContext:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    names = [f"pixel_{i}" for i in range(64)]
    return StageContext(
        device=CPU,
        seed=0,
        train=Table(x[:1100], y[:1100], names).with_source(0),
        validation=Table(x[1100:1400], y[1100:1400], names),
        holdout=Table(x[1400:], y[1400:], names),
        log=logging.getLogger("test_export_hf"),
        factory=hf.IMAGE_FACTORY,
        kwargs={"config": VIT_CONFIG},
    )


@pytest.fixture(scope="module")
def vit() -> tuple[nn.Module, StageContext]:
    ctx = _image_ctx()
    torch.manual_seed(0)
    return fit_seeded(hf.image_classifier(VIT_CONFIG), ctx, epochs=3).eval(), ctx


@pytest.mark.parametrize("mode", ["none", "dynamic-int8", "static-int8"])
def test_a_vit_exports_as_pixel_values_verified_and_quantized(
    vit: tuple[nn.Module, StageContext], mode: str
) -> None:
    model, ctx = vit
    assert ctx.holdout is not None
    outcome = apply_stage(ExportStage(quantize=mode), copy.deepcopy(model), ctx)  # type: ignore[arg-type]
    exported = outcome.model
    assert isinstance(exported, onnxmodel.OnnxModule)
    assert float(outcome.notes["verify_max_abs_diff"]) <= onnxmodel.VERIFY_TOLERANCE
    assert exported.info["inputs"] == [
        {"name": "pixel_values", "shape": ["batch", 1, 8, 8], "dtype": "float32"}
    ]
    torch_accuracy = training.accuracy(model, ctx.holdout, CPU)
    assert torch_accuracy > 0.3  # trained a little: the accuracy comparison means something
    accuracy = training.accuracy(exported, ctx.holdout, CPU)
    if mode == "none":
        assert accuracy == pytest.approx(torch_accuracy, abs=1e-9)
    else:
        assert accuracy >= torch_accuracy - 0.05
        assert "quantized_max_abs_diff" in outcome.notes


def test_the_onnx_directory_of_a_bert_is_served_by_onnx_runtime(
    text_example: dict[str, Any], exported_text: dict[str, Any], tmp_path: Path
) -> None:
    directory = exported_text["directory"]
    inputs = load_inputs(_text_task(text_example, tmp_path, [], "evaluate"))
    assert inputs.holdout is not None
    rows = inputs.holdout.X[:16]
    torch_model = modelio.load_model(text_example["model"]).module.eval()
    with torch.inference_mode():
        expected = torch.softmax(torch_model(torch.from_numpy(rows)), dim=1).numpy()
    server = ModelServer(directory.as_uri(), "127.0.0.1", 0, threads=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.loaded.wait(120) and server.model is not None, server.load_error
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=30) as response:
            assert json.load(response)["runtime"] == "onnxruntime"
        request = urllib.request.Request(
            f"http://{host}:{port}/predict",
            data=json.dumps({"instances": rows.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.load(response)
        np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-5)
        assert answer["predictions"] == [int(c) for c in expected.argmax(axis=1)]
    finally:
        server.close()
        thread.join(10)
