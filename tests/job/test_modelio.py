"""Model directories: reload with new shapes, user factories, tamper detection, dtypes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from optimizer_job import zoo
from optimizer_job.contract import BadInputError
from optimizer_job.manifest import ManifestError
from optimizer_job.modelio import load_model, save_model

pytestmark = pytest.mark.job


def _same_outputs(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.inference_mode():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


def test_round_trip_keeps_outputs_and_records_the_input_spec(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.mlp(6, 3, hidden=[8])
    digest = save_model(
        model,
        zoo.MLP_FACTORY,
        {"in_features": 6, "num_classes": 3, "hidden": [8]},
        tmp_path,
        {"owner": "team-a"},
        input_shape=[6],
        feature_names=list("abcdef"),
        num_classes=3,
    )
    loaded = load_model(tmp_path.as_uri())
    assert _same_outputs(model, loaded.module, torch.randn(5, 6))
    assert loaded.feature_names == list("abcdef") and loaded.input_shape == [6]
    assert loaded.num_classes == 3 and loaded.meta["owner"] == "team-a"
    assert len(digest) == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "MANIFEST",
        "model.json",
        "model.safetensors",
    ]


def test_a_structurally_pruned_mlp_loads_back_with_its_new_shapes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kwargs: dict[str, Any] = {"in_features": 10, "num_classes": 4, "hidden": [32, 16]}
    model = zoo.mlp(**kwargs)
    first, second = model.get_submodule("0"), model.get_submodule("3")
    assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
    keep = torch.tensor([0, 3, 5, 9, 12, 20, 31])  # neurons kept by "pruning" by hand
    with torch.no_grad():
        first.weight = nn.Parameter(first.weight[keep].clone())
        first.bias = nn.Parameter(first.bias[keep].clone())
        second.weight = nn.Parameter(second.weight[:, keep].clone())
    first.out_features = second.in_features = len(keep)
    save_model(model, zoo.MLP_FACTORY, kwargs, tmp_path)
    loaded = load_model(tmp_path).module
    resized_first, resized_second = loaded.get_submodule("0"), loaded.get_submodule("3")
    assert isinstance(resized_first, nn.Linear) and resized_first.out_features == 7
    assert isinstance(resized_second, nn.Linear) and resized_second.in_features == 7
    assert _same_outputs(model, loaded, torch.randn(4, 10))


def test_a_channel_pruned_cnn_loads_back_with_conv_and_batchnorm_resized(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kwargs: dict[str, Any] = {
        "in_channels": 1,
        "num_classes": 3,
        "image_size": 8,
        "channels": [8, 8, 6],
    }
    model = zoo.small_cnn(**kwargs)
    model.eval()
    conv0, bn0, conv1 = (model.get_submodule(f"features.{i}") for i in (0, 1, 3))
    assert isinstance(conv0, nn.Conv2d) and isinstance(bn0, nn.BatchNorm2d)
    assert isinstance(conv1, nn.Conv2d)
    keep = torch.tensor([1, 2, 6])
    with torch.no_grad():
        conv0.weight = nn.Parameter(conv0.weight[keep].clone())
        bn0.weight = nn.Parameter(bn0.weight[keep].clone())
        bn0.bias = nn.Parameter(bn0.bias[keep].clone())
        assert bn0.running_mean is not None and bn0.running_var is not None
        bn0.running_mean = bn0.running_mean[keep].clone() + 0.1
        bn0.running_var = bn0.running_var[keep].clone() * 2
        conv1.weight = nn.Parameter(conv1.weight[:, keep].clone())
    conv0.out_channels = conv1.in_channels = bn0.num_features = 3
    save_model(model, zoo.SMALL_CNN_FACTORY, kwargs, tmp_path)
    loaded = load_model(tmp_path).module
    new_conv0, new_bn0, new_conv1 = (loaded.get_submodule(f"features.{i}") for i in (0, 1, 3))
    assert isinstance(new_conv0, nn.Conv2d) and new_conv0.out_channels == 3
    assert isinstance(new_bn0, nn.BatchNorm2d) and new_bn0.num_features == 3
    assert isinstance(new_conv1, nn.Conv2d) and new_conv1.in_channels == 3
    assert _same_outputs(model, loaded, torch.randn(2, 1, 8, 8))


def test_user_factories_load_by_import_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "src"
    package.mkdir()
    (package / "acme_models.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Scorer(nn.Module):
                def __init__(self, width):
                    super().__init__()
                    self.body = nn.Sequential(nn.Linear(3, width), nn.Tanh(), nn.Linear(width, 2))

                def forward(self, x):
                    return self.body(x)

            def build(width=4):
                return Scorer(width)
            """
        )
    )
    monkeypatch.syspath_prepend(str(package))
    import acme_models  # type: ignore[import-not-found]

    model = acme_models.build(width=5)
    save_model(model, "acme_models:build", {"width": 5}, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded.module).__name__ == "Scorer"
    assert _same_outputs(model, loaded.module, torch.randn(3, 3))


