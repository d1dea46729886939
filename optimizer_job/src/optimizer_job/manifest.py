"""The sha256 MANIFEST of a model directory.

Format: one ``<sha256>  <relative path>`` line per file, sorted by path — exactly what
``sha256sum`` prints, so ``sha256sum -c MANIFEST`` checks a directory by hand.
``result.json`` is left out: it records the MANIFEST's own digest, so it cannot be in it.
The digest of the MANIFEST file names the whole model version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from optimizer_job.contract import BadInputError

MANIFEST_NAME = "MANIFEST"
NOT_IN_MANIFEST = frozenset({MANIFEST_NAME, "result.json"})
_CHUNK = 1 << 20


class ManifestError(BadInputError):
    """A model directory whose files do not match its MANIFEST (tampered or incomplete)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _listed_files(directory: Path) -> list[str]:
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and str(p.relative_to(directory)) not in NOT_IN_MANIFEST
    )


def write_manifest(directory: Path) -> str:
    """Write MANIFEST for every file under ``directory``; returns the MANIFEST's sha256."""
    lines = [f"{sha256_file(directory / name)}  {name}\n" for name in _listed_files(directory)]
    (directory / MANIFEST_NAME).write_text("".join(lines), encoding="utf-8")
    return sha256_file(directory / MANIFEST_NAME)


def read_manifest(directory: Path) -> dict[str, str]:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{directory}: no MANIFEST")
    return parse_manifest(path.read_text(encoding="utf-8"), str(path))


def parse_manifest(text: str, where: str) -> dict[str, str]:
    """file name -> sha256 of a MANIFEST's text (``where`` names it in errors)."""
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise ManifestError(f"{where}: malformed line {number}")
        entries[name] = digest
    return entries


def verify_manifest(directory: Path, required: tuple[str, ...] = ()) -> str:
    """Check every listed file's digest; returns the MANIFEST's sha256.

    A changed, missing or unlisted file is a ``ManifestError`` naming the file.
    """
    entries = read_manifest(directory)
    for name in required:
        if name not in entries:
            raise ManifestError(f"{directory}: {name} is not listed in MANIFEST")
    for name, digest in entries.items():
        path = directory / name
        if ".." in Path(name).parts or not path.is_file():
            raise ManifestError(f"{directory}: {name} listed in MANIFEST is missing")
        if sha256_file(path) != digest:
            raise ManifestError(f"{directory}: {name} does not match its MANIFEST digest")
    unlisted = [name for name in _listed_files(directory) if name not in entries]
    if unlisted:
        raise ManifestError(f"{directory}: {unlisted[0]} is not listed in MANIFEST")
    return sha256_file(directory / MANIFEST_NAME)
