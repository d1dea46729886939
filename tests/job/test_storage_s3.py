"""s3:// storage against a real S3 server (versitygw): verified reads, never-overwrite
publishing, data files, and a whole optimize task from s3:// to s3://."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import obstore
import pytest
import torch
from tests.job.s3_support import BUCKET, s3_env, s3_server, upload_tree

from optimizer_job import dataio, storage, zoo
from optimizer_job.contract import BadInputError, RetrainStage, Task
from optimizer_job.example import make_example
from optimizer_job.manifest import MANIFEST_NAME, ManifestError, write_manifest
from optimizer_job.modelio import build_model, load_model, save_model
from optimizer_job.runner import run_task

pytestmark = pytest.mark.job
__all__ = ["s3_env", "s3_server"]

KWARGS: dict[str, Any] = {"in_features": 8, "num_classes": 3, "hidden": [16]}


def _model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    directory = tmp_path / "model"
    save_model(
        build_model(zoo.MLP_FACTORY, KWARGS),
        zoo.MLP_FACTORY,
        KWARGS,
        directory,
        input_shape=[8],
        num_classes=3,
    )
    return directory


def _store() -> Any:
    return storage.open_store(BUCKET)


def test_model_directory_round_trip_is_verified(s3_env: Any, tmp_path: Path) -> None:
    local = _model_dir(tmp_path)
    uri = f"s3://{BUCKET}/roundtrip/v1"
    storage.publish_directory(local, uri)
    fetched = storage.fetch_directory(uri, tmp_path / "fetched")
    x = torch.randn(4, 8)
    torch.testing.assert_close(load_model(fetched).module(x), load_model(local).module(x))


def test_changed_or_missing_object_is_bad_input_naming_it(s3_env: Any, tmp_path: Path) -> None:
    local = _model_dir(tmp_path)
    uri = f"s3://{BUCKET}/tampered/v1"
    storage.publish_directory(local, uri)
    obstore.put(_store(), "tampered/v1/model.json", b"{}")
    with pytest.raises(ManifestError, match=r"model\.json: does not match its MANIFEST"):
        storage.fetch_directory(uri, tmp_path / "a")
    obstore.put(_store(), "tampered/v1/model.json", (local / "model.json").read_bytes())
    obstore.delete(_store(), "tampered/v1/model.safetensors")
    with pytest.raises(ManifestError, match=r"model\.safetensors: listed in MANIFEST but missing"):
        storage.fetch_directory(uri, tmp_path / "b")


def test_prefix_without_manifest_is_incomplete(s3_env: Any, tmp_path: Path) -> None:
    local = _model_dir(tmp_path)
    (local / MANIFEST_NAME).unlink()
    upload_tree(local, f"s3://{BUCKET}/incomplete/v1")
    assert not storage.has_manifest(f"s3://{BUCKET}/incomplete/v1")
    with pytest.raises(ManifestError, match="no MANIFEST"):
        storage.fetch_directory(f"s3://{BUCKET}/incomplete/v1")


def test_publishing_never_overwrites(s3_env: Any, tmp_path: Path) -> None:
    first = _model_dir(tmp_path)
    uri = f"s3://{BUCKET}/runs/opt/r-1"
    storage.publish_directory(first, uri)
    before = bytes(obstore.get(_store(), "runs/opt/r-1/MANIFEST").bytes())
    second = tmp_path / "second"
    torch.manual_seed(1)
    save_model(build_model(zoo.MLP_FACTORY, KWARGS), zoo.MLP_FACTORY, KWARGS, second)
    with pytest.raises(storage.PrefixExistsError):
        storage.publish_directory(second, uri)
    assert bytes(obstore.get(_store(), "runs/opt/r-1/MANIFEST").bytes()) == before
    # The conditional write itself refuses: a MANIFEST that appears between the check
    # and the write (another attempt of the run) is not replaced either.
    with pytest.raises(storage.PrefixExistsError):
        storage._put_if_absent(_store(), "runs/opt/r-1/MANIFEST", b"x", "MANIFEST")
    assert bytes(obstore.get(_store(), "runs/opt/r-1/MANIFEST").bytes()) == before


def test_data_file_is_checked_against_the_manifest_beside_it(s3_env: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    np.savez(
        data / "table.npz", X=rng.normal(size=(20, 8)).astype(np.float32), y=rng.integers(0, 3, 20)
    )
    (data / "unlisted.npz").write_bytes((data / "table.npz").read_bytes())
    write_manifest(data)
    upload_tree(data, f"s3://{BUCKET}/data")
    table = dataio.load_table(f"s3://{BUCKET}/data/table.npz", "label")
    assert table.X.shape == (20, 8)
    obstore.put(_store(), "data/late.npz", (data / "table.npz").read_bytes())
    with pytest.raises(BadInputError, match=r"late\.npz: not listed in the MANIFEST"):
        dataio.load_table(f"s3://{BUCKET}/data/late.npz", "label")
    obstore.put(_store(), "data/table.npz", b"changed")
    with pytest.raises(BadInputError, match=r"table\.npz: does not match its MANIFEST"):
        dataio.load_table(f"s3://{BUCKET}/data/table.npz", "label")


def test_credentials_never_appear_in_errors(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value-123")
    with pytest.raises(storage.StorageError) as caught:
        storage.fetch_directory(f"s3://{BUCKET}/roundtrip/v1", tmp_path / "x")
    for value in ("wrong-secret-value-123", s3_server.secret_key):
        assert value not in str(caught.value)


def test_optimize_task_reads_and_publishes_s3(s3_env: Any, tmp_path: Path) -> None:
    example = make_example(tmp_path / "example", logging.getLogger("test"), epochs=5)
    out = Path(example["out"])
    upload_tree(out / "model", f"s3://{BUCKET}/in/model")
    write_manifest(out / "data")
    upload_tree(out / "data", f"s3://{BUCKET}/in/data")
    base = Task.model_validate_json((out / "task-optimize.json").read_text())
    task = base.model_copy(
        update={
            "model_uri": f"s3://{BUCKET}/in/model",
            "data": base.data.model_copy(
                update={
                    k: f"s3://{BUCKET}/in/data/{Path(getattr(base.data, k)).name}"
                    for k in ("reference", "current", "holdout")
                }
            ),
            "artifacts_uri": f"s3://{BUCKET}/runs",
            "stages": [RetrainStage(epochs=2)],
        }
    )
    result = run_task(task)
    artifact = f"s3://{BUCKET}/runs/{task.optimization}/{task.run_id}"
    assert result.ok and result.artifact_uri == artifact
    assert storage.has_manifest(artifact)
    assert storage.exists(f"{artifact}/result.json")
    loaded = load_model(storage.fetch_directory(artifact))
    assert loaded.meta["lineage"]["parent"] == f"s3://{BUCKET}/in/model"
    # The same run again finds its published result and redoes nothing.
    again = run_task(task)
    assert again == result
