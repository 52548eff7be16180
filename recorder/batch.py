"""What one recorder transaction writes: parsed from consumed messages, no I/O.

A batch remembers, per partition, the messages it holds (their offsets are the recorder's ledger's),
so that a revoked partition's share can be dropped (its new owner re-reads it; every write is idempotent)
without touching the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from hookfleet.attempt_rows import json_text, storable_text
from hookfleet.kafka import Headers, PartitionKey
from hookfleet.stream.diversion import Invalid, read_as
from hookfleet.stream.record_batch import BatchFormatError, split_batch
from schemas.models import AttemptRecord, DeliveryTask
from schemas.topics import Topics


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A delivery that exhausted its attempts, as the dispatcher published it to the dead topic."""

    task: DeliveryTask

    @property
    def dead_at(self) -> datetime:
        # On the dead topic `due_at` is the time the delivery was dead-lettered (epoch ms).
        return datetime.fromtimestamp(self.task.due_at / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A message that is not what its topic carries, held until it is diverted with the batch
    (hookfleet/stream/diversion.py)."""

    source_topic: str
    key: bytes | None
    value: bytes | None
    invalid: Invalid


Parsed = AttemptRecord | DeadLetter | Unreadable


def parse_records(
    topics: Topics, topic: str, key: bytes | None, value: bytes | None, headers: Headers | None
) -> list[Parsed]:
    """Every record a consumed message carries: an attempts message may hold a batch of attempt records
    (hookfleet/stream/record_batch.py); each is read on its own, so one bad record is diverted alone. A
    batch whose count does not match what it holds is diverted whole."""
    if topic != topics.attempts:
        return [parse_message(topics, topic, key, value)]
    try:
        values = split_batch(value, headers)
    except BatchFormatError as exc:
        return [Unreadable(topic, key, value, Invalid("invalid_value", str(exc)))]
    return [parse_message(topics, topic, key, one) for one in values]


def parse_message(topics: Topics, topic: str, key: bytes | None, value: bytes | None) -> Parsed:
    """Attempts topic -> AttemptRecord, dead topic -> DeadLetter, anything unreadable -> Unreadable."""
    if topic == topics.attempts:
        record = read_as(AttemptRecord, value)
        return Unreadable(topic, key, value, record) if isinstance(record, Invalid) else record
    if topic == topics.dead:
        task = read_as(DeliveryTask, value)
        return Unreadable(topic, key, value, task) if isinstance(task, Invalid) else DeadLetter(task)
    return Unreadable(topic, key, value, Invalid("invalid_value", f"unexpected topic {topic}"))


@dataclass(slots=True)
class PartitionShare:
    attempts: list[AttemptRecord] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    invalid: list[tuple[int, Unreadable]] = field(default_factory=list)
    """With the offset each was read at (the invalid topic's `source_offset` header)."""


@dataclass(slots=True)
class Batch:
    """Messages consumed but not yet durable, grouped by partition."""

    shares: dict[PartitionKey, PartitionShare] = field(default_factory=dict)
    size: int = 0

    def add(self, topic: str, partition: int, offset: int, parsed: Parsed) -> None:
        share = self.shares.setdefault((topic, partition), PartitionShare())
        if isinstance(parsed, AttemptRecord):
            share.attempts.append(parsed)
        elif isinstance(parsed, DeadLetter):
            share.dead.append(parsed)
        else:
            share.invalid.append((offset, parsed))
        self.size += 1

    def drop(self, partitions: set[PartitionKey]) -> int:
        """Forget revoked partitions' messages (their next owner re-reads them); returns how many."""
        dropped = 0
        for key in partitions & self.shares.keys():
            share = self.shares.pop(key)
            dropped += len(share.attempts) + len(share.dead) + len(share.invalid)
        self.size -= dropped
        return dropped

    @property
    def attempts(self) -> list[AttemptRecord]:
        return [a for share in self.shares.values() for a in share.attempts]

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """Unique per (webhook, event), keeping the latest: one upsert may not touch a row twice."""
        latest: dict[tuple[str, str], DeadLetter] = {}
        for share in self.shares.values():
            for dead in share.dead:
                key = (dead.task.webhook_id, dead.task.event.id)
                if key not in latest or dead.task.due_at > latest[key].task.due_at:
                    latest[key] = dead
        return list(latest.values())

    @property
    def invalid(self) -> list[tuple[PartitionKey, int, Unreadable]]:
        """Each unreadable message with the partition and offset it was read at."""
        return [(key, offset, m) for key, share in self.shares.items() for offset, m in share.invalid]

    def clear_invalid(self) -> None:
        """The invalid messages were acknowledged by the broker; do not route them again on a retry."""
        for share in self.shares.values():
            share.invalid.clear()


# ------------------------------------------------------------------------------------------ row shaping


def dead_letter_row(dead: DeadLetter) -> tuple[object, ...]:
    task = dead.task
    return (
        task.event.id,
        task.webhook_id,
        task.event.account_id,
        str(task.event.type),
        json_text(task),
        storable_text(task.last_error),
        dead.dead_at,
    )
