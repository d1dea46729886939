"""pytest fixtures: a real Prometheus server (prometheus_server.PrometheusServer) per test
or per module. Load with `pytest_plugins = ["prometheus_fixture"]`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_server import PrometheusServer


def _running(workdir: Path) -> Iterator[PrometheusServer]:
    workdir.mkdir(parents=True, exist_ok=True)
    server = PrometheusServer(workdir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusServer]:
    """A running Prometheus without targets; give it some with `set_targets`."""
    yield from _running(tmp_path / "prometheus")


@pytest.fixture(scope="module")
def module_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """The same, shared by the tests of one module."""
    yield from _running(tmp_path_factory.mktemp("prometheus"))
