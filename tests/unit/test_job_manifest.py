"""MANIFEST digests and the atomic, never-overwriting publish of run directories."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from pathlib import Path

import pytest

from optimizer_job.manifest import ManifestError, verify_manifest, write_manifest
from optimizer_job.publish import RunDirectoryExistsError, publish_run_directory

pytestmark = pytest.mark.unit


def _files(directory: Path) -> None:
    (directory / "model.json").write_text('{"factory": "x:y"}')
    (directory / "model.safetensors").write_bytes(b"\x00\x01" * 100)
    (directory / "sub").mkdir()
    (directory / "sub" / "extra.txt").write_text("extra")


def test_manifest_lists_every_file_and_checks_with_sha256sum(tmp_path: Path) -> None:
    _files(tmp_path)
    (tmp_path / "result.json").write_text("{}")  # recorded after, so never listed
    digest = write_manifest(tmp_path)
    manifest = (tmp_path / "MANIFEST").read_text()
    assert digest == hashlib.sha256(manifest.encode()).hexdigest()
    assert [line.split("  ")[1] for line in manifest.splitlines()] == [
        "model.json",
        "model.safetensors",
        "sub/extra.txt",
    ]
    assert verify_manifest(tmp_path) == digest
    check = subprocess.run(["sha256sum", "-c", "MANIFEST"], cwd=tmp_path, capture_output=True)
    assert check.returncode == 0, check.stdout


def test_a_changed_file_is_named(tmp_path: Path) -> None:
    _files(tmp_path)
    write_manifest(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00\x02" * 100)
    with pytest.raises(ManifestError, match=r"model\.safetensors does not match"):
        verify_manifest(tmp_path)


def test_a_missing_or_unlisted_file_is_named(tmp_path: Path) -> None:
    _files(tmp_path)
    write_manifest(tmp_path)
    (tmp_path / "planted.py").write_text("import os")
    with pytest.raises(ManifestError, match=r"planted\.py is not listed"):
        verify_manifest(tmp_path)
    (tmp_path / "planted.py").unlink()
    (tmp_path / "sub" / "extra.txt").unlink()
    with pytest.raises(ManifestError, match=r"sub/extra\.txt .* missing"):
        verify_manifest(tmp_path)


def test_required_files_must_be_listed(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text("{}")
    write_manifest(tmp_path)
    with pytest.raises(ManifestError, match=r"model\.safetensors is not listed"):
        verify_manifest(tmp_path, required=("model.json", "model.safetensors"))


def test_publish_builds_in_a_hidden_sibling_then_renames(tmp_path: Path) -> None:
    final = tmp_path / "runs" / "r-1"
    seen: list[Path] = []

    def build(directory: Path) -> str:
        seen.append(directory)
        assert not final.exists()  # readers never see a half-written run
        _files(directory)
        return write_manifest(directory)

    digest = publish_run_directory(build, final)
    assert seen[0].parent == final.parent and seen[0].name.startswith(".r-1.tmp-")
    assert not seen[0].exists()
    assert verify_manifest(final) == digest
    assert sorted(p.name for p in final.parent.iterdir()) == ["r-1"]


def test_publish_never_replaces_an_existing_run(tmp_path: Path) -> None:
    final = tmp_path / "r-1"
    final.mkdir()
    (final / "keep").write_text("original")
    calls: list[Path] = []
    with pytest.raises(RunDirectoryExistsError):
        publish_run_directory(calls.append, final)
    assert calls == []
    assert (final / "keep").read_text() == "original"


def test_publish_never_replaces_even_an_empty_directory_appearing_during_the_build(
    tmp_path: Path,
) -> None:
    final = tmp_path / "r-1"

    def build(directory: Path) -> None:
        _files(directory)
        final.mkdir()  # a racing writer got there first

    with pytest.raises(RunDirectoryExistsError):
        publish_run_directory(build, final)
    assert list(final.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r-1"]  # temporary removed


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def build(directory: Path) -> None:
        _files(directory)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish_run_directory(build, tmp_path / "r-1")
    assert list(tmp_path.iterdir()) == []


def test_of_racing_writers_exactly_one_wins(tmp_path: Path) -> None:
    final = tmp_path / "r-1"
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def writer(index: int) -> None:
        def build(directory: Path) -> None:
            (directory / "who").write_text(str(index))
            barrier.wait()

        try:
            publish_run_directory(build, final)
            outcomes.append(f"won {index}")
        except RunDirectoryExistsError:
            outcomes.append("lost")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1 and outcomes.count("lost") == 3
    assert (final / "who").read_text() == winners[0].split()[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r-1"]
