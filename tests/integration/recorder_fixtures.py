"""Shared helpers of the recorder and redrive integration tests: a recorder on a thread, records, rows."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from hookfleet.kafka import KafkaProducer, Message, new_consumer
from hookfleet.settings import RecorderSettings
from hookfleet.shutdown import Shutdown
from recorder.main import run_recorder
from schemas.catalog import EventType
from schemas.ids import new_attempt_id, new_event_id, new_webhook_id
from schemas.models import AttemptRecord, DeliveryTask, Event, Outcome
from schemas.topics import Topics
from tests.support.group_offsets import committed_to_end as committed_to_end  # the recorder tests import it here
from tests.support.waiting import wait_until


def recorder_settings(kafka_bootstrap: str, topics: Topics, database_url: str, **overrides: Any) -> RecorderSettings:
    return RecorderSettings.model_validate(
        {
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "DATABASE_URL": database_url,
            "topic_prefix": topics.prefix,
            "group_id": f"recorder-{uuid.uuid4().hex[:10]}",
            "batch_wait_ms": 50,
            **overrides,
        }
    )


@dataclass
class RunningRecorder:
    settings: RecorderSettings
    shutdown: Shutdown = field(default_factory=Shutdown)
    exit_code: list[int] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> RunningRecorder:
        self.thread = threading.Thread(target=lambda: self.exit_code.append(run_recorder(self.settings, self.shutdown)))
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> int:
        assert self.thread is not None
        self.shutdown.requested.set()  # not .request(): a second call would os._exit
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "recorder did not stop"
        return self.exit_code[0]


@contextmanager
def recorder_running(settings: RecorderSettings) -> Iterator[RunningRecorder]:
    running = RunningRecorder(settings).start()
    try:
        yield running
    finally:
        if running.thread is not None and running.thread.is_alive():
            running.stop()


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    wait_until(condition, timeout_s, what, interval_s=0.1)


def scalar(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(sql.encode(), params).fetchone()
    return row[0] if row else None


def insert_webhook(
    database_url: str, *, account_id: str = "acct_1", status: str = "healthy", changed_at: datetime
) -> str:
    webhook_id = new_webhook_id()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO accounts (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (account_id, "Acme"))
        conn.execute(
            "INSERT INTO webhooks (id, account_id, name, url, events, secret_ciphertext, status, status_changed_at) "
            "VALUES (%s, %s, 'CRM Sync', 'https://example.com/hook', %s, %s, %s, %s)",
            (webhook_id, account_id, ["message.read"], b"not-a-real-ciphertext", status, changed_at),
        )
    return webhook_id


def webhook_status(database_url: str, webhook_id: str) -> tuple[str, datetime]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT status, status_changed_at FROM webhooks WHERE id = %s", (webhook_id,)).fetchone()
    assert row is not None
    return str(row[0]), row[1]


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def now_ms_precision() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def make_event(account_id: str = "acct_1", created_at: datetime | None = None) -> Event:
    return Event(
        id=new_event_id(),
        type=EventType("message.read"),
        created_at=created_at or now_ms_precision(),
        account_id=account_id,
        data={"message_id": "m1"},
    )


def make_attempt(
    webhook_id: str,
    *,
    outcome: Outcome = Outcome.SUCCESS,
    attempted_at: datetime | None = None,
    event: Event | None = None,
    account_id: str = "acct_1",
    test: bool = False,
) -> AttemptRecord:
    event = event or make_event(account_id)
    ok = outcome is Outcome.SUCCESS
    return AttemptRecord(
        attempt_id=new_attempt_id(),
        event_id=event.id,
        event_type=event.type,
        account_id=account_id,
        webhook_id=webhook_id,
        attempt=1,
        outcome=outcome,
        status_code=200 if ok else 500,
        response_ms=12,
        response_excerpt="ok" if ok else "boom",
        attempted_at=attempted_at or now_ms_precision(),
        next_step="done" if ok else "retry",
        test=test,
        event=event,
    )


def make_dead_task(webhook_id: str, *, dead_at: datetime, event: Event | None = None) -> DeliveryTask:
    return DeliveryTask(
        event=event or make_event(), webhook_id=webhook_id, attempt=4, due_at=ms(dead_at), last_error="http 500"
    )


def publish(producer: KafkaProducer, topic: str, messages: list[AttemptRecord] | list[DeliveryTask]) -> None:
    for message in messages:
        producer.produce(topic, message.model_dump_json().encode(), key=message.webhook_id)
    assert producer.flush() == 0


def an_hour_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=1)


def headers_of(message: Message) -> dict[str, str]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {name: value.decode() if isinstance(value, bytes) else str(value) for name, value in pairs}


def read_topic(kafka_bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list[Message]:
    """Everything on `topic`: returns once `expected` messages arrived, or after a quiet second past that."""
    consumer = new_consumer(kafka_bootstrap, f"check-{uuid.uuid4().hex[:8]}")
    consumer.subscribe([topic])
    got: list[Message] = []
    until = time.monotonic() + timeout_s
    try:
        while time.monotonic() < until:
            got += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
            if len(got) >= expected:
                # Linger briefly so an unexpected extra message is seen too.
                got += [m for m in consumer.consume(100, timeout=1.0) if m.error() is None]
                break
    finally:
        consumer.close()
    return got
