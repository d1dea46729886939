"""The gang launcher's wait for the first worker's name: bounded, and says what it waited for."""

from __future__ import annotations

from pathlib import Path

import pytest

from optimizer_job import distributed

pytestmark = pytest.mark.unit


def test_a_name_that_resolves_is_not_waited_for() -> None:
    assert distributed.wait_for_master("localhost", timeout=5) < 5


def test_a_name_that_never_resolves_times_out_naming_it() -> None:
    with pytest.raises(
        TimeoutError, match=r"first worker nothing\.invalid did not resolve within 1 s"
    ):
        distributed.wait_for_master("nothing.invalid", timeout=1, sleep=0.1)


def test_the_launcher_fails_with_a_termination_message_when_the_gang_is_incomplete(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    message = tmp_path / "termination-log"
    monkeypatch.setenv("PET_MASTER_ADDR", "nothing.invalid")
    monkeypatch.setenv(distributed.GANG_TIMEOUT_ENV, "1")
    monkeypatch.setenv("DRIFTWARDEN_TERMINATION_LOG", str(message))
    assert distributed.main(["--task", "/nonexistent"]) == 1
    assert message.read_text().startswith("gang incomplete: the first worker nothing.invalid")
