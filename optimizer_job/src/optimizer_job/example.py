"""``make-example``: a small trained model and drifted data, from scikit-learn's bundled digits.

The reference table is the original 8x8 digits; current and holdout are the same kind
of images after a covariate shift a camera change could cause (moved one pixel to the
right, lower contrast, brighter, sensor noise). The example model, trained on the
reference, loses much of its accuracy on the shifted images; retraining on reference +
current brings it back. Nothing is downloaded.

Layout written under ``out``::

    model/                 the model in use (model.json, model.safetensors, MANIFEST)
    data/reference.<ext>   original digits, labelled            (800 rows)
    data/stable.<ext>      original digits, labelled, disjoint  (200 rows): current data
                           before the drift, for a "nothing to do" evaluation
    data/current.<ext>     shifted digits, labelled             (500 rows)
    data/holdout.<ext>     shifted digits, labelled, disjoint   (297 rows)
    artifacts/             empty root for the runs' model versions
    task-evaluate.json     a task for ``python -m optimizer_job --task``
    task-optimize.json

``<ext>`` is ``parquet`` (features px0..px63 and ``label``) for the MLP and ``npz``
(X of shape (n, 1, 16, 16), y) for the CNN.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from sklearn.datasets import load_digits

from optimizer_job import zoo
from optimizer_job.contract import (
    DataRefs,
    PruneStage,
    RetrainStage,
    Stage,
    Task,
)
from optimizer_job.dataio import Table, split_stratified
from optimizer_job.modelio import build_model, save_model
from optimizer_job.publish import publish_run_directory
from optimizer_job.training import accuracy, fit

ExampleModel = Literal["mlp", "cnn"]
REFERENCE_ROWS = 800
STABLE_ROWS = 200
CURRENT_ROWS = 500
TABLES = ("reference", "stable", "current", "holdout")
LABEL = "label"


def shift_images(images: np.ndarray, pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Images (n, H, W) in [0, 1] moved right by ``pixels``, lower contrast, brighter, noisier."""
    moved = np.zeros_like(images)
    moved[:, :, pixels:] = images[:, :, :-pixels]
    noisy = moved * 0.75 + 0.1 + rng.normal(0.0, 0.05, moved.shape)
    return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def digits_tables(model: ExampleModel, seed: int) -> dict[str, Table]:
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # (n, 8, 8)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    images, labels = images[order], labels[order]
    if model == "cnn":
        images = np.kron(images, np.ones((1, 2, 2), dtype=np.float32))  # 16x16: room to convolve
    pixels = 2 if model == "cnn" else 1
    cuts = np.cumsum([REFERENCE_ROWS, STABLE_ROWS, CURRENT_ROWS])
    chunks = np.split(np.arange(len(images)), cuts)
    tables = {}
    for name, rows in zip(TABLES, chunks, strict=True):
        x = images[rows]
        if name in ("current", "holdout"):
            x = shift_images(x, pixels, rng)
        if model == "cnn":
            tables[name] = Table(
                X=np.ascontiguousarray(x[:, None]), y=labels[rows], feature_names=[]
            )
        else:
            flat = np.ascontiguousarray(x.reshape(len(x), -1))
            names = [f"px{j}" for j in range(flat.shape[1])]
            tables[name] = Table(X=flat, y=labels[rows], feature_names=names)
    return tables


def _write_table(table: Table, path: Path) -> None:
    if table.is_image:
        assert table.y is not None
        np.savez(path, X=table.X, y=table.y)
        return
    columns: dict[str, Any] = {name: table.X[:, j] for j, name in enumerate(table.feature_names)}
    columns[LABEL] = table.y
    pq.write_table(pa.table(columns), path)


def _model(model: ExampleModel) -> tuple[str, dict[str, Any]]:
    if model == "cnn":
        return zoo.SMALL_CNN_FACTORY, {
            "in_channels": 1,
            "num_classes": 10,
            "image_size": 16,
            "channels": [16, 32, 32],
            "hidden": 64,
        }
    return zoo.MLP_FACTORY, {"in_features": 64, "num_classes": 10, "hidden": [256, 128]}


def _stages(model: ExampleModel) -> list[Stage]:
    retrain = RetrainStage(
        epochs=30, dropout_percent=10, label_smoothing_percent=5, early_stopping_patience=4
    )
    if model == "cnn":
        return [retrain, PruneStage(amount_percent=50, fine_tune_epochs=6)]
    # The example MLP is too small for int8 to pay off on a CPU (bench/RESULTS.md):
    # its story is drift and retraining.
    return [retrain]


def make_example(
    out: Path,
    log: logging.Logger,
    model: ExampleModel = "mlp",
    seed: int = 0,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Write the example under ``out`` (see the module docstring); returns a summary."""
    out = out.resolve()
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    (out / "artifacts").mkdir(exist_ok=True)
    tables = digits_tables(model, seed)
    reference, holdout = tables["reference"], tables["holdout"]
    ext = "npz" if model == "cnn" else "parquet"
    paths = {name: data_dir / f"{name}.{ext}" for name in TABLES}
    for name, table in tables.items():
        _write_table(table, paths[name])
    factory, kwargs = _model(model)
    torch.manual_seed(seed)
    network = build_model(factory, kwargs)
    train, validation = split_stratified(reference, 20, seed)
    cpu = torch.device("cpu")
    log.info("make-example: training the example %s on the reference digits", model)
    fit(
        network,
        train,
        validation,
        # The CNN learns digits in a few epochs; each costs much more than the MLP's.
        epochs=epochs or (15 if model == "cnn" else 60),
        batch_size=32,
        lr=1e-3 if model == "cnn" else 3e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=4 if model == "cnn" else 8,
        device=cpu,
        seed=seed,
        log=log,
        stage="make-example",
    )
    input_spec = {"shape": reference.sample_shape, "feature_names": reference.feature_names}
    publish_run_directory(
        lambda d: save_model(
            network,
            factory,
            kwargs,
            d,
            {"input": input_spec, "num_classes": 10, "label_column": LABEL},
        ),
        out / "model",
    )
    data = DataRefs(
        reference=paths["reference"].as_uri(),
        current=paths["current"].as_uri(),
        holdout=paths["holdout"].as_uri(),
        label_column=LABEL,
    )
    common: dict[str, Any] = {
        "namespace": "default",
        "optimization": "example",
        "model_uri": (out / "model").as_uri(),
        "data": data,
        "seed": seed,
    }
    tasks = {
        "evaluate": Task(kind="evaluate", run_id="example-eval-1", **common),
        "optimize": Task(
            kind="optimize",
            run_id="example-opt-1",
            stages=_stages(model),
            artifacts_uri=(out / "artifacts").as_uri(),
            **common,
        ),
    }
    for kind, task in tasks.items():
        (out / f"task-{kind}.json").write_text(task.model_dump_json(indent=2) + "\n")
    summary = {
        "out": str(out),
        "model": (out / "model").as_uri(),
        "data": {name: path.as_uri() for name, path in paths.items()},
        "artifacts": (out / "artifacts").as_uri(),
        "tasks": [str(out / f"task-{kind}.json") for kind in tasks],
        "reference_validation_accuracy": round(accuracy(network, validation, cpu), 4),
        "stable_accuracy": round(accuracy(network, tables["stable"], cpu), 4),
        "holdout_accuracy": round(accuracy(network, holdout, cpu), 4),
    }
    (out / "example.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
