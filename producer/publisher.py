"""EventPublisher: what product services use to publish events (DESIGN.md §3).

Validates against the schema before anything reaches Kafka (a bad event fails in the caller, where the
bug is), assigns a sortable `evt_` id and `created_at`, keys by account id, and lets the caller wait for
the broker's acknowledgement (idempotent producer, acks=all) from sync or asyncio code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hookfleet.kafka import KafkaError, KafkaProducer, Message
from hookfleet.settings import CommonSettings
from schemas.catalog import EventType
from schemas.ids import new_event_id
from schemas.models import Event

_TYPES = [t.value for t in EventType]


def build_event(
    account_id: str,
    event_type: EventType | str,
    data: dict[str, Any],
    event_id: str | None = None,
    created_at: datetime | None = None,
) -> Event:
    """A validated Event; raises pydantic.ValidationError naming the bad field (ValueError for the type)."""
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

    Use as a context manager (or call `close`) so queued events are flushed before the process exits.
    """

    def __init__(self, settings: CommonSettings | None = None, producer: KafkaProducer | None = None) -> None:
        self._settings = settings or CommonSettings()
        self._topic = self._settings.topics.events
        self._producer = producer or KafkaProducer(self._settings.kafka_bootstrap_servers, count_errors=False)

    def publish(self, event: Event, on_delivery: Callable[[KafkaError | None, Message], None] | None = None) -> None:
        self._producer.produce(self._topic, event.body(), key=event.account_id, on_delivery=on_delivery)

    def publish_and_wait(self, event: Event, timeout_s: float = 30.0) -> Message:
        return self._producer.send_sync(self._topic, event.body(), key=event.account_id, timeout_s=timeout_s)

    async def publish_async(self, event: Event) -> Message:
        return await self._producer.send(self._topic, event.body(), key=event.account_id)

    async def publish_many_async(self, events: list[Event]) -> None:
        await asyncio.gather(*(self._producer.send(self._topic, e.body(), key=e.account_id) for e in events))

    def flush(self, timeout_s: float = 30.0) -> int:
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float = 30.0) -> int:
        return self._producer.close(timeout_s)

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
