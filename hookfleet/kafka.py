"""Thin typed wrappers around confluent-kafka: the only place the runtime touches the Kafka client.

Roles get their clients from the factories here (`new_consumer`, `new_producer`) in their main.py and
take them as constructor arguments, so a unit test can hand a role the in-memory stub in tests/support.

Why wrappers: librdkafka reports most failures asynchronously (delivery callbacks, error callbacks) and
raises `BufferError` when its local queue is full. These wrappers turn both into our own exceptions,
retry `BufferError` after serving callbacks, and give asyncio code a future per produced message.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from hookfleet import tracing
from hookfleet.settings import KafkaSecuritySettings

log = logging.getLogger(__name__)

PartitionKey = tuple[str, int]
"""(topic, partition): the plain-value form of a TopicPartition, the key of every per-partition map."""

Headers = list[tuple[str, str | bytes | None]]
"""Message headers as the producer takes them (and as `message_headers` returns them)."""


class KafkaUnavailable(RuntimeError):
    """The broker could not be reached; the message names the bootstrap address."""


_TRANSIENT_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.KAFKA_STORAGE_ERROR,
    }
)


def transient(error: KafkaError) -> bool:
    """The broker, not the message: the same message can be produced again later and be taken. librdkafka
    marks no delivery report's error retriable (a message that timed out waiting for its partition's leader
    reports `_MSG_TIMED_OUT` with `retriable()` false), so the codes that mean "not now" are named here; the
    rest (too large, invalid, not authorized) would be refused again."""
    return error.retriable() or error.code() in _TRANSIENT_CODES


class KafkaDeliveryError(RuntimeError):
    """The broker refused or failed to acknowledge a produced message."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(f"kafka produce failed: {error.name()} ({error.code()}): {error.str()}")
        self.error = error
        self.code = error.code()
        self.retriable = transient(error)


