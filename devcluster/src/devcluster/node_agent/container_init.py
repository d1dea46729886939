"""Turn this process into a container, then exec its command.

Run as root by the agent (`python -m devcluster.node_agent.container_init SPEC [FD]`): enter new
mount and UTS namespaces, bind-mount the Pod's volumes at their mount paths, set the hostname,
drop to the Pod's user and groups, change to the working directory and exec. The process keeps
its PID through the exec, so the agent's handle is the container's main process.

Nothing here changes the host's file system. A mount path that does not exist (`/data`,
`/var/run/secrets/...`) is made inside the namespace: the directory that would hold it is
covered by a tmpfs that re-binds everything that was in it, and the new mount point goes on
that tmpfs. For `/` itself the namespace pivots to a tmpfs root built the same way.

Standard library only, and nothing heavy: this runs before every container start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import stat
import sys
from pathlib import Path

from devcluster.node_agent.launch_spec import BindMount, LaunchSpec

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
PR_SET_NO_NEW_PRIVS = 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine(), 155)
START_ERROR_EXIT_CODE = 128
# Covering a directory re-binds each entry; past this many, the mount point is made on the
# host instead (an empty directory) rather than making a container start slow.
MAX_SHADOW_ENTRIES = 400

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode() if source is not None else None,
            target.encode(),
            fstype.encode() if fstype is not None else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def _reachable(path: str, uid: int, gids: set[int]) -> bool:
    """Can `uid` search this directory (the x bit that applies to it)?"""
    info = Path(path).stat()
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in gids:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def _copy_entry(source: Path, target: Path) -> None:
    """Make `target` show what `source` is: a symlink copy or a bind mount."""
    if source.is_symlink():
        target.symlink_to(source.readlink())
    elif source.is_dir():
        target.mkdir()
        _mount(str(source), str(target), None, MS_BIND | MS_REC)
    else:
        target.touch()
        _mount(str(source), str(target), None, MS_BIND)


class _Namespace:
    """The container's mount namespace, and which of its directories are ours to write."""

    def __init__(self, scratch_dir: str) -> None:
        self._scratch = scratch_dir
        self._own_devices: set[int] = set()
        self._fds: dict[str, int] = {}

    def hold(self, paths: list[str]) -> None:
        """Open handles now, so bind sources stay reachable after anything covers them."""
        for path in paths:
            if path not in self._fds and Path(path).exists():
                self._fds[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)

    def tmpfs(self, target: str, mode: int = 0o755) -> None:
        _mount("tmpfs", target, "tmpfs", 0, f"mode={mode:o}")
        self._own_devices.add(Path(target).stat().st_dev)

    def bind(self, source: str, target: str, *, read_only: bool) -> None:
        handle = f"/proc/self/fd/{self._fds[source]}"
        self.ensure_mount_point(target, directory=Path(handle).is_dir())
        _mount(handle, target, None, MS_BIND | MS_REC)
        if read_only:
            _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC)

    @staticmethod
    def _anchor(target: str) -> Path | None:
        """The existing directory a missing mount point would be made in; None if it exists."""
        path = Path(target)
        if path.exists() or path.is_symlink():
            return None
        anchor = path.parent
        while not anchor.exists():
            anchor = anchor.parent
        return anchor.resolve()

    def prepare_root(self, targets: list[str]) -> None:
        """Pivot to a private root first if any mount point would be made in `/`.

        It must come before any handle is opened: a bind mount's source has to be in the
        namespace's own tree, and the pivot detaches the old one.
        """
        if self._scratch and any(self._anchor(t) == Path("/") for t in targets):
            self._shadow_root()

    def ensure_mount_point(self, target: str, *, directory: bool) -> None:
        anchor = self._anchor(target)
        if anchor is None:
            return
        path = Path(target)
        ours = anchor.stat().st_dev in self._own_devices
        # /dev is a RAM file system: a mount point made there is gone at reboot.
        if not ours and anchor not in (Path("/"), Path("/dev")):
            self._shadow(anchor)
        path.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            path.mkdir()
        else:
            path.touch()

    def _shadow(self, directory: Path) -> None:
        entries = sorted(entry.name for entry in directory.iterdir())
        if len(entries) > MAX_SHADOW_ENTRIES:
            return
        original = os.open(directory, os.O_PATH | os.O_CLOEXEC)
        try:
            info = directory.stat()
            self.tmpfs(str(directory), info.st_mode & 0o7777)
            os.chown(directory, info.st_uid, info.st_gid)
            for name in entries:
                _copy_entry(Path(f"/proc/self/fd/{original}", name), directory / name)
        finally:
            os.close(original)

    def _shadow_root(self) -> None:
        """Pivot to a tmpfs root holding binds of everything in the host's root."""
        staging = self._scratch
        entries = sorted(entry.name for entry in Path("/").iterdir())
        self.tmpfs(staging)
        for name in entries:
            _copy_entry(Path("/", name), Path(staging, name))
        # The recursive binds copied the staging mount into itself; drop that copy.
        inner = Path(staging + staging)
        if inner.is_dir() and os.path.ismount(inner):
            _check(_libc.umount2(str(inner).encode(), MNT_DETACH), f"umount {inner}")
        Path(staging, ".host").mkdir()
        _check(
            _libc.syscall(SYS_PIVOT_ROOT, staging.encode(), f"{staging}/.host".encode()),
            "pivot_root",
        )
        os.chdir("/")
        _check(_libc.umount2(b"/.host", MNT_DETACH), "umount /.host")
        Path("/.host").rmdir()


