"""The job's one storage interface: local paths for ``file://`` / ``pvc://`` and ``s3://``.

``s3://bucket/prefix`` works with any S3-compatible endpoint through one client library,
obstore (Rust's ``object_store``). Where it connects comes from the environment, named as
the AWS SDKs name it: ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), ``AWS_REGION``
(or ``AWS_DEFAULT_REGION``), ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
``AWS_SESSION_TOKEN`` — the operator hands the Job the Secret in ``spec.storage.secretRef``,
its keys prefixed (``contract.storage_environment``) — or workload identity
(``AWS_WEB_IDENTITY_TOKEN_FILE`` and ``AWS_ROLE_ARN``, set by the ServiceAccount's identity
webhook). No payload checksum headers are sent (some S3-compatible stores reject the CRC
trailers newer AWS SDKs add), and no credential is ever logged or written anywhere.

Integrity: everything read from a store is checked against a MANIFEST (sha256, the format
of ``optimizer_job.manifest``) while it streams to local scratch space, before anything
uses it. A model directory's MANIFEST lists its files; a data file is checked against the
MANIFEST beside it (same prefix). A mismatch, a file the MANIFEST lists but the store lacks,
or a file without an entry is bad input naming the file.

Publishing never overwrites: the files go under the run's prefix first, the MANIFEST last
and only if absent (a conditional PUT, ``If-None-Match: *``; where a store refuses
conditional writes, a HEAD checked just before). A prefix without a MANIFEST is
incomplete: it is never read as a model, and a run never reports it as its artifact.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from optimizer_job.contract import (
    BadInputError,
    is_s3_uri,
    parse_s3_uri,
    resolve_uri,
    storage_environment,
)
from optimizer_job.manifest import MANIFEST_NAME, ManifestError, parse_manifest

if TYPE_CHECKING:
    from obstore.store import S3Store

T = TypeVar("T")

_CHUNK = 8 << 20
# Every call to the store has an overall deadline: one slow endpoint fails the task
# (retried by the Job) instead of hanging it.
_TIMEOUT = "120s"
_CONNECT_TIMEOUT = "10s"
_CREDENTIAL_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


class StorageError(RuntimeError):
    """The store failed (network, permissions, server error): retried by the Job."""


class PrefixExistsError(FileExistsError):
    """The run's prefix already has a MANIFEST; it is never replaced."""


_scratch_root: Path | None = None


def scratch_dir(name: str) -> Path:
    """A fresh local directory for downloads (under $TMPDIR; removed at exit)."""
    global _scratch_root
    if _scratch_root is None:
        _scratch_root = Path(tempfile.mkdtemp(prefix="driftwarden-storage-"))
        atexit.register(shutil.rmtree, _scratch_root, True)
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_scratch_root))


# -- the client ----------------------------------------------------------------------


