"""The demo's data Job: a loadable model, the tables the ModelOptimization names, the shift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from devcluster.demo_data import CURRENT_ROWS, MODEL_DIR, REFERENCE_ROWS, prepare, shift
from optimizer_job.dataio import load_table
from optimizer_job.modelio import load_model

pytestmark = pytest.mark.job


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("ml")
    return root, prepare(root, epochs=3, seed=0, latency_batch=16)


def test_prepare_writes_a_verified_model_and_the_tables(
    prepared: tuple[Path, dict[str, Any]],
) -> None:
    root, summary = prepared
    model = load_model(root / MODEL_DIR)  # checks the MANIFEST
    assert model.input_shape == [1, 16, 16]
    reference = load_table(root / "data/reference.npz", "label")
    current = load_table(root / "data/current.npz", "label")
    assert len(reference) == REFERENCE_ROWS
    assert len(current) == CURRENT_ROWS
    assert set(summary["latency_ms"]) == {"b16_p50", "b16_p95", "b16_p99"}
    # Trained on unshifted digits: the shift costs the model accuracy.
    assert summary["accuracy"]["holdout"] > summary["accuracy"]["shifted-holdout"]


def test_shift_swaps_in_the_same_rows_after_the_camera_change(
    prepared: tuple[Path, dict[str, Any]],
) -> None:
    root, _ = prepared
    before = {n: load_table(root / f"data/{n}.npz", "label") for n in ("current", "holdout")}
    assert shift(root) == {"shifted": {"holdout": len(before["holdout"]), "current": CURRENT_ROWS}}
    for name, table in before.items():
        after = load_table(root / f"data/{name}.npz", "label")
        assert after.y is not None and table.y is not None
        np.testing.assert_array_equal(after.y, table.y)
        # Moved, a brighter floor and sensor noise: the pixels themselves changed, and the
        # black background of the 8x8 scans is gone.
        assert float(np.mean(np.abs(after.X - table.X))) > 0.05
        assert np.mean(after.X == 0) < np.mean(table.X == 0) / 2
