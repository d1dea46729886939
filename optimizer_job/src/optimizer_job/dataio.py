"""Labelled tables in Parquet, CSV or NPZ, checked on the way in.

Everything the Job reads goes through ``load_table``. Bad data is refused here with a
``BadInputError`` whose one-line message names the column or the problem, so the Job
exits with the bad-input code instead of retrying the same file.

Tabular data is ``X`` of shape (n, d) with one name per column; image data (NPZ only)
is ``X`` of shape (n, C, H, W) and has no feature names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from optimizer_job.contract import BadInputError, resolve_uri

# Which rows of a training pool came from which table (Table.source).
SOURCE_REFERENCE = 0
SOURCE_CURRENT = 1

NPZ_DEFAULT_LABEL = "y"


@dataclass(frozen=True)
class Table:
    """Features (float32), integer labels (or None when unlabelled) and feature names.

    ``source`` optionally tags each row with where it came from (SOURCE_REFERENCE /
    SOURCE_CURRENT) so a stage can select rows of one origin; ``subset`` keeps it.
    """

    X: np.ndarray
    y: np.ndarray | None
    feature_names: list[str]
    source: np.ndarray | None = None
    # Integer columns whose values float32 cannot hold (beyond 2**24): distinct values
    # may have become equal in X. Drift statistics warn about them by name.
    inexact_columns: list[str] = field(default_factory=list)
    # Text tables: per-row statistics (characters, out-of-vocabulary share) that drift is
    # measured on instead of token ids. Not carried by subset/concat (training needs none).
    text_stats: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def is_image(self) -> bool:
        return self.X.ndim == 4

    @property
    def sample_shape(self) -> list[int]:
        """The shape of one row: [d] for tabular data, [C, H, W] for images."""
        return [int(s) for s in self.X.shape[1:]]

    def subset(self, indices: np.ndarray) -> Table:
        """The rows at ``indices``, labels and sources included."""
        return Table(
            X=self.X[indices],
            y=None if self.y is None else self.y[indices],
            feature_names=self.feature_names,
            source=None if self.source is None else self.source[indices],
            inexact_columns=self.inexact_columns,
        )

    def with_source(self, source: int) -> Table:
        return Table(
            self.X,
            self.y,
            self.feature_names,
            np.full(len(self), source, np.int8),
            self.inexact_columns,
        )


def path_of(uri_or_path: str | Path) -> Path:
    """A local path for a file:// or pvc:// URI, or a plain path."""
    text = str(uri_or_path)
    return resolve_uri(text) if "://" in text else Path(text)


def local_file(uri_or_path: str | Path) -> Path:
    """A local path for any data URI: s3:// objects are downloaded and verified first."""
    from optimizer_job import storage

    return storage.local_file(uri_or_path)


def load_table(
    uri_or_path: str | Path,
    label_column: str,
    features: list[str] | None = None,
    *,
    require_labels: bool = True,
) -> Table:
    """Read one table; ``features`` selects and orders columns (default: all but the label).

    With ``require_labels=False`` a table without the label column loads with ``y=None``
    (production data is often unlabelled).
    """
    path = local_file(uri_or_path)
    if not path.is_file():
        raise BadInputError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            table = _from_arrow(pq.read_table(path), path, label_column, features, require_labels)
        elif suffix == ".csv":
            table = _from_arrow(pa_csv.read_csv(path), path, label_column, features, require_labels)
        elif suffix == ".npz":
            table = _from_npz(path, label_column, features, require_labels)
        else:
            raise BadInputError(f"{path.name}: unsupported data format {suffix!r}")
    except (pa.ArrowInvalid, OSError, ValueError) as error:
        raise BadInputError(f"{path.name}: unreadable: {_one_line(error)}") from error
    if len(table) == 0:
        raise BadInputError(f"{path.name}: no rows")
    return table


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def _from_arrow(
    arrow: pa.Table,
    path: Path,
    label_column: str,
    features: list[str] | None,
    require_labels: bool,
) -> Table:
    columns = list(arrow.column_names)
    has_label = label_column in columns
    if require_labels and not has_label:
        raise BadInputError(f"{path.name}: label column {label_column!r} missing")
    if features is None:
        names = [c for c in columns if c != label_column]
    else:
        missing = [f for f in features if f not in columns]
        if missing:
            raise BadInputError(f"{path.name}: feature columns missing: {', '.join(missing[:10])}")
        names = list(features)
    if not names:
        raise BadInputError(f"{path.name}: no feature columns")
    if arrow.num_rows == 0:
        raise BadInputError(f"{path.name}: no rows")
    matrix = np.empty((arrow.num_rows, len(names)), dtype=np.float32)
    inexact: list[str] = []
    for j, name in enumerate(names):
        values = _numeric_column(arrow.column(name), name, path)
        matrix[:, j] = values
        if values.dtype.kind in "iu" and not _exact_in_float32(values, matrix[:, j]):
            inexact.append(name)
    _reject_nan(matrix, path, names)
    y = _labels(arrow.column(label_column), label_column, path) if has_label else None
    return Table(X=matrix, y=y, feature_names=names, inexact_columns=inexact)


