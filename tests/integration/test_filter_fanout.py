"""Webhook filters at fan-out with a real dispatcher, real Kafka and a real HTTPS receiver: a match is
delivered, a no-match is not, and an event the filter cannot be evaluated on is counted and not delivered,
while the dispatcher goes on."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import psycopg
import pytest

from producer.publisher import build_event
from schemas.catalog import EventType
from schemas.topics import Topics
from tests.integration.test_delivery_flow import metric
from tests.integration.test_dispatcher import publisher_for
from tests.support.fleet import Fleet, seed_account, seed_webhook
from tests.support.group_offsets import fleet_idle
from tests.support.ports import free_port, scrape
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _webhook_with_filter(database_url: str, receiver: HttpsReceiver, path: str, text: str | None) -> None:
    webhook_id, secret = seed_webhook(database_url, "acct_filters", receiver.url(path), ["message.sent"])
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE webhooks SET filter = %s WHERE id = %s", (text, webhook_id))
    receiver.expect(path, secret=secret)


def test_filters_deliver_matches_leave_out_no_matches_and_count_errors(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_filters")
    _webhook_with_filter(database_url, receiver, "/big", "data.amount >= 100")
    _webhook_with_filter(database_url, receiver, "/gold", 'data.customer.tier == "gold"')
    _webhook_with_filter(database_url, receiver, "/all", None)
    port = free_port()
    dispatcher = fleet.start_dispatcher(HOOKFLEET_METRICS_PORT=str(port))

    payloads: dict[str, dict[str, Any]] = {
        "gold_big": {"amount": 150, "customer": {"tier": "gold"}},
        "silver_small": {"amount": 50, "customer": {"tier": "silver"}},
        "no_customer": {"amount": 500},  # /gold cannot answer: no such key
        "amount_text": {"amount": "lots", "customer": {"tier": "gold"}},  # /big cannot answer: text >= int
        "huge_number": {"amount": 2**70, "customer": {"tier": "gold"}},  # beyond CEL's 64-bit int: neither can
    }
    ids = {}
    with publisher_for(kafka_bootstrap, topics) as publisher:
        for name, data in payloads.items():
            event = build_event("acct_filters", EventType.MESSAGE_SENT, data)
            ids[event.id] = name
            publisher.publish(event)
        assert publisher.flush() == 0

    assert receiver.wait_for(lambda: receiver.count() >= 9, timeout_s=60), receiver.count()
    wait_until(lambda: fleet_idle(kafka_bootstrap, topics, ("dispatcher",)), 60, "the dispatcher to finish")
    got: dict[str, set[str]] = defaultdict(set)
    for request in receiver.received:
        got[request.path].add(ids[request.event_id])
    assert dict(got) == {
        "/big": {"gold_big", "no_customer"},
        "/gold": {"gold_big", "amount_text"},
        "/all": set(payloads),
    }
    assert receiver.count() == 9, "a delivery was made twice"
    samples = scrape(port)
    # /big on amount_text, /gold on no_customer, both on huge_number
    assert metric(samples, "hookfleet_filter_errors_total") == 4
    assert metric(samples, "hookfleet_filtered_out_total") == 2  # silver_small, for /big and /gold
    assert samples['hookfleet_filter_errors_total{event_type="message.sent"}'] == 4
    assert dispatcher.proc.poll() is None, "the dispatcher stopped"
