"""How much memory an evaluate Job needs, checked before it reads its data.

A Job that runs out of memory is OOM-killed and retried up to backoffLimit, each time
the same way. So the evaluate Job estimates its peak from the sizes of its tables
(Parquet footers and NPZ headers, read without the data) and, when the estimate is
over the container's memory limit (cgroup v2 ``memory.max``: ``spec.job.resources.memory``),
refuses with a bad-input message naming both numbers, before loading anything.

The estimate (``evaluate_memory_bytes``) follows what the evaluation holds at its peak
(bench/RESULTS.md compares it with measured peaks):
- the tables as float32 (dataio), and one int64 column while a column converts;
- the fitted reference: every column sorted, float32 (drift.reference stores it
  compactly), and its row sample for multivariate drift;
- per worker thread: a current column sorted, the reference column in the comparison
  type and Wasserstein's merge of both (about 40 bytes per reference+current value);
- multivariate drift: the domain classifier's rows as float64, about 4 copies;
- a fixed base for the interpreter, torch and the model.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow.parquet as pq

from optimizer_job.contract import BadInputError

BASE_BYTES: Final = 600 * 2**20  # python + torch + numpy/scipy/sklearn + a small model
MIB: Final = 2**20


def table_shape(path: Path) -> tuple[int, int] | None:
    """(rows, columns) from a Parquet footer or an NPZ's X header; None when unknown
    without reading the data (CSV) or unreadable (load_table reports that)."""
    try:
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            metadata = pq.ParquetFile(path).metadata
            return int(metadata.num_rows), int(metadata.num_columns)
        if suffix == ".npz":
            with zipfile.ZipFile(path) as archive, archive.open("X.npy") as stream:
                major, _ = np.lib.format.read_magic(stream)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if major == 1
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, _ = read_header(stream)
                rows = int(shape[0]) if shape else 0
                return rows, int(np.prod(shape[1:])) if len(shape) > 1 else 1
    except (OSError, KeyError, ValueError):
        return None
    return None


def evaluate_memory_bytes(
    reference_rows: int,
    current_rows: int,
    features: int,
    *,
    workers: int = 2,
    multivariate: bool = False,
    other_rows: int = 0,
) -> int:
    """Estimated peak bytes of an evaluation (terms: module docstring)."""
    tables = (reference_rows + current_rows + other_rows) * features * 4
    converting = max(reference_rows, current_rows, other_rows) * 8
    fitted = reference_rows * features * 4 + min(reference_rows, 20_000) * features * 8
    per_worker = current_rows * 4 + reference_rows * 8 + (reference_rows + current_rows) * 40
    total = BASE_BYTES + tables + converting + fitted + workers * per_worker
    if multivariate:
        total += 2 * min(reference_rows, current_rows, 10_000) * features * 8 * 4
    return total


def memory_limit_bytes(memory_max: Path = Path("/sys/fs/cgroup/memory.max")) -> int | None:
    """The container's memory limit (cgroup v2), None when there is none or no cgroup."""
    try:
        text = memory_max.read_text().strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


def check_evaluate_memory(
    shapes: dict[str, tuple[int, int] | None],
    *,
    workers: int,
    multivariate: bool,
    limit: int | None,
) -> int | None:
    """The estimate for these table shapes; BadInputError when it is over ``limit``.

    ``shapes`` maps "reference", "current" and "holdout" to (rows, columns) or None.
    """
    reference, current = shapes.get("reference"), shapes.get("current")
    if reference is None or current is None:
        return None
    holdout = shapes.get("holdout")
    features = max(reference[1], current[1])
    estimate = evaluate_memory_bytes(
        reference[0],
        current[0],
        features,
        workers=workers,
        multivariate=multivariate,
        other_rows=holdout[0] if holdout else 0,
    )
    if limit is not None and estimate > limit:
        raise BadInputError(
            f"job.resources.memory: the evaluation of {reference[0]} reference and "
            f"{current[0]} current rows x {features} columns needs about "
            f"{estimate // MIB} MiB, the container's limit is {limit // MIB} MiB; "
            "raise spec.job.resources.memory or sample the data"
        )
    return estimate
