"""Kubernetes resource quantities ("500m", "2Gi", 4) as exact decimals."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import cast

from kubernetes.utils import quantity as _k8s_quantity

# The client's parser is exact (Decimal) and knows every suffix; it is merely untyped.
_parse = cast(Callable[[int | str], Decimal], _k8s_quantity.parse_quantity)


def parse_quantity(value: int | str) -> Decimal:
    """4 -> 4, "500m" -> 0.5, "2Gi" -> 2147483648. Raises ValueError when malformed."""
    return _parse(value)
