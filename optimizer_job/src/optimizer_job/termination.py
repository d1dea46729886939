"""The compact result in the container's termination message, which the operator reads."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from optimizer_job.contract import TERMINATION_MESSAGE_PATH, CompactResult, RunResult

TERMINATION_ENV = "DRIFTWARDEN_TERMINATION_LOG"


def termination_path() -> Path | None:
    """Where to write: $DRIFTWARDEN_TERMINATION_LOG, else /dev/termination-log if the
    container runtime created it (outside a container there is none, and we must not
    create files under /dev)."""
    configured = os.environ.get(TERMINATION_ENV)
    if configured:
        return Path(configured)
    default = Path(TERMINATION_MESSAGE_PATH)
    return default if default.exists() else None


def write_termination_message(result: RunResult, log: logging.Logger) -> str:
    """Write the compact JSON (<= 4 KiB); returns it. An unwritable path is logged, not fatal."""
    message = CompactResult.from_result(result).to_message()
    path = termination_path()
    if path is None:
        return message
    try:
        path.write_text(message, encoding="utf-8")
    except OSError as error:
        log.warning("cannot write the termination message to %s: %s", path, error)
    return message
