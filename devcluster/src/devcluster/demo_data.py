"""The demo's model and data, written into the demo's volume by a Job (``prepare``), and the
data shift the demo injects later (``shift``), as an upstream data pipeline would.

    python -m devcluster.demo_data prepare --root /mnt/driftwarden/pvc/ml [--epochs N]
    python -m devcluster.demo_data shift   --root /mnt/driftwarden/pvc/ml

Scikit-learn's bundled 8x8 digits, upscaled to 16x16 for a small CNN (optimizer_job's zoo),
wide enough (32-64-64 channels) that compute, not call overhead, dominates its latency: a
model with half the channels is then clearly faster, and one pruned twice still learns the
shifted digits.
The model is trained on the reference rows. ``current`` and ``holdout`` start as unshifted
digits of other rows (nothing drifts); ``shift`` replaces them by the same rows after the
covariate shift of ``optimizer_job.example.shift_images`` (a camera change: moved, lower
contrast, brighter, noisier), on which the model loses much of its accuracy.

Layout under the root (the ModelOptimization refers to it as pvc://ml/...)::

    models/digits-v1/        the model the serving Deployment starts with
    data/reference.npz       training data of digits-v1          (REFERENCE_ROWS rows)
    data/current.npz         recent production data, labelled    (CURRENT_ROWS rows)
    data/holdout.npz         labelled, never trained on          (the other rows)
    incoming/                the shifted tables ``shift`` swaps in
    artifacts/               the runs' model versions
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Final

import numpy as np

REFERENCE_ROWS: Final = 800
CURRENT_ROWS: Final = 500
IMAGE_SIZE: Final = 16
SHIFT_PIXELS: Final = 2
MODEL_DIR: Final = "models/digits-v1"
TABLES: Final = ("reference", "current", "holdout")
CNN_KWARGS: Final[dict[str, Any]] = {
    "in_channels": 1,
    "num_classes": 10,
    "image_size": IMAGE_SIZE,
    "channels": [32, 64, 64],
    "hidden": 64,
}

log = logging.getLogger("demo-data")


def _save(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write an NPZ atomically: a reader sees the old table or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, X=x, y=y)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as (n, 1, 16, 16) float32 in [0, 1] and their labels, shuffled."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    images = np.kron(images, np.ones((1, 2, 2), dtype=np.float32))  # room to convolve
    order = np.random.default_rng(seed).permutation(len(images))
    return images[order], data.target.astype(np.int64)[order]


def prepare(root: Path, epochs: int, seed: int, latency_batch: int) -> dict[str, Any]:
    import torch

    from optimizer_job import zoo
    from optimizer_job.contract import EvaluationSettings
    from optimizer_job.dataio import Table, split_stratified
    from optimizer_job.evaluate import measure
    from optimizer_job.example import shift_images
    from optimizer_job.modelio import build_model, save_model
    from optimizer_job.publish import publish_run_directory
    from optimizer_job.training import accuracy, fit

    images, labels = digits(seed)
    rows = {
        "reference": slice(0, REFERENCE_ROWS),
        "current": slice(REFERENCE_ROWS, REFERENCE_ROWS + CURRENT_ROWS),
        "holdout": slice(REFERENCE_ROWS + CURRENT_ROWS, None),
    }
    for sub in ("data", "incoming", "artifacts", "models"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    tables: dict[str, Table] = {}
    for name, part in rows.items():
        x, y = images[part], labels[part]
        _save(root / "data" / f"{name}.npz", x[:, None], y)
        tables[name] = Table(X=np.ascontiguousarray(x[:, None]), y=y, feature_names=[])
        if name != "reference":
            shifted = shift_images(x, SHIFT_PIXELS, rng)
            _save(root / "incoming" / f"{name}.npz", shifted[:, None], y)
            tables[f"shifted-{name}"] = Table(X=shifted[:, None], y=y, feature_names=[])

    torch.manual_seed(seed)
    model = build_model(zoo.SMALL_CNN_FACTORY, dict(CNN_KWARGS))
    train, validation = split_stratified(tables["reference"], 20, seed)
    cpu = torch.device("cpu")
    log.info("training the demo CNN on %d reference digits (%d epochs)", len(train), epochs)
    fit(
        model,
        train,
        validation,
        epochs=epochs,
        batch_size=32,
        lr=1e-3,
        weight_decay=1e-4,
        label_smoothing=0.0,
        patience=4,
        device=cpu,
        seed=seed,
        log=log,
        stage="demo-data",
    )
    model_dir = root / MODEL_DIR
    if not model_dir.exists():  # a model version is never replaced
        publish_run_directory(
            lambda d: save_model(
                model,
                zoo.SMALL_CNN_FACTORY,
                dict(CNN_KWARGS),
                d,
                {"label_column": "label"},
                input_shape=[1, IMAGE_SIZE, IMAGE_SIZE],
                feature_names=[],
                num_classes=10,
            ),
            model_dir,
        )
    # The same benchmark an evaluation Job runs: the demo sets its latency SLO from it.
    measured = measure(
        model,
        tables["holdout"],
        cpu,
        EvaluationSettings(latency_batch_sizes=[latency_batch], latency_iterations=100),
    )
    summary = {
        "model": f"{MODEL_DIR}",
        "rows": {name: len(table) for name, table in tables.items()},
        "accuracy": {
            name: round(accuracy(model, tables[name], cpu), 4)
            for name in ("holdout", "shifted-holdout")
        },
        "latency_ms": measured.latency_ms,
        "size_bytes": measured.size_bytes,
    }
    (root / "prepared.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def shift(root: Path) -> dict[str, Any]:
    """Swap the shifted tables in: holdout first, then current (what drift is measured on)."""
    swapped = {}
    for name in ("holdout", "current"):
        with np.load(root / "incoming" / f"{name}.npz") as data:
            x, y = data["X"], data["y"]
        _save(root / "data" / f"{name}.npz", x, y)
        swapped[name] = len(y)
    return {"shifted": swapped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.demo_data", description=__doc__)
    parser.add_argument("command", choices=["prepare", "shift"])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-batch", type=int, default=64)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.command == "prepare":
        summary = prepare(args.root, args.epochs, args.seed, args.latency_batch)
    else:
        summary = shift(args.root)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
