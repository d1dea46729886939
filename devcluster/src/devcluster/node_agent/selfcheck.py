"""Before registering the Node: can this machine run containers the way the agent does?

One throwaway container — new namespaces, a bind mount at a path that does not exist, a switch
to a non-root user that must still reach the interpreter — tells at start-up, with the reason,
what would otherwise fail on every Pod later.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from devcluster.node_agent.container_spec import interpreter_paths
from devcluster.node_agent.launch_spec import BindMount, LaunchSpec

CHECK_UID = 65532


def check_container_runtime(python_bin_dir: Path) -> str | None:
    """None if a container can start here, else what went wrong."""
    with tempfile.TemporaryDirectory(prefix="devcluster-selfcheck-") as scratch:
        root = Path(scratch)
        root.chmod(0o755)
        volume = root / "volume"
        volume.mkdir()
        (volume / "probe").write_text("ok")
        container_dir = root / "container"
        container_dir.mkdir()
        target = f"/devcluster-selfcheck-{Path(scratch).name}"
        spec = LaunchSpec(
            argv=["python", "-c", f"print(open('{target}/probe').read())"],
            env={"PATH": f"{python_bin_dir}:/usr/bin:/bin"},
            mounts=[BindMount(str(volume), target, read_only=True)],
            uid=CHECK_UID,
            gid=CHECK_UID,
            keep_reachable=interpreter_paths(),
            scratch_dir=str(container_dir),
        )
        spec_path = root / "spec.json"
        spec.write(spec_path)
        result = subprocess.run(
            [sys.executable, "-I", "-m", "devcluster.node_agent.container_init", str(spec_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd="/",
        )
        if result.returncode != 0 or result.stdout.strip() != "ok":
            return (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
        if Path(target).exists():
            return f"the mount point {target} leaked onto the host"
    return None
