"""Cluster DNS for the devcluster: CoreDNS with the kubernetes plugin, as on a real cluster.

CoreDNS (built from its Go module, see build.py) watches Services and EndpointSlices through
the API server with its own least-privilege identity and answers `<svc>.<ns>.svc.cluster.local`
and, for headless Services, `<hostname>.<subdomain>.<ns>.svc.cluster.local` — the names an
Indexed Job's pods use to find each other. The node agent writes each Pod a resolv.conf that
names it (`--cluster-dns`).

Two facts of a process-based node shape this:
- resolv.conf cannot name a port, so each cluster's CoreDNS listens on port 53 of its own
  loopback address (127.53.x.y, the first free one from a hash of the state directory).
- The API server refuses loopback addresses in EndpointSlices (127.0.0.0/8 is "special"), so
  Pods whose names must resolve need addresses outside it. POD_CIDR is a benchmarking range
  (RFC 2544, never routed on the Internet) made local on `lo` with one route, the same trick
  as 127.0.0.0/8: any address in it can be bound and reached on this machine. If that route
  cannot be added (no CAP_NET_ADMIN), Pods keep loopback addresses and only Service names
  resolve.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
from pathlib import Path

POD_CIDR = "198.18.0.0/15"
CLUSTER_DOMAIN = "cluster.local"
USER = "system:coredns"

# The ClusterRole of CoreDNS's own deployment manifests: read-only, list/watch.
RBAC = f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {USER}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {USER}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {USER}
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: {USER}
"""


def _route_present(cidr: str) -> bool:
    ip = shutil.which("ip")
    if ip is None:
        return False
    shown = subprocess.run(
        [ip, "route", "show", "table", "local", cidr],
        capture_output=True,
        text=True,
        check=False,
    )
    return shown.returncode == 0 and shown.stdout.strip().startswith("local")


def ensure_pod_route(cidr: str = POD_CIDR) -> bool:
    """Make `cidr` local on lo (idempotent; shared by every devcluster on the machine).

    The route stays when a cluster goes down: other clusters may use it, and it routes a
    range nothing else on the machine uses.
    """
    if _route_present(cidr):
        return True
    ip = shutil.which("ip")
    if ip is None:
        print("devcluster: no `ip` command; Pod hostnames will not resolve", file=sys.stderr)
        return False
    added = subprocess.run(
        [ip, "route", "replace", "local", cidr, "dev", "lo"],
        capture_output=True,
        text=True,
        check=False,
    )
    if added.returncode != 0:
        print(
            f"devcluster: cannot route {cidr} on lo ({added.stderr.strip()}); Pods keep "
            "loopback addresses and their hostnames will not resolve",
            file=sys.stderr,
        )
        return False
    return True


def _port_53_free(address: str) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((address, 53))
            except OSError:
                return False
    return True


def pick_address(seed: str) -> str:
    """A loopback address whose port 53 is free, stable for one state directory."""
    start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:2], "big")
    for step in range(254 * 254):
        index = (start + step) % (254 * 254)
        candidate = f"127.53.{index // 254 + 1}.{index % 254 + 1}"
        if _port_53_free(candidate):
            return candidate
    raise RuntimeError("no loopback address with a free port 53 in 127.53.0.0/16")


def corefile(*, address: str, kubeconfig: Path, health_port: int, ready_port: int) -> str:
    """The Corefile: cluster names from the API, everything else to the host's resolver.

    No cache: a name that does not exist yet (a Pod being created) must resolve as soon as
    its EndpointSlice does; the plugin's own TTL is short for the same reason.
    """
    reverse = "in-addr.arpa ip6.arpa"
    return f"""\
.:53 {{
    bind {address}
    errors
    log . {{
        class denial error
    }}
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} {reverse} {{
        kubeconfig {kubeconfig} devcluster
        pods insecure
        fallthrough {reverse}
        ttl 5
    }}
    forward . /etc/resolv.conf
}}
"""
