"""A receiver's first `410 Gone` stops its webhook's deliveries at once, in the dispatcher that owns it,
not a round trip through the recorder and PostgreSQL later (docs/architecture.md#failure-policy)."""

from __future__ import annotations

import psycopg
import pytest

from producer.publisher import build_event
from schemas.catalog import EventType
from schemas.topics import Topics
from tests.integration.test_dispatcher import publisher_for
from tests.support.fleet import Fleet, seed_account, seed_webhook
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

BURST = 50
CONCURRENCY = 5


def _log(database_url: str, webhook_id: str) -> list[tuple[str, str, str, str | None]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT event_id, outcome, next_step, error FROM delivery_attempts WHERE webhook_id = %s", (webhook_id,)
        ).fetchall()
    return [(str(e), str(o), str(s), None if err is None else str(err)) for e, o, s, err in rows]


def test_a_burst_to_a_gone_endpoint_sends_only_what_was_in_flight_and_logs_every_event(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    # Given a webhook whose receiver answers 410 to everything, delivered with a per-webhook concurrency of 5
    seed_account(database_url, "acct_a")
    gone_id, secret = seed_webhook(database_url, "acct_a", receiver.url("/gone"), ["message.read"])
    receiver.expect("/gone", secret=secret, statuses=[410])
    fleet.start_dispatcher(HOOKFLEET_PER_ENDPOINT_CONCURRENCY=str(CONCURRENCY))
    fleet.start("recorder")
    # When a burst of 50 events for it is published at once
    events = [build_event("acct_a", EventType.MESSAGE_READ, {"n": n}) for n in range(BURST)]
    with publisher_for(kafka_bootstrap, topics) as publisher:
        for event in events:
            publisher.publish(event)
        publisher.flush()
    wait_until(lambda: len(_log(database_url, gone_id)) >= BURST, 60, "a log row for every event of the burst")
    # Then the receiver saw at most the requests already open when the first 410 came back
    sent = receiver.at("/gone")
    assert 1 <= len(sent) <= CONCURRENCY, len(sent)
    # and every event has exactly one log row: the 410 it answered, or the drop that says why it was not sent
    rows = _log(database_url, gone_id)
    assert sorted(row[0] for row in rows) == sorted(event.id for event in events)
    answered = [row for row in rows if row[2] == "disabled"]
    dropped = [row for row in rows if row[1:] == ("dropped", "dropped", "webhook gone: its endpoint answered 410 Gone")]
    assert len(answered) == len(sent) and len(dropped) == BURST - len(sent), rows
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT active, disabled_reason FROM webhooks WHERE id = %s", (gone_id,)).fetchone() == (
            False,
            "gone",
        )
