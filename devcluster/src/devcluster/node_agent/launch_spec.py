"""What the agent tells `container_init` to do: the contract between the two processes.

Standard library only: `container_init` imports this before it execs the container, and every
import there delays the container's start.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BindMount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    working_dir: str = "/"
    hostname: str = ""
    mounts: list[BindMount] = field(default_factory=list)
    # Identity to switch to after the mounts are in place; None keeps root.
    uid: int | None = None
    gid: int | None = None
    groups: list[int] = field(default_factory=list)
    no_new_privileges: bool = False
    # Paths a non-root process must still reach (the interpreter, the project's sources)
    # even when an ancestor such as /root is closed to it.
    keep_reachable: list[str] = field(default_factory=list)
    # Run inside the namespaces of this running container (exec probes) instead of new ones.
    join_pid: int | None = None
    # Where a failure to exec the command is written, for the StartError status.
    start_error_path: str = ""
    # An empty host directory to build a private root in, should a mount path need one.
    scratch_dir: str = ""

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> LaunchSpec:
        raw = json.loads(path.read_text())
        raw["mounts"] = [BindMount(**m) for m in raw["mounts"]]
        return cls(**raw)
