"""Where did event X go: `GET /v1/events/{event_id}`, the event and every webhook of the account it was sent to,
attempt by attempt, with its dead letters and replays. What became of it at each webhook is `delivery_state`,
a pure function of what the log holds."""

from __future__ import annotations

import json
from collections.abc import Sequence

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from api.auth import account_of
from api.errors import ApiError, not_found
from api.operation import json_response
from api.resources import resources_of
from api.store import DeadLetterRow, DeliveryRow, EventReplayRow, EventTrace
from api.views import delivery_view
from schemas.api import DeliveryState, EventDeadLetter, EventReplay, EventView, EventWebhookDeliveries
from schemas.catalog import EventType
from schemas.models import Event, EventId

_EVENT_ID: TypeAdapter[str] = TypeAdapter(EventId)
EVENT_ID_SCHEMA = _EVENT_ID.json_schema()
"""The path parameter's schema in the OpenAPI document: the rule `event_id_from_path` applies."""


def event_id_from_path(request: web.Request) -> str:
    """The event id of the path; one that is no event id is a 422 naming the field (no query is made)."""
    value = request.match_info["event_id"]
    try:
        return _EVENT_ID.validate_python(value)
    except ValidationError:
        shown = "".join(c if c.isprintable() else "?" for c in value[:80])
        raise ApiError(
            422,
            "invalid_field",
            f"event_id must be an event id: evt_ and up to 64 letters or digits, e.g. evt_01JD8Z6Q3K4M5N6P7R8S9T0V1W"
            f" (got {shown!r})",
            "event_id",
        ) from None


def delivery_state(
    attempts: Sequence[DeliveryRow], dead: DeadLetterRow | None, replays: Sequence[EventReplayRow]
) -> DeliveryState:
    """What became of one event at one webhook, from its attempts (oldest first), dead letter and replays.

    A 2xx at any time means it was delivered (a later redelivery that failed does not undo that). Otherwise a
    redrive or a replay that queued it after its last attempt, or a retry scheduled by that attempt, means more
    is coming; else the last attempt's next step says how it ended."""
    if any(a.outcome == "success" for a in attempts):
        return "delivered"
    last = attempts[-1] if attempts else None
    requeued = [r.queued_at for r in replays if r.queued_at is not None]
    if dead is not None and dead.redriven_at is not None:
        requeued.append(dead.redriven_at)
    if any(last is None or at > last.attempted_at for at in requeued):
        return "pending"
    if last is None or last.next_step == "dead":
        return "dead_lettered"
    if last.next_step == "retry":
        return "pending"
    if last.next_step == "disabled":
        return "disabled"
    if last.next_step == "dropped":
        return "dropped"
    return "failed"


def event_view(event_id: str, trace: EventTrace) -> EventView:
    by_webhook: dict[str, list[DeliveryRow]] = {}
    for webhook_id, row in trace.attempts:
        by_webhook.setdefault(webhook_id, []).append(row)
    dead = {d.webhook_id: d for d in trace.dead_letters}
    replays: dict[str, list[EventReplayRow]] = {}
    for replay in trace.replays:
        replays.setdefault(replay.webhook_id, []).append(replay)
    webhooks = []
    for webhook_id in sorted(set(by_webhook) | set(dead) | set(replays)):
        attempts, letter, queued = by_webhook.get(webhook_id, []), dead.get(webhook_id), replays.get(webhook_id, [])
        webhooks.append(
            EventWebhookDeliveries(
                webhook_id=webhook_id,
                webhook_name=trace.webhook_names.get(webhook_id),
                state=delivery_state(attempts, letter, queued),
                attempts=[delivery_view(row) for row in attempts],
                dead_letter=None
                if letter is None
                else EventDeadLetter(
                    dead_at=letter.dead_at, last_error=letter.last_error, redriven_at=letter.redriven_at
                ),
                replays=[
                    EventReplay(replay_id=r.replay_id, created_at=r.created_at, queued_at=r.queued_at) for r in queued
                ],
            )
        )
    event = None if trace.payload is None else Event.model_validate_json(trace.payload)
    event_type = (
        event.type
        if event is not None
        else EventType(trace.attempts[0][1].event_type if trace.attempts else trace.dead_letters[0].event_type)
    )
    return EventView(
        event_id=event_id,
        event_type=event_type,
        created_at=None if event is None else event.created_at,
        payload=None if event is None else json.loads(event.body()),
        webhooks=webhooks,
        truncated=trace.truncated,
    )


async def get_event(request: web.Request) -> web.StreamResponse:
    resources = resources_of(request)
    account = account_of(request)
    event_id = event_id_from_path(request)
    trace = await resources.store.event_trace(account, event_id)
    if trace is None:
        raise not_found("event", event_id)
    return json_response(event_view(event_id, trace))