class BrokerErrorLog:
    """Turns librdkafka's error stream into state changes: one line when errors start (`kafka_down`), one
    every `repeat_s` while they go on (`kafka_still_down`, with the count), one when they have stopped for
    `quiet_s` (`kafka_recovered`).

    Why: librdkafka retries by itself and reports every failed reconnect; a 31 s broker outage was ~670
    WARNING lines per role. librdkafka has no "connected again" callback, so recovery is a quiet period
    longer than its reconnect backoff (at most 10 s); a ticker thread runs only while errors last.
    Shared by every client of the process: the process is what an operator reads the log of.
    """

    def __init__(
        self, repeat_s: float = 30.0, quiet_s: float = 15.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.repeat_s = repeat_s
        self.quiet_s = quiet_s
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._last_error_at = 0.0
        self._errors = 0
        self._last = ("", "")
        self._next_report = 0.0
        self._ticker: threading.Thread | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def error(self, code: str, reason: str, fatal: bool = False) -> None:
        if fatal:  # the client cannot go on (e.g. the idempotent producer's state is lost): always said
            log.error("event=kafka_fatal_error code=%s reason=%s", code, reason)
        with self._lock:
            now = self._clock()
            self._last_error_at = now
            self._last = (code, reason)
            self._errors += 1
            if self._down_since is not None:
                return
            self._down_since, self._errors, self._next_report = now, 1, now + self.repeat_s
            log.warning(
                "event=kafka_down code=%s reason=%s hint='clients retry by themselves; logged every %.0fs while down'",
                code,
                reason,
                self.repeat_s,
            )
            self._start_ticker()

    def tick(self) -> bool:
        """Report a state change that is due; returns whether errors are still going on."""
        with self._lock:
            if self._down_since is None:
                return False
            now = self._clock()
            if now - self._last_error_at >= self.quiet_s:
                log.info(
                    "event=kafka_recovered down_s=%.0f errors=%d quiet_s=%.0f",
                    self._last_error_at - self._down_since,
                    self._errors,
                    self.quiet_s,
                )
                self._down_since = None
                self._errors = 0
                return False
            if now >= self._next_report:
                log.warning(
                    "event=kafka_still_down down_s=%.0f errors=%d code=%s reason=%s",
                    now - self._down_since,
                    self._errors,
                    *self._last,
                )
                self._next_report = now + self.repeat_s
            return True

    def _start_ticker(self) -> None:
        if self._ticker is not None and self._ticker.is_alive():
            return
        self._ticker = threading.Thread(target=self._tick_loop, name="kafka-error-log", daemon=True)
        self._ticker.start()

    def _tick_loop(self) -> None:
        while self.tick():
            time.sleep(min(1.0, self.quiet_s / 4))


BROKER_ERRORS = BrokerErrorLog()


def _error_cb(error: KafkaError) -> None:
    BROKER_ERRORS.error(error.name(), error.str(), fatal=error.fatal())


@functools.cache
def security_config() -> dict[str, str]:
    """The HOOKFLEET_KAFKA_* security options (TLS, SASL) as librdkafka options, read once per process.
    Holds the SASL password in clear: it goes into client configurations only, never into a log line."""
    return KafkaSecuritySettings().librdkafka_config()


def client_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """Every Kafka client's configuration: the brokers, the security options, then the caller's own."""
    # librdkafka's own log lines repeat every reconnect; its errors reach us once each through error_cb.
    return {"bootstrap.servers": bootstrap, **security_config(), "error_cb": _error_cb, "log_level": 2, **extra}


def check_broker(bootstrap: str, timeout_s: float = 5.0) -> int:
    """Ask the broker for metadata; returns the broker count or raises KafkaUnavailable."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **security_config(), "log_level": 0})
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


@dataclass(frozen=True, slots=True)
class TopicOverview:
    name: str
    partitions: int  # 0: the topic does not exist
    end_offsets: int  # sum over partitions of the next offset to be written
    messages: int  # sum over partitions of end - start (what retention still holds)
    lag: dict[str, int]  # group -> messages not yet committed by it (groups with a committed offset only)


def topic_overview(
    bootstrap: str, names: Iterable[str], groups: Iterable[str], timeout_s: float = 10.0
) -> list[TopicOverview]:
    """Partitions, end offsets and per-group lag of `names`, read without joining any group (a standalone
    consumer per group only reads its committed offsets, so no rebalance is caused)."""
    check_broker(bootstrap)
    admin = AdminClient(client_config(bootstrap))
    try:
        metadata = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise KafkaUnavailable(f"kafka broker at {bootstrap} did not answer within {timeout_s:g}s") from exc
    names, groups = list(names), list(groups)
    partitions = {
        name: [TopicPartition(name, p) for p in sorted(metadata[name].partitions)] for name in names if name in metadata
    }
    every = [tp for tps in partitions.values() for tp in tps]
    probe = Consumer(client_config(bootstrap, **{"group.id": "hookfleet-topics-list", "enable.auto.commit": False}))
    try:
        marks = {(tp.topic, tp.partition): probe.get_watermark_offsets(tp, timeout=timeout_s) for tp in every}
    finally:
        probe.close()
    committed: dict[str, dict[tuple[str, int], int]] = {}
    for group in groups:
        reader = Consumer(client_config(bootstrap, **{"group.id": group, "enable.auto.commit": False}))
        try:
            found = reader.committed(every, timeout=timeout_s) if every else []
        finally:
            reader.close()
        committed[group] = {(tp.topic, tp.partition): tp.offset for tp in found if tp.offset >= 0}
    overview = []
    for name in names:
        tps = partitions.get(name, [])
        keys = [(tp.topic, tp.partition) for tp in tps]
        lag = {}
        for group, offsets in committed.items():
            if any(k in offsets for k in keys):
                # a partition the group never committed on is behind by everything retention still holds
                lag[group] = sum(marks[k][1] - offsets.get(k, marks[k][0]) for k in keys)
        overview.append(
            TopicOverview(
                name=name,
                partitions=len(tps),
                end_offsets=sum(marks[k][1] for k in keys),
                messages=sum(marks[k][1] - marks[k][0] for k in keys),
                lag=lag,
            )
        )
    return overview


def partition_count(bootstrap: str, topic: str, timeout_s: float = 10.0) -> int:
    """How many partitions `topic` has; raises KafkaUnavailable when the broker does not answer or the
    topic does not exist."""
    admin = AdminClient(client_config(bootstrap))
    try:
        metadata = admin.list_topics(topic, timeout=timeout_s).topics.get(topic)
    except KafkaException as exc:
        raise KafkaUnavailable(f"kafka broker at {bootstrap} did not answer within {timeout_s:g}s") from exc
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise KafkaUnavailable(f"topic {topic} does not exist at {bootstrap} (run `hookfleet topics ensure`)")
    return len(metadata.partitions)


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
        headers: Headers | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue a message; retries `BufferError` (local queue full) after letting callbacks drain it.
        `partition` overrides the partitioner (a changelog written to its input's partition number).

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
        headers = tracing.inject(headers)  # the current span's traceparent; returns `headers` when tracing is off
        placed = -1 if partition is None else partition  # -1: librdkafka's partitioner places it by key
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=headers, on_delivery=on_delivery, partition=placed
                )
                return
            except BufferError:
                self._producer.poll(0.1)
            except KafkaException as exc:  # refused locally (e.g. MSG_SIZE_TOO_LARGE): our error, not a traceback
                if self._count_errors:
                    _produce_errors().labels(topic).inc()
                raise KafkaDeliveryError(exc.args[0]) from exc

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> asyncio.Future[Message]:
        """Produce and return a future that resolves when the broker acknowledges (acks=all)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()

        def settle(error: KafkaError | None, message: Message) -> None:
            # Runs on the poll thread: hand the result to the loop thread.
            loop.call_soon_threadsafe(_resolve, future, error, message)

        self.produce(topic, value, key=key, headers=headers, on_delivery=settle, partition=partition)
        return future

    def send_sync(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        timeout_s: float = 30.0,
        headers: Headers | None = None,
    ) -> Message:
        """Produce and block until acknowledged (CLI tools, tests)."""
        done = threading.Event()
        result: list[Any] = []

        def settle(error: KafkaError | None, message: Message) -> None:
            result.append((error, message))
            done.set()

        self.produce(topic, value, key=key, headers=headers, on_delivery=settle)
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


@dataclass(frozen=True, slots=True)
class StaticMember:
    """Where a static member's group lives, so it can leave it after `close` (hookfleet/stream/leave_group.py):
    librdkafka never sends LeaveGroup for a consumer with a `group.instance.id`."""

    bootstrap: str
    group_id: str
    instance_id: str


def failed_partitions(error: KafkaError | None, partitions: Iterable[TopicPartition]) -> list[tuple[str, int]]:
    """The partitions of a commit result that did not take: all of them when the request failed as a whole,
    else those carrying their own error. `_NO_OFFSET` (there was nothing to commit) is no failure."""
    if error is not None and error.code() != KafkaError._NO_OFFSET:
        return [(tp.topic, tp.partition) for tp in partitions]
    return [(tp.topic, tp.partition) for tp in partitions if tp.error is not None]


class GroupConsumer(Consumer):
    """A librdkafka consumer that knows its static membership (None: dynamic) and tells `on_fatal` about a
    fatal error, which for a consumer means it was fenced: another process joined with its
    `group.instance.id`. librdkafka hands that error out as a consumed message, once, and then serves
    nothing more; without the hook a role would idle on for good."""

    static: StaticMember | None = None
    on_fatal: Callable[[KafkaError], None] | None = None
    on_commit_failed: Callable[[list[tuple[str, int]]], None] | None = None
    """Told the partitions of an asynchronous commit that did not take (hookfleet/stream/commit.py)."""
    fenced = False

    def commit_result(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's `on_commit` callback, served by poll/consume on the consuming thread."""
        failed = failed_partitions(error, partitions)
        if failed and self.on_commit_failed is not None:
            log.debug("event=async_commit_failed partitions=%d error=%s", len(failed), error)
            self.on_commit_failed(failed)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        messages: list[Message] = super().consume(num_messages, timeout)
        if self.static is not None:
            for message in messages:
                self._check(message)
        return messages

    def poll(self, timeout: float | None = None) -> Message | None:
        message: Message | None = super().poll(-1 if timeout is None else timeout)
        if message is not None and self.static is not None:
            self._check(message)
        return message

    def _check(self, message: Message) -> None:
        error = message.error()
        # librdkafka hands the fatal error out as a message whose code is _FATAL (its fatal() flag unset)
        if error is not None and (error.code() == KafkaError._FATAL or error.fatal()) and not self.fenced:
            self.fenced = True
            if self.on_fatal is not None:
                self.on_fatal(error)


def new_consumer(bootstrap: str, group_id: str, *, instance_id: str | None = None, **extra: Any) -> Consumer:
    """A consumer with `consumer_config`'s defaults; `extra` holds the role's own options and callbacks.
    With `instance_id` it is a static member of the group (hookfleet/stream/membership.py)."""
    static = {"group.instance.id": instance_id} if instance_id else {}
    consumer: GroupConsumer | None = None

    def on_commit(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if consumer is not None:
            consumer.commit_result(error, partitions)

    consumer = GroupConsumer(consumer_config(bootstrap, group_id, **static, on_commit=on_commit, **extra))
    if instance_id:
        consumer.static = StaticMember(bootstrap, group_id, instance_id)
    return consumer


def monitored_consumer(
    bootstrap: str, group_id: str, on_stats: Callable[[str], None], *, instance_id: str | None = None, **extra: Any
) -> tuple[Consumer, BrokerState]:
    """A consumer whose statistics feed `on_stats` (lag metrics) and, with its errors, a `BrokerState`
    (readiness, and whether the group fenced it): how every role builds its consumers."""
    broker = BrokerState(instance_id)

    def stats(raw: str) -> None:
        on_stats(raw)
        broker.on_stats(raw)

    consumer = new_consumer(
        bootstrap, group_id, instance_id=instance_id, **extra, stats_cb=stats, error_cb=broker.on_error
    )
    if isinstance(consumer, GroupConsumer):
        consumer.on_fatal = broker.on_fatal
    return consumer, broker


def new_producer(bootstrap: str, **extra: Any) -> KafkaProducer:
    """The idempotent, acks=all producer every role writes with."""
    return KafkaProducer(bootstrap, **extra)


class BrokerState:
    """Whether a client reaches a broker, from librdkafka's error and statistics callbacks (its `up` feeds /readyz).

    Created before the client, so its callbacks can be passed to the factory; read by the health
    server's thread, so it only ever assigns a plain bool.
    """

    def __init__(self, instance_id: str | None = None) -> None:
        self.up = False
        self.instance_id = instance_id
        """The consumer's `group.instance.id` (None: a dynamic member), for the line that says it was fenced."""
        self.fenced = False
        """The group fenced the consumer (hookfleet/stream/membership.py `exit_if_fenced` stops the role)."""
        self.join_state: str | None = None
        """The consumer group's join state from the last statistics (`steady` once joined), for the
        stuck-join watchdog (hookfleet/stream/watchdog.py); None before the first statistics."""

    def on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.up = False
        BROKER_ERRORS.error(error.name(), error.str(), fatal=error.fatal())  # state changes, not every retry

    def on_fatal(self, error: KafkaError) -> None:
        """A consumer's fatal error: the only one librdkafka has is being fenced by a static member with the
        same `group.instance.id`; the consumer serves nothing more."""
        log.error("event=kafka_fatal_error consumer=%s reason=%s", self.instance_id, error.str())
        self.fenced = True

    def on_stats(self, raw: str) -> None:
        """Up when at least one real broker (not a bootstrap placeholder, whose nodeid is -1) is UP."""
        try:
            stats: dict[str, Any] = json.loads(raw)
        except ValueError:
            return
        brokers: dict[str, Any] = stats.get("brokers", {})
        self.up = any(b.get("state") == "UP" and b.get("nodeid", -1) >= 0 for b in brokers.values())
        group = stats.get("cgrp")
        if isinstance(group, dict) and isinstance(group.get("join_state"), str):
            self.join_state = group["join_state"]


def topic_partition(key: PartitionKey, offset: int | None = None) -> TopicPartition:
    """`(topic, partition)` -> TopicPartition, at `offset` when given (seek, store_offsets)."""
    if offset is None:
        return TopicPartition(key[0], key[1])
    return TopicPartition(key[0], key[1], offset)


def message_headers(message: Message) -> Headers | None:
    """A consumed message's headers as a list (librdkafka may hand out a list or a dict)."""
    headers = message.headers()
    if headers is None:
        return None
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def written_ms(message: Message) -> int | None:
    """When the message was written (the producer's CreateTime, or the broker's), if the broker kept it."""
    kind, timestamp = message.timestamp()
    return int(timestamp) if kind != TIMESTAMP_NOT_AVAILABLE else None


__all__ = [
    "BrokerState",
    "Consumer",
    "GroupConsumer",
    "Headers",
    "KafkaDeliveryError",
    "KafkaError",
    "KafkaException",
    "KafkaProducer",
    "KafkaUnavailable",
    "Message",
    "PartitionKey",
    "StaticMember",
    "TopicOverview",
    "TopicPartition",
    "TopicSpec",
    "check_broker",
    "ensure_topics",
    "message_headers",
    "monitored_consumer",
    "new_consumer",
    "new_producer",
    "partition_count",
    "topic_overview",
    "topic_partition",
    "wait_for_broker",
    "written_ms",
]
