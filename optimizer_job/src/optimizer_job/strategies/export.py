"""The export stage: the candidate becomes an ONNX graph that ONNX Runtime runs.

Order of work: export the float32 model (``torch.onnx.export(..., dynamo=True)``, dynamic
batch axis, opset pinned in ``optimizer_job.onnxmodel``), then verify before anything else:
ONNX Runtime's outputs on holdout rows must match PyTorch's within 1e-4 (max absolute
difference, fp32) - else the input is bad and the error names the largest deviation. Only
then the optional ORT quantization (dynamic int8, or static int8 calibrated on reference
rows). The stage returns an ``OnnxModule``; the runner measures it (accuracy from ORT's
outputs, latency with the same interleaved timer as a torch model) and writes model.onnx.

Export must be the last stage (later stages train a torch model) and does not follow a
``quantize`` stage: int8 on ORT is ``export.quantize``, and our torch int8 kernel has no ONNX
form. A Hugging Face model exports through its own ``ExportSignature``
(``onnxmodel.signature_of``: a sequence classifier as input_ids, attention_mask and
token_type_ids with dynamic batch and sequence axes, an image classifier as pixel_values);
verification, quantization and measurement are the same for every model.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from optimizer_job import onnxmodel
from optimizer_job.contract import BadInputError, ExportStage
from optimizer_job.dataio import SOURCE_REFERENCE, Table
from optimizer_job.evaluate import count_macs
from optimizer_job.modelio import model_dtype, state_tensors
from optimizer_job.strategies.base import StageContext, StageOutcome


def _rows(table: Table | None, limit: int, seed: int) -> np.ndarray | None:
    if table is None or len(table) == 0:
        return None
    x = table.X
    if len(x) > limit:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), limit, replace=False))]
    return np.ascontiguousarray(x, dtype=np.float32)


def calibration_rows(ctx: StageContext) -> np.ndarray | None:
    """Reference rows of the training pool (all of it when it is not tagged by source)."""
    table = ctx.train
    if table.source is not None and (table.source == SOURCE_REFERENCE).any():
        table = table.subset(np.flatnonzero(table.source == SOURCE_REFERENCE))
    return _rows(table, onnxmodel.CALIBRATION_ROWS, ctx.seed)


def apply(stage: ExportStage, model: nn.Module, ctx: StageContext) -> StageOutcome:
    if isinstance(model, onnxmodel.OnnxModule):
        raise BadInputError("export: the model is ONNX already")
    if model_dtype(model) != torch.float32 or state_tensors(model)[1] is not None:
        raise BadInputError(
            "export: needs a float32 model (int8 on ONNX Runtime is export.quantize)"
        )
    rows = _rows(ctx.holdout, onnxmodel.VERIFY_ROWS, ctx.seed)
    if rows is None:
        rows = _rows(ctx.validation, onnxmodel.VERIFY_ROWS, ctx.seed)
    if rows is None:
        raise BadInputError("export: needs holdout rows to verify ONNX Runtime against PyTorch")
    started = time.perf_counter()
    # A CPU copy: the exporter traces on the CPU; the caller's model stays where it is.
    model = copy.deepcopy(model).eval().to("cpu")
    signature = onnxmodel.signature_of(model, rows)
    feed = signature.feed
    data = onnxmodel.export(model, signature)
    export_seconds = time.perf_counter() - started
    macs = count_macs(model, rows[:1], torch.device("cpu"))
    # Verified on the execution provider the run's device picks (CUDA on a CUDA device where
    # the wheel has it, else the CPU; a shortfall is in the notes).
    exported = onnxmodel.OnnxModule(
        data, graph_optimization=stage.graph_optimization, device=ctx.device, feed=feed
    )
    deviation = onnxmodel.compare(model, exported, rows)
    ctx.log.info("export: ONNX opset %s, %s", exported.info["opset"], deviation.describe())
    if not deviation.max_abs_diff <= onnxmodel.VERIFY_TOLERANCE:
        raise BadInputError(
            f"export: ONNX Runtime does not reproduce PyTorch: {deviation.describe()}, "
            f"over the {onnxmodel.VERIFY_TOLERANCE:g} limit"
        )
    notes: dict[str, str | float | int] = {
        "format": onnxmodel.ONNX_FORMAT,
        "opset": int(exported.info["opset"] or 0),
        "onnxruntime": onnxmodel.ORT_VERSION,
        "export_seconds": round(export_seconds, 3),
        "verified_rows": deviation.rows,
        "verify_max_abs_diff": deviation.max_abs_diff,
        "graph_optimization": stage.graph_optimization,
        "quantize": stage.quantize,
        "inputs": ",".join(signature.input_names),
        **exported.provider_notes(),
    }
    if "execution_provider_note" in notes:
        ctx.log.warning("export: %s", notes["execution_provider_note"])
    result = onnxmodel.OnnxModule(
        data, graph_optimization=stage.graph_optimization, device=ctx.device, macs=macs, feed=feed
    )
    if stage.quantize != "none":
        quantize_started = time.perf_counter()
        calibration = calibration_rows(ctx) if stage.quantize == "static-int8" else None
        quantized = onnxmodel.quantize(data, stage.quantize, calibration, feed)
        result = onnxmodel.OnnxModule(
            quantized,
            graph_optimization=stage.graph_optimization,
            device=ctx.device,
            macs=macs,
            feed=feed,
        )
        # Informational: int8 outputs differ by design; the gates judge the accuracy.
        after = onnxmodel.compare(model, result, rows)
        notes["quantized_max_abs_diff"] = round(after.max_abs_diff, 6)
        notes["quantize_seconds"] = round(time.perf_counter() - quantize_started, 3)
        if calibration is not None:
            notes["calibration_rows"] = len(calibration)
        ctx.log.info("export: %s quantized, %s", stage.quantize, after.describe())
    return StageOutcome(model=result, ctx=ctx, notes=notes)
