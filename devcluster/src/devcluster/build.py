"""Builds the devcluster's Go binaries into a cache outside the clone.

Each Go module under devcluster/ (go/: the control plane and kubectl, helm/: helm,
s3/: the versitygw S3 server, dns/: CoreDNS with the kubernetes plugin, the cluster DNS)
is built into ``~/.cache/driftwarden/bin/<module>-<key>/`` where the key hashes the
module's go.mod, go.sum, its Go source (tools.go or main.go) and the Go version: a rebuild
happens only when a pin changes, and Go's own build cache (GOCACHE) makes even that incremental.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEVCLUSTER_ROOT = Path(__file__).resolve().parents[2]
CACHE_ROOT = Path(os.environ.get("DRIFTWARDEN_CACHE", Path.home() / ".cache" / "driftwarden"))


@dataclass(frozen=True)
class Binary:
    name: str
    package: str


@dataclass(frozen=True)
class GoModule:
    directory: str
    binaries: tuple[Binary, ...]
    cold_minutes: int  # measured on a 2-core machine; shown before a cold build
    # Go module whose version the binaries should report (as a release build would).
    version_of: str | None = None
    version_vars: tuple[str, ...] = ()
    # The files whose bytes (with the Go version) key the cache directory.
    sources: tuple[str, ...] = ("go.mod", "go.sum", "tools.go")


CONTROL_PLANE = GoModule(
    "go",
    (
        Binary("etcd", "go.etcd.io/etcd/server/v3"),
        Binary("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
        Binary("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
        Binary("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
        Binary("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
    ),
    cold_minutes=5,
    version_of="k8s.io/kubernetes",
    version_vars=(
        "k8s.io/component-base/version.gitVersion",
        "k8s.io/client-go/pkg/version.gitVersion",
    ),
)
HELM = GoModule("helm", (Binary("helm", "helm.sh/helm/v4/cmd/helm"),), cold_minutes=3)
# The S3 server for s3:// storage tests (versitygw, POSIX backend): 2.5 min on 2 busy cores.
S3 = GoModule(
    "s3",
    (Binary("versitygw", "github.com/versity/versitygw/cmd/versitygw"),),
    cold_minutes=3,
    version_of="github.com/versity/versitygw",
    version_vars=("main.Version",),
)
# CoreDNS from its own module: a main package that registers only the plugins the cluster
# DNS uses (a stock build compiles every cloud provider's SDK).
DNS = GoModule(
    "dns",
    (Binary("coredns", "."),),
    cold_minutes=3,
    sources=("go.mod", "go.sum", "main.go"),
)
MODULES = (CONTROL_PLANE, HELM, S3, DNS)


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise SystemExit("devcluster: Go is not installed (needed once to build the binaries)")
    return go


def _go_env() -> dict[str, str]:
    # GOTOOLCHAIN=local: never download a toolchain; CGO off: static binaries.
    return {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}


def _ldflags(module: GoModule) -> str:
    flags = "-s -w"
    if module.version_of:
        # Without this a binary built from the module cache reports v0.0.0-master.
        gomod = (DEVCLUSTER_ROOT / module.directory / "go.mod").read_text()
        match = re.search(rf"^\s*{re.escape(module.version_of)} (v\S+)", gomod, re.MULTILINE)
        if match:
            flags += "".join(f" -X {var}={match.group(1)}" for var in module.version_vars)
    return flags


def cache_dir(module: GoModule) -> Path:
    src = DEVCLUSTER_ROOT / module.directory
    digest = hashlib.sha256(_ldflags(module).encode())
    for name in module.sources:
        digest.update((src / name).read_bytes())
    version = subprocess.run(
        [_go(), "env", "GOVERSION"], capture_output=True, text=True, check=True, env=_go_env()
    ).stdout.strip()
    digest.update(version.encode())
    return CACHE_ROOT / "bin" / f"{module.directory}-{digest.hexdigest()[:12]}"


def _complete(directory: Path, module: GoModule) -> bool:
    return all((directory / b.name).is_file() for b in module.binaries)


def ensure_built(module: GoModule, *, log: bool = True) -> Path:
    """Return the directory holding the module's binaries, building them if needed."""
    target = cache_dir(module)
    if _complete(target, module):
        return target
    names = ", ".join(b.name for b in module.binaries)
    if log:
        print(
            f"devcluster: building {names} from their Go modules (one time; about "
            f"{module.cold_minutes} min on 2 cores without a Go build cache)...",
            file=sys.stderr,
            flush=True,
        )
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build into a temporary sibling and rename: a killed build leaves no half directory.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for binary in module.binaries:
            subprocess.run(
                [
                    _go(),
                    "build",
                    "-trimpath",
                    f"-ldflags={_ldflags(module)}",
                    "-o",
                    str(staging / binary.name),
                    binary.package,
                ],
                cwd=DEVCLUSTER_ROOT / module.directory,
                env=_go_env(),
                check=True,
            )
        try:
            staging.rename(target)
        except OSError:
            if not _complete(target, module):  # lost a race with a parallel build
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if log:
        print(f"devcluster: built {names} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return target


def ensure_all(*, log: bool = True) -> dict[str, Path]:
    """Build every module; return binary name -> path."""
    paths: dict[str, Path] = {}
    for module in MODULES:
        directory = ensure_built(module, log=log)
        paths.update({b.name: directory / b.name for b in module.binaries})
    return paths


def binary(name: str) -> Path:
    for module in MODULES:
        if any(b.name == name for b in module.binaries):
            return ensure_built(module) / name
    raise KeyError(name)
