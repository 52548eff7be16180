"""Idempotent publishing through the dispatcher's real fan-out loop on the in-memory broker: a second
publish of a key is not fanned out, the first sight goes to the changelog partition of its events partition
with the tasks, and a new owner restores it from there."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from dispatcher.subscriptions import SubscriptionIndex
from dispatcher.worker import Dispatcher
from hookfleet.kafka import Headers
from producer.publisher import build_event
from schemas.catalog import EventType
from schemas.models import DeliveryTask
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer
from tests.support.waiting import wait_until_async
from tests.unit.test_dispatcher_loop import SETTINGS, StubDeliverer, endpoint, run_until

TOPICS = SETTINGS.topics


def publish(broker: MemoryBroker, account: str, key: str | None, n: int) -> str:
    event = build_event(account, EventType.MESSAGE_SENT, {"n": n})
    headers: Headers | None = None if key is None else [("idempotency-key", key.encode())]
    broker.append(TOPICS.events, event.body(), key=account, headers=headers)
    return event.id


def fanned_out(broker: MemoryBroker) -> list[tuple[str, str]]:
    tasks = [DeliveryTask.model_validate_json(m.value() or b"") for m in broker.messages(TOPICS.deliveries)]
    return sorted((t.webhook_id, t.event.id) for t in tasks)


async def run_restoring(broker: MemoryBroker, index: SubscriptionIndex, done: Callable[[], bool]) -> None:
    """A fan-out stage that restores its keys from the broker's changelog, as a new owner does."""

    def read(topic: str, partition: int, last: int) -> list[tuple[bytes | None, bytes | None]]:
        return [(m.key(), m.value()) for m in broker.messages(topic) if m.partition() == partition][-last:]

    consumers = {"fanout": MemoryConsumer(broker, SETTINGS.group_id)}
    producer = MemoryProducer(broker)
    dispatcher = Dispatcher(SETTINGS, consumers, producer, StubDeliverer(), index, read_changelog=read)  # type: ignore[arg-type]
    stop = asyncio.Event()
    runner = asyncio.create_task(dispatcher.run(stop))
    try:
        await wait_until_async(done, 10, "the fan-out to reach the test's condition")
    finally:
        stop.set()
        broker.wake()
        await asyncio.wait_for(runner, 5)


async def test_a_second_publish_of_a_key_is_not_fanned_out_and_its_first_sight_is_in_the_changelog() -> None:
    broker = MemoryBroker()
    index = SubscriptionIndex([endpoint("wh_a"), endpoint("wh_b")])
    first = publish(broker, "acct_1", "order-7", 1)
    publish(broker, "acct_1", "order-7", 2)  # the publisher retried, with a new event id
    plain = publish(broker, "acct_1", None, 3)
    other = publish(broker, "acct_1", "order-8", 4)
    events_partition = broker.messages(TOPICS.events)[0].partition()
    done = lambda: len(broker.messages(TOPICS.deliveries)) >= 6  # noqa: E731
    await run_until(broker, index, StubDeliverer(), done, stages=("fanout",))

    assert fanned_out(broker) == sorted((w, e) for w in ("wh_a", "wh_b") for e in (first, plain, other))
    changelog = broker.messages(TOPICS.idempotency)
    assert [m.key() for m in changelog] == [b"acct_1/order-7", b"acct_1/order-8"]
    assert {m.partition() for m in changelog} == {events_partition}
    sight = json.loads(changelog[0].value() or b"")
    assert sight["event_id"] == first and sight["events_offset"] == 0 and sight["idempotency_key"] == "order-7"


async def test_a_new_owner_restores_the_keys_and_drops_a_publish_made_while_no_one_owned_them() -> None:
    broker = MemoryBroker()
    index = SubscriptionIndex([endpoint("wh_a")])
    first = publish(broker, "acct_1", "order-7", 1)
    await run_until(broker, index, StubDeliverer(), lambda: len(broker.messages(TOPICS.deliveries)) == 1,
                    stages=("fanout",))  # fmt: skip
    publish(broker, "acct_1", "order-7", 2)
    later = publish(broker, "acct_1", "order-9", 3)

    await run_restoring(broker, index, lambda: len(broker.messages(TOPICS.deliveries)) >= 2)
    assert fanned_out(broker) == [("wh_a", first), ("wh_a", later)]


async def test_the_first_publish_read_again_after_a_crash_is_fanned_out_again() -> None:
    # Given the first publish's key in the changelog but its offset never committed (a crash in between)
    broker = MemoryBroker()
    index = SubscriptionIndex([endpoint("wh_a")])
    first = publish(broker, "acct_1", "order-7", 1)
    partition = broker.messages(TOPICS.events)[0].partition()
    sight = {"account_id": "acct_1", "idempotency_key": "order-7", "event_id": first, "events_offset": 0,
             "first_seen_ms": int(time.time() * 1000)}  # fmt: skip
    broker.append(TOPICS.idempotency, json.dumps(sight).encode(), key=b"acct_1/order-7", partition=partition)
    # When a dispatcher restores the key and reads the event again
    await run_restoring(broker, index, lambda: len(broker.messages(TOPICS.deliveries)) >= 1)
    # Then it is fanned out (its tasks may never have been written), and its key is not written again
    assert fanned_out(broker) == [("wh_a", first)]
    assert len(broker.messages(TOPICS.idempotency)) == 1


async def test_an_unusable_key_sends_the_event_to_the_invalid_topic_naming_the_header() -> None:
    broker = MemoryBroker()
    index = SubscriptionIndex([endpoint("wh_a")])
    publish(broker, "acct_1", "x" * 201, 1)
    await run_until(broker, index, StubDeliverer(), lambda: len(broker.messages(TOPICS.invalid)) == 1,
                    stages=("fanout",))  # fmt: skip
    [invalid] = broker.messages(TOPICS.invalid)
    reason = dict(invalid.headers() or [])["reason"]
    assert reason == b"header idempotency-key: must be 1-200 bytes (got 201)"
    assert broker.messages(TOPICS.deliveries) == []


async def test_a_key_with_a_line_separator_or_given_twice_is_diverted_and_the_partition_goes_on() -> None:
    broker = MemoryBroker()
    index = SubscriptionIndex([endpoint("wh_a")])
    publish(broker, "acct_1", "order\u20281", 1)
    twice = build_event("acct_1", EventType.MESSAGE_SENT, {"n": 2})
    broker.append(TOPICS.events, twice.body(), key="acct_1",
                  headers=[("idempotency-key", b"order-2"), ("idempotency-key", b"order-2")])  # fmt: skip
    nothing = build_event("acct_1", EventType.MESSAGE_SENT, {"n": 3})
    broker.append(TOPICS.events, nothing.body(), key="acct_1", headers=[("idempotency-key", None)])
    sound = publish(broker, "acct_1", "order-4", 4)
    await run_until(broker, index, StubDeliverer(), lambda: len(broker.messages(TOPICS.deliveries)) == 1,
                    stages=("fanout",))  # fmt: skip
    reasons = [dict(m.headers() or [])["reason"] for m in broker.messages(TOPICS.invalid)]
    assert reasons == [
        b"header idempotency-key: must not contain U+2028 (LINE SEPARATOR) (no line break, control or invisible"
        b" character)",
        b"header idempotency-key: given 2 times; set it once",
        b"header idempotency-key: must be 1-200 bytes (got 0)",
    ]
    assert fanned_out(broker) == [("wh_a", sound)]
