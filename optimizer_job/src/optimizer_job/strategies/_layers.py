"""Finding a model's parts by running it: its classifier and the features that feed it.

Registration order of submodules need not be call order, so the classifier is found by
watching one forward pass: the last Linear or Conv layer called produces the logits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from optimizer_job.dataio import Table
from optimizer_job.modelio import model_dtype

WEIGHTED_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


def example_rows(table: Table, device: torch.device, count: int = 1) -> Tensor:
    """The first ``count`` rows of ``table`` as the model's input tensor."""
    if len(table) == 0:
        raise ValueError("no rows to build an example input from")
    return torch.from_numpy(np.ascontiguousarray(table.X[:count])).to(device)


def final_layer(model: nn.Module, example: Tensor) -> nn.Module | None:
    """The last Linear / Conv layer a forward pass of ``example`` calls (the classifier)."""
    called: list[nn.Module] = []

    def record(module: nn.Module, _args: Any, _output: Any) -> None:
        called.append(module)

    handles = [
        m.register_forward_hook(record) for m in model.modules() if isinstance(m, WEIGHTED_LAYERS)
    ]
    try:
        was_training = model.training
        model.eval()
        with torch.inference_mode():
            model(example.to(model_dtype(model)))
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return called[-1] if called else None


def penultimate_features(
    model: nn.Module, table: Table, device: torch.device, batch_size: int = 512
) -> np.ndarray | None:
    """What the classifier receives for every row of ``table`` (n, d), float32; None when
    the model has no Linear / Conv layer to hook."""
    model = model.to(device)
    head = final_layer(model, example_rows(table, device))
    if head is None:
        return None
    captured: list[np.ndarray] = []

    def capture(_module: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0].detach().float().reshape(args[0].shape[0], -1).cpu().numpy())

    handle = head.register_forward_pre_hook(capture)
    was_training = model.training
    model.eval()
    dtype = model_dtype(model)
    try:
        with torch.inference_mode():
            for start in range(0, len(table), batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(table.X[start : start + batch_size]))
                model(batch.to(device=device, dtype=dtype))
    finally:
        handle.remove()
        model.train(was_training)
    return np.concatenate(captured).astype(np.float32, copy=False)
