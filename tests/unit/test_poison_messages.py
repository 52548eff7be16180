"""The stream runtime's poison rule in every consumer's real loop: a message whose handling raises (a bug, or
input nobody foresaw) goes to the invalid topic as `handler_error`, its offset is finished like any other's,
and the message behind it is handled: no crash, so no crash loop. Each role on the in-memory broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from delivery.wire_json import event_bytes, task_json
from dispatcher import worker as worker_module
from dispatcher.fanout import recipients
from dispatcher.subscriptions import SubscriptionIndex
from hookfleet.settings import RecorderSettings, RetrySchedulerSettings
from hookfleet.shutdown import Shutdown
from producer.publisher import build_event
from recorder import loop as recorder_module
from recorder.batch import parse_records
from recorder.loop import Recorder
from retry_scheduler import scheduler as scheduler_module
from retry_scheduler.gate import hold_plan
from retry_scheduler.scheduler import RetryScheduler
from schemas.catalog import EventType
from schemas.topics import Topics
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer, headers_of, running
from tests.unit.test_dispatcher_loop import SETTINGS, StubDeliverer, endpoint, run_until
from tests.unit.test_recorder_loop import MemoryStore, attempt_bytes
from tests.unit.test_retry_scheduler_loop import task_bytes

TOPICS = Topics.with_prefix("unit.")
POISON = b"poison"


def raising_for(marker: object, real: Callable[..., Any]) -> Callable[..., Any]:
    """`real`, except that it raises when any argument is `marker` or contains it."""

    def maybe_raise(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            if value == marker or (isinstance(value, bytes) and isinstance(marker, bytes) and marker in value):
                raise RuntimeError("a bug meets unforeseen input: s3cr3t payload text")
            if getattr(value, "account_id", None) == marker:
                raise RuntimeError("a bug meets unforeseen input")
        return real(*args, **kwargs)

    return maybe_raise


def diverted(broker: MemoryBroker, topic: str) -> list[dict[str, bytes]]:
    return [headers_of(m) for m in broker.messages(topic)]


def test_retry_scheduler_diverts_a_task_whose_handling_raises_and_hands_off_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    poison_due = time.time_ns() // 1_000_000 - 4_242
    monkeypatch.setattr(scheduler_module, "hold_plan", raising_for(poison_due, hold_plan))
    broker = MemoryBroker()
    broker.append(TOPICS.retry_10s, task_bytes(1, poison_due), partition=0)
    broker.append(TOPICS.retry_10s, task_bytes(2, time.time_ns() // 1_000_000), partition=0)
    settings = RetrySchedulerSettings(topic_prefix=TOPICS.prefix, group_id="unit.rs", drain_timeout_s=0.5)
    shutdown = Shutdown()
    scheduler = RetryScheduler(settings, shutdown, MemoryConsumer(broker, "unit.rs"), MemoryProducer(broker))  # type: ignore[arg-type]
    with running(scheduler.run, shutdown, broker) as result:
        assert broker.wait(
            lambda: len(broker.messages(TOPICS.deliveries)) == 1 and bool(broker.messages(TOPICS.invalid))
        )
        assert broker.wait(lambda: broker.committed.get("unit.rs", {}).get((TOPICS.retry_10s, 0)) == 2)
    [headers] = diverted(broker, TOPICS.invalid)
    assert headers["reason"].startswith(b"handling failed: RuntimeError at ")
    assert b"s3cr3t" not in headers["reason"]
    assert (headers["role"], headers["source_offset"]) == (b"retry-scheduler", b"0")
    assert result == [None]


def test_recorder_diverts_a_record_whose_handling_raises_and_writes_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "parse_records", raising_for(POISON, parse_records))
    broker = MemoryBroker()
    broker.append(TOPICS.attempts, attempt_bytes(1), partition=0)
    broker.append(TOPICS.attempts, b'{"poison": true}' + POISON, partition=0)
    broker.append(TOPICS.attempts, attempt_bytes(2), partition=0)
    store = MemoryStore(broker)
    settings = RecorderSettings(topic_prefix=TOPICS.prefix, group_id="unit.rec", batch_wait_ms=10)
    shutdown = Shutdown()
    consumer = MemoryConsumer(broker, settings.group_id)
    store.consumer = consumer
    recorder = Recorder(settings, shutdown, consumer, MemoryProducer(broker), store)  # type: ignore[arg-type]
    with running(recorder.run, shutdown, broker) as result:
        assert broker.wait(lambda: broker.committed.get("unit.rec", {}).get((TOPICS.attempts, 0)) == 3)
    assert sorted(store.written) == ["att_1", "att_2"]
    [headers] = diverted(broker, TOPICS.invalid)
    assert headers["reason"].startswith(b"handling failed: RuntimeError")
    assert (headers["role"], headers["source_offset"]) == (b"recorder", b"1")
    assert result == [0]


@pytest.mark.parametrize("stage", ["fanout", "delivery"])
async def test_dispatcher_stage_diverts_a_message_whose_handling_raises_and_handles_the_next(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given, on one partition, an event or task of the account that makes handling raise, then a good one
    broker = MemoryBroker(partitions=1)
    index = SubscriptionIndex([endpoint("wh_a", account="acct_1"), endpoint("wh_p", account="acct_poison")])
    if stage == "fanout":
        monkeypatch.setattr(worker_module, "recipients", raising_for("acct_poison", recipients))
        topic = SETTINGS.topics.events
        broker.append(topic, build_event("acct_poison", EventType.MESSAGE_SENT, {}).body(), key="k")
        broker.append(topic, build_event("acct_1", EventType.MESSAGE_SENT, {}).body(), key="k")
        wanted: tuple[str, int] = (SETTINGS.topics.deliveries, 1)
    else:
        monkeypatch.setattr(worker_module, "event_bytes", raising_for(b"acct_poison", event_bytes))

        topic = SETTINGS.topics.deliveries
        poison = build_event("acct_poison", EventType.MESSAGE_SENT, {})
        broker.append(topic, task_json(poison.body(), "wh_p", 1, 0), key="k")
        broker.append(topic, task_json(build_event("acct_1", EventType.MESSAGE_SENT, {}).body(), "wh_a", 1, 0), key="k")
        wanted = (SETTINGS.topics.attempts, 1)
    deliverer = StubDeliverer()
    await run_until(
        broker,
        index,
        deliverer,
        lambda: len(broker.messages(wanted[0])) == wanted[1] and bool(broker.messages(SETTINGS.topics.invalid)),
        stages=(stage,),
    )
    [headers] = diverted(broker, SETTINGS.topics.invalid)
    assert headers["reason"].startswith(b"handling failed: RuntimeError")
    assert (headers["role"], headers["source_offset"]) == (b"dispatcher", b"0")
    assert broker.committed[SETTINGS.group_id][(topic, 0)] == 2
