"""The recorder's real loop on the in-memory broker and an in-memory store: rows before offsets, invalid
routing, a database outage and a shutdown during one, each in well under a second (the PostgreSQL side
is tested in tests/integration/test_recorder*.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client import REGISTRY

from hookfleet.kafka import KafkaError, PartitionKey
from hookfleet.settings import RecorderSettings
from hookfleet.shutdown import Shutdown
from producer.publisher import build_event
from recorder import loop as loop_module
from recorder.batch import Batch
from recorder.loop import Recorder
from recorder.store import OutboxBacklog, OutboxItem, RedriveBacklog, RedriveItem, RedriveSent, WriteResult
from schemas.catalog import EventType
from schemas.models import DeliveryTask, Event
from schemas.operational import WebhookFacts, operational_event
from schemas.topics import Topics
from tests.support.memory_kafka import MemoryBroker, MemoryConsumer, MemoryProducer, headers_of, running
from tests.unit.test_recorder_batch import attempt

TOPICS = Topics.with_prefix("unit.")
GROUP = "unit.recorder"


def attempt_bytes(n: int) -> bytes:
    return attempt(n).model_dump_json().encode()


@dataclass
class MemoryStore:
    """Stands in for RecorderStore: keeps what was written, fails the first `failures` writes, and notes
    the consumer's committed offsets and paused partitions at each write."""

    broker: MemoryBroker
    consumer: MemoryConsumer | None = None
    failures: int = 0
    written: list[str] = field(default_factory=list)
    seen: list[tuple[dict[PartitionKey, int], set[PartitionKey]]] = field(default_factory=list)
    closed: bool = False

    def write(self, batch: Batch) -> WriteResult:
        assert self.consumer is not None
        self.seen.append((dict(self.broker.committed.get(GROUP, {})), set(self.consumer.paused)))
        if self.failures:
            self.failures -= 1
            raise psycopg.OperationalError("connection refused")
        self.written += [a.attempt_id for a in batch.attempts]
        return WriteResult(len(batch.attempts), len(batch.dead_letters), {})

    outbox: list[OutboxItem] = field(default_factory=list)
    """Operational events waiting to be sent, as the outbox table holds them."""

    def drain_outbox(self, send: Callable[[list[OutboxItem]], None], limit: int = 100) -> int:
        items, self.outbox = self.outbox[:limit], self.outbox[limit:]
        if items:
            try:
                send(items)
            except BaseException:
                self.outbox[:0] = items  # not deleted: sent again later
                raise
        return len(items)

    redrives: list[RedriveItem] = field(default_factory=list)
    """Dead letters queued by a recovery, as the recovery_redrives table holds them (all due)."""
    refused: list[RedriveItem] = field(default_factory=list)

    def drain_redrives(
        self,
        send: Callable[[list[RedriveItem]], RedriveSent],
        gap: timedelta,
        webhooks: int = 50,
        limit: int = 500,
    ) -> int:
        items, self.redrives = self.redrives[:limit], self.redrives[limit:]
        if not items:
            return 0
        try:
            outcome = send(items)
        except BaseException:
            self.redrives[:0] = items  # not deleted: sent again later
            raise
        self.refused += outcome.refused
        self.redrives[:0] = outcome.held  # still queued, in order
        return len(items) - len(outcome.held) - len(outcome.refused)

    def count_failing(self) -> int:
        return 0

    def outbox_backlog(self) -> OutboxBacklog:
        return OutboxBacklog(len(self.outbox), 0, 0, 0.0)

    redrive_backlog_read: RedriveBacklog = field(default_factory=lambda: RedriveBacklog(0, 0.0))
    """What the recovery_redrives table answers when its backlog is read; `redrive_gaps` the paces asked with."""
    redrive_gaps: list[timedelta] = field(default_factory=list)

    def redrive_backlog(self, gap: timedelta) -> RedriveBacklog:
        self.redrive_gaps.append(gap)
        return self.redrive_backlog_read

    def close(self) -> None:
        self.closed = True


@dataclass
class Fleet:
    recorder: Recorder
    consumer: MemoryConsumer
    store: MemoryStore
    exit_code: list[object]

    def committed(self, key: PartitionKey) -> int | None:
        return self.store.broker.committed.get(GROUP, {}).get(key)


