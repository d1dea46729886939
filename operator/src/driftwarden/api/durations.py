"""Durations as the CRD writes them: "30s", "5m", "1h30m", "2d6h", "250ms".

Go's duration units plus days. Days may only lead ("2d6h", not "6h2d"): the CRD's CEL rules
strip the day part before handing the rest to CEL's duration(), which has no day unit.
"""

from __future__ import annotations

import re
from datetime import timedelta

# Kept identical to the pattern in crds/modeloptimization.yaml.
DURATION_PATTERN = r"^([0-9]{1,6}d)?([0-9]{1,6}(ms|s|m|h))*$"
DURATION_MIN_LENGTH = 2
DURATION_MAX_LENGTH = 20

_DURATION = re.compile(DURATION_PATTERN)
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}


def is_duration(text: str) -> bool:
    """Whether the CRD would accept ``text`` as a duration."""
    return (
        DURATION_MIN_LENGTH <= len(text) <= DURATION_MAX_LENGTH
        and _DURATION.fullmatch(text) is not None
    )


def parse_duration(text: str) -> timedelta:
    """ "1h30m" -> timedelta(hours=1, minutes=30). Raises ValueError on anything else."""
    if not is_duration(text):
        raise ValueError(f"{text!r} is not a duration: use e.g. 30s, 5m, 1h30m or 2d (days first)")
    return sum((int(count) * _UNIT[unit] for count, unit in _PART.findall(text)), timedelta())


def format_duration(delta: timedelta) -> str:
    """The shortest duration string for ``delta`` (whole milliseconds), e.g. "1d2h30m"."""
    if delta < timedelta(0):
        raise ValueError(f"negative duration {delta}")
    rest = delta // timedelta(milliseconds=1)
    parts: list[str] = []
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNIT[unit] // timedelta(milliseconds=1)
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
