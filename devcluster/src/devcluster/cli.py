"""`devcluster build | chromium | up | down | status | env | faultproxy`: a local Kubernetes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from devcluster import build
from devcluster.controlplane import Cluster, ComponentFailedError

DEFAULT_STATE_DIR = Path(os.environ.get("DEVCLUSTER_STATE_DIR", ".devcluster"))


def _cmd_build(_: argparse.Namespace) -> int:
    for name, path in build.ensure_all().items():
        print(f"{name}: {path}")
    return 0


def _cmd_chromium(_: argparse.Namespace) -> int:
    from devcluster import chromium

    try:
        print(chromium.ensure())
    except chromium.ChromiumUnavailableError as error:
        print(f"chromium: {error}", file=sys.stderr)
        return 1
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    cluster = Cluster(args.state_dir)
    started = time.monotonic()
    try:
        state = cluster.up(
            gpus=args.gpus,
            node_cpu=args.node_cpu,
            node_memory=args.node_memory,
            audit_log=args.audit_log,
        )
    except ComponentFailedError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    print(f"devcluster is up in {time.monotonic() - started:.1f} s: {state.api_server}")
    if args.s3:
        endpoint = cluster.start_s3()
        print(f"  S3 server:     {endpoint.url} (credentials in {state.path / 's3.json'})")
    print(f'  use it:        eval "$(devcluster env --state-dir {args.state_dir})"')
    print("                 kubectl get nodes")
    print(f"  component logs: {state.path / 'logs'}")
    if args.audit_log:
        print(f"  audit log:     {state.audit_log}")
    print(f"  tear down:     devcluster down --state-dir {args.state_dir}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    Cluster(args.state_dir).down()
    print(f"devcluster in {args.state_dir} is down and its state removed")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        alive = Cluster(args.state_dir).status()
    except FileNotFoundError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    for component, ok in alive.items():
        print(f"{component:28} {'running' if ok else 'STOPPED'}")
    return 0 if all(alive.values()) else 1


def _cmd_env(args: argparse.Namespace) -> int:
    try:
        state = Cluster(args.state_dir).state
    except FileNotFoundError as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={state.kubeconfig}")
    print(f"export PATH={state.bin_dir}:$PATH")
    return 0


def _cmd_faultproxy(args: argparse.Namespace) -> int:
    try:
        control = Cluster(args.state_dir).start_fault_proxy(json.loads(args.config))
    except (FileNotFoundError, ComponentFailedError, ValueError) as exc:
        print(f"devcluster: {exc}", file=sys.stderr)
        return 1
    print(f"faultproxy: {control.url} -> the apiserver; faults: {args.config}")
    print(f"  use it:  export KUBECONFIG={control.kubeconfig}")
    print(f"  counts:  curl -s http://127.0.0.1:{control.control_port}/stats")
    print(
        f"  change:  curl -s -X PUT -d '{{\"enabled\": false}}' "
        f"http://127.0.0.1:{control.control_port}/config"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the Go binaries into the cache").set_defaults(
        func=_cmd_build
    )
    sub.add_parser(
        "chromium", help="fetch Debian's headless Chromium into the cache (report tests)"
    ).set_defaults(func=_cmd_chromium)
    for name, func, text in (
        ("up", _cmd_up, "start the control plane and a node"),
        ("down", _cmd_down, "stop everything and remove the state"),
        ("status", _cmd_status, "show which components run"),
        ("env", _cmd_env, "print shell exports for kubectl"),
        ("faultproxy", _cmd_faultproxy, "start a fault-injecting proxy before the apiserver"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
        p.set_defaults(func=func)
        if name == "up":
            p.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu the node offers")
            p.add_argument("--node-cpu", default="4")
            p.add_argument("--node-memory", default="16Gi")
            p.add_argument("--s3", action="store_true", help="also start the S3 server")
            p.add_argument(
                "--audit-log",
                action="store_true",
                help="the apiserver's audit log of ServiceAccounts' requests (logs/audit.log)",
            )
        if name == "faultproxy":
            p.add_argument(
                "--config",
                default='{"seed": 1, "error": 0.05, "reset": 0.02, "conflict": 0.02}',
                help="devcluster.faultproxy.FaultConfig fields as JSON",
            )
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
