"""Free TCP ports on 127.0.0.1 for processes that are told their port before they bind it.

Asking the kernel for port 0 and handing the number on is racy: the number comes from the
ephemeral range (`net.ipv4.ip_local_port_range`, 32768-60999 by default), which every outgoing
connection and every `bind(0)` draws from too. A gang's gloo sockets took an operator's health
port that way between the pick and the bind (CI, test_distributed_runs). Ports here come from
below that range and below the gang rendezvous ports (29500+, builders/job.py), are checked
bindable, and are never handed out twice by one process.
"""

from __future__ import annotations

import random
import socket
import threading

LOW, HIGH = 20000, 29499  # inclusive; outside the ephemeral range and the rendezvous ports

_handed_out: set[int] = set()
_lock = threading.Lock()
_random = random.SystemRandom()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port nothing listens on now and that this process has not handed out before."""
    with _lock:
        for _ in range(200):
            port = _random.randint(LOW, HIGH)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free port found in {LOW}-{HIGH} after 200 tries")