def test_a_tampered_weights_file_is_refused_naming_it(tmp_path: Path) -> None:
    save_model(
        zoo.mlp(4, 2, hidden=[4]),
        zoo.MLP_FACTORY,
        {"in_features": 4, "num_classes": 2, "hidden": [4]},
        tmp_path,
    )
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=r"model\.safetensors does not match its MANIFEST"):
        load_model(tmp_path)


def test_a_factory_that_is_not_importable_or_weights_that_do_not_fit_are_bad_input(
    tmp_path: Path,
) -> None:
    save_model(zoo.mlp(4, 2, hidden=[4]), "no_such_pkg.models:net", {}, tmp_path / "a")
    with pytest.raises(BadInputError, match=r"'no_such_pkg\.models:net' cannot be imported"):
        load_model(tmp_path / "a")
    # Weights of a 2-layer MLP under a 3-layer factory: keys that do not exist.
    save_model(
        zoo.mlp(4, 2, hidden=[4]),
        zoo.MLP_FACTORY,
        {"in_features": 4, "num_classes": 2, "hidden": [4, 4]},
        tmp_path / "b",
    )
    with pytest.raises(BadInputError, match="weights do not fit the factory's model"):
        load_model(tmp_path / "b")


def test_half_precision_weights_load_back_in_their_dtype(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"in_features": 4, "num_classes": 2, "hidden": [4]}
    model = zoo.mlp(**kwargs).to(torch.bfloat16)
    save_model(model, zoo.MLP_FACTORY, kwargs, tmp_path)
    assert json.loads((tmp_path / "model.json").read_text())["dtype"] == "bfloat16"
    loaded = load_model(tmp_path).module
    assert next(loaded.parameters()).dtype == torch.bfloat16
    x = torch.randn(3, 4, dtype=torch.bfloat16)
    assert _same_outputs(model, loaded, x)


def test_an_int8_quantized_model_round_trips_through_the_quantize_hooks(tmp_path: Path) -> None:
    from optimizer_job.strategies.quantize import quantize_int8

    torch.manual_seed(0)
    kwargs: dict[str, Any] = {"in_features": 16, "num_classes": 4, "hidden": [32, 32]}
    quantized, layers = quantize_int8(zoo.mlp(**kwargs))
    assert layers
    save_model(quantized, zoo.MLP_FACTORY, kwargs, tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["quantization"]["mode"] == "int8"
    loaded = load_model(tmp_path).module
    assert _same_outputs(quantized, loaded, torch.randn(40, 16))


def test_the_tabular_resnet_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kwargs: dict[str, Any] = {"in_features": 5, "num_classes": 3, "width": 8, "hidden": 16}
    model = zoo.tabular_resnet(**kwargs)
    save_model(model, zoo.TABULAR_RESNET_FACTORY, kwargs, tmp_path)
    assert _same_outputs(model, load_model(tmp_path).module, torch.randn(4, 5))
