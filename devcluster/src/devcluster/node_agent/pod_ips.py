"""Loopback addresses as Pod IPs.

All of 127.0.0.0/8 reaches the loopback interface on Linux, so each Pod can have its own
address and several Pods can listen on one port. Each node draws from its own 127.N.0.0/16
block (N from the node's name) so two agents on one machine rarely meet, and a candidate is
also checked against the Pods of the whole cluster.

The API server refuses loopback addresses in EndpointSlices, so with cluster DNS the node
draws from a locally routed CIDR instead (`--pod-cidr`, e.g. 198.18.0.0/15 made local with
`ip route add local 198.18.0.0/15 dev lo`, which the devcluster sets up): it is split into 256
blocks the same way, and headless Services then resolve to addresses Pods can connect to.
"""

from __future__ import annotations

import ipaddress
import threading
import zlib
from collections.abc import Callable

HOST_NETWORK_IP = "127.0.0.1"


def node_block(node_name: str) -> int:
    """The second octet of this node's Pod addresses (1..254; 127.0.x.x is the host's)."""
    return 1 + zlib.crc32(node_name.encode()) % 254


class PodIPAllocator:
    def __init__(
        self, node_name: str, taken_elsewhere: Callable[[str], bool], cidr: str = ""
    ) -> None:
        self._block = node_block(node_name)
        self._taken_elsewhere = taken_elsewhere
        self._by_uid: dict[str, str] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._network: ipaddress.IPv4Network | None = None
        if cidr:
            network = ipaddress.IPv4Network(cidr)
            size = network.num_addresses // 256
            if size < 4:
                raise ValueError(f"pod CIDR {cidr} is too small (at least a /22)")
            first = int(network.network_address) + self._block * size
            self._network = ipaddress.IPv4Network((first, 32 - (size.bit_length() - 1)))
            # Skip x.x.x.0 and x.x.x.255: valid here, but confusing to read in a listing.
            self._count = size - 2 * (size // 256 or 1)
        else:
            self._count = 256 * 254

    def _address(self, index: int) -> str:
        if self._network is None:
            return f"127.{self._block}.{index // 254}.{index % 254 + 1}"
        per_octet = min(254, self._network.num_addresses - 2)
        offset = (index // per_octet) * 256 + index % per_octet + 1
        return str(self._network.network_address + offset)

    def owns(self, address: str) -> bool:
        if self._network is not None:
            try:
                return ipaddress.IPv4Address(address) in self._network
            except ValueError:
                return False
        parts = address.split(".")
        return len(parts) == 4 and parts[0] == "127" and parts[1] == str(self._block)

    def allocate(self, uid: str, preferred: str | None = None) -> str:
        with self._lock:
            if uid in self._by_uid:
                return self._by_uid[uid]
            used = set(self._by_uid.values())
            if preferred and self.owns(preferred) and preferred not in used:
                self._by_uid[uid] = preferred
                return preferred
            for _ in range(self._count):
                candidate = self._address(self._next)
                self._next = (self._next + 1) % self._count
                if candidate not in used and not self._taken_elsewhere(candidate):
                    self._by_uid[uid] = candidate
                    return candidate
        raise RuntimeError("no free Pod address left in this node's block")

    def release(self, uid: str) -> None:
        with self._lock:
            self._by_uid.pop(uid, None)
