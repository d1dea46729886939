"""The prune stage: remove channels / neurons (structured) or zero weights (unstructured),
then fine-tune.

Structured pruning uses Torch-Pruning's dependency graph: removing an output channel of a
conv also removes the matching BatchNorm entries and the next layer's input channels, so
the model gets physically smaller and faster. The classifier keeps its outputs. The pruned
model saves with its new tensor shapes and ``modelio`` rebuilds it from them, without the
pruning library.

Transformers classifiers (``optimizer_job.hf``) lose whole attention heads and MLP neurons
(``_prune_hf``), and their config is updated so that the library loads them back. Every
other model is checked the same way right after pruning: rebuilt by its factory from the
pruned shapes (as ``modelio`` will load it), it must give the same outputs; a model that
cannot be pruned and loaded back is bad input naming its type, and nothing is written.

Unstructured pruning zeroes the smallest weights (per layer) with ``torch.nn.utils.prune``
and makes the zeros permanent. Dense kernels multiply zeros as fast as anything else, so it
saves no latency and no bytes; the notes say so and report the sparsity reached.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import numpy as np
import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn import functional
from torch.nn.utils import prune as _torch_prune

from optimizer_job import hf, modelio, training
from optimizer_job.contract import BadInputError, PruneStage, RetrainStage
from optimizer_job.dataio import Table
from optimizer_job.evaluate import count_macs, count_parameters
from optimizer_job.strategies import _prune_hf
from optimizer_job.strategies._layers import WEIGHTED_LAYERS, example_rows, final_layer
from optimizer_job.strategies.base import Notes, StageContext, StageOutcome
from optimizer_job.strategies.quantize import quantization_of

# torch.nn.utils.prune has no type annotations.
torch_prune: Any = _torch_prune
# Fine-tuning uses the retrain stage's defaults: one place decides them.
_FINE_TUNE = RetrainStage()
# Rows whose loss gradients score the weights for Taylor importance.
_TAYLOR_ROWS = 512
# Rows that re-estimate BatchNorm statistics after pruning.
_RECALIBRATION_ROWS = 2048
# A pruned model rebuilt from its saved shapes gives the same outputs within this.
_SAME_OUTPUTS = 1e-5


def apply(stage: PruneStage, model: nn.Module, ctx: StageContext) -> StageOutcome:
    if quantization_of(model) is not None:
        raise BadInputError(
            f"prune: the model is already quantized ({quantization_of(model)}); "
            "prune before the quantize stage"
        )
    device = torch.device(ctx.device)
    model = model.to(device)
    example = example_rows(ctx.train, device)
    classifier = final_layer(model, example)
    macs_before, params_before = count_macs_and_params(model, example)
    if stage.method == "structured" and _prune_hf.is_transformers(model):
        config, notes = _prune_hf.prune(
            model,
            example,
            stage.amount_percent / 100,
            _structured_importance(stage.importance),
            hf.model_type(ctx.meta) if ctx.meta else type(model.model).__name__,
            before_step=_taylor_hook(model, stage, ctx),
        )
        ctx = dataclasses.replace(ctx, kwargs={**ctx.kwargs, "config": config})
    elif stage.method == "structured":
        notes = prune_structured(model, stage, ctx, example, classifier)
    else:
        notes = prune_unstructured(model, stage, ctx, classifier)
    notes["batchnorm_recalibrated"] = recalibrate_batchnorm(model, ctx.train, device)
    notes.update(fine_tune(model, stage, ctx))
    if stage.method == "unstructured":
        make_permanent(model)
        notes["sparsity"] = round(weight_sparsity(model, classifier), 4)
    macs_after, params_after = count_macs_and_params(model, example)
    notes.update(
        {
            "method": stage.method,
            "importance": stage.importance,
            "amount_percent": stage.amount_percent,
            "macs_before": macs_before,
            "macs_after": macs_after,
            "macs_ratio": round(macs_before / max(macs_after, 1), 3),
            "params_before": params_before,
            "params_after": params_after,
        }
    )
    ctx.log.info(
        "prune %s %d%% (%s): MACs %d -> %d, params %d -> %d",
        stage.method,
        stage.amount_percent,
        stage.importance,
        macs_before,
        macs_after,
        params_before,
        params_after,
    )
    model.eval()
    return StageOutcome(model=model, ctx=ctx, notes=notes)


def prune_structured(
    model: nn.Module,
    stage: PruneStage,
    ctx: StageContext,
    example: Tensor,
    classifier: nn.Module | None,
) -> Notes:
    """Remove ``amount_percent`` of the channels / neurons of every prunable layer."""
    importance = _structured_importance(stage.importance)
    if stage.importance == "random":
        torch.manual_seed(ctx.seed)
    name = hf.model_type(ctx.meta) if ctx.meta else ctx.factory
    try:
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=importance,
            pruning_ratio=stage.amount_percent / 100,
            ignored_layers=[classifier] if classifier is not None else [],
        )
        if stage.importance == "taylor":
            _accumulate_gradients(model, ctx.train, torch.device(ctx.device))
        pruner.step()
    except (RuntimeError, ValueError, KeyError, AssertionError) as error:
        raise BadInputError(f"prune: {name}: Torch-Pruning failed: {error}") from error
    model.zero_grad(set_to_none=True)
    check_reloads(model, ctx.factory, ctx.kwargs, example, name)
    return {}


def check_reloads(
    model: nn.Module, factory: str, kwargs: dict[str, Any], example: Tensor, name: str
) -> None:
    """Bad input unless the factory's model, reshaped to the pruned tensors as ``modelio``
    loads a directory, gives the pruned model's outputs: some architectures keep sizes in
    attributes that shapes alone do not restore (e.g. a fused attention's head count)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    was_training = model.training
    model.eval()
    try:
        fresh = modelio.build_model(factory, kwargs)
        modelio.reshape_to_tensors(fresh, state)
        fresh.load_state_dict(state, strict=True)
        fresh = fresh.to(example.device).eval()
        with torch.inference_mode():
            expected = model(example)
            got = fresh(example)
        difference = float((expected - got).abs().max())
    except (RuntimeError, ValueError, TypeError) as error:
        raise BadInputError(
            f"prune: {name}: after pruning the model does not run or load back from its shapes "
            f"({str(error).splitlines()[0]}); structured pruning of this architecture is "
            "not supported"
        ) from error
    finally:
        model.train(was_training)
    if difference > _SAME_OUTPUTS:
        raise BadInputError(
            f"prune: {name}: loaded back from its shapes the pruned model gives other "
            f"outputs (max difference {difference:.2e}); structured pruning of this "
            "architecture is not supported"
        )


def _taylor_hook(model: nn.Module, stage: PruneStage, ctx: StageContext) -> Any:
    if stage.importance == "taylor":
        return lambda: _accumulate_gradients(model, ctx.train, torch.device(ctx.device))
    if stage.importance == "random":
        torch.manual_seed(ctx.seed)
    return None


def prune_unstructured(
    model: nn.Module, stage: PruneStage, ctx: StageContext, classifier: nn.Module | None
) -> Notes:
    """Mask ``amount_percent`` of each layer's weights; the masks stay on while fine-tuning
    so the pruned weights remain zero, ``make_permanent`` removes them after."""
    layers = _prunable_layers(model, classifier)
    amount = stage.amount_percent / 100
    if stage.importance == "random":
        torch.manual_seed(ctx.seed)
        for layer in layers:
            torch_prune.random_unstructured(layer, "weight", amount=amount)
    elif stage.importance == "taylor":
        _accumulate_gradients(model, ctx.train, torch.device(ctx.device))
        for layer in layers:
            weight = layer.weight
            grad = weight.grad if weight.grad is not None else torch.zeros_like(weight)
            scores = (weight.detach() * grad).abs()
            torch_prune.l1_unstructured(layer, "weight", amount=amount, importance_scores=scores)
        model.zero_grad(set_to_none=True)
    else:
        # |w| and w^2 rank weights the same way: l1 and l2 are one magnitude criterion here.
        for layer in layers:
            torch_prune.l1_unstructured(layer, "weight", amount=amount)
    return {
        "pruned_layers": len(layers),
        "latency": "unstructured sparsity saves no latency or bytes on dense kernels",
    }


def fine_tune(model: nn.Module, stage: PruneStage, ctx: StageContext) -> Notes:
    if stage.fine_tune_epochs == 0:
        return {"fine_tune_epochs": 0}
    report = training.fit(
        model,
        ctx.train,
        ctx.validation,
        epochs=stage.fine_tune_epochs,
        batch_size=_FINE_TUNE.batch_size,
        lr=float(Decimal(_FINE_TUNE.learning_rate)),
        weight_decay=float(Decimal(_FINE_TUNE.weight_decay)),
        label_smoothing=0.0,
        patience=_FINE_TUNE.early_stopping_patience,
        device=torch.device(ctx.device),
        seed=ctx.seed,
        log=ctx.log,
        stage="prune fine-tune",
    )
    notes: Notes = {
        "fine_tune_epochs": report.epochs_run,
        "fine_tune_best_epoch": report.best_epoch,
    }
    if report.val_accuracy is not None:
        notes["fine_tune_val_accuracy"] = round(report.val_accuracy, 4)
    return notes


def recalibrate_batchnorm(model: nn.Module, table: Table, device: torch.device) -> int:
    """Re-estimate BatchNorm running statistics on up to ``_RECALIBRATION_ROWS`` training rows.

    Pruning changes what every later layer receives, so the statistics BatchNorm saved
    no longer match and accuracy collapses until fine-tuning catches up. Forwarding
    training rows with fresh statistics ("adaptive BatchNorm", Li et al., EagleEye 2020)
    restores much of it at the cost of one pass and gives fine-tuning a better start.
    Returns how many BatchNorm layers were recalibrated.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(table) < 2:
        return 0
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    model.eval()  # dropout off: only BatchNorm should see training-mode behaviour
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches below
        norm.train()
    rows = min(len(table), _RECALIBRATION_ROWS)
    with torch.no_grad():
        for start in range(0, rows, 256):
            stop = min(start + 256, rows)
            if stop - start < 2:
                break
            model(torch.from_numpy(np.ascontiguousarray(table.X[start:stop])).to(device))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
    return len(norms)


def make_permanent(model: nn.Module) -> None:
    """Fold the masks into the weights and drop the pruning hooks."""
    for layer in model.modules():
        if torch_prune.is_pruned(layer) and hasattr(layer, "weight_mask"):
            torch_prune.remove(layer, "weight")


def weight_sparsity(model: nn.Module, classifier: nn.Module | None) -> float:
    """Share of exactly-zero weights in the layers unstructured pruning works on."""
    layers = _prunable_layers(model, classifier)
    total = sum(layer.weight.numel() for layer in layers)
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    return zeros / total if total else 0.0


def count_macs_and_params(model: nn.Module, example: Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass of one row of ``example`` and the parameter
    count, counted as the run's result counts them (``evaluate.count_macs`` and
    ``count_parameters``), so the notes' ``macs_ratio`` is the ratio of the result's MACs."""
    was_training = model.training
    model.eval()
    try:
        row = example[:1].detach().cpu().numpy()
        return count_macs(model, row, example.device), count_parameters(model)
    finally:
        model.train(was_training)


def _structured_importance(name: str) -> Any:
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    if name == "random":
        return tp.importance.RandomImportance()
    raise ValueError(f"unknown importance {name!r}")


def _prunable_layers(model: nn.Module, classifier: nn.Module | None) -> list[Any]:
    return [m for m in model.modules() if isinstance(m, WEIGHTED_LAYERS) and m is not classifier]


def _accumulate_gradients(model: nn.Module, table: Table, device: torch.device) -> None:
    """Loss gradients over the first rows of ``table``: what Taylor importance scores."""
    if table.y is None:
        raise ValueError("taylor importance needs labelled training rows")
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.eval()  # BatchNorm statistics must not move while scoring
    rows = min(len(table), _TAYLOR_ROWS)
    for start in range(0, rows, 128):
        stop = min(start + 128, rows)
        x = torch.from_numpy(np.ascontiguousarray(table.X[start:stop])).to(device)
        y = torch.from_numpy(table.y[start:stop]).to(device=device, dtype=torch.long)
        loss = functional.cross_entropy(model(x), y, reduction="sum") / rows
        loss.backward()  # type: ignore[no-untyped-call]
    model.train(was_training)
