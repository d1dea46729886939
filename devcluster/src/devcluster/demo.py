"""`make demo`: DriftWarden on the embedded devcluster.

Brings the devcluster up in ./.devcluster (kept running afterwards so you can look
around), applies the CRD and shows the cluster. Later stages of the demo (the
whole optimization loop) build on this.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from devcluster.controlplane import Cluster, ComponentFailedError

REPO_ROOT = Path(__file__).resolve().parents[3]


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devcluster.demo", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=REPO_ROOT / ".devcluster")
    args = parser.parse_args(argv)
    started = time.monotonic()

    step("Starting the devcluster (etcd, kube-apiserver, controller-manager, scheduler, node)")
    cluster = Cluster(args.state_dir)
    try:
        cluster.up()
    except ComponentFailedError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1

    step("Installing the ModelOptimization CRD")
    print(cluster.kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds")).stdout)
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/modeloptimizations.driftwarden.io",
    )

    step("The cluster")
    print(cluster.kubectl("get", "nodes,crd", "-o", "wide").stdout)

    elapsed = time.monotonic() - started
    print(f"\nDone in {elapsed:.0f} s. The devcluster keeps running:")
    print(f'  eval "$(.venv/bin/devcluster env --state-dir {args.state_dir})"')
    print("  kubectl get nodes,mo -A")
    print("  tear down: make demo-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
