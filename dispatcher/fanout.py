"""The fan-out stage's pure part: one delivery task per (event, subscribed active webhook).

`webhooks.events` is keyed by account, but every limit a receiver needs is per webhook, so fan-out turns
each event into one task per webhook on `webhooks.deliveries`, keyed by webhook id: all of a webhook's
work then lands on one partition and one dispatcher owns it (worker.py). The event's canonical body is
serialised once per event and spliced into each task (wire_json.py), so N webhooks cost one serialisation, not N.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from delivery.endpoint import Endpoint
from hookfleet.stream.sender import Outgoing
from schemas.catalog import OPERATIONAL_TYPES
from schemas.event_filter import EventInput, FilterError, FilterFailed, compile_filter, matches
from schemas.models import Event


def recipients(event: Event, endpoints: Sequence[Endpoint]) -> Sequence[Endpoint]:
    """Who gets this event: every subscribed endpoint, except that a webhook is never sent an operational
    event about itself (a failing receiver cannot take its own `webhook.failing`, and must not loop)."""
    if event.type not in OPERATIONAL_TYPES:
        return endpoints
    about = event.data.get("webhook_id")
    return [e for e in endpoints if e.id != about]


@dataclass(frozen=True, slots=True)
class Filtered:
    """The recipients whose filters let the event through, and how many were left out and why."""

    endpoints: Sequence[Endpoint]
    filtered_out: int = 0
    failed: int = 0


def apply_filters(event: Event, endpoints: Sequence[Endpoint]) -> Filtered:
    """Applied after the event-type match, to the matched webhooks only. A filter that cannot answer for
    this event (a missing field, a type mismatch, or a stored text this version no longer compiles) leaves
    the webhook out and is counted, never raised: one customer's filter cannot stop the partition."""
    if all(e.filter is None for e in endpoints):
        return Filtered(endpoints)
    event_input = EventInput(event.type.value, event.account_id, event.data)
    kept: list[Endpoint] = []
    filtered_out = failed = 0
    for endpoint in endpoints:
        if endpoint.filter is None:
            kept.append(endpoint)
            continue
        try:
            passes = matches(compile_filter(endpoint.filter), event_input)
        except (FilterFailed, FilterError):
            failed += 1
            continue
        if passes:
            kept.append(endpoint)
        else:
            filtered_out += 1
    return Filtered(kept, filtered_out, failed)


@dataclass
class FanoutJob:
    """The tasks of one consumed event, counted down by the producer's delivery callbacks.

    Callbacks run on the producer's poll thread, one at a time; the last one hands the whole job back to
    the event loop with a single `call_soon_threadsafe` (not one per task: fan-out to 1,000 webhooks would
    otherwise wake the loop 1,000 times).
    """

    partition: tuple[str, int]
    generation: int
    offset: int
    total: int
    on_done: Callable[[FanoutJob], None]
    failed: list[tuple[str, bytes]] = field(default_factory=list)  # (webhook id, task) to produce again
    trace: Any = None  # the fan-out's trace context, so a task produced again joins the event's trace
    first_sight: Outgoing | None = None  # the idempotency key's changelog record, written with the tasks
    first_sight_failed: bool = False
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.remaining = self.total

    def acked(self, webhook_id: str, value: bytes, ok: bool) -> None:
        if not ok:
            self.failed.append((webhook_id, value))
        self._count_down()

    def acked_first_sight(self, ok: bool) -> None:
        self.first_sight_failed = not ok
        self._count_down()

    def _count_down(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.on_done(self)