@contextmanager
def recorder_running(
    broker: MemoryBroker, store: MemoryStore, producer: MemoryProducer | None = None, drain_timeout_s: float = 5.0
) -> Iterator[Fleet]:
    settings = RecorderSettings(
        topic_prefix=TOPICS.prefix, group_id=GROUP, batch_wait_ms=10, drain_timeout_s=drain_timeout_s
    )
    shutdown = Shutdown()
    consumer = MemoryConsumer(broker, settings.group_id)
    store.consumer = consumer
    recorder = Recorder(settings, shutdown, consumer, producer or MemoryProducer(broker), store)  # type: ignore[arg-type]
    with running(recorder.run, shutdown, broker) as exit_code:
        yield Fleet(recorder, consumer, store, exit_code)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_module, "RETRY_INITIAL_S", 0.02)
    monkeypatch.setattr(loop_module, "_OUTAGE_POLL_S", 0.01)
    monkeypatch.setattr(loop_module, "_REDRIVE_FAILED_S", 0.05)


def test_rows_are_written_before_their_offsets_are_committed() -> None:
    # Given three attempt records on one partition
    broker = MemoryBroker()
    for n in range(3):
        broker.append(TOPICS.attempts, attempt_bytes(n), partition=0)
    store = MemoryStore(broker)
    with recorder_running(broker, store) as fleet:
        # Then all three are written, and the commit comes after: the write saw nothing committed
        assert broker.wait(lambda: fleet.committed((TOPICS.attempts, 0)) == 3)
        assert sorted(store.written) == ["att_0", "att_1", "att_2"]
        assert store.seen[0][0] == {}
    assert fleet.exit_code == [0] and store.closed


def test_garbage_goes_to_the_invalid_topic_in_the_one_shape_and_is_committed_past() -> None:
    # Given garbage between two records on the attempts topic and on the dead topic
    broker = MemoryBroker()
    broker.append(TOPICS.attempts, attempt_bytes(1), partition=1)
    broker.append(TOPICS.attempts, b"\x00garbage", key=b"wh_1", partition=1)
    broker.append(TOPICS.attempts, attempt_bytes(2), partition=1)
    broker.append(TOPICS.dead, b'{"event": 1}', key=b"wh_2", partition=0)
    store = MemoryStore(broker)
    with recorder_running(broker, store) as fleet:
        assert broker.wait(
            lambda: fleet.committed((TOPICS.attempts, 1)) == 3 and fleet.committed((TOPICS.dead, 0)) == 1
        )
    # Then the rows around it are written, and each unreadable message is on the invalid topic as it came
    assert sorted(store.written) == ["att_1", "att_2"]
    invalid = {m.key(): m for m in broker.messages(TOPICS.invalid)}
    assert invalid[b"wh_1"].value() == b"\x00garbage"
    headers = headers_of(invalid[b"wh_1"])
    assert list(headers) == ["reason", "source_topic", "source_partition", "source_offset", "role"]
    assert headers["reason"].startswith(b"value: Invalid JSON")
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"], headers["role"]) == (
        TOPICS.attempts.encode(),
        b"1",
        b"1",
        b"recorder",
    )
    assert headers_of(invalid[b"wh_2"])["reason"].startswith(b"event: ")


def test_database_outage_pauses_the_partitions_and_commits_only_after_the_write() -> None:
    # Given a database that refuses the first two writes
    broker = MemoryBroker()
    broker.append(TOPICS.attempts, attempt_bytes(1), partition=2)
    store = MemoryStore(broker, failures=2)
    with recorder_running(broker, store) as fleet:
        assert broker.wait(lambda: fleet.committed((TOPICS.attempts, 2)) == 1)
        # Then nothing was committed before the write went in, and meanwhile every partition was paused
        assert [committed for committed, _ in store.seen] == [{}, {}, {}]
        assert store.seen[-1][1] == set(fleet.consumer.assigned)
        assert store.written == ["att_1"]
        assert fleet.recorder.db_up
        # And the partitions flow again afterwards
        assert not fleet.consumer.paused


def test_shutdown_during_an_outage_exits_after_the_drain_bound_without_committing() -> None:
    # Given a database that never answers and a short drain bound
    broker = MemoryBroker()
    broker.append(TOPICS.attempts, attempt_bytes(1), partition=0)
    store = MemoryStore(broker, failures=10**6)
    with recorder_running(broker, store, drain_timeout_s=0.1) as fleet:
        assert broker.wait(lambda: len(store.seen) >= 1)
        stopping = time.monotonic()
    # Then the recorder gave up after the bound, exited 0 and committed nothing (the next owner re-reads)
    assert time.monotonic() - stopping < 3.0  # slack for a loaded machine; waiting out the outage never ends
    assert fleet.exit_code == [0]
    assert GROUP not in broker.committed
    assert store.written == []


