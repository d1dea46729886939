"""Model directories: safetensors weights, model.json, MANIFEST.

``model.json`` names a factory (``"package.module:function"``) and its keyword
arguments. Loading imports the factory, builds the module, then reshapes every layer
whose saved tensors have other shapes — so a structurally pruned model (fewer
channels or neurons) loads back without the pruning library. Weights are safetensors:
loading a model never unpickles anything.

An ONNX model (``format: onnx``) holds model.onnx instead of weights and loads as an
``optimizer_job.onnxmodel.OnnxModule`` run by ONNX Runtime.

A quantized model carries a ``quantization`` block in model.json; its tensors are
written and read back by ``optimizer_job.strategies.quantize`` (``export_state`` and
``restore``), imported only when needed.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from optimizer_job import hf
from optimizer_job.contract import BadInputError, resolve_uri
from optimizer_job.manifest import ManifestError, read_manifest, verify_manifest, write_manifest

MODEL_FORMAT = "driftwarden.io/model/v1"
WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"

QUANTIZE_MODULE = "optimizer_job.strategies.quantize"
ONNX_MODULE = "optimizer_job.onnxmodel"
ONNX_FORMAT = "onnx"
WEIGHTS_METADATA = {"format": "pt"}

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    module: nn.Module
    meta: dict[str, Any]
    # The local directory it was loaded from (its tokenizer files, if any, are there).
    directory: Path | None = None

    @property
    def is_onnx(self) -> bool:
        return self.meta.get("format") == ONNX_FORMAT

    @property
    def factory(self) -> str:
        return str(self.meta["factory"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.meta.get("kwargs", {}))

    @property
    def input_shape(self) -> list[int]:
        return [int(s) for s in self.meta.get("input", {}).get("shape", [])]

    @property
    def feature_names(self) -> list[str]:
        return [str(n) for n in self.meta.get("input", {}).get("feature_names", [])]

    @property
    def num_classes(self) -> int | None:
        value = self.meta.get("num_classes")
        return None if value is None else int(value)


def model_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the first floating parameter (float32 if there is none)."""
    for param in module.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def _dtype_name(dtype: torch.dtype) -> str:
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    return str(dtype).removeprefix("torch.")


