"""An in-memory stand-in for the broker, so a role's real loop runs in a unit test in milliseconds.

As dramatiq tests its worker on a stub broker: the role gets a `MemoryConsumer` and a `MemoryProducer`
where it would get the clients from `hookfleet.kafka`, and the test reads what it produced, which offsets
it stored and committed, and which partitions it paused, from the `MemoryBroker`.

What is kept of librdkafka's behaviour, because the roles rely on it:
- a partition's messages come in offset order; `pause` stops a partition, `seek` moves its position,
  `resume` continues from the position;
- `store_offsets` only records; `commit` makes the stored offsets (or the ones it is given, with their
  metadata) the group's committed ones, and fails with `_NO_OFFSET` when there is nothing new, as
  librdkafka does; `committed` reads them back; a new consumer of the group starts at them;
- `close` runs the revoke callback; a produce acknowledgement is a callback, which can be held back
  (`MemoryProducer(acks="manual")`) or failed (`fail_next`) to test what a role does meanwhile.
Not kept: rebalancing between several consumers, prefetching, timestamps other than CreateTime.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import OFFSET_INVALID, TIMESTAMP_CREATE_TIME

from hookfleet import tracing
from hookfleet.kafka import (
    Headers,
    KafkaError,
    KafkaException,
    KafkaProducer,
    Message,
    PartitionKey,
    TopicPartition,
)
from hookfleet.shutdown import Shutdown

DeliveryCallback = Callable[[KafkaError | None, Message], None]
RebalanceCallback = Callable[[Any, list[TopicPartition]], None]


class MemoryBroker:
    """Topics of a fixed partition count, held as lists; thread-safe, because roles poll on their own thread."""

    def __init__(self, partitions: int = 3) -> None:
        self.partitions = partitions
        self._logs: dict[PartitionKey, list[Message]] = {}
        self.committed: dict[str, dict[PartitionKey, int]] = {}
        """Per group id, the committed offset of each partition (the next offset to read)."""
        self.metadata: dict[str, dict[PartitionKey, str | None]] = {}
        """Per group id, the metadata committed with each partition's offset."""
        self._changed = threading.Condition()

    # ----------------------------------------------------------------------------------------- writing

    def append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> Message:
        """Write one message (partition by key, as the default partitioner does: stable per key)."""
        raw_key = key.encode() if isinstance(key, str) else key
        if partition is None:
            partition = zlib.crc32(raw_key) % self.partitions if raw_key is not None else 0
        with self._changed:
            log = self._logs.setdefault((topic, partition), [])
            message = Message(
                topic=topic,
                partition=partition,
                offset=len(log),
                key=raw_key,
                value=value,
                headers=list(headers) if headers else None,
                timestamp=(
                    TIMESTAMP_CREATE_TIME,
                    timestamp_ms if timestamp_ms is not None else time.time_ns() // 10**6,
                ),
            )
            log.append(message)
            self._changed.notify_all()
        return message

    # ----------------------------------------------------------------------------------------- reading

    def messages(self, topic: str) -> list[Message]:
        """Every message of `topic`, partition by partition."""
        with self._changed:
            return [m for p in range(self.partitions) for m in self._logs.get((topic, p), [])]

    def read(self, key: PartitionKey, offset: int) -> Message | None:
        with self._changed:
            log = self._logs.get(key, [])
            return log[offset] if offset < len(log) else None

    def end_offset(self, key: PartitionKey) -> int:
        with self._changed:
            return len(self._logs.get(key, []))

    def wait(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        """Block until `condition()` holds (checked whenever something is written or woken), or time out."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.01))
        return True

    def wake(self) -> None:
        """Return every blocked `poll` / `consume` at once (after a shutdown request, say)."""
        with self._changed:
            self._changed.notify_all()

    def _wait_for_change(self, timeout_s: float) -> None:
        with self._changed:
            self._changed.wait(timeout_s)


@dataclass
class MemoryConsumer:
    """The confluent-kafka consumer calls the roles make, over a `MemoryBroker`; one member per group."""

    broker: MemoryBroker
    group_id: str = "group"
    assigned: list[PartitionKey] = field(default_factory=list)
    paused: set[PartitionKey] = field(default_factory=set)
    stored: dict[PartitionKey, int] = field(default_factory=dict)
    closed: bool = False
    polls: int = 0
    """How many times `consume` (or `poll`) was called: a role's loop went round that often."""
    _topics: list[str] = field(default_factory=list)
    _position: dict[PartitionKey, int] = field(default_factory=dict)
    _on_assign: RebalanceCallback | None = None
    _on_revoke: RebalanceCallback | None = None
    _next: int = 0

    def subscribe(
        self,
        topics: list[str],
        on_assign: RebalanceCallback | None = None,
        on_revoke: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        self._topics, self._on_assign, self._on_revoke = list(topics), on_assign, on_revoke

    def _assign_once(self) -> None:
        """The whole subscription is assigned on the first poll, as librdkafka does from inside poll."""
        if self.assigned or not self._topics:
            return
        committed = self.broker.committed.get(self.group_id, {})
        self.assigned = [(t, p) for t in self._topics for p in range(self.broker.partitions)]
        self._position = {key: committed.get(key, 0) for key in self.assigned}
        if self._on_assign is not None:
            self._on_assign(self, [TopicPartition(t, p) for t, p in self.assigned])

    def _take(self) -> Message | None:
        """The next message of the next unpaused partition that has one (round robin)."""
        for step in range(len(self.assigned)):
            key = self.assigned[(self._next + step) % len(self.assigned)]
            if key in self.paused:
                continue
            message = self.broker.read(key, self._position[key])
            if message is not None:
                self._position[key] += 1
                self._next = (self._next + step + 1) % len(self.assigned)
                return message
        return None

    def poll(self, timeout: float = -1) -> Message | None:
        batch = self.consume(1, timeout)
        return batch[0] if batch else None

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        if self.closed:
            raise RuntimeError("Consumer closed")
        self.polls += 1
        self._assign_once()
        batch: list[Message] = []
        while len(batch) < num_messages and (message := self._take()) is not None:
            batch.append(message)
        if not batch and timeout != 0:
            self.broker._wait_for_change(min(timeout, 0.5) if timeout > 0 else 0.5)
        return batch

    @property
    def positions(self) -> dict[PartitionKey, int]:
        """The next offset each assigned partition hands out: how much the role has taken."""
        return dict(self._position)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def seek(self, partition: TopicPartition) -> None:
        self._position[(partition.topic, partition.partition)] = partition.offset

    def position_of(self, key: PartitionKey) -> int:
        """The next offset this consumer will read from `key` (a test's view of seek and pause)."""
        return self._position[key]

    def store_offsets(self, message: Message | None = None, offsets: list[TopicPartition] | None = None) -> None:
        for tp in offsets or []:
            key = (tp.topic, tp.partition)
            if key not in self.assigned:
                raise KafkaException(KafkaError(KafkaError._STATE, "partition not assigned"))
            self.stored[key] = tp.offset

    def commit(
        self, message: Message | None = None, offsets: list[TopicPartition] | None = None, asynchronous: bool = True
    ) -> None:
        """Commit `offsets` (with their metadata) when given, else what was stored since the last commit."""
        committed = self.broker.committed.setdefault(self.group_id, {})
        metadata = self.broker.metadata.setdefault(self.group_id, {})
        if offsets is not None:
            new = {(tp.topic, tp.partition): tp.offset for tp in offsets}
            metadata.update({(tp.topic, tp.partition): tp.metadata for tp in offsets})
        else:
            new = {key: offset for key, offset in self.stored.items() if committed.get(key) != offset}
        if not new:
            raise KafkaException(KafkaError(KafkaError._NO_OFFSET))
        committed.update(new)

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        """The group's committed offset and metadata of each partition (-1001, none, when never committed)."""
        committed = self.broker.committed.get(self.group_id, {})
        metadata = self.broker.metadata.get(self.group_id, {})
        out = []
        for tp in partitions:
            key = (tp.topic, tp.partition)
            offset = committed.get(key, OFFSET_INVALID)
            text = metadata.get(key)
            out.append(TopicPartition(*key, offset) if text is None else TopicPartition(*key, offset, metadata=text))
        return out

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        return 0, self.broker.end_offset((partition.topic, partition.partition))

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> Any:
        """Metadata with broker 0 leading every partition."""
        names = [topic] if topic else self._topics
        return SimpleNamespace(
            topics={
                name: SimpleNamespace(partitions={p: SimpleNamespace(leader=0) for p in range(self.broker.partitions)})
                for name in names
            }
        )

    def close(self) -> None:
        if self.assigned and self._on_revoke is not None:
            self._on_revoke(self, [TopicPartition(t, p) for t, p in self.assigned])
        self.assigned = []
        self.closed = True


@dataclass
class RebalancedCommitConsumer(MemoryConsumer):
    """Its first `failures` commits fail as a commit does when the group rebalances under it, while the
    member keeps its partitions (cooperative rebalancing)."""

    failures: int = 1
    failed: int = 0

    def commit(
        self, message: Message | None = None, offsets: list[TopicPartition] | None = None, asynchronous: bool = True
    ) -> None:
        if offsets and self.failed < self.failures:
            self.failed += 1
            raise KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION))
        super().commit(message, offsets, asynchronous)


