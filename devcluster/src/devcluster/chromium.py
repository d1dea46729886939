"""Headless Chromium from Debian's packages, for tests that look at report.html as a person would.

There is no container engine and no system-wide install: ``ensure()`` downloads Debian's
``chromium-headless-shell`` (the headless-only build) and the shared libraries it needs that
the machine lacks with ``apt-get download`` (which needs no root), unpacks them with
``dpkg-deb -x`` into ``~/.cache/driftwarden/chromium-<version>/`` (built in a temporary
sibling and renamed into place, like the Go binaries), checks with ``ldd`` that nothing is
missing, and returns the binary. A second call finds the cache and downloads nothing.

    devcluster chromium            # prints the binary's path
    chromium.screenshot(html, png, (1200, 3000))
    chromium.dump_dom(html)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from devcluster.build import CACHE_ROOT

PACKAGE = "chromium-headless-shell"
# Packages its binary needs beyond a Debian 12 (bookworm) base with Python's usual libraries:
# chromium-common (its data), and the libraries ``ldd`` found missing, with theirs.
EXTRA_PACKAGES = (
    "chromium-common",
    "libdouble-conversion3",
    "libflac12",
    "libharfbuzz-subset0",
    "libminizip1",
    "libopenh264-7",
    "libopenjp2-7",
    "libopus0",
    "libpulse0",
    "libxnvctrl0",
    "libasyncns0",
    "libsndfile1",
    "libogg0",
    "libvorbis0a",
    "libvorbisenc2",
    "libmp3lame0",
    "libmpg123-0",
)
BINARY = Path("usr/lib/chromium/chromium-headless-shell")
LIBRARY_DIRS = (
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu/pulseaudio",
    "usr/lib/chromium",
)
TIMEOUT_SECONDS = 120


class ChromiumUnavailableError(RuntimeError):
    """Debian's chromium could not be fetched or does not run here (the message says why)."""


def candidate_version() -> str:
    """The version apt would fetch of the package (the newest in the configured mirrors)."""
    done = subprocess.run(
        ["apt-cache", "policy", PACKAGE], capture_output=True, text=True, check=False
    )
    for line in done.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "Candidate" and value.strip() not in ("", "(none)"):
            return value.strip()
    raise ChromiumUnavailableError(
        f"apt knows no {PACKAGE} candidate (run apt-get update?): {done.stderr.strip()}"
    )


def _installed() -> Path | None:
    for found in sorted(CACHE_ROOT.glob("chromium-*/"), reverse=True):
        if (found / BINARY).is_file():
            return found
    return None


def ensure() -> Path:
    """The chromium-headless-shell binary, downloaded and unpacked once."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise ChromiumUnavailableError("apt-get and dpkg-deb are needed (a Debian machine)")
    try:
        version = candidate_version()
    except ChromiumUnavailableError:
        cached = _installed()  # offline: the copy already there is fine
        if cached is not None:
            return cached / BINARY
        # A fresh machine whose package lists were never fetched (as `make tools` does).
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        version = candidate_version()
    root = CACHE_ROOT / f"chromium-{version.replace('~', '_').replace(':', '_')}"
    if (root / BINARY).is_file():
        return root / BINARY
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=CACHE_ROOT))
    try:
        debs = staging / "debs"
        debs.mkdir()
        fetched = subprocess.run(
            ["apt-get", "download", f"{PACKAGE}={version}", *EXTRA_PACKAGES],
            cwd=debs,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if fetched.returncode != 0:
            raise ChromiumUnavailableError(f"apt-get download failed: {fetched.stderr.strip()}")
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True)
        shutil.rmtree(debs)
        missing = missing_libraries(staging / BINARY)
        if missing:
            raise ChromiumUnavailableError(
                f"{PACKAGE} still lacks shared libraries: {', '.join(missing)}"
            )
        try:
            staging.rename(root)
        except OSError:
            if not (root / BINARY).is_file():  # another process won the race: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root / BINARY


def environment(binary: Path) -> dict[str, str]:
    """The environment the unpacked binary runs in: its libraries first."""
    root = binary.parents[len(BINARY.parts) - 1]
    paths = [str(root / d) for d in LIBRARY_DIRS]
    old = os.environ.get("LD_LIBRARY_PATH")
    return {
        **os.environ,
        "LD_LIBRARY_PATH": ":".join([*paths, *([old] if old else [])]),
        # No session bus here: say so instead of letting it try.
        "DBUS_SESSION_BUS_ADDRESS": "disabled:",
    }


def missing_libraries(binary: Path) -> list[str]:
    done = subprocess.run(
        ["ldd", str(binary)], capture_output=True, text=True, env=environment(binary), check=False
    )
    return [line.split()[0] for line in done.stdout.splitlines() if "not found" in line]


def _run(binary: Path, args: list[str], user_data: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(binary),
        # The sandbox needs user namespaces or a setuid helper; tests run as root in a
        # container-less VM, where Chromium refuses to start sandboxed.
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={user_data}",
        *args,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=environment(binary),
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise ChromiumUnavailableError(
            f"chromium exited {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    return done


def screenshot(page: Path, out: Path, size: tuple[int, int], binary: Path | None = None) -> Path:
    """A PNG screenshot of ``page`` (a local file) in a window of ``size`` pixels."""
    binary = binary or ensure()
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        _run(
            binary,
            [
                f"--screenshot={out}",
                f"--window-size={size[0]},{size[1]}",
                page.resolve().as_uri(),
            ],
            Path(profile),
        )
    if not out.is_file():
        raise ChromiumUnavailableError(f"chromium wrote no screenshot to {out}")
    return out


def dump_dom(page: Path, binary: Path | None = None, allow_file_access: bool = False) -> str:
    """The DOM of ``page`` after it loaded (and its scripts ran, for a test's own page)."""
    binary = binary or ensure()
    extra = ["--allow-file-access-from-files"] if allow_file_access else []
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        done = _run(
            binary,
            [*extra, "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
            Path(profile),
        )
    return done.stdout
