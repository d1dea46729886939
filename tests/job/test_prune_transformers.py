"""Structured pruning of models by format: a tiny BERT (MLP width; its config cannot describe
fewer heads), a tiny ViT (attention heads and MLP width) and timm resnet18 (channels). Each
pruned model loads back with its library's own loader and gives the same outputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from optimizer_job import hf, training
from optimizer_job.contract import BadInputError, DataRefs, PruneStage, RetrainStage, Task
from optimizer_job.dataio import Table
from optimizer_job.example_hf import make_text_example
from optimizer_job.manifest import verify_manifest
from optimizer_job.modelio import build_model, load_model, save_model
from optimizer_job.runner import run_task
from optimizer_job.strategies import apply_stage
from optimizer_job.strategies.base import StageContext

pytestmark = pytest.mark.job

CPU = torch.device("cpu")
SAME = 1e-5


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _ctx(x: np.ndarray, y: np.ndarray, factory: str, kwargs: dict[str, Any]) -> StageContext:
    cut = int(len(y) * 0.7)
    return StageContext(
        device=CPU,
        seed=0,
        train=Table(x[:cut], y[:cut], []),
        validation=Table(x[cut:], y[cut:], []),
        holdout=Table(x[cut:], y[cut:], []),
        log=logging.getLogger("test_prune_transformers"),
        factory=factory,
        kwargs=kwargs,
        meta={"factory": factory, "kwargs": kwargs},
    )


@pytest.fixture(scope="module")
def text_example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_text_example(tmp_path_factory.mktemp("text"))


def test_bert_run_prunes_mlp_width_and_the_directory_loads_with_from_pretrained(
    text_example: dict[str, Any], tmp_path: Path
) -> None:
    from transformers import AutoModelForSequenceClassification

    data = Path(text_example["data"])
    task = Task(
        kind="optimize",
        namespace="ns",
        optimization="bert",
        run_id="r-1",
        model_uri=text_example["model"],
        data=DataRefs(
            reference=str(data / "reference.parquet"),
            current=str(data / "current.parquet"),
            holdout=str(data / "holdout.parquet"),
            text_column="text",
            max_length=text_example["max_length"],
        ),
        stages=[
            RetrainStage(epochs=8, learning_rate="0.003"),
            PruneStage(amount_percent=50, fine_tune_epochs=3),
        ],
        artifacts_uri=str(tmp_path / "artifacts"),
        device="cpu",
    )
    result = run_task(task)
    assert result.ok and result.candidate is not None
    prune_report = result.stages[1]
    notes = prune_report.notes
    assert notes["intermediate_size"] == "64 -> 32"
    assert notes["num_attention_heads"] == "2 -> 2"
    assert "cannot describe fewer attention heads" in str(notes["heads_kept"])
    # The pruned layers (the MLPs) lost half of their multiply-accumulates.
    assert float(notes["macs_ratio"]) > 1.0
    assert prune_report.after.accuracy is not None  # measured on the holdout
    assert result.candidate.accuracy is not None and result.candidate.accuracy >= 0.85

    run_dir = tmp_path / "artifacts" / "bert" / "r-1"
    verify_manifest(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["intermediate_size"] == 32 and config["num_attention_heads"] == 2
    assert (run_dir / "tokenizer.json").is_file()
    library = AutoModelForSequenceClassification.from_pretrained(
        str(run_dir), local_files_only=True
    ).eval()
    ours = load_model(run_dir)
    assert ours.meta["format"] == hf.HF_FORMAT
    assert ours.meta["input"]["shape"] == [text_example["max_length"]]
    for layer in library.bert.encoder.layer:
        assert layer.intermediate.dense.out_features == 32
    ids = torch.randint(5, int(config["vocab_size"]), (4, text_example["max_length"]))
    with torch.inference_mode():
        theirs = hf.SequenceClassifier(library)(ids.float())
        torch.testing.assert_close(ours.module(ids.float()), theirs, atol=SAME, rtol=0)


def test_vit_loses_half_its_heads_and_mlp_width_and_reloads_with_from_pretrained(
    tmp_path: Path,
) -> None:
    from transformers import AutoModelForImageClassification, ViTConfig

    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=16,
        patch_size=4,
        num_labels=2,
    )
    torch.manual_seed(0)
    kwargs = {"config": config.to_dict()}
    model = build_model(hf.IMAGE_FACTORY, kwargs)
    rng = np.random.default_rng(0)
    # An easy task (the sign of the image's brightness), so that accuracy says something.
    y = rng.integers(0, 2, 240).astype(np.int64)
    x = (rng.normal(size=(240, 3, 16, 16)) + (2 * y - 1)[:, None, None, None]).astype(np.float32)
    ctx = _ctx(x, y, hf.IMAGE_FACTORY, kwargs)
    encoder_before = _params(model.model.vit.layers)
    outcome = apply_stage(PruneStage(amount_percent=50, fine_tune_epochs=3), model, ctx)
    pruned = outcome.model
    assert outcome.notes["num_attention_heads"] == "4 -> 2"
    assert outcome.notes["intermediate_size"] == "64 -> 32"
    # Attention and MLP weights halve; only the layer norms keep their size.
    ratio = _params(pruned.model.vit.layers) / encoder_before
    assert 0.45 < ratio < 0.55, ratio
    assert int(outcome.notes["params_after"]) < int(outcome.notes["params_before"])
    assert float(outcome.notes["macs_ratio"]) > 1.4
    assert outcome.ctx.kwargs["config"]["num_attention_heads"] == 2
    assert outcome.ctx.holdout is not None
    accuracy = training.accuracy(pruned, outcome.ctx.holdout, CPU)
    assert accuracy >= 0.9  # fine-tuned after pruning

    save_model(pruned, outcome.ctx.factory, outcome.ctx.kwargs, tmp_path / "m", num_classes=2)
    library = AutoModelForImageClassification.from_pretrained(
        str(tmp_path / "m"), local_files_only=True
    ).eval()
    assert library.config.num_attention_heads == 2 and library.config.intermediate_size == 32
    images = torch.from_numpy(x[:8])
    with torch.inference_mode():
        expected = pruned.eval()(images)
        torch.testing.assert_close(hf.ImageClassifier(library)(images), expected, atol=SAME, rtol=0)
        torch.testing.assert_close(
            load_model(tmp_path / "m").module(images), expected, atol=SAME, rtol=0
        )


def test_timm_resnet18_loses_half_its_channels_and_reloads(tmp_path: Path) -> None:
    kwargs = {"name": "resnet18", "num_classes": 3}
    torch.manual_seed(0)
    model = build_model(hf.TIMM_FACTORY, kwargs)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 3, 48).astype(np.int64)
    ctx = _ctx(x, y, hf.TIMM_FACTORY, kwargs)
    outcome = apply_stage(PruneStage(amount_percent=50, fine_tune_epochs=0), model, ctx)
    notes = outcome.notes
    # Half the channels of (almost) every conv: about a quarter of the work and weights.
    assert float(notes["macs_ratio"]) >= 2.5
    assert int(notes["params_before"]) / int(notes["params_after"]) >= 2.5
    widths = [m.out_channels for m in outcome.model.modules() if isinstance(m, nn.Conv2d)]
    assert max(widths) == 256  # 512 before
    save_model(outcome.model, ctx.factory, ctx.kwargs, tmp_path / "m", input_shape=[3, 32, 32])
    loaded = load_model(tmp_path / "m")  # timm.create_model(name) reshaped to the saved tensors
    assert loaded.meta["factory"] == hf.TIMM_FACTORY
    assert outcome.ctx.holdout is not None
    assert 0.0 <= training.accuracy(loaded.module, outcome.ctx.holdout, CPU) <= 1.0
    images = torch.from_numpy(x[:4])
    with torch.inference_mode():
        torch.testing.assert_close(
            loaded.module(images), outcome.model.eval()(images), atol=SAME, rtol=0
        )


def test_an_architecture_it_cannot_prune_is_refused_naming_it() -> None:
    # timm's ViT keeps its head count in an attribute the saved shapes cannot restore.
    kwargs = {"name": "vit_tiny_patch16_224", "num_classes": 2, "img_size": 32, "patch_size": 8}
    model = build_model(hf.TIMM_FACTORY, kwargs)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 2, 16).astype(np.int64)
    with pytest.raises(BadInputError, match=r"prune: timm vit_tiny_patch16_224: .*not supported"):
        apply_stage(PruneStage(fine_tune_epochs=0), model, _ctx(x, y, hf.TIMM_FACTORY, kwargs))
