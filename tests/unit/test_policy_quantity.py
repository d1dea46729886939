"""Kubernetes quantities: parsing agrees with the kubernetes client, formatting round-trips."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from kubernetes.utils.quantity import parse_quantity as client_parse_quantity

from driftwarden.policy.quantity import (
    QuantityError,
    format_count,
    format_cpu,
    format_memory,
    parse_quantity,
)

pytestmark = pytest.mark.unit

SAMPLES = [
    "0",
    "1",
    "2",
    "0.5",
    "1.5",
    ".5",
    "5.",
    "+3",
    "100m",
    "1500m",
    "250u",
    "10n",
    "1k",
    "1M",
    "128M",
    "1G",
    "2T",
    "1P",
    "3E",
    "1Ki",
    "64Mi",
    "1.5Gi",
    "2Ti",
    "1Pi",
    "1Ei",
    "1e3",
    "1E3",
    "2e-3",
    "1.5e2",
    "129e6",
    "12345678901234567890",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_parse_agrees_with_the_kubernetes_client(text: str) -> None:
    assert parse_quantity(text) == client_parse_quantity(text)


def test_parse_exact_values() -> None:
    assert parse_quantity("500m") == Decimal("0.5")
    assert parse_quantity("1Gi") == 1024**3
    assert parse_quantity("1E") == Decimal(10) ** 18  # a bare E is exa, not an exponent
    assert parse_quantity("1E2") == 100
    assert parse_quantity(3) == 3


@pytest.mark.parametrize("text", ["", "m", "1.2.3", "1mi", "1Ki5", "abc", "1 Gi", "1ki", "--1"])
def test_parse_refuses_what_is_not_a_quantity(text: str) -> None:
    with pytest.raises(QuantityError, match="not a Kubernetes quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("cores", "text"),
    [
        ("2", "2"),
        ("1.5", "1500m"),
        ("0.0001", "1m"),
        ("0.0015", "2m"),
        ("0.25", "250m"),
        ("0", "0"),
    ],
)
def test_format_cpu_rounds_up_to_millicores(cores: str, text: str) -> None:
    assert format_cpu(Decimal(cores)) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (1024**3, "1Gi"),
        (3 * 1024**2 // 2, "1536Ki"),
        (384 * 1024**2, "384Mi"),
        (2_000_000, "2M"),
        (1000, "1k"),
        (2_000_000_000, "2G"),
        (1025, "1025"),
        (0, "0"),
    ],
)
def test_format_memory_picks_the_largest_exact_suffix(size: int, text: str) -> None:
    assert format_memory(Decimal(size)) == text


def test_format_memory_rounds_fractions_up() -> None:
    assert format_memory(Decimal("1023.2")) == "1Ki"
    assert format_memory(Decimal("0.001")) == "1"


def test_round_trips_on_random_values() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        millis = rng.randrange(0, 10**7)
        cores = Decimal(millis) / 1000
        assert parse_quantity(format_cpu(cores)) == cores
        size = Decimal(rng.randrange(0, 2**45))
        assert parse_quantity(format_memory(size)) == size
        # A value with sub-unit digits comes back as the next whole unit up, never lower.
        fractional = cores + Decimal("0.0004")
        assert parse_quantity(format_cpu(fractional)) == cores + Decimal("0.001")


def test_format_count_rounds_up() -> None:
    assert format_count(Decimal(2)) == "2"
    assert format_count(Decimal("2.1")) == "3"
