from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from driftwarden.api.durations import (
    DURATION_PATTERN,
    format_duration,
    is_duration,
    parse_duration,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("2d6h", timedelta(days=2, hours=6)),
        ("250ms", timedelta(milliseconds=250)),
        ("1m30s500ms", timedelta(minutes=1, seconds=30, milliseconds=500)),
        ("0s", timedelta(0)),
        ("90m", timedelta(hours=1, minutes=30)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "5", "m", "5 m", "5min", "1.5h", "-5m", "6h2d", "1w", "5M", "1234567s", "30s "]
)
def test_refuses(text: str) -> None:
    assert not is_duration(text)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "delta",
    [
        timedelta(seconds=10),
        timedelta(hours=1, minutes=30),
        timedelta(days=3, seconds=1),
        timedelta(milliseconds=1500),
    ],
)
def test_format_round_trips(delta: timedelta) -> None:
    text = format_duration(delta)
    assert is_duration(text)
    assert parse_duration(text) == delta


def test_format_is_shortest() -> None:
    assert format_duration(timedelta(hours=26, minutes=30)) == "1d2h30m"
    assert format_duration(timedelta(0)) == "0s"
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


def test_pattern_is_the_crds() -> None:
    crd = (ROOT / "crds" / "modeloptimization.yaml").read_text()
    patterns = set(re.findall(r"pattern: (\^\(\[0-9\]\{1,6\}d\).*)$", crd, flags=re.M))
    assert patterns == {DURATION_PATTERN}
    # The durations the CRD defaults to parse.
    doc = yaml.safe_load(crd)
    spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert parse_duration(spec["properties"]["monitoring"]["properties"]["interval"]["default"])
