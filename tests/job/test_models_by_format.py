"""Models by format: a save_pretrained BERT with its own tokenizer (text data), timm and
torchvision by name; stages that cannot handle a model say so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from optimizer_job import hf
from optimizer_job.contract import (
    BadInputError,
    DataRefs,
    DistillStage,
    QuantizeStage,
    RetrainStage,
    Task,
)
from optimizer_job.example_hf import make_text_example
from optimizer_job.manifest import verify_manifest
from optimizer_job.modelio import build_model, load_model, save_model
from optimizer_job.runner import run_task

pytestmark = pytest.mark.job


@pytest.fixture(scope="module")
def text_example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_text_example(tmp_path_factory.mktemp("text"))


def _task(
    example: dict[str, Any], tmp_path: Path, stages: list[Any], kind: str = "optimize"
) -> Task:
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
        artifacts_uri=str(tmp_path / "artifacts") if kind == "optimize" else None,
        device="cpu",
    )


def test_save_pretrained_directory_loads_without_model_json(text_example: dict[str, Any]) -> None:
    loaded = load_model(text_example["model"])
    assert loaded.factory == hf.SEQUENCE_FACTORY and loaded.num_classes == 2
    tokenizer = hf.load_tokenizer(Path(text_example["model"]))
    ids, stats = hf.tokenize(tokenizer, ["good great day", "zyxt qwopa bad"], 16)
    logits = loaded.module(torch.from_numpy(ids))
    assert logits.shape == (2, 2)
    assert stats[0, 1] == 0.0 and stats[1, 1] > 0.0  # out-of-vocabulary share


def test_retrain_and_quantize_a_bert_on_text(text_example: dict[str, Any], tmp_path: Path) -> None:
    task = _task(
        text_example, tmp_path, [RetrainStage(epochs=8, learning_rate="0.003"), QuantizeStage()]
    )
    result = run_task(task)
    assert result.ok and result.candidate is not None and result.baseline is not None
    assert result.candidate.accuracy is not None and result.candidate.accuracy >= 0.9
    run_dir = tmp_path / "artifacts" / "bert" / "r-1"
    verify_manifest(run_dir)
    for name in ("config.json", "tokenizer.json", "model.json", "model.safetensors"):
        assert (run_dir / name).is_file(), name
    loaded = load_model(run_dir)
    assert loaded.meta["quantization"]["mode"] == "int8"
    assert loaded.meta["input"]["shape"] == [text_example["max_length"]]


def test_text_drift_is_on_statistics_and_predictions(
    text_example: dict[str, Any], tmp_path: Path
) -> None:
    result = run_task(_task(text_example, tmp_path, [], kind="evaluate"))
    assert result.drift is not None
    assert set(result.drift.per_feature) == {"text_length", "oov_rate"}
    assert result.drift.detected and "oov_rate" in result.drift.drifted_features
    assert result.drift.prediction_drift_p is not None


def test_a_stage_that_cannot_handle_the_model_says_so(
    text_example: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(BadInputError, match=r"stage distill does not support bert models"):
        run_task(_task(text_example, tmp_path, [DistillStage()]))


@pytest.mark.parametrize(
    ("factory", "kwargs", "shape"),
    [
        (hf.TIMM_FACTORY, {"name": "resnet18", "num_classes": 5}, (2, 3, 32, 32)),
        (hf.TORCHVISION_FACTORY, {"name": "mobilenet_v3_small", "num_classes": 5}, (2, 3, 32, 32)),
    ],
)
def test_timm_and_torchvision_by_name_round_trip(
    factory: str, kwargs: dict[str, Any], shape: tuple[int, ...], tmp_path: Path
) -> None:
    model = build_model(factory, kwargs).eval()
    save_model(model, factory, kwargs, tmp_path / "m", input_shape=list(shape[1:]), num_classes=5)
    x = torch.randn(*shape)
    torch.testing.assert_close(load_model(tmp_path / "m").module(x), model(x))


def test_unknown_timm_name_is_bad_input() -> None:
    with pytest.raises(BadInputError, match="no-such-net"):
        build_model(hf.TIMM_FACTORY, {"name": "no-such-net", "num_classes": 2})