def state_tensors(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The tensors a model directory stores and its quantization block (None if float)."""
    # A quantized model can only come from the quantize module, so it is imported then;
    # checking sys.modules keeps torchao-free runs from importing it.
    quantize = sys.modules.get(QUANTIZE_MODULE)
    if quantize is not None:
        exported, block = quantize.export_state(module)
        if block.get("mode", "none") != "none":
            return {k: v.detach().cpu().contiguous() for k, v in exported.items()}, block
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, value in module.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        # safetensors refuses tensors sharing memory (tied weights): store a copy.
        if tensor.untyped_storage().data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    return tensors, None


def save_model(
    model: nn.Module,
    factory: str,
    kwargs: dict[str, Any],
    directory: Path,
    extra_meta: dict[str, Any] | None = None,
    *,
    input_shape: list[int] | None = None,
    feature_names: list[str] | None = None,
    num_classes: int | None = None,
    copy_files: list[Path] | None = None,
) -> str:
    """Write weights, model.json and MANIFEST into ``directory``; returns the MANIFEST's sha256.

    Input spec and class count may come as arguments or in ``extra_meta`` ("input",
    "num_classes"); other ``extra_meta`` keys are stored as given. ``copy_files`` (e.g. a
    tokenizer's) are copied in beside them.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    onnx_module = sys.modules.get(ONNX_MODULE)
    if onnx_module is not None and isinstance(model, onnx_module.OnnxModule):
        # An exported model: model.onnx, and the torch model it came from named as its source.
        onnx_meta = dict(extra_meta or {})
        onnx_meta["source"] = {"factory": factory, "kwargs": kwargs}
        if input_shape is not None or feature_names is not None:
            given = dict(onnx_meta.get("input", {}))
            if input_shape is not None:
                given["shape"] = list(input_shape)
            if feature_names is not None:
                given["feature_names"] = list(feature_names)
            onnx_meta["input"] = given
        if num_classes is not None:
            onnx_meta["num_classes"] = num_classes
        for path in copy_files or []:  # a tokenizer: evaluations and serving of text need it
            shutil.copyfile(path, directory / path.name)
        onnx_module.save(model, directory, onnx_meta)
        return write_manifest(directory)
    for path in copy_files or []:
        shutil.copyfile(path, directory / path.name)
    tensors, quantization = state_tensors(model)
    weights_format = MODEL_FORMAT
    if quantization is None and hf.is_wrapped(model):
        # A float Transformers model: the library's own files (its loader reads them), with
        # the config it has now (a pruned model's sizes).
        kwargs = {**kwargs, "config": hf.save_pretrained(model, directory)}
        weights_format = hf.HF_FORMAT
    else:
        save_file(tensors, str(directory / WEIGHTS_NAME), metadata=WEIGHTS_METADATA)
        if hf.is_wrapped(model):  # quantized: its config.json is still the model's own
            kwargs = {**kwargs, "config": hf.write_config(model, directory)}
    meta: dict[str, Any] = {"format": weights_format}
    meta.update(extra_meta or {})
    meta["format"] = weights_format
    meta["factory"] = factory
    meta["kwargs"] = kwargs
    meta["dtype"] = _dtype_name(model_dtype(model))
    given_input = dict(meta.get("input", {}))
    if input_shape is not None:
        given_input["shape"] = list(input_shape)
    if feature_names is not None:
        given_input["feature_names"] = list(feature_names)
    if given_input:
        meta["input"] = given_input
    if num_classes is not None:
        meta["num_classes"] = num_classes
    if quantization is not None:
        meta["quantization"] = quantization
    (directory / META_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return write_manifest(directory)


def import_factory(path: str) -> Any:
    """The callable named by ``"package.module:function"``."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise BadInputError(
            f"model.json: factory {path!r} must look like 'package.module:function'"
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise BadInputError(f"model.json: factory {path!r} cannot be imported: {error}") from error
    if not callable(target):
        raise BadInputError(f"model.json: factory {path!r} is not callable")
    return target


def build_model(factory: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        module = import_factory(factory)(**kwargs)
    except TypeError as error:
        raise BadInputError(
            f"model.json: factory {factory!r} rejected its kwargs: {error}"
        ) from error
    if not isinstance(module, nn.Module):
        raise BadInputError(f"model.json: factory {factory!r} returned {type(module).__name__}")
    return module


def load_model(
    directory: Path | str, *, verify: bool = True, device: torch.device | str = "cpu"
) -> LoadedModel:
    """Build the model a directory (path, file:// or pvc:// URI) describes and load its
    weights, in eval mode.

    The MANIFEST is checked first (``verify``): a changed file is a ``ManifestError``
    naming it. A torch model loads on the CPU (callers move it); an ONNX model's execution
    provider follows ``device`` (``onnxmodel.choose_providers``).
    """
    directory = resolve_uri(str(directory)) if "://" in str(directory) else Path(directory)
    if not directory.is_dir():
        raise BadInputError(f"model directory not found: {directory}")
    if hf.is_pretrained_directory(directory):
        if verify:
            verify_manifest(directory, required=(hf.CONFIG_NAME, WEIGHTS_NAME))
        module, meta = hf.load_pretrained(directory)
        module.eval()
        return LoadedModel(module=module, meta=meta, directory=directory)
    if verify:
        verify_manifest(directory, required=(META_NAME,))
    try:
        meta = json.loads((directory / META_NAME).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BadInputError(f"{directory / META_NAME}: unreadable: {error}") from error
    if isinstance(meta, dict) and meta.get("format") == ONNX_FORMAT:
        from optimizer_job import onnxmodel  # lazy: torch-only runs never import onnxruntime

        if verify and onnxmodel.ONNX_NAME not in read_manifest(directory):
            raise ManifestError(f"{directory}: {onnxmodel.ONNX_NAME} is not listed in MANIFEST")
        module = onnxmodel.load(directory, meta, device).eval()
        return LoadedModel(module=module, meta=meta, directory=directory)  # its tokenizer
    if verify and WEIGHTS_NAME not in read_manifest(directory):
        raise ManifestError(f"{directory}: {WEIGHTS_NAME} is not listed in MANIFEST")
    if isinstance(meta, dict) and meta.get("format") == hf.HF_FORMAT:
        # save_pretrained files with the run's model.json beside them.
        if verify and hf.CONFIG_NAME not in read_manifest(directory):
            raise ManifestError(f"{directory}: {hf.CONFIG_NAME} is not listed in MANIFEST")
        module, described = hf.load_pretrained(directory)
        merged = {**meta, **{k: v for k, v in described.items() if k != "input"}}
        merged.setdefault("input", described.get("input", {}))
        return LoadedModel(module=module.eval(), meta=merged, directory=directory)
    if not isinstance(meta, dict) or "factory" not in meta:
        raise BadInputError(f"{directory / META_NAME}: needs a 'factory'")
    module = build_model(str(meta["factory"]), dict(meta.get("kwargs", {})))
    tensors = load_file(str(directory / WEIGHTS_NAME))
    reshape_to_tensors(module, tensors)
    if "quantization" in meta:
        from optimizer_job.strategies import quantize  # lazy: torchao is slow to import

        module = quantize.restore(module, tensors, meta)
    else:
        dtype = _DTYPES.get(str(meta.get("dtype", "float32")))
        if dtype is None:
            raise BadInputError(f"{directory / META_NAME}: unsupported dtype {meta.get('dtype')!r}")
        module = module.to(dtype)
        load_state(module, tensors, directory / WEIGHTS_NAME)
    module.eval()
    return LoadedModel(module=module, meta=meta, directory=directory)


def load_state(module: nn.Module, tensors: dict[str, torch.Tensor], where: Path | str) -> None:
    """``load_state_dict(strict=True)`` with a one-line bad-input message on a mismatch."""
    expected = set(module.state_dict())
    missing = sorted(expected - set(tensors))
    unexpected = sorted(set(tensors) - expected)
    if missing or unexpected:
        raise BadInputError(
            f"{where}: weights do not fit the factory's model: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    module.load_state_dict(tensors, strict=True)


def reshape_to_tensors(module: nn.Module, tensors: dict[str, torch.Tensor]) -> list[str]:
    """Resize parameters and buffers to the shapes in ``tensors``; returns the modules changed.

    Only the storage shapes are taken from the tensors; layer attributes that forward
    relies on (in/out features, channels, groups, norm sizes) are updated to match.
    Values are not loaded here.
    """
    changed: list[str] = []
    for prefix, layer in module.named_modules():
        before = {n: tuple(t.shape) for n, t in _own_tensors(layer).items()}
        resized = False
        for name, current in _own_tensors(layer).items():
            saved = tensors.get(f"{prefix}.{name}" if prefix else name)
            if saved is None or tuple(saved.shape) == tuple(current.shape):
                continue
            fresh = torch.empty(saved.shape, dtype=current.dtype, device=current.device)
            if name in layer._parameters:
                layer._parameters[name] = nn.Parameter(fresh, requires_grad=current.requires_grad)
            else:
                layer._buffers[name] = fresh
            resized = True
        if resized:
            _update_layer_attributes(layer, before)
            changed.append(prefix)
    return changed


def _own_tensors(layer: nn.Module) -> dict[str, torch.Tensor]:
    own: dict[str, torch.Tensor] = {}
    for name, param in layer._parameters.items():
        if param is not None:
            own[name] = param
    for name, buffer in layer._buffers.items():
        if buffer is not None:
            own[name] = buffer
    return own


def _update_layer_attributes(layer: nn.Module, before: dict[str, tuple[int, ...]]) -> None:
    weight = layer._parameters.get("weight")
    if isinstance(layer, nn.Linear) and weight is not None:
        layer.out_features, layer.in_features = int(weight.shape[0]), int(weight.shape[1])
    elif isinstance(layer, nn.modules.conv._ConvTransposeNd) and weight is not None:
        layer.in_channels = int(weight.shape[0])
        layer.out_channels = int(weight.shape[1]) * layer.groups
    elif isinstance(layer, nn.modules.conv._ConvNd) and weight is not None:
        old_out = before["weight"][0]
        if layer.groups > 1 and layer.groups == layer.in_channels:
            # Depthwise: pruning removes whole groups, keeping the channel multiplier.
            multiplier = max(old_out // layer.groups, 1)
            layer.groups = max(int(weight.shape[0]) // multiplier, 1)
        layer.out_channels = int(weight.shape[0])
        layer.in_channels = int(weight.shape[1]) * layer.groups
    elif isinstance(layer, nn.modules.batchnorm._NormBase):
        sized = weight if weight is not None else layer._buffers.get("running_mean")
        if sized is not None:
            layer.num_features = int(sized.shape[0])
    elif isinstance(layer, nn.GroupNorm) and weight is not None:
        layer.num_channels = int(weight.shape[0])
    elif isinstance(layer, nn.LayerNorm) and weight is not None:
        layer.normalized_shape = tuple(int(s) for s in weight.shape)
    elif isinstance(layer, nn.Embedding) and weight is not None:
        layer.num_embeddings, layer.embedding_dim = int(weight.shape[0]), int(weight.shape[1])
