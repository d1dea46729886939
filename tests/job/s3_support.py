"""A real S3 server (versitygw, built by the devcluster tooling) for job tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import obstore
import pytest

from devcluster import s3
from optimizer_job import storage
from optimizer_job.contract import parse_s3_uri

BUCKET = "models"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3.S3Endpoint]:
    root = tmp_path_factory.mktemp("s3")
    with s3.serve(root) as endpoint:
        s3.create_bucket(root, BUCKET)
        yield endpoint


@pytest.fixture
def s3_env(s3_server: s3.S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> s3.S3Endpoint:
    """The job's environment pointed at the server, as the operator's Secret would."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


def upload_tree(local: Path, uri: str) -> None:
    """Upload every file under ``local`` to the prefix ``uri`` (as a user would with
    `aws s3 cp --recursive`), MANIFEST included."""
    bucket, prefix = parse_s3_uri(uri)
    store = storage.open_store(bucket, os.environ)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(local).as_posix()}".lstrip("/")
        obstore.put(store, key, path)
