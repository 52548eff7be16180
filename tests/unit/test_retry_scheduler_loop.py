"""The retry scheduler's real loop on the in-memory broker: hand-off, hold, invalid routing, failed
produces and offsets, each in a second or a few (the broker-backed timing tests are in
tests/integration/test_retry_scheduler.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from hookfleet.settings import RetrySchedulerSettings
from hookfleet.shutdown import Shutdown
from hookfleet.stream import sender as sender_module
from retry_scheduler.scheduler import RetryScheduler
from schemas.catalog import EventType
from schemas.models import DeliveryTask, Event
from schemas.topics import Topics
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer, headers_of, running

TOPICS = Topics.with_prefix("unit.")
GROUP = "unit.retry-scheduler"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def task_bytes(n: int, due_at: int) -> bytes:
    event = Event(id=f"evt_{n}", type=EventType.MESSAGE_READ, created_at=T0, account_id="acct_1", data={})
    return DeliveryTask(event=event, webhook_id=f"wh_{n}", attempt=2, due_at=due_at).model_dump_json().encode()


@dataclass
class Fleet:
    scheduler: RetryScheduler
    consumer: MemoryConsumer
    broker: MemoryBroker

    def delivered(self) -> list[int]:
        """Event numbers handed back to the deliveries topic, in order."""
        tasks = [DeliveryTask.model_validate_json(m.value() or b"") for m in self.broker.messages(TOPICS.deliveries)]
        return [int(task.event.id.removeprefix("evt_")) for task in tasks]


def committed(broker: MemoryBroker, source: tuple[str, int]) -> int | None:
    return broker.committed.get(GROUP, {}).get(source)


@contextmanager
def scheduler_running(broker: MemoryBroker, producer: MemoryProducer | None = None) -> Iterator[Fleet]:
    settings = RetrySchedulerSettings(topic_prefix=TOPICS.prefix, group_id=GROUP, drain_timeout_s=1.0)
    shutdown = Shutdown()
    consumer = MemoryConsumer(broker, settings.group_id)
    scheduler = RetryScheduler(settings, shutdown, consumer, producer or MemoryProducer(broker))  # type: ignore[arg-type]
    with running(scheduler.run, shutdown, broker):
        yield Fleet(scheduler, consumer, broker)


def test_due_task_is_handed_back_and_its_offset_committed_only_once_acknowledged() -> None:
    # Given a due task in the 60 s delay topic and a broker that holds acknowledgements back
    broker = MemoryBroker()
    source = (TOPICS.retry_60s, 1)
    broker.append(source[0], task_bytes(1, now_ms() - 10), key=b"wh_1", partition=1)
    producer = MemoryProducer(broker, acks="manual")
    with scheduler_running(broker, producer) as fleet:
        # When it is handed off: it is on the deliveries topic, with its key, but the offset waits
        assert broker.wait(lambda: fleet.delivered() == [1])
        assert broker.messages(TOPICS.deliveries)[0].key() == b"wh_1"
        assert committed(broker, source) is None
        # Then once the broker acknowledges, the offset past it is committed
        producer.ack_all()
        assert broker.wait(lambda: committed(broker, source) == 1)
    assert broker.committed[GROUP] == {source: 1}


def test_not_yet_due_task_holds_only_its_partition_and_is_handed_off_when_due() -> None:
    # Given a task due in 300 ms on partition 0, and a due one on partition 2
    broker = MemoryBroker()
    due_at = now_ms() + 300
    broker.append(TOPICS.retry_10s, task_bytes(1, due_at), partition=0)
    broker.append(TOPICS.retry_10s, task_bytes(2, now_ms()), partition=2)
    with scheduler_running(broker) as fleet:
        # Then the due one flows while partition 0 is paused at the waiting task
        assert broker.wait(lambda: fleet.delivered() == [2])
        assert (TOPICS.retry_10s, 0) in fleet.consumer.paused
        assert fleet.consumer.position_of((TOPICS.retry_10s, 0)) == 0
        # And the waiting one leaves at its due time, not before, and the partition resumes
        assert broker.wait(lambda: fleet.delivered() == [2, 1], timeout_s=2)
        assert now_ms() >= due_at
        assert (TOPICS.retry_10s, 0) not in fleet.consumer.paused


def test_malformed_task_goes_to_the_invalid_topic_in_the_one_shape_and_the_partition_moves_on() -> None:
    # Given garbage ahead of a due task on one partition
    broker = MemoryBroker()
    broker.append(TOPICS.retry_5m, b"garbage{", key=b"wh_bad", headers=[("trace", b"t1")], partition=2)
    broker.append(TOPICS.retry_5m, task_bytes(3, now_ms()), partition=2)
    with scheduler_running(broker) as fleet:
        assert broker.wait(lambda: fleet.delivered() == [3] and committed(broker, (TOPICS.retry_5m, 2)) == 2)
    # Then the garbage is in the invalid topic: same bytes and key, the documented headers only
    (invalid,) = broker.messages(TOPICS.invalid)
    assert (invalid.value(), invalid.key()) == (b"garbage{", b"wh_bad")
    headers = headers_of(invalid)
    assert list(headers) == ["reason", "source_topic", "source_partition", "source_offset", "role"]
    assert headers["reason"].startswith(b"value: Invalid JSON")
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"]) == (
        TOPICS.retry_5m.encode(),
        b"2",
        b"0",
    )
    assert headers["role"] == b"retry-scheduler"


def test_failed_hand_off_is_produced_again_and_its_offset_waits_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a broker that fails the first produce
    monkeypatch.setattr(sender_module, "RETRY_BACKOFF_S", (0.05,))
    broker = MemoryBroker()
    source = (TOPICS.retry_10s, 0)
    broker.append(source[0], task_bytes(4, now_ms()), partition=0)
    producer = MemoryProducer(broker)
    producer.fail_next(1)
    with scheduler_running(broker, producer) as fleet:
        # Then the task is produced again after the backoff, exactly once, and only then committed
        assert broker.wait(lambda: committed(broker, source) == 1)
        assert fleet.delivered() == [4]


def test_a_restarted_scheduler_starts_after_what_was_committed() -> None:
    # Given a scheduler that handed off one task and stopped
    broker = MemoryBroker()
    broker.append(TOPICS.retry_10s, task_bytes(5, now_ms()), partition=1)
    with scheduler_running(broker) as fleet:
        assert broker.wait(lambda: committed(broker, (TOPICS.retry_10s, 1)) == 1)
    # When a new one of the same group starts and a second task arrives
    broker.append(TOPICS.retry_10s, task_bytes(6, now_ms()), partition=1)
    with scheduler_running(broker) as fleet:
        assert broker.wait(lambda: committed(broker, (TOPICS.retry_10s, 1)) == 2)
        # Then only the new task is handed off again
        assert fleet.delivered() == [5, 6]


def test_a_relayed_wait_goes_to_the_topic_for_what_is_left_and_its_last_seconds_are_held_aside() -> None:
    # Given three long waits in the 10 s topic whose 10 s there are over (written 10 s ago), on one partition,
    # and a due task queued behind them
    broker = MemoryBroker()
    written = now_ms() - 10_000
    source = (TOPICS.retry_10s, 0)
    # 1.5 s left: past what a head task may be due after its topic's delay and still be held at the head
    broker.append(source[0], task_bytes(1, written + 10_000 + 1_500), partition=0, timestamp_ms=written)
    broker.append(source[0], task_bytes(2, written + 10_000 + 15_000), partition=0, timestamp_ms=written)  # 15 s
    broker.append(source[0], task_bytes(3, written + 10_000 + 70_000), partition=0, timestamp_ms=written)  # 70 s
    broker.append(source[0], task_bytes(4, now_ms()), partition=0)
    with scheduler_running(broker) as fleet:
        # Then the due task behind them leaves first: the 1.5 s left of the first do not hold the partition
        assert broker.wait(lambda: bool(fleet.delivered()), timeout_s=5)
        assert fleet.delivered()[0] == 4
        # And what is left of the others goes to the longest delay topic it outlasts, unchanged
        relayed_10s = [m for m in broker.messages(TOPICS.retry_10s) if (m.offset() or 0) >= 4]
        assert [DeliveryTask.model_validate_json(m.value() or b"").event.id for m in relayed_10s] == ["evt_2"]
        assert [m.value() for m in broker.messages(TOPICS.retry_60s)] == [task_bytes(3, written + 80_000)]
        # And the first leaves when due, not before, from memory
        assert broker.wait(lambda: fleet.delivered() == [4, 1], timeout_s=3)
        assert now_ms() >= written + 11_500
        # And the source offsets are committed past all four only once the held one was handed off
        assert broker.wait(lambda: committed(broker, source) == 4)


def test_a_wait_held_in_memory_is_read_again_after_a_restart() -> None:
    # Given a scheduler that holds the last 3 s of a relayed wait in memory, hands off the task behind it,
    # and stops
    broker = MemoryBroker()
    written = now_ms() - 10_000
    source = (TOPICS.retry_10s, 0)
    broker.append(source[0], task_bytes(1, written + 10_000 + 3_000), partition=0, timestamp_ms=written)
    broker.append(source[0], task_bytes(2, now_ms()), partition=0)
    with scheduler_running(broker) as fleet:
        assert broker.wait(lambda: fleet.delivered() == [2])
    # Then nothing past the held task was committed, so the next owner reads it again...
    assert committed(broker, source) == 0
    assert fleet.delivered() == [2]
    # ...and holds it again, but does not hand off again what was handed off after it (commit metadata)
    with scheduler_running(broker) as fleet:
        assert broker.wait(lambda: fleet.delivered() == [2, 1], timeout_s=12)
        assert broker.wait(lambda: committed(broker, source) == 2)
    assert fleet.delivered() == [2, 1]
