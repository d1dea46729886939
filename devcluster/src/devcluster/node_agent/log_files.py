"""Where container logs are, and how to read their end — shared by the log server and the CLI.

Layout: `<state-dir>/logs/<namespace>_<pod>_<uid>/<container>.log`, stdout and stderr together,
every run of the container appended to the same file. A running container also has
`<state-dir>/pods/<uid>/containers/<container>/pid`.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path


def find_log(state_dir: Path, namespace: str, pod: str, container: str | None) -> Path | None:
    """The newest Pod of that name wins (a Pod re-created under the same name has a new uid)."""
    candidates = sorted(
        (state_dir / "logs").glob(f"{namespace}_{pod}_*"),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for directory in candidates:
        if (
            directory.name.count("_") < 2
            or directory.name.rsplit("_", 1)[0] != f"{namespace}_{pod}"
        ):
            continue
        if container:
            path = directory / f"{container}.log"
            if path.exists():
                return path
            continue
        logs = sorted(directory.glob("*.log"))
        if logs:
            return logs[0]
    return None


def is_running(state_dir: Path, log: Path) -> bool:
    uid = log.parent.name.rsplit("_", 1)[1]
    return (state_dir / "pods" / uid / "containers" / log.stem / "pid").exists()


def tail_bytes(data: bytes, lines: int | None, limit: int | None) -> bytes:
    """The last `lines` lines, then at most `limit` bytes of them (kubectl's tail / limit)."""
    if lines is not None:
        kept: deque[bytes] = deque(data.splitlines(keepends=True), maxlen=max(lines, 0))
        data = b"".join(kept)
    if limit is not None:
        data = data[:limit]
    return data