def test_operational_events_waiting_in_the_outbox_are_published_to_the_events_topic_keyed_by_account() -> None:
    # Given a webhook.disabled waiting in the outbox (a state change committed before a restart)
    broker = MemoryBroker()
    facts = WebhookFacts("wh_1", "acct_1", "CRM Sync", "https://crm.example.com/h", False, "healthy", "gone", 0)
    event = operational_event(EventType.WEBHOOK_DISABLED, facts, "gone", datetime.now(UTC), "http 410")
    store = MemoryStore(broker, outbox=[OutboxItem(event.id, "acct_1", event.model_dump_json(), None)])
    with recorder_running(broker, store):
        # Then it is published once to webhooks.events, keyed by the account, as the same event
        assert broker.wait(lambda: len(broker.messages(TOPICS.events)) == 1)
    [published] = broker.messages(TOPICS.events)
    assert published.key() == b"acct_1"
    assert Event.model_validate_json(published.value() or b"") == event
    assert store.outbox == []


def test_dead_letters_queued_by_a_recovery_go_out_in_order_as_fresh_first_attempts_and_garbage_is_refused() -> None:
    # Given three dead letters of one webhook queued by its recovery, oldest first, and an unreadable row
    broker = MemoryBroker()
    dead = [
        DeliveryTask(
            event=build_event("acct_1", EventType.MESSAGE_SENT, {"n": n}),
            webhook_id="wh_1",
            attempt=4,
            due_at=1,
            last_error="http 500",
        )
        for n in range(3)
    ]
    items = [RedriveItem("wh_1", task.event.id, task.model_dump_json()) for task in dead]
    items.insert(1, RedriveItem("wh_1", "evt_garbage", '{"not": "a task"}'))
    store = MemoryStore(broker, redrives=items)
    with recorder_running(broker, store):
        # Then the readable ones go to webhooks.deliveries in queue order, keyed by the webhook, as attempt 1
        assert broker.wait(lambda: len(broker.messages(TOPICS.deliveries)) == 3)
    published = [DeliveryTask.model_validate_json(m.value() or b"") for m in broker.messages(TOPICS.deliveries)]
    assert [t.event for t in published] == [t.event for t in dead]
    keys = [m.key() for m in broker.messages(TOPICS.deliveries)]
    assert {(key, t.attempt, t.last_error) for key, t in zip(keys, published, strict=True)} == {(b"wh_1", 1, None)}
    # and the unreadable one is handed back as never sendable (its dead letter is left to redrive by hand)
    assert [item.event_id for item in store.refused] == ["evt_garbage"] and store.redrives == []


def test_a_webhook_whose_partition_refuses_a_redrive_for_now_holds_only_its_own_queue_in_order() -> None:
    # Given wh_1's three and wh_2's two queued redrives, and a broker that times out wh_1's second task
    broker = MemoryBroker()
    items = [
        RedriveItem(webhook, task.event.id, task.model_dump_json())
        for webhook, n in (("wh_1", 0), ("wh_1", 1), ("wh_1", 2), ("wh_2", 3), ("wh_2", 4))
        for task in [
            DeliveryTask(
                event=build_event("acct_1", EventType.MESSAGE_SENT, {"n": n}), webhook_id=webhook, attempt=4, due_at=1
            )
        ]
    ]
    producer = MemoryProducer(broker)
    producer.fail_next(1, KafkaError._MSG_TIMED_OUT, after=1)
    store = MemoryStore(broker, redrives=items)
    with recorder_running(broker, store, producer):
        # Then wh_2's go out once, and wh_1's from the refused one on are sent again, in order; nothing is
        # dropped as never sendable (a timeout is the broker's, not the task's)
        assert broker.wait(lambda: not store.redrives and len(broker.messages(TOPICS.deliveries)) == 6)
    sent = [
        (m.key(), DeliveryTask.model_validate_json(m.value() or b"").event.data["n"])
        for m in broker.messages(TOPICS.deliveries)
    ]
    assert [n for key, n in sent if key == b"wh_2"] == [3, 4]
    assert [n for key, n in sent if key == b"wh_1"] == [0, 2, 1, 2]  # the 2 written after the refused 1, again
    assert store.refused == []


def test_the_redrive_queue_backlog_is_published_as_gauges_read_at_the_recorders_own_pace() -> None:
    # Given a redrive queue of 7 rows whose most overdue one is 20 minutes late
    broker = MemoryBroker()
    store = MemoryStore(broker, redrive_backlog_read=RedriveBacklog(7, 1200.0))
    with recorder_running(broker, store):
        # Then the recorder reports both figures, read with its redrive pace (1 / HOOKFLEET_RECOVERY_REDRIVE_RATE)
        assert broker.wait(
            lambda: REGISTRY.get_sample_value("hookfleet_recovery_redrives_oldest_overdue_seconds") == 1200.0
        )
        assert REGISTRY.get_sample_value("hookfleet_recovery_redrives_queued") == 7
    assert store.redrive_gaps[0] == timedelta(seconds=1 / RecorderSettings().recovery_redrive_rate)
