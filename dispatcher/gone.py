"""Webhooks whose receiver answered `410 Gone` on this dispatcher: pure state, no I/O.

The recorder switches such a webhook off, but only once the attempt record has travelled through
`webhooks.attempts`, PostgreSQL and the subscription store's NOTIFY back to the dispatcher: a second or so
in which every task already queued for the webhook would still be sent (the demo's retired endpoint
answered 410 to ~45 requests that way). The webhook's one owning dispatcher knows at once, so it sends
nothing more from the first 410 on: its later tasks are dropped (logged, never sent) without waiting for
the database.

A mark holds while the webhook is what answered 410: same URL, not switched on by hand since
(`enabled_at`, which the API sets when a webhook goes from off to on). A webhook switched on again, or
given another URL, or deleted, loses its mark the first time it is looked at. Marks of partitions this
dispatcher no longer owns are forgotten with them, so the set is bounded by the owned webhooks that
answered 410.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from delivery.endpoint import Endpoint
from hookfleet.kafka import PartitionKey


@dataclass(frozen=True, slots=True)
class _Mark:
    url: str
    enabled_at: datetime | None
    partition: PartitionKey


class GoneWebhooks:
    """Webhook id -> what it was when its receiver answered 410."""

    def __init__(self) -> None:
        self._marks: dict[str, _Mark] = {}

    def mark(self, endpoint: Endpoint, partition: PartitionKey) -> bool:
        """Remember that `endpoint` answered 410; True when it was not marked already."""
        new = endpoint.id not in self._marks
        self._marks[endpoint.id] = _Mark(endpoint.url, endpoint.enabled_at, partition)
        return new

    def holds(self, webhook_id: str, endpoint: Endpoint | None) -> bool:
        """True when a task for `webhook_id` must not be sent: it answered 410 and is still what answered
        (`endpoint`: its current configuration, None when deleted)."""
        mark = self._marks.get(webhook_id)
        if mark is None:
            return False
        if endpoint is None or endpoint.url != mark.url or endpoint.enabled_at != mark.enabled_at:
            del self._marks[webhook_id]
            return False
        return True

    def forget(self, partitions: Collection[PartitionKey]) -> None:
        """The partitions are revoked: their webhooks' next owner decides for itself."""
        for webhook_id in [w for w, mark in self._marks.items() if mark.partition in partitions]:
            del self._marks[webhook_id]

    def __len__(self) -> int:
        return len(self._marks)
