"""The delivery stage's 410 rule (dispatcher/gone.py): pure, and the real loop on the in-memory broker."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from delivery.wire_json import task_json
from dispatcher.gone import GoneWebhooks
from dispatcher.subscriptions import SubscriptionIndex
from dispatcher.worker import Dispatcher
from producer.publisher import build_event
from schemas.catalog import EventType
from schemas.models import Outcome
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer
from tests.support.waiting import wait_until_async
from tests.unit.test_dispatcher_loop import (
    SETTINGS,
    StubDeliverer,
    dispatcher_running,
    endpoint,
    records,
    result,
    run_until,
)

PARTITION = ("u.webhooks.deliveries", 0)


def test_a_webhook_that_answered_410_holds_until_switched_on_again_or_given_another_url_or_deleted() -> None:
    gone = GoneWebhooks()
    wh = endpoint("wh_a")
    assert not gone.holds("wh_a", wh)
    assert gone.mark(wh, PARTITION) and not gone.mark(wh, PARTITION)  # the second 410 is not news
    assert gone.holds("wh_a", wh)
    assert gone.holds("wh_a", replace(wh, active=False))  # the recorder's switch-off changes nothing
    assert not gone.holds("wh_b", endpoint("wh_b"))
    switched_on = replace(wh, enabled_at=datetime(2030, 1, 1, tzinfo=UTC))
    assert not gone.holds("wh_a", switched_on) and len(gone) == 0  # forgotten for good
    assert not gone.holds("wh_a", wh)
    gone.mark(wh, PARTITION)
    assert not gone.holds("wh_a", replace(wh, url="https://example.com/new")) and len(gone) == 0
    gone.mark(wh, PARTITION)
    assert not gone.holds("wh_a", None) and len(gone) == 0


def test_marks_of_revoked_partitions_are_forgotten() -> None:
    gone = GoneWebhooks()
    gone.mark(endpoint("wh_a"), PARTITION)
    gone.mark(endpoint("wh_b"), ("u.webhooks.deliveries", 1))
    gone.forget({PARTITION})
    assert not gone.holds("wh_a", endpoint("wh_a")) and gone.holds("wh_b", endpoint("wh_b"))


async def test_after_the_first_410_the_webhooks_queued_and_later_tasks_are_dropped_not_sent() -> None:
    # Given 20 tasks of one webhook on one partition, a concurrency of 2, and a receiver answering 410
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_a"), endpoint("wh_b")])
    for n in range(20):
        event = build_event("acct_1", EventType.MESSAGE_READ, {"n": n})
        broker.append(SETTINGS.topics.deliveries, task_json(event.body(), "wh_a", 1, 0), key="wh_a")
    other = build_event("acct_1", EventType.MESSAGE_READ, {})
    broker.append(SETTINGS.topics.deliveries, task_json(other.body(), "wh_b", 1, 0), key="wh_b")
    deliverer = StubDeliverer(lambda e, *_: result(Outcome.HTTP_ERROR, 410) if e.id == "wh_a" else result())
    settings = SETTINGS.model_copy(update={"per_endpoint_concurrency": 2})
    # When the delivery stage runs, before any switch-off reaches the subscription index
    await run_until(broker, index, deliverer, lambda: len(records(broker)) == 21, settings, stages=("delivery",))
    # Then the webhook got only the requests open when the first 410 came back, every other task has a
    # dropped log row saying why, and the other webhook on the partition was delivered
    sent = [call for call in deliverer.calls if call[0] == "wh_a"]
    assert len(sent) == 1, sent  # never heard from before: probed with one request, which answered 410
    steps = sorted((r["outcome"], r["next_step"], r["error"]) for r in records(broker) if r["webhook_id"] == "wh_a")
    dropped = ("dropped", "dropped", "webhook gone: its endpoint answered 410 Gone")
    assert steps.count(dropped) == 20 - len(sent)
    assert all(step == dropped or step[1] == "disabled" for step in steps), steps
    assert ("wh_b", other.id, 1) in deliverer.calls


async def test_a_burst_to_a_webhook_not_heard_from_is_probed_with_one_request_then_sent_at_its_concurrency() -> None:
    # Given 20 tasks for a webhook this dispatcher never delivered to, whose answers wait for the test, concurrency 5
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_slow")])
    for n in range(20):
        event = build_event("acct_1", EventType.MESSAGE_READ, {"n": n})
        broker.append(SETTINGS.topics.deliveries, task_json(event.body(), "wh_slow", 1, 0), key="wh_slow")
    deliverer = StubDeliverer()
    deliverer.gate = asyncio.Event()
    settings = SETTINGS.model_copy(update={"per_endpoint_concurrency": 5})
    consumers = {"delivery": MemoryConsumer(broker, settings.group_id)}
    dispatcher = Dispatcher(settings, consumers, MemoryProducer(broker), deliverer, index)  # type: ignore[arg-type]
    async with dispatcher_running(dispatcher, broker):
        # When its first request is open and unanswered, it is the only one (a wave starts in one go: had
        # five been started, all five would be open by now)
        await wait_until_async(lambda: len(deliverer.calls) >= 1, 10, "the first request")
        assert len(deliverer.calls) == 1
        # Then, once it is answered, the rest go out at the webhook's concurrency, and every one is delivered
        deliverer.gate.set()
        await wait_until_async(lambda: len(records(broker)) == 20, 10, "every delivery logged")
    assert len(deliverer.calls) == 20 and {r["outcome"] for r in records(broker)} == {"success"}