def _expose_closed_ancestors(
    spec: LaunchSpec, namespace: _Namespace, uid: int, gids: set[int]
) -> None:
    """Keep the interpreter reachable for a non-root user although e.g. /root is mode 0700.

    A directory the user cannot search is covered, in this mount namespace only, by an empty
    tmpfs, and each path the container needs below it is bound back in. The rest of that
    directory stays hidden, as it would in an image.
    """
    keeps = [path for path in spec.keep_reachable if Path(path).is_dir()]
    for keep in keeps:
        while True:
            parts = Path(keep).parts
            closed = next(
                (
                    str(Path(*parts[:i]))
                    for i in range(1, len(parts))
                    if not _reachable(str(Path(*parts[:i])), uid, gids)
                ),
                None,
            )
            if closed is None:
                break
            namespace.tmpfs(closed)
            for other in keeps:
                if other.startswith(closed.rstrip("/") + "/"):
                    Path(other).mkdir(mode=0o755, parents=True, exist_ok=True)
                    namespace.bind(other, other, read_only=False)


def _covers(mount_target: str, path: str) -> bool:
    return path == mount_target or path.startswith(mount_target.rstrip("/") + "/")


def _rebind_covered(spec: LaunchSpec, namespace: _Namespace, targets: list[str]) -> None:
    """Bind the interpreter and project back where a volume hides them.

    A checkout under /tmp is hidden by the usual emptyDir on /tmp (a read-only root file
    system needs one): the held handles still reach the originals, so they go back on top,
    read-only.
    """
    covered = [k for k in spec.keep_reachable if any(_covers(t, k) for t in targets)]
    for keep in sorted(covered, key=len):
        namespace.bind(keep, keep, read_only=True)


def _enter_namespaces(spec: LaunchSpec) -> None:
    if spec.join_pid is not None:
        for kind, flag in (("mnt", CLONE_NEWNS), ("uts", CLONE_NEWUTS)):
            fd = os.open(f"/proc/{spec.join_pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _check(_libc.setns(fd, flag), f"setns {kind}")
            finally:
                os.close(fd)
        return
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    # Nothing mounted here may leak back to the host.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    if spec.hostname:
        name = spec.hostname.encode()
        _check(_libc.sethostname(name, len(name)), "sethostname")


def _mount_volumes(spec: LaunchSpec) -> None:
    mounts: list[BindMount] = spec.mounts
    namespace = _Namespace(spec.scratch_dir)
    namespace.prepare_root([m.target for m in mounts] + [spec.working_dir])
    namespace.hold([m.source for m in mounts] + list(spec.keep_reachable))
    try:
        if spec.uid not in (None, 0):
            gids = {spec.gid or 0, *spec.groups}
            _expose_closed_ancestors(spec, namespace, spec.uid, gids)
        for mount in mounts:
            namespace.bind(mount.source, mount.target, read_only=mount.read_only)
        _rebind_covered(spec, namespace, [m.target for m in mounts])
        namespace.ensure_mount_point(spec.working_dir, directory=True)
    finally:
        namespace.close()


def _drop_privileges(spec: LaunchSpec) -> None:
    if spec.uid is None and spec.gid is None and not spec.groups:
        return
    os.setgroups(spec.groups)
    os.setgid(spec.gid if spec.gid is not None else 0)
    if spec.uid is not None:
        os.setuid(spec.uid)


def become_container(spec: LaunchSpec) -> None:
    _enter_namespaces(spec)
    if spec.join_pid is None:
        _mount_volumes(spec)
    _drop_privileges(spec)
    if spec.no_new_privileges:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
    os.chdir(spec.working_dir)


def main() -> None:
    spec_path = Path(sys.argv[1])
    if len(sys.argv) > 2:
        # The agent holds the other end of this pipe: it reads EOF once exec succeeded.
        os.set_inheritable(int(sys.argv[2]), False)
    spec = LaunchSpec.read(spec_path)
    spec_path.unlink(missing_ok=True)  # it may hold secret values
    try:
        become_container(spec)
        os.execvpe(spec.argv[0], spec.argv, spec.env)  # noqa: S606 (no shell on purpose)
    except OSError as error:
        message = f"failed to start container process {spec.argv[:1]}: {error}"
        if spec.start_error_path:
            with contextlib.suppress(OSError):
                Path(spec.start_error_path).write_text(message)
        print(message, file=sys.stderr)
        os._exit(START_ERROR_EXIT_CODE)


if __name__ == "__main__":
    main()
