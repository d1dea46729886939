"""The long chaos run: tests/e2e/test_chaos.py with many run requests, and its counts.

    nice .venv/bin/python bench/chaos.py --requests 30 --seed 11 [--operator-ref REV]

Runs the chaos scenario of tests/e2e/test_chaos.py (its own devcluster, the fault proxy
before the apiserver, SIGKILLs of the operator at seeded moments) with CHAOS_REQUESTS run
requests; the latency trigger starts more runs between them. Prints the report (runs,
outcomes, promotions, kills, faults injected by kind, violations) as JSON and appends a
line to --out. ``--operator-ref`` runs the operator's sources of an older commit instead
(exported with `git archive` to a temporary directory put first on the operator
process's path), to show which invariants that code broke.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--operator-ref", help="git revision of the operator to test")
    parser.add_argument("--out", type=Path, help="append the JSON report as one line here")
    args = parser.parse_args()
    env = dict(os.environ)
    env["CHAOS_REQUESTS"] = str(args.requests)
    env["CHAOS_SEED"] = str(args.seed)
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        report_path = Path(scratch) / "report.json"
        env["CHAOS_REPORT"] = str(report_path)
        if args.operator_ref:
            archive = subprocess.run(
                ["git", "archive", args.operator_ref, "operator/src/driftwarden"],
                cwd=PROJECT,
                capture_output=True,
                check=True,
            )
            subprocess.run(["tar", "-x", "-C", scratch], input=archive.stdout, check=True)
            env["CHAOS_OPERATOR_SRC"] = str(Path(scratch) / "operator" / "src")
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/e2e/test_chaos.py", "-p", "no:cacheprovider"],
            cwd=PROJECT,
            env=env,
            check=False,
        )
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report |= {
        "operator_ref": args.operator_ref or "worktree",
        "seconds": round(time.monotonic() - started),
        "pytest_rc": result.returncode,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        with args.out.open("a") as out:
            out.write(json.dumps(report) + "\n")
    return 0 if result.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
