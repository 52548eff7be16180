"""The poison-item rule (hookfleet/stream/poison.py): one item's failure is returned, never raised; the
broker or the database being down is raised; errors are short and never carry a secret."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from hookfleet.stream.poison import ItemFailure, RetrySchedule, describe_failure, run_item


class _Down(Exception):
    pass


def _boom(exc: BaseException) -> None:
    raise exc


def test_an_items_own_failure_is_returned_counted_and_the_result_passes_through_otherwise() -> None:
    before = REGISTRY.get_sample_value("hookfleet_item_failures_total", {"loop": "unit"}) or 0.0
    failed = run_item("unit", "item-1", lambda: _boom(AttributeError("'Group' object has no attribute 'local_part'")))
    assert failed == ItemFailure("AttributeError: 'Group' object has no attribute 'local_part'")
    assert run_item("unit", "item-2", lambda: 42) == 42
    assert REGISTRY.get_sample_value("hookfleet_item_failures_total", {"loop": "unit"}) == before + 1


def test_a_transient_failure_is_raised_for_the_whole_batch_to_wait() -> None:
    with pytest.raises(_Down):
        run_item("unit", "item-1", lambda: _boom(_Down("broker unreachable")), transient=(_Down,))


def test_the_error_is_one_short_printable_line_with_every_secret_masked() -> None:
    exc = OSError("connect to smtps://mailer:hunter2@mail.example.com failed\u2028next line")
    text = describe_failure(exc, secrets=("smtps://mailer:hunter2@mail.example.com", "hunter2"))
    assert text == "OSError: connect to **** failed next line"
    long = describe_failure(ValueError("x" * 500))
    assert len(long) == 200 and long.endswith("...")


def test_the_retry_schedule_backs_off_to_its_cap_and_gives_up_after_the_last_try() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    schedule = RetrySchedule(first=timedelta(seconds=30), factor=4, cap=timedelta(minutes=10), attempts=5)
    waits = [schedule.next_attempt(n, now) for n in range(1, 6)]
    assert waits[:4] == [now + timedelta(seconds=s) for s in (30, 120, 480, 600)]
    assert waits[4] is None