def _exact_in_float32(values: np.ndarray, narrow: np.ndarray) -> bool:
    """Whether the integers ``values`` survived the cast to float32 ``narrow``."""
    limit = 2**24  # every integer of at most this magnitude is a float32
    if values.size == 0 or max(abs(int(values.min())), abs(int(values.max()))) <= limit:
        return True
    return bool(np.array_equal(narrow.astype(np.int64), values))


def _numeric_column(column: pa.ChunkedArray, name: str, path: Path) -> np.ndarray:
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise BadInputError(
            f"{path.name}: column {name!r} has type {kind}, features must be numeric"
        )
    if column.null_count:
        raise BadInputError(f"{path.name}: column {name!r} has {column.null_count} missing values")
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _labels(column: pa.ChunkedArray, name: str, path: Path) -> np.ndarray:
    if column.null_count:
        raise BadInputError(
            f"{path.name}: label column {name!r} has {column.null_count} missing values"
        )
    kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise BadInputError(
            f"{path.name}: label column {name!r} has type {kind}, labels must be integer class ids"
        )
    return _integer_labels(np.asarray(column.to_numpy(zero_copy_only=False)), name, path)


def _integer_labels(values: np.ndarray, name: str, path: Path) -> np.ndarray:
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)):
            raise BadInputError(f"{path.name}: label column {name!r} has NaN or infinite values")
        if not np.all(values == np.round(values)):
            raise BadInputError(f"{path.name}: label column {name!r} has non-integer values")
    elif values.dtype.kind not in "iub":
        raise BadInputError(
            f"{path.name}: label {name!r} has dtype {values.dtype}, "
            "labels must be integer class ids"
        )
    labels = values.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise BadInputError(f"{path.name}: label column {name!r} has negative class ids")
    return labels


def _reject_nan(matrix: np.ndarray, path: Path, names: list[str]) -> None:
    finite = np.isfinite(matrix)
    if finite.all():
        return
    if names:
        bad = [names[j] for j in np.flatnonzero(~finite.all(axis=0))]
        raise BadInputError(
            f"{path.name}: NaN or infinite values in columns: {', '.join(bad[:10])}"
        )
    raise BadInputError(f"{path.name}: NaN or infinite values in X")


def _from_npz(
    path: Path, label_column: str, features: list[str] | None, require_labels: bool
) -> Table:
    # allow_pickle=False: a data file must never run code.
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    if "X" not in arrays:
        raise BadInputError(f"{path.name}: NPZ needs an array named 'X'")
    raw = arrays["X"]
    if raw.dtype.kind not in "fiub":
        raise BadInputError(f"{path.name}: X has dtype {raw.dtype}, features must be numeric")
    if raw.ndim not in (2, 4):
        raise BadInputError(
            f"{path.name}: X must have 2 (tabular) or 4 (N,C,H,W) dims, has {raw.ndim}"
        )
    if raw.shape[0] == 0:
        raise BadInputError(f"{path.name}: no rows")
    x = np.ascontiguousarray(raw, dtype=np.float32)
    label_key = label_column if label_column in arrays else NPZ_DEFAULT_LABEL
    y: np.ndarray | None = None
    if label_key in arrays:
        labels = arrays[label_key]
        if labels.shape != (x.shape[0],):
            raise BadInputError(
                f"{path.name}: {label_key} has shape {labels.shape}, expected ({x.shape[0]},)"
            )
        y = _integer_labels(labels, label_key, path)
    elif require_labels:
        raise BadInputError(f"{path.name}: label array {label_column!r} (or 'y') missing")
    if x.ndim == 4:
        if features:
            raise BadInputError(
                f"{path.name}: image data (4-dim X) has no feature columns to select"
            )
        _reject_nan(x, path, [])
        return Table(X=x, y=y, feature_names=[])
    if "feature_names" in arrays:
        names = [str(n) for n in arrays["feature_names"].tolist()]
        if len(names) != x.shape[1]:
            raise BadInputError(
                f"{path.name}: {len(names)} feature_names for {x.shape[1]} columns of X"
            )
    else:
        names = [f"f{j}" for j in range(x.shape[1])]
    if features is not None:
        missing = [f for f in features if f not in names]
        if missing:
            raise BadInputError(f"{path.name}: feature columns missing: {', '.join(missing[:10])}")
        x = np.ascontiguousarray(x[:, [names.index(f) for f in features]])
        names = list(features)
    _reject_nan(x, path, names)
    return Table(X=x, y=y, feature_names=names)


