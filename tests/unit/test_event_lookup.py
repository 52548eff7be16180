"""What became of an event at one webhook (`api.events.delivery_state`), and the log filter's clauses
(`api.store.DeliveryFilter`): pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.events import delivery_state
from api.store import DeadLetterRow, DeliveryFilter, DeliveryRow, EventReplayRow, implied_outcome

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def attempt(n: int, outcome: str, next_step: str, minutes: float = 0) -> DeliveryRow:
    status = 200 if outcome == "success" else 503 if outcome == "http_error" else None
    return DeliveryRow(
        f"att_{n}", "evt_1", "message.read", n, outcome, status, None, 10, "", T0 + timedelta(minutes=minutes),
        next_step, False, None,
    )  # fmt: skip


def dead(redriven_minutes: float | None = None) -> DeadLetterRow:
    redriven = None if redriven_minutes is None else T0 + timedelta(minutes=redriven_minutes)
    return DeadLetterRow("wh_1", "message.read", T0 + timedelta(minutes=6), "http 503", redriven)


def replay(queued_minutes: float | None) -> EventReplayRow:
    queued = None if queued_minutes is None else T0 + timedelta(minutes=queued_minutes)
    return EventReplayRow("wh_1", "rpl_1", T0 + timedelta(minutes=queued_minutes or 0), queued)


FOUR_FAILURES = [attempt(n, "http_error", "dead" if n == 4 else "retry", n) for n in (1, 2, 3, 4)]


@pytest.mark.parametrize(
    ("attempts", "letter", "replays", "expected"),
    [
        ([attempt(1, "success", "done")], None, [], "delivered"),
        ([attempt(1, "http_error", "retry"), attempt(2, "success", "done", 1)], None, [], "delivered"),
        # a later redelivery that failed does not undo a 2xx
        ([attempt(1, "success", "done"), attempt(1, "timeout", "retry", 5)], None, [], "delivered"),
        ([attempt(1, "timeout", "retry")], None, [], "pending"),
        (FOUR_FAILURES, dead(), [], "dead_lettered"),
        ([*FOUR_FAILURES[:3], attempt(4, "http_error", "dead", 4)], None, [], "dead_lettered"),  # letter not yet stored
        (FOUR_FAILURES, dead(redriven_minutes=10), [], "pending"),  # Recover queued it again
        ([*FOUR_FAILURES, attempt(1, "timeout", "retry", 11)], dead(redriven_minutes=10), [], "pending"),
        (FOUR_FAILURES, dead(), [replay(20)], "pending"),  # a replay queued it after the last attempt
        (FOUR_FAILURES, dead(), [replay(None)], "dead_lettered"),  # a replay that has not queued it yet
        (FOUR_FAILURES, dead(), [replay(2)], "dead_lettered"),  # queued before the attempts that followed
        ([attempt(1, "http_error", "disabled")], None, [], "disabled"),
        ([attempt(1, "dropped", "dropped")], None, [], "dropped"),
        ([attempt(1, "http_error", "done")], None, [], "failed"),  # a failed Test: nothing more is coming
        ([], dead(), [], "dead_lettered"),  # the attempts' days dropped, the letter kept
    ],
)
def test_delivery_state(
    attempts: list[DeliveryRow], letter: DeadLetterRow | None, replays: list[EventReplayRow], expected: str
) -> None:
    assert delivery_state(attempts, letter, replays) == expected


def test_a_status_filter_states_its_outcome_so_failures_are_read_from_their_own_index() -> None:
    assert [implied_outcome(s) for s in (200, 204, 301, 410, 503)] == [
        "success", "success", "http_error", "http_error", "http_error",
    ]  # fmt: skip
    params: dict[str, object] = {}
    clauses = DeliveryFilter(status_code=503).clauses(params)
    assert clauses == ["status_code = %(status_code)s", "outcome = %(outcome)s"]
    assert params == {"status_code": 503, "outcome": "http_error"}
    # an outcome given with the status is kept as given (a contradiction simply matches nothing)
    params = {}
    DeliveryFilter(status_code=503, outcome="timeout").clauses(params)
    assert params["outcome"] == "timeout"


def test_every_filter_value_is_a_parameter_never_part_of_the_text() -> None:
    hostile = "x' OR '1'='1"
    params: dict[str, object] = {}
    where = DeliveryFilter(
        event_type=hostile, outcome=hostile, since=T0, until=T0, before=(T0, hostile), event_id=hostile, status_code=500
    )
    clauses = where.clauses(params)
    assert all(hostile not in clause for clause in clauses) and len(clauses) == 7
    assert params["event_id"] == params["before_id"] == hostile
