"""The delivery pipeline end to end: real broker, real PostgreSQL, real HTTPS receivers, real processes."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook

from dispatcher.routing import PARKS_HEADER
from hookfleet.kafka import KafkaProducer, Message, message_headers, new_consumer
from producer.publisher import EventPublisher, build_event
from schemas.catalog import PRODUCT_TYPES, EventType, sample_data
from schemas.models import DeliveryTask, Event
from schemas.topics import Topics
from tests.support.fleet import Fleet, seed_account, seed_webhook
from tests.support.group_offsets import fleet_idle
from tests.support.receiver import HttpsReceiver
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

ALL_TYPES = [t.value for t in PRODUCT_TYPES]
MESSAGE_TYPES = [t for t in ALL_TYPES if t.startswith("message.")]
CONTACT_TYPES = [t for t in ALL_TYPES if t.startswith("contact.")]


def publisher_for(kafka_bootstrap: str, topics: Topics) -> EventPublisher:
    from hookfleet.settings import CommonSettings

    return EventPublisher(CommonSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topics.prefix))


def consume_all(kafka_bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:  # type: ignore[type-arg]
    options: dict[str, Any] = {"enable.auto.commit": False}
    consumer = new_consumer(kafka_bootstrap, f"probe-{uuid.uuid4().hex[:8]}", **options)
    consumer.subscribe([topic])
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(m for m in consumer.consume(100, timeout=0.5) if m.error() is None)
    finally:
        consumer.close()
    return got


def test_each_event_type_reaches_exactly_the_active_subscribed_webhooks(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_a")
    seed_account(database_url, "acct_b")
    hooks = {}
    for path, account, events, active in [
        ("/all", "acct_a", ALL_TYPES, True),
        ("/messages", "acct_a", MESSAGE_TYPES, True),
        ("/contacts", "acct_a", CONTACT_TYPES, True),
        ("/inactive", "acct_a", ALL_TYPES, False),
        ("/other-account", "acct_b", ALL_TYPES, True),
    ]:
        url = receiver.url(path)
        hooks[path] = seed_webhook(database_url, account, url, events, active=active)
        receiver.expect(path, secret=hooks[path][1])
    fleet.start_dispatcher()

    sent: dict[str, Event] = {}
    with publisher_for(kafka_bootstrap, topics) as publisher:
        for event_type in PRODUCT_TYPES:
            event = build_event("acct_a", event_type, sample_data(event_type))
            publisher.publish_and_wait(event)
            sent[event.id] = event

    assert receiver.wait_for(
        lambda: (
            len(receiver.at("/all")) >= 9 and len(receiver.at("/messages")) >= 5 and len(receiver.at("/contacts")) >= 2
        )
    )
    # The dispatcher has finished every event and task: a wrong delivery, had one been made, has arrived.
    wait_until(lambda: fleet_idle(kafka_bootstrap, topics, ("dispatcher",)), 30, "the dispatcher to finish")
    assert sorted(json.loads(r.body)["type"] for r in receiver.at("/all")) == sorted(ALL_TYPES)
    assert sorted(json.loads(r.body)["type"] for r in receiver.at("/messages")) == sorted(MESSAGE_TYPES)
    assert sorted(json.loads(r.body)["type"] for r in receiver.at("/contacts")) == sorted(CONTACT_TYPES)
    assert receiver.at("/inactive") == [] and receiver.at("/other-account") == []

    for received in receiver.received:
        assert received.signature_ok is True, received.headers
        event = sent[received.event_id]
        assert received.body == event.body()
        assert received.headers["X-Webhook-Event"] == event.type.value
        assert received.headers["X-Webhook-Attempt"] == "1"
        assert received.headers["User-Agent"].startswith("hookfleet/")
        assert received.headers["Content-Type"] == "application/json"
        assert abs(int(received.headers["X-Webhook-Timestamp"]) - received.at) < 5
        secret = hooks[received.path][1]
        assert StandardWebhook(secret).verify(received.body, dict(received.headers))["id"] == event.id


def test_garbage_goes_to_the_invalid_topic_and_delivery_continues(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_a")
    _, secret = seed_webhook(database_url, "acct_a", receiver.url("/hook"), ALL_TYPES)
    receiver.expect("/hook", secret=secret)
    fleet.start_dispatcher()

    producer = KafkaProducer(kafka_bootstrap)
    producer.send_sync(topics.events, b"\x00not json at all", key="acct_a")
    bad_type = build_event("acct_a", "message.read", {}).model_dump(mode="json") | {"type": "message.exploded"}
    producer.send_sync(topics.events, json.dumps(bad_type).encode(), key="acct_a")
    producer.close()
    good = build_event("acct_a", EventType.CONTACT_CREATED, sample_data(EventType.CONTACT_CREATED))
    with publisher_for(kafka_bootstrap, topics) as publisher:
        publisher.publish_and_wait(good)

    assert receiver.wait_for(lambda: len(receiver.at("/hook")) == 1)
    assert receiver.at("/hook")[0].event_id == good.id
    invalid = consume_all(kafka_bootstrap, topics.invalid, 2)
    reasons = sorted(dict(m.headers())["reason"].decode() for m in invalid)
    assert len(reasons) == 2
    assert any("type" in r and "message.exploded" not in r for r in reasons), reasons
    assert any("json" in r.lower() for r in reasons), reasons
    assert {m.value() for m in invalid} >= {b"\x00not json at all"}


OPEN = 1
"""Requests a webhook never heard from gets before its first answer."""


def test_hanging_endpoint_does_not_stall_others(
    fleet_env: dict[str, str],
    tmp_path,
    receiver: HttpsReceiver,
    database_url: str,
    kafka_bootstrap: str,
    topics: Topics,
) -> None:
    seed_account(database_url, "acct_a")
    _, fast_secret = seed_webhook(database_url, "acct_a", receiver.url("/fast"), ["message.read"])
    hang_id, _ = seed_webhook(database_url, "acct_a", receiver.url("/hang"), ["message.read"])
    receiver.expect("/fast", secret=fast_secret)
    receiver.expect("/hang", hang=True)
    fleet = Fleet(
        {
            **fleet_env,
            "HOOKFLEET_DELIVERY_TIMEOUT_S": "20",
            "HOOKFLEET_PER_ENDPOINT_CONCURRENCY": "5",
            "HOOKFLEET_PER_ENDPOINT_QUEUE": "1000",
            "HOOKFLEET_PARK_AFTER_S": "1",
            "HOOKFLEET_RETRY_DELAYS_S": "[3, 30, 60]",  # parked tasks come back while the endpoint still hangs
        },
        tmp_path,
    )
    try:
        fleet.start_dispatcher()
        fleet.start("retry-scheduler")
        started = time.monotonic()
        with publisher_for(kafka_bootstrap, topics) as publisher:
            for _ in range(200):
                publisher.publish(build_event("acct_a", EventType.MESSAGE_READ, {"n": 1}))
        assert receiver.wait_for(lambda: len(receiver.at("/fast")) >= 200, timeout_s=15), (
            len(receiver.at("/fast")),
            len(receiver.at("/hang")),
            fleet.logs(),
        )
        elapsed = time.monotonic() - started
        # Every fast delivery completed while the hanging endpoint still held its requests open.
        assert elapsed < 20, elapsed
        # Never heard from, it is probed with one request (dispatcher/recent_answers.py PROBE_AFTER_S), which
        # hangs: only that one ever reached it (before the probe, its concurrency bound: 5)
        assert len(receiver.at("/hang")) == OPEN
        parked = consume_all(kafka_bootstrap, topics.retry_10s, 200 - OPEN, timeout_s=20)
        tasks = [DeliveryTask.model_validate_json(m.value()) for m in parked]
        assert len(tasks) == 200 - OPEN
        assert all(t.parked and t.attempt == 1 and t.webhook_id == hang_id for t in tasks)
        assert {dict(message_headers(m) or []).get(PARKS_HEADER) for m in parked} == {b"1"}
        # Handed back by the retry scheduler while the endpoint still hangs, each is parked once more, one delay
        # further (the second delay topic), with its count carried through the scheduler.
        again = consume_all(kafka_bootstrap, topics.retry_60s, 200 - OPEN, timeout_s=30)
        assert len(again) == 200 - OPEN, fleet.logs()
        assert {dict(message_headers(m) or []).get(PARKS_HEADER) for m in again} == {b"2"}
        assert {DeliveryTask.model_validate_json(m.value()).attempt for m in again} == {1}
        assert len(receiver.at("/hang")) == OPEN  # parked, never tried
    finally:
        fleet.stop_all()


def test_sigterm_drains_and_exits_zero(
    fleet: Fleet, receiver: HttpsReceiver, database_url: str, kafka_bootstrap: str, topics: Topics
) -> None:
    seed_account(database_url, "acct_a")
    _, secret = seed_webhook(database_url, "acct_a", receiver.url("/hook"), ALL_TYPES)
    receiver.expect("/hook", secret=secret)
    dispatcher = fleet.start_dispatcher()
    with publisher_for(kafka_bootstrap, topics) as publisher:
        publisher.publish_and_wait(build_event("acct_a", EventType.MESSAGE_SENT, {}))
    assert receiver.wait_for(lambda: len(receiver.at("/hook")) == 1)
    assert dispatcher.terminate() == 0
    log = dispatcher.log_text()
    assert "event=dispatcher_stopped" in log and "Traceback" not in log
