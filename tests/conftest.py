"""Shared pytest configuration: every test module declares its tier marker."""

from __future__ import annotations

import pytest

TIERS = {"unit", "job", "e2e", "gpu"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [i.nodeid for i in items if not TIERS & {m.name for m in i.iter_markers()}]
    if unmarked:
        raise pytest.UsageError(
            "tests without a tier marker (unit, job, e2e or gpu): " + ", ".join(unmarked[:5])
        )