def align_features(table: Table, expected: list[str], what: str) -> Table:
    """Reorder a tabular table's columns to ``expected``; missing or extra ones are bad input."""
    if table.is_image or not expected or table.feature_names == expected:
        return table
    have = set(table.feature_names)
    missing = [f for f in expected if f not in have]
    extra = [f for f in table.feature_names if f not in set(expected)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:10])}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:10])}")
        raise BadInputError(f"{what}: feature set differs from the model's: {'; '.join(parts)}")
    order = [table.feature_names.index(f) for f in expected]
    return Table(np.ascontiguousarray(table.X[:, order]), table.y, list(expected), table.source)


def check_shape(table: Table, sample_shape: list[int], what: str) -> None:
    """A table whose rows do not have the model's input shape is bad input."""
    if sample_shape and table.sample_shape != list(sample_shape):
        raise BadInputError(
            f"{what}: rows have shape {table.sample_shape}, the model expects {list(sample_shape)}"
        )


def check_labels(table: Table, num_classes: int, what: str) -> None:
    if table.y is not None and table.y.size and int(table.y.max()) >= num_classes:
        raise BadInputError(
            f"{what}: class id {int(table.y.max())} out of range for a {num_classes}-class model"
        )


def concat(tables: list[Table]) -> Table:
    """Rows of several tables with the same features; labels kept only if all have them."""
    if not tables:
        raise ValueError("concat of no tables")
    first = tables[0]
    for other in tables[1:]:
        if other.feature_names != first.feature_names or other.sample_shape != first.sample_shape:
            raise BadInputError("tables to combine have different feature sets")
    labelled = all(t.y is not None for t in tables)
    sourced = all(t.source is not None for t in tables)
    return Table(
        X=np.concatenate([t.X for t in tables]),
        y=np.concatenate([t.y for t in tables if t.y is not None]) if labelled else None,
        feature_names=first.feature_names,
        source=np.concatenate([t.source for t in tables if t.source is not None])
        if sourced
        else None,
    )


def split_stratified(table: Table, percent: int, seed: int) -> tuple[Table, Table]:
    """(train, validation): ``percent`` % of each class goes to validation, deterministically."""
    if table.y is None:
        raise BadInputError("cannot split unlabelled data for validation")
    rng = np.random.default_rng(seed)
    val_parts = []
    for label in np.unique(table.y):
        rows = np.flatnonzero(table.y == label)
        rng.shuffle(rows)
        take = round(len(rows) * percent / 100)
        # Keep at least one row of a class on each side when it has two or more.
        take = min(max(take, 1 if len(rows) > 1 else 0), len(rows) - 1 if len(rows) > 1 else 0)
        val_parts.append(rows[:take])
    val_rows = np.sort(np.concatenate(val_parts)) if val_parts else np.array([], np.int64)
    mask = np.ones(len(table), dtype=bool)
    mask[val_rows] = False
    return table.subset(np.flatnonzero(mask)), table.subset(val_rows)


def load_text_table(
    uri_or_path: str | Path,
    label_column: str,
    text_column: str,
    tokenizer: Any,
    max_length: int,
    *,
    require_labels: bool = True,
) -> Table:
    """A Parquet or CSV table whose ``text_column`` becomes token ids (see optimizer_job.hf)."""
    from optimizer_job import hf

    path = local_file(uri_or_path)
    if not path.is_file():
        raise BadInputError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            arrow = pq.read_table(path, columns=None)
        elif suffix == ".csv":
            arrow = pa_csv.read_csv(path)
        else:
            raise BadInputError(f"{path.name}: text data must be Parquet or CSV, not {suffix!r}")
    except (pa.ArrowInvalid, OSError, ValueError) as error:
        raise BadInputError(f"{path.name}: unreadable: {_one_line(error)}") from error
    if text_column not in arrow.column_names:
        raise BadInputError(f"{path.name}: no text column {text_column!r}")
    texts = ["" if t is None else str(t) for t in arrow.column(text_column).to_pylist()]
    if not texts:
        raise BadInputError(f"{path.name}: no rows")
    ids, stats = hf.tokenize(tokenizer, texts, max_length)
    y = None
    if label_column in arrow.column_names:
        y = _labels(arrow.column(label_column), label_column, path)
    elif require_labels:
        raise BadInputError(f"{path.name}: no label column {label_column!r}")
    return Table(ids, y, [f"token{i}" for i in range(max_length)], text_stats=stats)


def flat_features(table: Table) -> tuple[np.ndarray, list[str]]:
    """A 2-d view for statistics: images are flattened to one column per pixel; text is
    described by its statistics (token ids are not quantities)."""
    if table.text_stats is not None:
        return table.text_stats, ["text_length", "oov_rate"]
    if not table.is_image:
        return table.X, table.feature_names
    flat = table.X.reshape(len(table), -1)
    return flat, [f"px{j}" for j in range(flat.shape[1])]
