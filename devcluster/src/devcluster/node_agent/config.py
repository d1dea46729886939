"""The agent's settings, parsed from its command line."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

from devcluster.node_agent.kube import Obj

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class AgentConfig:
    kubeconfig: Path
    state_dir: Path
    node_name: str
    cpu: str
    memory: str
    pods: int
    gpus: int
    apiserver_host: str
    apiserver_port: int
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Obj] = field(default_factory=list)
    gpu_devices: list[str] = field(default_factory=list)
    storage_provisioner: bool = True
    serve_logs: bool = True
    resync_seconds: float = 2.0
    heartbeat_seconds: float = 10.0
    crash_backoff_initial: float = 10.0
    crash_backoff_max: float = 300.0
    shutdown_grace_seconds: float = 10.0
    inherit_env: list[str] = field(default_factory=list)
    # Cluster DNS (the kubelet's --cluster-dns / --cluster-domain): empty = Pods use the host's.
    cluster_dns: str = ""
    cluster_domain: str = "cluster.local"
    # Where Pod IPs come from: "" = this node's 127.N.0.0/16 loopback block; a CIDR (routed
    # locally, e.g. `ip route add local 198.18.0.0/15 dev lo`) for addresses that may appear in
    # EndpointSlices (the API server refuses loopback endpoints, so cluster DNS needs these).
    pod_cidr: str = ""

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pods_dir(self) -> Path:
        return self.state_dir / "pods"

    @property
    def pvc_dir(self) -> Path:
        return self.state_dir / "pvc"

    @property
    def python_bin_dir(self) -> Path:
        """The project's environment: containers run its `python`."""
        return Path(sys.executable).parent


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"label {text!r} is not key=value")
    return key, value


def parse_taint(text: str) -> Obj:
    """`key=value:Effect` or `key:Effect`, as `kubectl taint` writes them."""
    spec, sep, effect = text.rpartition(":")
    if not sep or effect not in TAINT_EFFECTS:
        raise argparse.ArgumentTypeError(
            f"taint {text!r} is not key[=value]:Effect with Effect in {', '.join(TAINT_EFFECTS)}"
        )
    key, _, value = spec.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"taint {text!r} has no key")
    taint: Obj = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


DEFAULT_INHERITED_ENV = ["LD_LIBRARY_PATH", "LANG", "LC_ALL", "TZ"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devcluster.node_agent",
        description="Register a Node and run the containers of its Pods as local processes.",
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--cpu", default="4", help="cpu capacity (a quantity)")
    parser.add_argument("--memory", default="16Gi", help="memory capacity (a quantity)")
    parser.add_argument("--pods", type=int, default=110)
    parser.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu capacity")
    parser.add_argument(
        "--gpu-devices",
        default="",
        help="comma-separated device indices behind the GPUs (default 0..gpus-1); a container "
        "requesting nvidia.com/gpu sees its share in CUDA_VISIBLE_DEVICES",
    )
    parser.add_argument("--label", action="append", type=parse_label, default=[])
    parser.add_argument("--taint", action="append", type=parse_taint, default=[])
    parser.add_argument("--apiserver-host", required=True)
    parser.add_argument("--apiserver-port", type=int, required=True)
    parser.add_argument(
        "--no-storage-provisioner",
        dest="storage_provisioner",
        action="store_false",
        help="do not run the devcluster-local PV provisioner (one agent per cluster is enough)",
    )
    parser.add_argument(
        "--no-log-server",
        dest="serve_logs",
        action="store_false",
        help="do not serve container logs to the API server (kubectl logs)",
    )
    parser.add_argument("--resync-seconds", type=float, default=2.0)
    parser.add_argument("--heartbeat-seconds", type=float, default=10.0)
    parser.add_argument("--crash-backoff-initial", type=float, default=10.0)
    parser.add_argument("--crash-backoff-max", type=float, default=300.0)
    parser.add_argument(
        "--shutdown-grace-seconds",
        type=float,
        default=10.0,
        help="on SIGTERM, the longest a container gets between SIGTERM and SIGKILL",
    )
    parser.add_argument(
        "--inherit-env",
        action="append",
        default=[],
        help="an environment variable of the agent that containers inherit (repeatable)",
    )
    parser.add_argument(
        "--cluster-dns",
        default="",
        help="IP of the cluster DNS server written into each Pod's resolv.conf (port 53)",
    )
    parser.add_argument("--cluster-domain", default="cluster.local")
    parser.add_argument(
        "--pod-cidr",
        default="",
        help="draw Pod IPs from this locally routed CIDR instead of a 127.N.0.0/16 block",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> AgentConfig:
    args = build_parser().parse_args(argv)
    if args.gpus < 0 or args.pods < 1:
        raise SystemExit("--gpus must be >= 0 and --pods >= 1")
    devices = [d for d in args.gpu_devices.split(",") if d] or [str(i) for i in range(args.gpus)]
    if len(devices) != args.gpus:
        raise SystemExit(f"--gpu-devices names {len(devices)} devices but --gpus is {args.gpus}")
    return AgentConfig(
        kubeconfig=args.kubeconfig.resolve(),
        state_dir=args.state_dir.resolve(),
        node_name=args.node_name,
        cpu=args.cpu,
        memory=args.memory,
        pods=args.pods,
        gpus=args.gpus,
        apiserver_host=args.apiserver_host,
        apiserver_port=args.apiserver_port,
        labels=dict(args.label),
        taints=list(args.taint),
        gpu_devices=devices,
        storage_provisioner=args.storage_provisioner,
        serve_logs=args.serve_logs,
        resync_seconds=args.resync_seconds,
        heartbeat_seconds=args.heartbeat_seconds,
        crash_backoff_initial=args.crash_backoff_initial,
        crash_backoff_max=args.crash_backoff_max,
        shutdown_grace_seconds=args.shutdown_grace_seconds,
        inherit_env=DEFAULT_INHERITED_ENV + list(args.inherit_env),
        cluster_dns=args.cluster_dns,
        cluster_domain=args.cluster_domain,
        pod_cidr=args.pod_cidr,
    )
