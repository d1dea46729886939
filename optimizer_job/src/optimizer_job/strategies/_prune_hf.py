"""Structured pruning of Transformers classifiers: attention heads and MLP width.

Torch-Pruning's dependency graph removes the channels (as its Hugging Face examples do:
whole heads grouped by ``num_heads``, MLP neurons of the up-projection with the matching
inputs of the down-projection); the width of the residual stream (``hidden_size``) is
kept, so embeddings, norms and the classifier keep their sizes. Every layer loses the same
share, so one config describes the result: ``num_attention_heads`` and ``intermediate_size``
are updated (and ``head_dim``, which keeps the head size, for the architectures whose
attention reads it).

Pruning is done only where the library can load the result back: before pruning, the
updated config is built on the meta device and its tensor shapes compared; after pruning,
a model built from the updated config with ``from_config`` receives the pruned weights
strictly and must give the same logits (1e-5). Attention heads of an architecture whose
config cannot describe fewer heads of the same size (BERT, RoBERTa: the head size is always
``hidden_size / num_attention_heads``) are kept and the notes say why; the MLP width is
still pruned. A model in which neither can be pruned is bad input naming its type.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from optimizer_job import hf
from optimizer_job.contract import BadInputError

# Attention projections as Transformers names them (BERT-style, and the newer q/k/v_proj).
_PROJECTIONS = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"))
_SAME_OUTPUTS = 1e-5


@dataclass
class Attention:
    module: Any  # an nn.Module whose size attributes are updated after pruning
    projections: list[nn.Linear]
    heads: int
    head_dim: int


def is_transformers(model: nn.Module) -> bool:
    return isinstance(model, (hf.SequenceClassifier, hf.ImageClassifier))


def find_attention(inner: nn.Module) -> list[Attention]:
    """Self-attention blocks with separate q / k / v projections and a head count."""
    found = []
    for module in inner.modules():
        heads = getattr(module, "num_attention_heads", None)
        if not isinstance(heads, int) or heads < 1:
            continue
        for names in _PROJECTIONS:
            projections = [getattr(module, name, None) for name in names]
            if all(isinstance(p, nn.Linear) for p in projections):
                linears = [p for p in projections if isinstance(p, nn.Linear)]
                width = linears[0].out_features
                if width % heads == 0 and all(p.out_features == width for p in linears):
                    found.append(Attention(module, linears, heads, width // heads))
                break
    return found


def find_mlp(inner: nn.Module, config: Any) -> list[nn.Linear]:
    """The MLPs' up-projections: Linear hidden_size -> intermediate_size."""
    hidden = getattr(config, "hidden_size", None)
    width = getattr(config, "intermediate_size", None)
    return [
        m
        for m in inner.modules()
        if isinstance(m, nn.Linear) and m.in_features == hidden and m.out_features == width
    ]


def _architecture(model: nn.Module) -> Any:
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    if isinstance(model, hf.SequenceClassifier):
        return AutoModelForSequenceClassification
    return AutoModelForImageClassification


def _build(model: nn.Module, config: Any, *, meta: bool) -> nn.Module:
    auto = _architecture(model)
    if meta:
        with torch.device("meta"):
            built: nn.Module = auto.from_config(config)
    else:
        built = auto.from_config(config)
    return built


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def _kept(count: int, ratio: float) -> int:
    """How many of ``count`` units remain after pruning ``ratio`` (at least one)."""
    return max(count - int(count * ratio), 1)


def _describable_heads(model: nn.Module, attention: list[Attention], keep: int) -> bool:
    """Whether a config with ``keep`` heads of the same size builds projections of that size."""
    inner: Any = model.model
    config = copy.deepcopy(inner.config)
    head_dim = attention[0].head_dim
    config.num_attention_heads = keep
    config.head_dim = head_dim
    try:
        built = _build(model, config, meta=True)
    except (ValueError, TypeError, AttributeError):
        return False
    found = find_attention(built)
    return bool(found) and all(
        p.out_features == keep * head_dim for a in found for p in a.projections
    )


