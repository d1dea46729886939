"""The operator at scale (issue 16): N ModelOptimizations whose PVCs do not exist.

    nice .venv/bin/python bench/scale.py --resources 1000 [--operator-ref REV]
        [--idle-after S] [--idle-window S] [--out FILE]

Runs tests/e2e/test_scale.py (its own devcluster in a temporary directory; the operator as
a process with its production resync period) with SCALE_N resources and prints the report.
The resources are created by 16 threads at once over the REST API
(tests/e2e/scale_support.py), with a progress line about every 5 % on stderr; then:
settle time after create, reconcile p50/p99 from the operator's histogram, RSS, CPU of the
idle window as % of one core, and API requests per second in that window counted by
kube-apiserver (apiserver_request_total). ``--operator-ref`` runs the operator's sources of
an older commit (exported with `git archive`, put first on the operator process's path) for
a before/after on the same machine. The test's own bounds are for 200 resources; at other
sizes a failed assertion is expected and the report is still written.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--operator-ref", help="git revision of the operator to measure")
    parser.add_argument("--idle-after", type=float, default=10.0)
    parser.add_argument("--idle-window", type=float, default=60.0)
    parser.add_argument("--out", type=Path, help="append the JSON report as one line here")
    parser.add_argument(
        "--via-proxy",
        action="store_true",
        help="the operator talks to the apiserver through the devcluster's fault-free proxy, "
        "which counts its own requests exactly (as tests/e2e/test_scale.py does on the shared "
        "cluster); by default it talks directly, on this cluster of its own, and its idle "
        "requests are the apiserver's counts on the operator's resources",
    )
    args = parser.parse_args()
    env = dict(os.environ)
    env |= {
        "SCALE_N": str(args.resources),
        "SCALE_IDLE_AFTER": str(args.idle_after),
        "SCALE_IDLE_WINDOW": str(args.idle_window),
        "SCALE_DIRECT": "0" if args.via_proxy else "1",
    }
    with tempfile.TemporaryDirectory(prefix="scale-") as scratch:
        report_path = Path(scratch) / "report.json"
        env["SCALE_REPORT"] = str(report_path)
        if args.operator_ref:
            archive = subprocess.run(
                ["git", "archive", args.operator_ref, "operator/src/driftwarden"],
                cwd=PROJECT,
                capture_output=True,
                check=True,
            )
            subprocess.run(["tar", "-x", "-C", scratch], input=archive.stdout, check=True)
            env["SCALE_OPERATOR_SRC"] = str(Path(scratch) / "operator" / "src")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/e2e/test_scale.py::test_many_resources_settle_and_idle_cheaply",
                "-p",
                "no:cacheprovider",
                "-q",
                "-s",  # the create progress as it happens
            ],
            cwd=PROJECT,
            env=env,
            check=False,
        )
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report["operator_ref"] = args.operator_ref or "worktree"
    print(json.dumps(report, indent=2))
    if args.out:
        with args.out.open("a") as out:
            out.write(json.dumps(report) + "\n")
    return 0 if report.get("settle_seconds") is not None else 1


if __name__ == "__main__":
    sys.exit(main())
