"""When the next evaluation is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from driftwarden.policy.schedule import evaluation_due

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
FIVE_MIN = timedelta(minutes=5)


def test_the_first_evaluation_is_due_at_once() -> None:
    due = evaluation_due(FIVE_MIN, None, evaluation_active=False, suspended=False, now=T0)
    assert due.due and due.blocked_by is None


def test_due_one_interval_after_the_previous_start() -> None:
    early = evaluation_due(FIVE_MIN, T0, False, False, T0 + FIVE_MIN - timedelta(seconds=1))
    assert not early.due and early.next_check == T0 + FIVE_MIN
    assert evaluation_due(FIVE_MIN, T0, False, False, T0 + FIVE_MIN).due
    # Long overdue (operator was down): one evaluation, now.
    assert evaluation_due(FIVE_MIN, T0, False, False, T0 + timedelta(days=1)).due


def test_never_two_at_once() -> None:
    due = evaluation_due(FIVE_MIN, T0, evaluation_active=True, suspended=False, now=T0 + FIVE_MIN)
    assert not due.due and due.blocked_by == "EvaluationActive" and due.next_check is None


def test_none_while_suspended() -> None:
    due = evaluation_due(FIVE_MIN, None, evaluation_active=False, suspended=True, now=T0)
    assert not due.due and due.blocked_by == "Suspended" and due.next_check is None