class MemoryProducer(KafkaProducer):
    """`hookfleet.kafka.KafkaProducer` writing to a `MemoryBroker` (its `send` and `send_sync` are the real
    ones, built on `produce`).

    `acks="auto"` acknowledges each message as it is produced (from the producing thread, where the real
    one uses its poll thread); `acks="manual"` holds acknowledgements until `ack_all()` or `flush()`.
    """

    def __init__(self, broker: MemoryBroker, acks: str = "auto") -> None:  # no librdkafka producer, no thread
        self.broker = broker
        self.manual = acks == "manual"
        self._pending: list[tuple[DeliveryCallback | None, KafkaError | None, Message]] = []
        self._failures: list[KafkaError | None] = []
        self._lock = threading.Lock()
        self.closed = False

    def fail_next(self, count: int = 1, code: int = KafkaError._MSG_TIMED_OUT, after: int = 0) -> None:
        """After `after` more messages, the next `count` produced are not written and their callback gets this
        error (as librdkafka's delivery reports do, never marked retriable)."""
        with self._lock:
            self._failures.extend([None] * after)
            self._failures.extend(KafkaError(code, "memory broker failure") for _ in range(count))

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | str | None = None,
        headers: Headers | None = None,
        on_delivery: DeliveryCallback | None = None,
        partition: int | None = None,
    ) -> None:
        headers = tracing.inject(headers)  # as hookfleet.kafka's producer does; `headers` itself when tracing is off
        with self._lock:
            error = self._failures.pop(0) if self._failures else None
        if error is None:
            message = self.broker.append(topic, value, key=key, headers=headers, partition=partition)
        else:
            message = Message(topic=topic, value=value, key=key.encode() if isinstance(key, str) else key)
        with self._lock:
            self._pending.append((on_delivery, error, message))
        if not self.manual:
            self.ack_all()

    @property
    def unacknowledged(self) -> int:
        with self._lock:
            return len(self._pending)

    def ack_all(self) -> int:
        """Run the held delivery callbacks; returns how many."""
        with self._lock:
            pending, self._pending = self._pending, []
        for callback, error, message in pending:
            if callback is not None:
                callback(error, message)
        return len(pending)

    def flush(self, timeout_s: float = 30.0) -> int:
        self.ack_all()
        return 0

    def close(self, timeout_s: float = 30.0) -> int:
        self.flush(timeout_s)
        self.closed = True
        return 0


@contextmanager
def running(run: Callable[[], object], shutdown: Shutdown, broker: MemoryBroker) -> Iterator[list[object]]:
    """Run a role's `run` on a thread for the block; then request its stop and wait (bounded) for it.

    Yields the list that receives `run`'s return value once it has returned.
    """
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(run()), name="role-under-test")
    thread.start()
    try:
        yield result
    finally:
        shutdown.requested.set()  # not .request(): a second request would exit the process
        broker.wake()  # return a blocked poll at once
        thread.join(5)
        assert not thread.is_alive(), "the role did not stop within 5 s"


def headers_of(message: Message) -> dict[str, bytes]:
    """A message's headers by name (the last value of a repeated name), for assertions."""
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {name: value.encode() if isinstance(value, str) else value or b"" for name, value in pairs}
