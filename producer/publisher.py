"""EventPublisher: what product services use to publish events (docs/architecture.md#topics).

Validates against the schema before anything reaches Kafka (a bad event fails in the caller, where the
bug is), assigns a sortable `evt_` id and `created_at`, keys by account id, and lets the caller wait for
the broker's acknowledgement (idempotent producer, acks=all) from sync or asyncio code.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hookfleet import tracing
from hookfleet.kafka import Headers, KafkaError, KafkaProducer, Message, partition_count
from hookfleet.settings import CommonSettings
from hookfleet.stream.changelog import read_partition
from schemas.catalog import OPERATIONAL_TYPES, PRODUCT_TYPES, EventType
from schemas.idempotency import IDEMPOTENCY_HEADER, FirstSight, changelog_key, validate_key
from schemas.ids import new_event_id
from schemas.models import Event

_TYPES = [t.value for t in PRODUCT_TYPES]
_OPERATIONAL = {t.value for t in OPERATIONAL_TYPES}

MAX_EVENT_BYTES = 256 * 1024
"""The largest event (its JSON body, as delivered) that may be published: 256 KiB.

Why not the broker's limit (1 MiB by default, 1,000,000 bytes on the producer side): the event travels on
inside a DeliveryTask per webhook (event + its metadata, about 500 bytes more), through the delay and dead
topics, and into the delivery log, so it must stay well below the limit of every topic it reaches. It is
also the request body every receiver gets; 256 KiB is what common webhook senders allow."""


class EventTooLarge(ValueError):
    """The event's body exceeds MAX_EVENT_BYTES; nothing was sent. Split the data or send a reference."""

    def __init__(self, size: int, limit: int = MAX_EVENT_BYTES) -> None:
        super().__init__(f"event is {size} bytes, above the {limit} byte limit; send less data or a reference to it")
        self.size = size
        self.limit = limit


def event_body(event: Event) -> bytes:
    """The bytes that will be published (and delivered); raises EventTooLarge before anything is sent."""
    body = event.body()
    if len(body) > MAX_EVENT_BYTES:
        raise EventTooLarge(len(body))
    return body


def idempotency_headers(key: str | None) -> Headers | None:
    """The header that makes a publish idempotent (docs/architecture.md#idempotent-publishing): another
    publish with the same key for the same account within the window is not delivered. Raises
    InvalidIdempotencyKey (a ValueError) for a key the fan-out would refuse, before anything is sent."""
    if key is None:
        return None
    return [(IDEMPOTENCY_HEADER, validate_key(key).encode())]


def build_event(
    account_id: str,
    event_type: EventType | str,
    data: dict[str, Any],
    event_id: str | None = None,
    created_at: datetime | None = None,
) -> Event:
    """A validated Event; raises pydantic.ValidationError naming the bad field (ValueError for the type)."""
    if str(event_type) in _OPERATIONAL:
        raise ValueError(
            f"type: {event_type!s} is operational: only hookfleet publishes it (one of {', '.join(_TYPES)})"
        )
    if isinstance(event_type, str) and event_type not in _TYPES:
        raise ValueError(f"type: {event_type!r} is not an event type (one of {', '.join(_TYPES)})")
    return Event.model_validate(
        {
            "id": event_id or new_event_id(),
            "type": EventType(event_type) if isinstance(event_type, str) else event_type,
            "created_at": created_at or datetime.now(UTC),
            "account_id": account_id,
            "data": data,
        },
        strict=False,
    )


class EventPublisher:
    """`publish` returns once queued; `publish_and_wait` / `await publish_async` return once acknowledged.

    Every method raises EventTooLarge (a ValueError) for an event above MAX_EVENT_BYTES, before sending.
    Use as a context manager (or call `close`) so queued events are flushed before the process exits.
    """

    def __init__(self, settings: CommonSettings | None = None, producer: KafkaProducer | None = None) -> None:
        self._settings = settings or CommonSettings()
        self._topic = self._settings.topics.events
        self._producer = producer or KafkaProducer(self._settings.kafka_bootstrap_servers, count_errors=False)

    def publish(
        self,
        event: Event,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        body = event_body(event)
        headers = idempotency_headers(idempotency_key)
        with tracing.publishing(self._topic, event.id, event.type.value):
            self._producer.produce(self._topic, body, key=event.account_id, headers=headers, on_delivery=on_delivery)

    def publish_and_wait(self, event: Event, timeout_s: float = 30.0, idempotency_key: str | None = None) -> Message:
        body = event_body(event)
        headers = idempotency_headers(idempotency_key)
        with tracing.publishing(self._topic, event.id, event.type.value):
            return self._producer.send_sync(
                self._topic, body, key=event.account_id, timeout_s=timeout_s, headers=headers
            )

    async def publish_async(self, event: Event, idempotency_key: str | None = None) -> Message:
        body = event_body(event)
        headers = idempotency_headers(idempotency_key)
        with tracing.publishing(self._topic, event.id, event.type.value):
            sent = self._producer.send(self._topic, body, key=event.account_id, headers=headers)
        return await sent

    async def publish_many_async(self, events: list[Event]) -> None:
        bodies = [event_body(e) for e in events]  # all checked before any is sent
        sent = []
        for event, body in zip(events, bodies, strict=True):
            with tracing.publishing(self._topic, event.id, event.type.value):
                sent.append(self._producer.send(self._topic, body, key=event.account_id))
        await asyncio.gather(*sent)

    def flush(self, timeout_s: float = 30.0) -> int:
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float = 30.0) -> int:
        return self._producer.close(timeout_s)

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def first_publish(account_id: str, key: str, settings: CommonSettings | None = None) -> FirstSight | None:
    """Which event an idempotency key became: the fan-out's record of its first publish for `account_id`
    within the window, or None. Reads the account's partition of the changelog to its end (one partition's
    keys in their window): a tool for after a doubtful publish, not a call per publish."""
    wanted = changelog_key(account_id, validate_key(key))  # refused before any broker is asked
    settings = settings or CommonSettings()
    topics = settings.topics
    partitions = partition_count(settings.kafka_bootstrap_servers, topics.events)
    partition = zlib.crc32(account_id.encode()) % partitions  # the producers' partitioner (consistent_random)
    found: bytes | None = None
    for record_key, value in read_partition(settings.kafka_bootstrap_servers, topics.idempotency, partition):
        if record_key == wanted and value is not None:
            found = value  # the latest record of the key is the one in force
    return None if found is None else FirstSight.from_json(found)
