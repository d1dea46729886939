"""Kubernetes resource quantities: exact parsing and formatting with Decimal.

A quantity is a decimal number with an optional suffix: binary (Ki Mi Gi Ti Pi Ei), decimal
SI (n u m k M G T P E) or a decimal exponent (e3, E-2). Floats would turn 0.1 CPU into
0.1000000000000000055 and make "raise by 150 %, at most the cap" comparisons flaky, so all
arithmetic here is Decimal. Formatting rounds *up* to the unit Kubernetes can express for the
resource (1m of CPU, 1 byte of memory, 1 device): a raised value is never below what was
asked for.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Final

_BINARY: Final = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL: Final = {
    "n": -9,
    "u": -6,
    "m": -3,
    "": 0,
    "k": 3,
    "M": 6,
    "G": 9,
    "T": 12,
    "P": 15,
    "E": 18,
}

# The exponent alternative comes before the one-letter suffixes, so "1E3" is 1000 and a bare
# trailing "E" is exa, as in apimachinery's parser.
_QUANTITY: Final = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[KMGTPE]i|[eE][+-]?[0-9]+|[numkMGTPE])?$"
)

# Largest first: the formatter picks the largest suffix of each family that keeps a value exact.
_BINARY_UNITS: Final = [
    (s, Decimal(1024) ** e) for s, e in sorted(_BINARY.items(), key=lambda i: -i[1])
]
_DECIMAL_UNITS: Final = [
    (s, Decimal(10) ** e) for s, e in sorted(_DECIMAL.items(), key=lambda i: -i[1]) if e >= 3
]


class QuantityError(ValueError):
    """Text that is not a Kubernetes quantity."""


def parse_quantity(text: str | int) -> Decimal:
    """The exact value of a quantity: "500m" -> 0.5, "1Gi" -> 1073741824, "1e3" -> 1000."""
    if isinstance(text, int):
        return Decimal(text)
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise QuantityError(f"{text!r} is not a Kubernetes quantity (e.g. 500m, 2, 1.5Gi, 256M)")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as error:  # the regex admits only valid decimals; kept for safety
        raise QuantityError(f"{text!r} is not a Kubernetes quantity") from error
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * Decimal(1024) ** _BINARY[suffix]
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number.scaleb(int(suffix[1:]))
    return number.scaleb(_DECIMAL[suffix])


def format_cpu(cores: Decimal) -> str:
    """CPU rounded up to whole millicores: 2 -> "2", 1.5 -> "1500m", 0.0001 -> "1m"."""
    millis = (cores * 1000).to_integral_value(rounding=ROUND_CEILING)
    if millis % 1000 == 0:
        return str(int(millis // 1000))
    return f"{int(millis)}m"


def format_memory(size_bytes: Decimal) -> str:
    """Memory rounded up to whole bytes, in the shortest exact form.

    The largest exact binary suffix and the largest exact decimal suffix compete, the shorter
    text wins and binary wins a tie: 1073741824 -> "1Gi", 2000000000 -> "2G" (not
    "1953125Ki"), 1536Mi stays "1536Mi"; a value no suffix divides is written in bytes.
    """
    whole = size_bytes.to_integral_value(rounding=ROUND_CEILING)
    if whole == 0:
        return "0"
    candidates = [_largest_exact(whole, _BINARY_UNITS), _largest_exact(whole, _DECIMAL_UNITS)]
    return min(candidates, key=len)


def _largest_exact(whole: Decimal, units: list[tuple[str, Decimal]]) -> str:
    for suffix, unit in units:
        if whole % unit == 0:
            return f"{int(whole // unit)}{suffix}"
    return str(int(whole))


def format_count(count: Decimal) -> str:
    """A device count (e.g. nvidia.com/gpu), rounded up to a whole device."""
    return str(int(count.to_integral_value(rounding=ROUND_CEILING)))