def store_config(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(S3 config, client options) from AWS SDK environment names. Without static
    credentials the client finds its own (web identity token, instance metadata)."""
    config: dict[str, Any] = {"virtual_hosted_style_request": False}
    for name, key in zip(
        _CREDENTIAL_NAMES, ("access_key_id", "secret_access_key", "session_token"), strict=True
    ):
        if env.get(name):
            config[key] = env[name]
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        config["endpoint"] = endpoint
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    config["region"] = region or "us-east-1"
    options: dict[str, Any] = {
        "timeout": _TIMEOUT,
        "connect_timeout": _CONNECT_TIMEOUT,
        "allow_http": bool(endpoint and endpoint.startswith("http://")),
    }
    return config, options


def open_store(bucket: str, env: Mapping[str, str] | None = None) -> S3Store:
    from obstore.store import S3Store

    config, options = store_config(storage_environment(os.environ if env is None else env))
    return S3Store(
        bucket,
        config=config,  # type: ignore[arg-type]
        client_options=options,  # type: ignore[arg-type]
        retry_config={
            "max_retries": 3,
            "retry_timeout": timedelta(seconds=60),
            "backoff": {"init_backoff": timedelta(milliseconds=200)},
        },
    )


def _redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """A store error message with any credential value blanked out."""
    env = storage_environment(os.environ if env is None else env)
    for name in _CREDENTIAL_NAMES:
        value = env.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return " ".join(text.split())[:300]


def _store_call(what: str, call: Callable[[], T]) -> T:
    """Run one store call; a missing object is FileNotFoundError, anything else from the
    store a StorageError (retried), with credentials never in the message."""
    from obstore.exceptions import (
        BaseError,
        NotFoundError,
        PermissionDeniedError,
        UnauthenticatedError,
    )

    try:
        return call()
    except NotFoundError as error:
        raise FileNotFoundError(what) from error
    except (PermissionDeniedError, UnauthenticatedError) as error:
        raise StorageError(f"{what}: access denied: {_redact(str(error))}") from error
    except BaseError as error:
        raise StorageError(f"{what}: {_redact(str(error))}") from error


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _safe_name(name: str, where: str) -> str:
    parts = PurePosixPath(name).parts
    if not parts or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ManifestError(f"{where}: MANIFEST entry {name!r} leaves its directory")
    return name


# -- reading -------------------------------------------------------------------------


def _read_bytes(store: S3Store, key: str, what: str) -> bytes:
    import obstore

    return _store_call(what, lambda: bytes(obstore.get(store, key).bytes()))


def _download_verified(store: S3Store, key: str, target: Path, digest: str, what: str) -> None:
    """Stream one object to ``target`` hashing as it goes; a wrong digest is bad input."""
    import obstore

    def fetch() -> str:
        sha = hashlib.sha256()
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as handle:
            for chunk in obstore.get(store, key).stream(min_chunk_size=_CHUNK):
                view = memoryview(chunk)
                sha.update(view)
                handle.write(view)
        return sha.hexdigest()

    try:
        got = _store_call(what, fetch)
    except FileNotFoundError as error:
        raise ManifestError(f"{what}: listed in MANIFEST but missing from the store") from error
    if got != digest:
        target.unlink(missing_ok=True)
        raise ManifestError(f"{what}: does not match its MANIFEST digest")


def _manifest_of(store: S3Store, bucket: str, prefix: str) -> tuple[bytes, dict[str, str]]:
    where = f"s3://{bucket}/{prefix}"
    try:
        raw = _read_bytes(store, _join(prefix, MANIFEST_NAME), f"{where}/{MANIFEST_NAME}")
    except FileNotFoundError as error:
        raise ManifestError(
            f"{where}: no MANIFEST (incomplete or not a model directory)"
        ) from error
    return raw, parse_manifest(raw.decode("utf-8", "replace"), where)


def fetch_directory(uri: str, target: Path | None = None) -> Path:
    """Download the directory ``s3://bucket/prefix`` (its MANIFEST's files) verified.

    Files under the prefix that the MANIFEST does not list are not downloaded.
    """
    bucket, prefix = parse_s3_uri(uri)
    store = open_store(bucket)
    raw, entries = _manifest_of(store, bucket, prefix)
    target = target if target is not None else scratch_dir("model")
    for name, digest in sorted(entries.items()):
        _safe_name(name, uri)
        _download_verified(
            store, _join(prefix, name), target / name, digest, f"{uri.rstrip('/')}/{name}"
        )
    (target / MANIFEST_NAME).write_bytes(raw)
    return target


def fetch_file(uri: str, target_dir: Path | None = None) -> Path:
    """Download one object verified against the MANIFEST beside it (same prefix)."""
    bucket, key = parse_s3_uri(uri)
    if not key:
        raise BadInputError(f"{uri}: names a bucket, not a file")
    parent, _, name = key.rpartition("/")
    store = open_store(bucket)
    _raw, entries = _manifest_of(store, bucket, parent)
    digest = entries.get(name)
    if digest is None:
        raise ManifestError(f"{uri}: not listed in the MANIFEST beside it")
    target_dir = target_dir if target_dir is not None else scratch_dir("data")
    _download_verified(store, key, target_dir / name, digest, uri)
    return target_dir / name


def fetch_unlisted(uri: str, name: str, target: Path) -> Path:
    """Download ``<uri>/<name>``, a file the MANIFEST leaves out (``result.json``, which
    records the MANIFEST's digest; its reader checks that digest)."""
    bucket, prefix = parse_s3_uri(uri)
    store = open_store(bucket)
    data = _read_bytes(store, _join(prefix, _safe_name(name, uri)), f"{uri}/{name}")
    (target / name).write_bytes(data)
    return target / name


def exists(uri: str) -> bool:
    """Whether an object is there (an s3:// URI)."""
    import obstore

    bucket, key = parse_s3_uri(uri)
    store = open_store(bucket)
    try:
        _store_call(uri, lambda: obstore.head(store, key))
    except FileNotFoundError:
        return False
    return True


def has_manifest(uri: str) -> bool:
    """Whether the prefix (directory) ``uri`` is complete: its MANIFEST is there."""
    bucket, prefix = parse_s3_uri(uri)
    return exists(f"s3://{bucket}/{_join(prefix, MANIFEST_NAME)}")


# -- local or remote: what the job calls -----------------------------------------------


def local_directory(uri_or_path: str | Path) -> Path:
    """A local model directory for a path, file://, pvc:// or s3:// URI (downloaded and
    verified for s3://)."""
    text = str(uri_or_path)
    if is_s3_uri(text):
        return fetch_directory(text)
    return resolve_uri(text) if "://" in text else Path(text)


def local_file(uri_or_path: str | Path) -> Path:
    """A local data file for a path, file://, pvc:// or s3:// URI."""
    text = str(uri_or_path)
    if is_s3_uri(text):
        return fetch_file(text)
    return resolve_uri(text) if "://" in text else Path(text)


# -- publishing ----------------------------------------------------------------------


def _put_if_absent(store: S3Store, key: str, data: bytes, what: str) -> None:
    """PUT only if no object is at ``key``: conditional where the store supports it,
    else a HEAD just before."""
    import obstore
    from obstore.exceptions import AlreadyExistsError, NotSupportedError, PreconditionError

    try:
        _store_call(what, lambda: obstore.put(store, key, data, mode="create"))
        return
    except StorageError as error:
        cause = error.__cause__
        if isinstance(cause, AlreadyExistsError | PreconditionError):
            raise PrefixExistsError(f"{what} already exists; never replaced") from error
        if not isinstance(cause, NotSupportedError) and "501" not in str(error):
            raise
    try:
        _store_call(what, lambda: obstore.head(store, key))
    except FileNotFoundError:
        _store_call(what, lambda: obstore.put(store, key, data))
        return
    raise PrefixExistsError(f"{what} already exists; never replaced")


def _upload(store: S3Store, key: str, path: Path, what: str) -> None:
    import obstore

    _store_call(what, lambda: obstore.put(store, key, path))


def publish_directory(local: Path, uri: str) -> None:
    """Upload ``local`` to the prefix ``uri``: every file, then the MANIFEST only if absent.

    Raises ``PrefixExistsError`` when the prefix already has a MANIFEST (before or after
    uploading). Files of an incomplete prefix (no MANIFEST: an attempt that died) may be
    rewritten; no reader uses such a prefix.
    """
    bucket, prefix = parse_s3_uri(uri)
    store = open_store(bucket)
    manifest_key = _join(prefix, MANIFEST_NAME)
    if has_manifest(uri):
        raise PrefixExistsError(f"{uri}/{MANIFEST_NAME} already exists; never replaced")
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    for path in files:
        key = _join(prefix, path.relative_to(local).as_posix())
        _upload(store, key, path, f"s3://{bucket}/{key}")
    _put_if_absent(
        store, manifest_key, (local / MANIFEST_NAME).read_bytes(), f"s3://{bucket}/{manifest_key}"
    )


def publish(
    build: Callable[[Path], T], uri: str, local_publish: Callable[[Callable[[Path], T], Path], T]
) -> T:
    """Build a run directory and publish it at ``uri``: the local publisher (atomic
    rename) for paths and pvc:// / file://, an upload for s3://."""
    if not is_s3_uri(uri):
        return local_publish(build, resolve_uri(uri) if "://" in uri else Path(uri))
    if has_manifest(uri):
        raise PrefixExistsError(f"{uri}/{MANIFEST_NAME} already exists; never replaced")
    staging = scratch_dir("publish")
    value = build(staging)
    publish_directory(staging, uri)
    return value