def prune(
    model: nn.Module,
    example: Tensor,
    ratio: float,
    importance: Any,
    model_type: str,
    before_step: Any = None,
) -> tuple[dict[str, Any], dict[str, str | float | int]]:
    """Prune ``ratio`` of the heads and MLP neurons of a wrapped Transformers classifier in
    place; returns (the updated config as a dict, notes)."""
    inner: Any = model.model
    config = inner.config
    attention = find_attention(inner)
    mlp = find_mlp(inner, config)
    notes: dict[str, str | float | int] = {}
    heads_before = int(config.num_attention_heads)
    uniform_heads = attention and all(a.heads == heads_before for a in attention)
    keep_heads = _kept(heads_before, ratio)
    prune_heads = bool(uniform_heads) and keep_heads < heads_before
    if prune_heads and not _describable_heads(model, attention, keep_heads):
        prune_heads = False
        notes["heads_kept"] = (
            f"{model_type}: its config cannot describe fewer attention heads of the same size "
            "(the head size is hidden_size / num_attention_heads), so a head-pruned model "
            "would not load back with from_pretrained; only the MLP width is pruned"
        )
    if not prune_heads and not mlp:
        raise BadInputError(
            f"prune: {model_type}: found no attention heads or MLP up-projections "
            f"(Linear {getattr(config, 'hidden_size', '?')} -> "
            f"{getattr(config, 'intermediate_size', '?')}) it could prune and load back"
        )
    roots: set[nn.Module] = set(mlp)
    if prune_heads:
        roots.update(p for a in attention for p in a.projections)
    ignored = [
        m
        for m in inner.modules()
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and m not in roots
    ]
    num_heads = {p: a.heads for a in attention for p in a.projections} if prune_heads else {}
    model.eval()
    try:
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=importance,
            global_pruning=False,  # the same share everywhere: one config describes it
            pruning_ratio=ratio,
            ignored_layers=ignored,
            num_heads=num_heads,
            prune_num_heads=prune_heads,
            prune_head_dims=False,
            head_pruning_ratio=ratio if prune_heads else 0.0,
        )
        if before_step is not None:
            before_step()
        pruner.step()
    except (RuntimeError, ValueError, KeyError, AssertionError) as error:
        raise BadInputError(f"prune: {model_type}: Torch-Pruning failed: {error}") from error
    model.zero_grad(set_to_none=True)
    updated = _describe(model, attention, mlp, model_type, prune_heads)
    _check_reloads(model, updated, example, model_type)
    notes.update(
        {
            "num_attention_heads": f"{heads_before} -> {updated.num_attention_heads}",
            "intermediate_size": (
                f"{getattr(config, 'intermediate_size', '?')} -> "
                f"{getattr(updated, 'intermediate_size', '?')}"
            ),
        }
    )
    inner.config = updated
    return updated.to_dict(), notes


def _describe(
    model: nn.Module,
    attention: list[Attention],
    mlp: list[nn.Linear],
    model_type: str,
    prune_heads: bool,
) -> Any:
    """The config of the pruned model; the attention blocks' size attributes are updated."""
    inner: Any = model.model
    config = copy.deepcopy(inner.config)
    if prune_heads:
        counts = {a.projections[0].out_features // a.head_dim for a in attention}
        if len(counts) != 1:
            raise BadInputError(f"prune: {model_type}: layers kept unequal head counts {counts}")
        heads = counts.pop()
        for block in attention:
            block.module.num_attention_heads = heads
            if hasattr(block.module, "all_head_size"):
                block.module.all_head_size = heads * block.head_dim
            if hasattr(block.module, "attention_head_size"):
                block.module.attention_head_size = block.head_dim
            if hasattr(block.module, "num_heads"):
                block.module.num_heads = heads
        config.num_attention_heads = heads
        config.head_dim = attention[0].head_dim
    widths = {m.out_features for m in mlp}
    if len(widths) > 1:
        raise BadInputError(f"prune: {model_type}: MLPs kept unequal widths {widths}")
    if widths:
        config.intermediate_size = widths.pop()
    return config


def _check_reloads(model: nn.Module, config: Any, example: Tensor, model_type: str) -> None:
    """A model built from ``config`` takes the pruned weights and gives the same logits."""
    inner: Any = model.model
    try:
        fresh = _build(model, config, meta=False)
    except (ValueError, TypeError) as error:
        raise BadInputError(
            f"prune: {model_type}: the updated config does not build: {error}"
        ) from error
    expected, got = _shapes(fresh), _shapes(inner)
    if expected != got:
        differ = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        raise BadInputError(
            f"prune: {model_type}: the pruned model cannot be described by its config "
            f"(shapes differ at {differ[:3]}); nothing was written"
        )
    fresh.load_state_dict(inner.state_dict(), strict=True)
    fresh = fresh.to(example.device)
    wrapper = type(model)(fresh).eval()
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        difference = float((wrapper(example) - model(example)).abs().max())
    model.train(was_training)
    if difference > _SAME_OUTPUTS:
        raise BadInputError(
            f"prune: {model_type}: rebuilt from its updated config the pruned model gives "
            f"other outputs (max difference {difference:.2e})"
        )
