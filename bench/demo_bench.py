"""How long `make demo` takes, step by step, once the Go binaries are built.

    .venv/bin/python bench/demo_bench.py [--ci] [--runs N]

Runs `python -m devcluster.demo` in a temporary state directory (never ./.devcluster),
reads the elapsed time the demo prints at the start of each step, tears the cluster down,
and prints a Markdown table for bench/RESULTS.md. The machine's load average is printed
too: on two shared cores it moves every number here.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devcluster.controlplane import Cluster

STEP = re.compile(r"^==> \[(\d+)/(\d+)\] (.*?)\s+\((\d+):(\d\d)\)$")


def run_once(ci: bool) -> tuple[int, float, list[tuple[str, int]]]:
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as tmp:
        state = Path(tmp) / "state"
        argv = [sys.executable, "-m", "devcluster.demo", "--state-dir", str(state)]
        started = time.monotonic()
        try:
            result = subprocess.run(
                argv + (["--ci"] if ci else []), capture_output=True, text=True, check=False
            )
        finally:
            Cluster(state).down()
        total = time.monotonic() - started
    steps = []
    for line in result.stdout.splitlines():
        match = STEP.match(line)
        if match:
            steps.append((match.group(3), int(match.group(4)) * 60 + int(match.group(5))))
    return result.returncode, total, steps


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ci", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    for number in range(1, args.runs + 1):
        load = os.getloadavg()[0]
        code, total, steps = run_once(args.ci)
        mode = "--ci" if args.ci else "full"
        print(f"\nrun {number} ({mode}): exit {code}, {total:.0f} s, load average {load:.1f}")
        print("| step | starts at (s) | takes (s) |\n| --- | --- | --- |")
        for index, (name, start) in enumerate(steps):
            end = steps[index + 1][1] if index + 1 < len(steps) else None
            took = "" if end is None else str(end - start)
            print(f"| {name} | {start} | {took} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
