"""Many small records to one topic as few Kafka messages: per partition, what arrives within a short window
travels as one message.

Why: every Kafka message costs the broker (validate, append, index, serve in a fetch) and its consumer (poll,
claim, parse) whatever its size; attempt records are a few hundred bytes each, one per delivery. Batched,
the recorder reads one message per partition per window instead of one per attempt.

Wire form: the records (compact JSON, which never holds a raw newline) joined by `\\n`, with the header
`hookfleet-batch` giving their count. A message without that header carries one record (what older writers
and the API's Test produce), so readers take both forms (`split_batch`).

Order: a record goes to the partition a keyed message of its own would go to (`partition_for`: the producers'
consistent partitioner, crc32 of the key), and one partition's batches leave in order, so everything written
for one key is still read in the order written, by the one reader that owns it.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hookfleet.kafka import Headers, KafkaProducer
from hookfleet.stream.sender import Outgoing, send_until_acked

BATCH_HEADER = "hookfleet-batch"
LINGER_S = 0.01
"""How long a partition's first record waits for company: the delivery it records is already answered, so
this delays only its log row and its offset's commit."""
MAX_RECORDS = 100
"""Records per message: the gain flattens long before, and the recorder's batch may overshoot its size by at
most one message per consume slice."""
MAX_BYTES = 512 * 1024
"""Bytes per message (under the broker's and producer's 1 MB default); a larger record travels alone."""


class BatchFormatError(ValueError):
    """A batched message whose count does not match what it holds."""


def partition_for(key: bytes | str, partitions: int) -> int:
    """The partition librdkafka's default partitioner (consistent_random) gives a message with this key."""
    raw = key.encode() if isinstance(key, str) else key
    return zlib.crc32(raw) % partitions


def batch_count(headers: Headers | None) -> int | None:
    """The record count a message's `hookfleet-batch` header declares; None when it carries one record."""
    for name, value in headers or ():
        if name == BATCH_HEADER:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else (value or "")
            if not text.isdigit():
                raise BatchFormatError(f"header {BATCH_HEADER} must be a record count, got {text[:20]!r}")
            return int(text)
    return None


def split_batch(value: bytes | None, headers: Headers | None) -> list[bytes | None]:
    """The records a message carries: itself when it has no batch header, else its lines (their count
    checked against the header's)."""
    count = batch_count(headers)
    if count is None:
        return [value]
    records = (value or b"").split(b"\n")
    if len(records) != count or count == 0:
        raise BatchFormatError(f"header {BATCH_HEADER} says {count} records, the value holds {len(records)}")
    return list(records)


Send = Callable[[KafkaProducer, Outgoing], Awaitable[None]]


@dataclass(slots=True)
class _Open:
    """One partition's batch being filled; `acked` resolves when the broker has it."""

    acked: asyncio.Future[None]
    values: list[bytes] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


class RecordBatcher:
    """Batches records for one topic, from one asyncio loop; `add` returns once the broker acknowledged the
    message carrying the record (produced again until it is, as `send_until_acked`)."""

    def __init__(
        self,
        producer: KafkaProducer,
        topic: str,
        partitions: int,
        linger_s: float = LINGER_S,
        max_records: int = MAX_RECORDS,
        max_bytes: int = MAX_BYTES,
        send: Send = send_until_acked,
    ) -> None:
        if partitions < 1:
            raise ValueError(f"{topic} must have at least one partition, got {partitions}")
        self._producer = producer
        self._topic = topic
        self._partitions = partitions
        self._linger_s = linger_s
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._send = send
        self._open: dict[int, _Open] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self.messages = 0
        """Messages produced so far (each carrying one or more records)."""

    async def add(self, value: bytes, key: bytes | str) -> None:
        partition = partition_for(key, self._partitions)
        batch = self._open.get(partition)
        if batch is not None and batch.size + len(value) + 1 > self._max_bytes:
            self._close(partition, batch)
            batch = None
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = _Open(loop.create_future())
            batch.timer = loop.call_later(self._linger_s, self._close, partition, batch)
            self._open[partition] = batch
        batch.values.append(value)
        batch.size += len(value) + 1
        acked = batch.acked
        if len(batch.values) >= self._max_records:
            self._close(partition, batch)
        await asyncio.shield(acked)

    def flush(self) -> None:
        """Send every open batch now (a stop: nothing waits out its linger)."""
        for partition, batch in list(self._open.items()):
            self._close(partition, batch)

    @property
    def open_records(self) -> int:
        return sum(len(batch.values) for batch in self._open.values())

    def _close(self, partition: int, batch: _Open) -> None:
        if self._open.get(partition) is not batch:
            return  # already sent (full, or flushed) before its timer fired
        del self._open[partition]
        if batch.timer is not None:
            batch.timer.cancel()
        headers: Headers = [(BATCH_HEADER, str(len(batch.values)))]
        message = Outgoing(self._topic, b"\n".join(batch.values), None, headers, partition)
        self.messages += 1
        task = asyncio.get_running_loop().create_task(self._deliver(message, batch.acked))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, message: Outgoing, acked: asyncio.Future[None]) -> None:
        try:
            await self._send(self._producer, message)
        except asyncio.CancelledError:
            acked.cancel()  # a stop that gave up on it: its records' offsets stay unfinished (nothing lost)
            raise
        except BaseException as exc:  # not expected (the send retries until acknowledged): tell the waiters
            if not acked.done():
                acked.set_exception(exc)
            raise
        if not acked.done():
            acked.set_result(None)
