"""Models by format: Hugging Face Transformers directories, timm and torchvision by name.

Every model the job handles is an ``nn.Module`` that maps one float32 batch to class
logits, built by a factory named in model.json (``optimizer_job.modelio``). The factories
here wrap the libraries' classifiers so that every stage (retrain, quantize, evaluate,
serving) handles them like any other model:

- ``sequence_classifier`` / ``image_classifier``: a Transformers config (the dict of
  ``config.json``) built with ``AutoModelForSequenceClassification`` /
  ``AutoModelForImageClassification.from_config``. Text arrives as token ids (float32
  rows of ``max_length`` ids, padded; the attention mask is ``ids != pad``), images as
  ``pixel_values``. No remote code is ever run.
- ``timm_model``: ``timm.create_model(name, num_classes=..., pretrained=False)``.
- ``torchvision_model``: a torchvision classification model by name, no weights download.

A directory as Transformers' ``save_pretrained`` writes it (config.json,
model.safetensors, tokenizer files; no model.json) is read by ``load_pretrained``: the
weights are loaded with ``from_pretrained(local_files_only=True, trust_remote_code=False)``
and described by the same factory.

A float Transformers model that a run writes is saved the same way (``save_pretrained``:
its current config, so a pruned model's ``num_attention_heads`` / ``intermediate_size``
are the pruned ones) with a model.json of format ``huggingface`` beside it holding the
run's own description (input, lineage); ``from_pretrained`` loads the directory as it is.
A quantized one is stored in the job's own format (its int8 tensors are no Transformers
checkpoint) with the config in model.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from optimizer_job.contract import BadInputError

SEQUENCE_FACTORY = "optimizer_job.hf:sequence_classifier"
IMAGE_FACTORY = "optimizer_job.hf:image_classifier"
TIMM_FACTORY = "optimizer_job.hf:timm_model"
TORCHVISION_FACTORY = "optimizer_job.hf:torchvision_model"
HF_FORMAT = "huggingface"
CONFIG_NAME = "config.json"
# Files of a tokenizer as save_pretrained writes them (copied into every run's directory).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
)


def _config(config: dict[str, Any]) -> Any:
    from transformers import AutoConfig

    values = dict(config)
    model_type = values.pop("model_type", None)
    if not model_type:
        raise BadInputError("config.json: no model_type")
    for key in ("auto_map", "transformers_version", "_name_or_path"):
        values.pop(key, None)  # never remote code; the version is the installed one's
    try:
        return AutoConfig.for_model(str(model_type), **values)
    except (ValueError, KeyError) as error:
        raise BadInputError(f"config.json: model_type {model_type!r}: {error}") from error


class SequenceClassifier(nn.Module):
    """A Transformers sequence classifier fed padded token ids as float32 rows."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        pad = getattr(model.config, "pad_token_id", None)
        self.pad_token_id = int(pad) if pad is not None else 0

    def forward(self, x: Tensor) -> Tensor:
        ids = x.to(torch.long)
        mask = (ids != self.pad_token_id).to(torch.long)
        logits: Tensor = self.model(input_ids=ids, attention_mask=mask).logits
        return logits


