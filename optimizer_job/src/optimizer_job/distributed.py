"""Data-parallel runs across the Pods of an Indexed Job: ``python -m optimizer_job.distributed``.

The operator starts each worker Pod with torchrun's standard environment (PET_NNODES,
PET_NODE_RANK, PET_NPROC_PER_NODE, PET_MASTER_ADDR, PET_MASTER_PORT). This launcher first
waits, with a bound, until the first worker's name resolves (a Pod's DNS record can lag its
creation, pytorch#73682), then becomes ``torchrun --module optimizer_job <args>``. torchrun
starts the workers with RANK/WORLD_SIZE/LOCAL_RANK; ``init_from_env`` joins them into one
process group (NCCL on GPUs, gloo on CPU).

Only the retrain stages at the head of the pipeline run data-parallel (training.fit uses
DistributedDataParallel); every other stage, the artifacts and the termination message are
rank 0's alone: the other ranks leave after training and exit 0 having written nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

GANG_TIMEOUT_ENV = "DRIFTWARDEN_GANG_TIMEOUT_SECONDS"
DEFAULT_GANG_TIMEOUT = 600.0


def gang_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get(GANG_TIMEOUT_ENV, DEFAULT_GANG_TIMEOUT)))
    except ValueError:
        return DEFAULT_GANG_TIMEOUT


def wait_for_master(address: str, timeout: float, *, sleep: float = 0.5) -> float:
    """Seconds until ``address`` resolved; raises TimeoutError naming it past ``timeout``."""
    started = time.monotonic()
    delay = sleep
    while True:
        try:
            socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
            return time.monotonic() - started
        except socket.gaierror as error:
            waited = time.monotonic() - started
            if waited >= timeout:
                raise TimeoutError(
                    f"the first worker {address} did not resolve within {timeout:.0f} s "
                    f"({error.strerror}): is its Pod scheduled, and does the headless "
                    "Service of the Job exist?"
                ) from None
            time.sleep(min(delay, max(0.0, timeout - waited)))
            delay = min(delay * 2, 5.0)


def init_from_env(device: torch.device) -> torch.device:
    """Join torchrun's process group if this process is one of several; the device to use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world < 2:
        return device
    import torch
    from torch import distributed as dist

    if not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=dt.timedelta(seconds=gang_timeout()),
        )
    return device


def leave() -> None:
    """End the data-parallel part (idempotent): rank 0 goes on alone."""
    from torch import distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    master = os.environ.get("PET_MASTER_ADDR")
    if master:
        timeout = gang_timeout()
        try:
            waited = wait_for_master(master, timeout)
        except TimeoutError as error:
            message = f"gang incomplete: {error}"
            print(message, file=sys.stderr, flush=True)
            # The operator reads the Pod's termination message for the reason.
            from optimizer_job.termination import termination_path

            path = termination_path()
            if path is not None:
                path.write_text(message[:4000], encoding="utf-8")
            return 1
        print(f"{master} resolved after {waited:.1f} s", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--module", "optimizer_job", *args]
    os.execv(sys.executable, command)  # noqa: S606 (no shell; torchrun takes PET_* from env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
