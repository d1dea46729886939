"""Loopback addresses as Pod IPs.

All of 127.0.0.0/8 reaches the loopback interface on Linux, so each Pod can have its own
address and several Pods can listen on one port. Each node draws from its own 127.N.0.0/16
block (N from the node's name) so two agents on one machine rarely meet, and a candidate is
also checked against the Pods of the whole cluster.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable

HOST_NETWORK_IP = "127.0.0.1"


def node_block(node_name: str) -> int:
    """The second octet of this node's Pod addresses (1..254; 127.0.x.x is the host's)."""
    return 1 + zlib.crc32(node_name.encode()) % 254


class PodIPAllocator:
    def __init__(self, node_name: str, taken_elsewhere: Callable[[str], bool]) -> None:
        self._block = node_block(node_name)
        self._taken_elsewhere = taken_elsewhere
        self._by_uid: dict[str, str] = {}
        self._next = 0
        self._lock = threading.Lock()

    def _address(self, index: int) -> str:
        return f"127.{self._block}.{index // 254}.{index % 254 + 1}"

    def owns(self, address: str) -> bool:
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
            for _ in range(256 * 254):
                candidate = self._address(self._next)
                self._next = (self._next + 1) % (256 * 254)
                if candidate not in used and not self._taken_elsewhere(candidate):
                    self._by_uid[uid] = candidate
                    return candidate
        raise RuntimeError("no free Pod address left in this node's block")

    def release(self, uid: str) -> None:
        with self._lock:
            self._by_uid.pop(uid, None)
