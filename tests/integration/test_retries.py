"""Retries end to end: dispatcher -> delay topics -> retry scheduler -> dispatcher, recorded by the recorder."""

from __future__ import annotations

import psycopg
import pytest

from producer.publisher import build_event
from schemas.catalog import EventType
from schemas.topics import Topics
from tests.integration.test_dispatcher import publisher_for
from tests.support.fleet import Fleet, seed_account, seed_webhook, set_active
from tests.support.group_offsets import fleet_idle
from tests.support.lateness import EARLY_SLACK_S, RETRY_LATE_S
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

DELAYS = (5.0, 6.0, 7.0)  # each longer than RETRY_LATE_S: a retry a whole delay late fails the test


def _rows(database_url: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, args).fetchall()


def _start_fleet(fleet: Fleet, delays: tuple[float, float, float]) -> None:
    extra = {"HOOKFLEET_RETRY_DELAYS_S": f"[{delays[0]}, {delays[1]}, {delays[2]}]"}
    fleet.start_dispatcher(**extra)
    fleet.start("retry-scheduler", **extra)
    fleet.start("recorder", **extra)


def test_endpoint_failing_n_times_gets_exactly_the_scheduled_attempts(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_a")
    hooks = {}
    for n in range(5):
        path = f"/fails-{n}"
        webhook_id, secret = seed_webhook(database_url, "acct_a", receiver.url(path), ["message.failed"])
        receiver.expect(path, secret=secret, statuses=[500] * n + [200])
        hooks[n] = (path, webhook_id)
    _start_fleet(fleet, DELAYS)
    event = build_event("acct_a", EventType.MESSAGE_FAILED, {"message_id": "m1"})
    with publisher_for(kafka_bootstrap, topics) as publisher:
        publisher.publish_and_wait(event)

    expected_attempts = {n: min(n + 1, 4) for n in range(5)}
    assert receiver.wait_for(
        lambda: all(len(receiver.at(hooks[n][0])) >= expected_attempts[n] for n in range(5)), timeout_s=90
    )
    # Every role has finished all it was given: an extra attempt, had one been scheduled, has arrived.
    wait_until(lambda: fleet_idle(kafka_bootstrap, topics), 60, "the fleet to finish every task")
    for n, (path, _) in hooks.items():
        got = receiver.at(path)
        assert [r.attempt for r in got] == list(range(1, expected_attempts[n] + 1)), (n, [r.attempt for r in got])
        assert {r.event_id for r in got} == {event.id}
        assert {r.body for r in got} == {event.body()}
        assert all(r.signature_ok for r in got)
        for i in range(1, len(got)):
            gap = got[i].at - got[i - 1].at
            assert gap >= DELAYS[i - 1] - EARLY_SLACK_S, f"attempt {i + 1} of /fails-{n} came early: {gap:.3f}s"
            assert gap <= DELAYS[i - 1] + RETRY_LATE_S, f"attempt {i + 1} of /fails-{n} late: {gap:.3f}s"

    dead_id = hooks[4][1]

    def settled() -> bool:
        rows = _rows(database_url, "SELECT count(*) FROM delivery_attempts")
        dead = _rows(database_url, "SELECT status FROM webhooks WHERE id = %s", dead_id)
        return rows[0][0] == sum(expected_attempts.values()) and dead[0][0] == "failing"

    assert receiver.wait_for(settled, timeout_s=20)
    for n, (_, webhook_id) in hooks.items():
        steps = _rows(
            database_url,
            "SELECT attempt, outcome, next_step FROM delivery_attempts WHERE webhook_id = %s ORDER BY attempt",
            webhook_id,
        )
        if n < 4:
            assert steps == [(i, "http_error", "retry") for i in range(1, n + 1)] + [(n + 1, "success", "done")]
            assert _rows(database_url, "SELECT status FROM webhooks WHERE id = %s", webhook_id) == [("healthy",)]
        else:
            assert steps == [
                (1, "http_error", "retry"),
                (2, "http_error", "retry"),
                (3, "http_error", "retry"),
                (4, "http_error", "dead"),
            ]
    dead = _rows(database_url, "SELECT event_id, last_error FROM dead_letters WHERE webhook_id = %s", dead_id)
    assert dead == [(event.id, "http 500")]

    # The receiver recovers (its status list ends in 200): the next success makes the webhook healthy again.
    with publisher_for(kafka_bootstrap, topics) as publisher:
        publisher.publish_and_wait(build_event("acct_a", EventType.MESSAGE_FAILED, {"message_id": "m2"}))
    assert receiver.wait_for(
        lambda: _rows(database_url, "SELECT status FROM webhooks WHERE id = %s", dead_id) == [("healthy",)],
        timeout_s=20,
    )


@pytest.mark.slow
def test_the_real_ten_second_first_retry(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_a")
    _, secret = seed_webhook(database_url, "acct_a", receiver.url("/once"), ["contact.created"])
    receiver.expect("/once", secret=secret, statuses=[503, 200])
    _start_fleet(fleet, (10.0, 60.0, 300.0))
    with publisher_for(kafka_bootstrap, topics) as publisher:
        publisher.publish_and_wait(build_event("acct_a", EventType.CONTACT_CREATED, {}))
    assert receiver.wait_for(lambda: len(receiver.at("/once")) == 2, timeout_s=30)
    first, second = receiver.at("/once")
    gap = second.at - first.at
    assert 10.0 <= gap <= 10.0 + RETRY_LATE_S, gap
    assert (first.attempt, second.attempt) == (1, 2) and first.event_id == second.event_id


def test_webhook_disabled_while_waiting_gets_nothing_more_and_the_log_shows_the_drop(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_a")
    webhook_id, secret = seed_webhook(database_url, "acct_a", receiver.url("/flaky"), ["campaign.completed"])
    receiver.expect("/flaky", secret=secret, statuses=[500, 200])
    _start_fleet(fleet, (3.0, 3.0, 3.0))
    with publisher_for(kafka_bootstrap, topics) as publisher:
        publisher.publish_and_wait(build_event("acct_a", EventType.CAMPAIGN_COMPLETED, {}))
    assert receiver.wait_for(lambda: len(receiver.at("/flaky")) == 1, timeout_s=20)
    set_active(database_url, webhook_id, False)  # while attempt 2 waits in webhooks.retry.10s

    def dropped() -> bool:
        rows = _rows(
            database_url,
            "SELECT outcome, error FROM delivery_attempts WHERE webhook_id = %s AND attempt = 2",
            webhook_id,
        )
        return rows == [("dropped", "webhook disabled")]

    assert receiver.wait_for(dropped, timeout_s=20)
    wait_until(lambda: fleet_idle(kafka_bootstrap, topics), 30, "the fleet to finish every task")
    assert len(receiver.at("/flaky")) == 1