class ImageClassifier(nn.Module):
    """A Transformers image classifier fed pixel_values."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.model(pixel_values=x).logits
        return logits


def sequence_classifier(config: dict[str, Any]) -> SequenceClassifier:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(_config(config))  # type: ignore[no-untyped-call]
    return SequenceClassifier(model)


def image_classifier(config: dict[str, Any]) -> ImageClassifier:
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_config(_config(config))  # type: ignore[no-untyped-call]
    return ImageClassifier(model)


def timm_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    import timm

    try:
        model: nn.Module = timm.create_model(
            name, num_classes=num_classes, pretrained=False, **kwargs
        )
    except RuntimeError as error:  # timm: "Unknown model (...)"
        raise BadInputError(f"model.json: timm model {name!r}: {error}") from error
    return model


def torchvision_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    import torchvision

    try:
        model: nn.Module = torchvision.models.get_model(
            name, weights=None, num_classes=num_classes, **kwargs
        )
    except ValueError as error:
        raise BadInputError(f"model.json: torchvision model {name!r}: {error}") from error
    return model


def is_wrapped(module: nn.Module) -> bool:
    """A Transformers classifier as the factories here wrap it."""
    return isinstance(module, (SequenceClassifier, ImageClassifier))


def save_pretrained(module: nn.Module, directory: Path) -> dict[str, Any]:
    """config.json + model.safetensors of a wrapped classifier as ``save_pretrained``
    writes them; returns the config (the model.json kwargs of the factory)."""
    inner: Any = module.model
    inner.save_pretrained(str(directory), safe_serialization=True)
    config: dict[str, Any] = inner.config.to_dict()
    return config


def write_config(module: nn.Module, directory: Path) -> dict[str, Any]:
    """config.json of a wrapped classifier (its current sizes); returns it as a dict."""
    inner: Any = module.model
    inner.config.to_json_file(str(directory / CONFIG_NAME))
    config: dict[str, Any] = inner.config.to_dict()
    return config


def is_pretrained_directory(directory: Path) -> bool:
    """A save_pretrained directory without our model.json."""
    return (directory / CONFIG_NAME).is_file() and not (directory / "model.json").is_file()


def load_pretrained(directory: Path) -> tuple[nn.Module, dict[str, Any]]:
    """(module, model.json-like meta) of a save_pretrained directory."""
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise BadInputError(f"{directory / CONFIG_NAME}: unreadable: {error}") from error
    architectures = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        from transformers import AutoModelForSequenceClassification as Auto

        factory, wrap = SEQUENCE_FACTORY, SequenceClassifier
    elif any(a.endswith("ForImageClassification") for a in architectures):
        from transformers import AutoModelForImageClassification as Auto  # type: ignore[assignment]

        factory, wrap = IMAGE_FACTORY, ImageClassifier  # type: ignore[assignment]
    else:
        raise BadInputError(
            f"{directory / CONFIG_NAME}: architectures {architectures} is not a sequence or "
            "image classifier (supported: *ForSequenceClassification, *ForImageClassification)"
        )
    if not (directory / "model.safetensors").is_file():
        raise BadInputError(f"{directory}: no model.safetensors (pickled weights are refused)")
    try:
        model = Auto.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False, use_safetensors=True
        )
    except (OSError, ValueError) as error:
        raise BadInputError(f"{directory}: Transformers cannot load it: {error}") from error
    module = wrap(model)
    saved = model.config.to_dict()
    meta: dict[str, Any] = {
        "format": HF_FORMAT,
        "factory": factory,
        "kwargs": {"config": saved},
        "num_classes": int(model.config.num_labels),
        "model_type": str(saved.get("model_type")),
    }
    if factory == IMAGE_FACTORY:
        size = getattr(model.config, "image_size", None)
        channels = getattr(model.config, "num_channels", 3)
        if isinstance(size, int):
            meta["input"] = {"shape": [int(channels), size, size]}
    return module, meta


def model_type(meta: dict[str, Any]) -> str:
    """A short name of a model's kind for messages (e.g. "bert", "timm resnet18")."""
    factory = str(meta.get("factory", ""))
    kwargs = meta.get("kwargs") or {}
    if factory in (SEQUENCE_FACTORY, IMAGE_FACTORY):
        return str((kwargs.get("config") or {}).get("model_type", "transformers"))
    if factory in (TIMM_FACTORY, TORCHVISION_FACTORY):
        library = factory.rpartition(":")[2].partition("_")[0]
        return f"{library} {kwargs.get('name')}"
    return factory


# -- text ----------------------------------------------------------------------------


def has_tokenizer(directory: Path) -> bool:
    return (directory / "tokenizer.json").is_file() or (directory / "vocab.txt").is_file()


def load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    if not has_tokenizer(directory):
        raise BadInputError(f"{directory}: text data needs the model's tokenizer files")
    try:
        return AutoTokenizer.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError) as error:
        raise BadInputError(f"{directory}: tokenizer unreadable: {error}") from error


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(token ids as float32 (n, max_length), text statistics (n, 2): characters and the
    share of tokens the vocabulary does not know)."""
    encoded = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="np"
    )
    ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    mask = np.asarray(encoded["attention_mask"], dtype=bool)
    unk = tokenizer.unk_token_id
    special = np.isin(ids, np.asarray(tokenizer.all_special_ids, dtype=np.int64)) & (ids != unk)
    counted = mask & ~special
    unknown = (ids == unk) & counted if unk is not None else np.zeros_like(counted)
    oov = unknown.sum(axis=1) / np.maximum(counted.sum(axis=1), 1)
    lengths = np.fromiter((len(t) for t in texts), dtype=np.float32, count=len(texts))
    stats = np.stack([lengths, oov.astype(np.float32)], axis=1)
    return ids.astype(np.float32), stats
