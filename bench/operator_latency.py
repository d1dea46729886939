"""How quickly the operator reacts: a run request -> its Job exists, the Job completes ->
its result is in status, and what one reconcile pass costs.

    nice .venv/bin/python bench/operator_latency.py --runs 5 [--state-dir DIR]

Starts its own devcluster in a temporary directory unless --state-dir names a running one.
The operator runs as a process (`python -m driftwarden`, production resync period) against
it; one ModelOptimization gets a new spec.runRequest per run, one run at a time. Times are
observed by polling the API every 20 ms from this process, so they include up to 20 ms of
polling delay.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client, config

from devcluster.controlplane import Cluster

PROJECT = Path(__file__).resolve().parents[1]
WORK = Path("/var/tmp/driftwarden-bench")  # not /tmp: a Job's /tmp is its own emptyDir
NS = "bench"
NAME = "digits"
POLL = 0.02


def make_example() -> Path:
    target = WORK / "example"
    if not (target / ".complete").exists():
        subprocess.run(["rm", "-rf", str(target)], check=True)
        subprocess.run(
            [sys.executable, "-m", "optimizer_job", "make-example", "--out", str(target)],
            check=True,
            capture_output=True,
        )
        subprocess.run(["chown", "-R", "65532:65532", str(WORK)], check=True)
        (target / ".complete").touch()
    return target


def manifest(example: Path, artifacts: Path, request: str) -> str:
    return f"""apiVersion: driftwarden.io/v1alpha1
kind: ModelOptimization
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  runRequest: "{request}"
  model: {{uri: "file://{example}/model"}}
  data:
    reference: "file://{example}/data/reference.parquet"
    current: "file://{example}/data/current.parquet"
    holdout: "file://{example}/data/holdout.parquet"
  artifacts: {{uri: "file://{artifacts}"}}
  promotion: {{mode: Manual}}
  pipeline: [{{quantize: {{mode: int8}}}}]
  monitoring: {{latency: {{batchSizes: [1], warmup: 2, iterations: 5}}}}
  job: {{resources: {{cpu: 500m, memory: 1Gi}}}}
"""


def wait(what: str, check: Any, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(POLL)
    raise TimeoutError(what)


def summary(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1000:.0f} ms "
        f"({min(values) * 1000:.0f}..{max(values) * 1000:.0f}, n={len(values)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--state-dir", type=Path)
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    own = args.state_dir is None
    cluster = Cluster(args.state_dir or Path(tempfile.mkdtemp(prefix="cluster-", dir=WORK)))
    if own:
        cluster.up()
    example = make_example()
    artifacts = Path(tempfile.mkdtemp(prefix="artifacts-", dir=WORK))
    os.chown(artifacts, 65532, 65532)
    operator: subprocess.Popen[bytes] | None = None
    try:
        cluster.kubectl("apply", "-f", str(PROJECT / "crds"))
        cluster.kubectl(
            "wait", "--for=condition=Established", "crd/modeloptimizations.driftwarden.io"
        )
        cluster.kubectl("create", "namespace", NS, check=False)
        config.load_kube_config(str(cluster.kubeconfig))
        batch = client.BatchV1Api()
        custom = client.CustomObjectsApi()
        metrics_port, health_port = 19393, 19394
        log = (WORK / "operator.log").open("wb")
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftwarden",
                "-n",
                NS,
                "--standalone",
                "--metrics-port",
                str(metrics_port),
                "--liveness-endpoint",
                f"http://127.0.0.1:{health_port}/healthz",
            ],
            env=os.environ | {"KUBECONFIG": str(cluster.kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        time.sleep(3)

        def jobs() -> list[Any]:
            return list(batch.list_namespaced_job(NS).items)

        def runs() -> list[dict[str, Any]]:
            mo = custom.get_namespaced_custom_object(
                "driftwarden.io", "v1alpha1", NS, "modeloptimizations", NAME
            )
            return list((mo.get("status") or {}).get("runs") or [])

        to_job: list[float] = []
        to_record: list[float] = []
        run_seconds: list[float] = []
        for index in range(1, args.runs + 1):
            before = len(jobs())
            started = time.monotonic()
            subprocess.run(
                [
                    str(cluster.bin_dir / "kubectl"),
                    "--kubeconfig",
                    str(cluster.kubeconfig),
                    "apply",
                    "-f",
                    "-",
                ],
                input=manifest(example, artifacts, f"run-{index}").encode(),
                check=True,
                capture_output=True,
            )
            created = wait("the Job", lambda n=before: len(jobs()) > n)
            to_job.append(created - started)

            def complete() -> bool:
                newest = max(jobs(), key=lambda j: j.metadata.creation_timestamp)
                return any(
                    c.type in ("Complete", "Failed") and c.status == "True"
                    for c in newest.status.conditions or []
                )

            done = wait("the Job to finish", complete)
            recorded = wait("the result in status", lambda i=index: len(runs()) >= i)
            to_record.append(recorded - done)
            run_seconds.append(float(runs()[-1]["durationSeconds"]))
            assert runs()[-1]["outcome"] == "Succeeded", runs()[-1]

        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            scraped = response.read().decode()
        count = float(
            re.search(r"^driftwarden_reconcile_duration_seconds_count (\S+)$", scraped, re.M).group(
                1
            )
        )  # type: ignore[union-attr]
        total = float(
            re.search(r"^driftwarden_reconcile_duration_seconds_sum (\S+)$", scraped, re.M).group(1)
        )  # type: ignore[union-attr]
        print(
            json.dumps(
                {
                    "runRequest -> Job created": summary(to_job),
                    "Job finished -> result in status": summary(to_record),
                    "run (from status)": f"{statistics.median(run_seconds):.1f} s",
                    "reconcile passes": int(count),
                    "mean reconcile pass": f"{total / count * 1000:.1f} ms",
                    "load average": os.getloadavg()[0],
                },
                indent=2,
            )
        )
    finally:
        if operator is not None:
            cluster.kubectl("delete", "mo", NAME, "-n", NS, "--timeout=60s", check=False)
            operator.send_signal(signal.SIGTERM)
            operator.wait(30)
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        subprocess.run(["rm", "-rf", str(artifacts)], check=False)
        if own:
            cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
