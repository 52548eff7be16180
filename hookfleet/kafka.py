"""Thin typed wrappers around confluent-kafka: the only place the runtime touches the Kafka client.

Why wrappers: librdkafka reports most failures asynchronously (delivery callbacks, error callbacks) and
raises `BufferError` when its local queue is full. These wrappers turn both into our own exceptions,
retry `BufferError` after serving callbacks, and give asyncio code a future per produced message.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

log = logging.getLogger(__name__)


class KafkaUnavailable(RuntimeError):
    """The broker could not be reached; the message names the bootstrap address."""


class KafkaDeliveryError(RuntimeError):
    """The broker refused or failed to acknowledge a produced message."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(f"kafka produce failed: {error.name()} ({error.code()}): {error.str()}")
        self.code = error.code()
        self.retriable = error.retriable()


def _error_cb(error: KafkaError) -> None:
    # librdkafka retries transient errors itself; these are logged so an operator sees broker trouble.
    log.warning("event=kafka_error code=%s reason=%s", error.name(), error.str())


def client_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    # librdkafka's own log lines repeat every reconnect; its errors reach us once each through error_cb.
    return {"bootstrap.servers": bootstrap, "error_cb": _error_cb, "log_level": 2, **extra}


def check_broker(bootstrap: str, timeout_s: float = 5.0) -> int:
    """Ask the broker for metadata; returns the broker count or raises KafkaUnavailable."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailable(f"kafka broker at {bootstrap} did not answer within {timeout_s:g}s") from exc
    return len(metadata.brokers)


def wait_for_broker(
    bootstrap: str, stop: threading.Event, on_wait: Callable[[], None] | None = None, retry_s: float = 5.0
) -> bool:
    """Block until the broker answers or `stop` is set; returns whether it answered.

    A role whose broker is down at start waits here, alive (`on_wait` beats its heartbeat) and unready,
    and starts by itself when the broker returns: exiting instead would turn a broker outage into a
    fleet-wide crash loop that adds minutes to the recovery.
    """
    since = time.monotonic()
    attempts = 0
    while not stop.is_set():
        try:
            check_broker(bootstrap)
        except KafkaUnavailable as exc:
            attempts += 1
            if attempts == 1 or attempts % 12 == 0:  # once a minute at the default retry_s
                log.warning("event=broker_unavailable_at_start reason=%r action=wait_and_retry", str(exc))
            if on_wait is not None:
                on_wait()
            stop.wait(retry_s)
            if on_wait is not None:
                on_wait()
            continue
        if attempts:
            log.info("event=broker_available waited_s=%.1f", time.monotonic() - since)
        return True
    return False


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the topics that are missing; returns the names created. Existing topics are left alone."""
    check_broker(bootstrap)
    admin = AdminClient(client_config(bootstrap))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise KafkaUnavailable(f"kafka broker at {bootstrap} did not answer within {timeout_s:g}s") from exc
    new = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=dict(s.config))
        for s in specs
        if s.name not in existing
    ]
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a race with another `ensure`
                raise RuntimeError(f"could not create topic {name}: {error.str()}") from exc
    return created


def delete_topics(bootstrap: str, names: list[str], timeout_s: float = 30.0) -> None:
    admin = AdminClient(client_config(bootstrap))
    for future in admin.delete_topics(names, operation_timeout=timeout_s).values():
        try:
            future.result()
        except KafkaException:
            log.debug("topic delete failed", exc_info=True)


class KafkaProducer:
    """Idempotent, acks=all producer. `produce` is sync-with-callback; `send` returns an asyncio future.

    A background thread serves delivery callbacks (`poll`) so asyncio code never blocks on librdkafka.
    """

    def __init__(self, bootstrap: str, *, count_errors: bool = True, **extra: Any) -> None:
        """`count_errors=False` for producers embedded in product services (EventPublisher): their process
        should not grow the fleet's metrics."""
        self._count_errors = count_errors
        config = client_config(
            bootstrap,
            **{
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                **extra,
            },
        )
        self._producer = Producer(config)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """Queue a message; retries `BufferError` (local queue full) after letting callbacks drain it.

        Every refused or unacknowledged message counts in `hookfleet_produce_errors_total{topic}`.
        """
        if self._count_errors:
            callback = on_delivery

            def counted(error: KafkaError | None, message: Message) -> None:
                if error is not None:
                    _produce_errors().labels(topic).inc()
                if callback is not None:
                    callback(error, message)

            on_delivery = counted
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:
                self._producer.poll(0.1)

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
    ) -> asyncio.Future[Message]:
        """Produce and return a future that resolves when the broker acknowledges (acks=all)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()

        def settle(error: KafkaError | None, message: Message) -> None:
            # Runs on the poll thread: hand the result to the loop thread.
            loop.call_soon_threadsafe(_resolve, future, error, message)

        self.produce(topic, value, key=key, headers=headers, on_delivery=settle)
        return future

    def send_sync(self, topic: str, value: bytes, key: bytes | str | None = None, timeout_s: float = 30.0) -> Message:
        """Produce and block until acknowledged (CLI tools, tests)."""
        done = threading.Event()
        result: list[Any] = []

        def settle(error: KafkaError | None, message: Message) -> None:
            result.append((error, message))
            done.set()

        self.produce(topic, value, key=key, on_delivery=settle)
        if not done.wait(timeout_s):
            raise KafkaUnavailable(f"no broker acknowledgement for {topic} within {timeout_s:g}s")
        error, message = result[0]
        if error is not None:
            raise KafkaDeliveryError(error)
        acked: Message = message
        return acked

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding messages; returns how many are still unacknowledged."""
        remaining: int = self._producer.flush(timeout_s)
        return remaining

    def close(self, timeout_s: float = 30.0) -> int:
        remaining = self.flush(timeout_s)
        self._stop.set()
        self._poller.join(timeout=1.0)
        if remaining:
            log.error("event=producer_close_unflushed remaining=%d", remaining)
        return remaining


def _produce_errors() -> Any:
    # Imported when first needed, so importing this module (the producer library does) registers no metric.
    from hookfleet.metrics import PRODUCE_ERRORS

    return PRODUCE_ERRORS


def _resolve(future: asyncio.Future[Message], error: KafkaError | None, message: Message) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(KafkaDeliveryError(error))
    else:
        future.set_result(message)


def consumer_config(bootstrap: str, group_id: str, **extra: Any) -> dict[str, Any]:
    """Consumer defaults shared by every role: we store offsets ourselves, only for finished work."""
    return client_config(
        bootstrap,
        **{
            "group.id": group_id,
            "partition.assignment.strategy": "cooperative-sticky",
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
            **extra,
        },
    )


def new_consumer(bootstrap: str, group_id: str, **extra: Any) -> Consumer:
    return Consumer(consumer_config(bootstrap, group_id, **extra))


__all__ = [
    "Consumer",
    "KafkaDeliveryError",
    "KafkaError",
    "KafkaProducer",
    "KafkaUnavailable",
    "Message",
    "TopicPartition",
    "TopicSpec",
    "check_broker",
    "ensure_topics",
    "new_consumer",
    "wait_for_broker",
]
