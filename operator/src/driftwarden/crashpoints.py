"""Named points where tests can make the operator die as if SIGKILLed.

DRIFTWARDEN_TEST_CRASH_AT=<point>[,<point>...] makes the process exit at once with
code 137 (what SIGKILL gives) when it reaches one of those points: no cleanup, no
finally blocks, no status written. Only the idempotency tests set it; the points mark
the windows where a crash could leave work half done.
"""

from __future__ import annotations

import logging
import os
from typing import Final, Literal

ENV: Final = "DRIFTWARDEN_TEST_CRASH_AT"
EXIT_CODE: Final = 137

# After the Job exists, before its task ConfigMap and before status.activeRun names it.
# After the ConfigMap exists, before the Job is resumed.
# After the Job was resumed, before status.activeRun is written.
# After the run finished (Job Complete/Failed), before status.runs records it.
# After a temporary fix was raised on the Deployment, before status.temporaryFix records it.
# After a temporary fix was reverted, before its fields are handed back and status says so.
CrashPoint = Literal[
    "job-created",
    "configmap-created",
    "job-resumed",
    "run-finished-unrecorded",
    "fix-applied",
    "fix-reverted",
]

_log = logging.getLogger(__name__)


def crash_point(point: CrashPoint) -> None:
    wanted = os.environ.get(ENV, "")
    if point in {p.strip() for p in wanted.split(",")}:
        _log.warning("test crash point %r reached: exiting with %d", point, EXIT_CODE)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_CODE)
