"""Tables in, checked: every kind of bad data is a BadInputError naming the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optimizer_job.contract import BadInputError
from optimizer_job.dataio import (
    SOURCE_CURRENT,
    SOURCE_REFERENCE,
    Table,
    align_features,
    check_labels,
    check_shape,
    concat,
    load_table,
    split_stratified,
)

pytestmark = pytest.mark.unit


def _parquet(path: Path, columns: dict[str, list[object]]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def _good_columns() -> dict[str, list[object]]:
    return {"b": [0.5, 1.5, 2.5], "a": [1, 2, 3], "label": [0, 1, 1], "flag": [True, False, True]}


def test_parquet_loads_with_features_in_the_requested_order(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "t.parquet", _good_columns())
    table = load_table(path.as_uri(), "label", ["a", "b"])
    assert table.feature_names == ["a", "b"]
    assert table.X.dtype == np.float32 and table.X.tolist() == [[1, 0.5], [2, 1.5], [3, 2.5]]
    assert table.y is not None and table.y.dtype == np.int64 and table.y.tolist() == [0, 1, 1]
    every = load_table(path, "label")
    assert every.feature_names == ["b", "a", "flag"]


def test_csv_and_npz_load(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("x,y2,label\n1,2,0\n3,4,2\n")
    table = load_table(tmp_path / "t.csv", "label")
    assert table.feature_names == ["x", "y2"] and table.y is not None
    assert table.y.tolist() == [0, 2]
    np.savez(tmp_path / "t.npz", X=np.ones((4, 3)), y=np.arange(4), feature_names=["p", "q", "r"])
    npz = load_table(tmp_path / "t.npz", "label", ["r", "p"])
    assert npz.feature_names == ["r", "p"] and npz.X.shape == (4, 2)
    np.savez(tmp_path / "img.npz", X=np.zeros((5, 1, 8, 8), np.float32), y=np.zeros(5, np.int64))
    images = load_table(tmp_path / "img.npz", "label")
    assert images.is_image and images.sample_shape == [1, 8, 8] and images.feature_names == []


def test_unlabelled_data_loads_when_labels_are_optional(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "t.parquet", {"a": [1.0, 2.0]})
    assert load_table(path, "label", require_labels=False).y is None
    with pytest.raises(BadInputError, match="label column 'label' missing"):
        load_table(path, "label")


@pytest.mark.parametrize(
    ("columns", "features", "message"),
    [
        ({"a": [1.0]}, None, "label column 'label' missing"),
        ({"a": [1.0], "label": [0]}, ["a", "zz"], "feature columns missing: zz"),
        ({"a": ["x"], "label": [0]}, None, "column 'a' has type string"),
        ({"a": [1.0, None], "label": [0, 1]}, None, "column 'a' has 1 missing values"),
        ({"a": [1.0, float("nan")], "label": [0, 1]}, None, "NaN or infinite values in columns: a"),
        ({"a": [1.0, float("inf")], "label": [0, 1]}, None, "NaN or infinite values in columns: a"),
        ({"a": [1.0], "label": [0.5]}, None, "label column 'label' has non-integer values"),
        ({"a": [1.0], "label": [-1]}, None, "negative class ids"),
        ({"a": [1.0], "label": ["cat"]}, None, "label column 'label' has type string"),
        ({"a": [1.0, 2.0], "label": [0, None]}, None, "label column 'label' has 1 missing"),
        ({"label": [0]}, None, "no feature columns"),
    ],
)
def test_bad_parquet_is_refused_with_a_reason(
    tmp_path: Path, columns: dict[str, list[object]], features: list[str] | None, message: str
) -> None:
    path = _parquet(tmp_path / "bad.parquet", columns)
    with pytest.raises(BadInputError, match=message) as caught:
        load_table(path, "label", features)
    assert "\n" not in str(caught.value)
    assert "bad.parquet" in str(caught.value)


def test_empty_data_is_refused(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "e.parquet", {"a": pa.array([], pa.float64()), "label": []})
    with pytest.raises(BadInputError, match="no rows"):
        load_table(path, "label")
    (tmp_path / "e.csv").write_text("a,label\n")
    with pytest.raises(BadInputError, match="no rows"):
        load_table(tmp_path / "e.csv", "label")
    (tmp_path / "zero.csv").write_text("")
    with pytest.raises(BadInputError, match=r"zero\.csv"):
        load_table(tmp_path / "zero.csv", "label")


def test_csv_with_an_empty_cell_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b,label\n1,,0\n2,3,1\n")
    with pytest.raises(BadInputError, match="column 'b' has 1 missing values"):
        load_table(tmp_path / "t.csv", "label")


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"Z": np.ones((2, 2))}, "needs an array named 'X'"),
        ({"X": np.ones((2, 2, 2)), "y": np.zeros(2)}, "2 .tabular. or 4"),
        ({"X": np.array([["a"], ["b"]]), "y": np.zeros(2)}, "features must be numeric"),
        ({"X": np.ones((3, 2)), "y": np.zeros(2)}, r"y has shape \(2,\), expected \(3,\)"),
        ({"X": np.full((2, 2), np.nan), "y": np.zeros(2)}, "NaN or infinite"),
        ({"X": np.ones((2, 2))}, "label array 'label' .or 'y'. missing"),
        ({"X": np.ones((0, 2)), "y": np.zeros(0)}, "no rows"),
        ({"X": np.ones((2, 2)), "y": np.zeros(2), "feature_names": ["a"]}, "1 feature_names"),
    ],
)
def test_bad_npz_is_refused_with_a_reason(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match=message):
        load_table(path, "label")


def test_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, X=np.array([{"a": 1}, {"b": 2}], dtype=object), y=np.zeros(2))
    with pytest.raises(BadInputError, match=r"obj\.npz"):
        load_table(path, "label")


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="data file not found"):
        load_table(tmp_path / "nope.parquet", "label")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(BadInputError, match=r"unsupported data format '\.xlsx'"):
        load_table(tmp_path / "t.xlsx", "label")


def test_feature_sets_are_aligned_to_the_model_or_refused() -> None:
    table = Table(np.array([[1, 2, 3]], np.float32), None, ["c", "a", "b"])
    aligned = align_features(table, ["a", "b", "c"], "data.current")
    assert aligned.X.tolist() == [[2, 3, 1]] and aligned.feature_names == ["a", "b", "c"]
    with pytest.raises(BadInputError, match=r"data\.current: .*missing d; unexpected c"):
        align_features(table, ["a", "b", "d"], "data.current")
    with pytest.raises(BadInputError, match=r"rows have shape \[3\], the model expects \[4\]"):
        check_shape(table, [4], "data.holdout")
    labelled = Table(table.X, np.array([7]), table.feature_names)
    with pytest.raises(BadInputError, match="class id 7 out of range for a 5-class model"):
        check_labels(labelled, 5, "data.holdout")


def test_stratified_split_is_deterministic_disjoint_and_keeps_sources() -> None:
    y = np.repeat(np.arange(3), 20)
    table = concat(
        [
            Table(np.arange(30, dtype=np.float32)[:, None], y[:30], ["v"]).with_source(
                SOURCE_REFERENCE
            ),
            Table(np.arange(30, 60, dtype=np.float32)[:, None], y[30:], ["v"]).with_source(
                SOURCE_CURRENT
            ),
        ]
    )
    train, val = split_stratified(table, 25, seed=3)
    again_train, _ = split_stratified(table, 25, seed=3)
    assert np.array_equal(train.X, again_train.X)
    assert len(train) + len(val) == 60
    assert not set(train.X[:, 0].tolist()) & set(val.X[:, 0].tolist())
    assert val.y is not None and np.bincount(val.y).tolist() == [5, 5, 5]
    assert val.source is not None
    assert np.array_equal(val.source, (val.X[:, 0] >= 30).astype(np.int8))
