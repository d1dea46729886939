"""Atomic publish of a run directory: build beside it, fsync, rename into place, never replace.

Readers (the serving app, the operator, a later run) see either no directory or a
complete one. Two writers racing for the same run directory cannot both win: the
final rename refuses to replace anything (``renameat2(RENAME_NOREPLACE)`` where the
kernel and filesystem allow it, an existence check plus ``rename`` otherwise, which
still cannot replace a non-empty directory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


class RunDirectoryExistsError(FileExistsError):
    """The run directory is already there; it is never replaced."""


def publish_run_directory(build: Callable[[Path], T], final_dir: Path) -> T:
    """Run ``build(tmp_dir)`` in a hidden sibling and rename it to ``final_dir``.

    Returns what ``build`` returned. Raises ``RunDirectoryExistsError`` when
    ``final_dir`` exists, before or after building; the temporary directory is removed
    on any failure.
    """
    final_dir = Path(final_dir)
    if final_dir.exists():
        raise RunDirectoryExistsError(f"run directory {final_dir} already exists; never replaced")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = final_dir.parent / f".{final_dir.name}.tmp-{secrets.token_hex(6)}"
    tmp_dir.mkdir()
    try:
        value = build(tmp_dir)
        _fsync_tree(tmp_dir)
        _rename_no_replace(tmp_dir, final_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    _fsync_dir(final_dir.parent)
    return value


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _renameat2() -> Callable[..., int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    function: Callable[..., int] | None = getattr(libc, "renameat2", None)
    return function


def _rename_no_replace(source: Path, target: Path) -> None:
    renameat2 = _renameat2()
    if renameat2 is not None:
        result = renameat2(
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
        )
        if result == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise RunDirectoryExistsError(f"run directory {target} already exists; never replaced")
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(target))
    # The filesystem cannot refuse a replace for us: check, then rename (which fails on
    # a non-empty target anyway).
    if target.exists():
        raise RunDirectoryExistsError(f"run directory {target} already exists; never replaced")
    try:
        source.rename(target)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise RunDirectoryExistsError(
                f"run directory {target} already exists; never replaced"
            ) from error
        raise
