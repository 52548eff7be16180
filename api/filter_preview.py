"""Filter preview (POST /v1/webhooks/{id}/filter-preview): a candidate filter run over the account's stored
events before it is saved, so a customer sees what it would let through, leave out, or fail on.

Bounded per page on a log of any size: at most `limit` stored events read (`PREVIEW_MAX_EVENTS`), and
reading stops at `PREVIEW_TIME_BOUND_S`, checked after every event (`cut_short`); the keyset cursor goes on
from the last event read.
Events are read from event_payloads (what the recorder stored, one row per event per day of the log) in
chunks, newest first; only those of the webhook's subscribed types are evaluated, as at fan-out.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from aiohttp import web

from api import cursor
from api.auth import account_of
from api.errors import ApiError, not_found
from api.operation import json_response, path_id, read_body
from api.quotas import check_rate
from api.resources import resources_of
from api.store import StoredEvent
from hookfleet.retention import horizon, utc_today
from schemas.api import (
    PREVIEW_SAMPLES,
    PREVIEW_TIME_BOUND_S,
    FilterPreview,
    FilterPreviewRequest,
    FilterPreviewSamples,
    FilterSample,
)
from schemas.catalog import EventType
from schemas.event_filter import CompiledFilter, EventInput, FilterFailed, compile_filter, matches

CHUNK = 500
"""Events read per query; the time bound is checked after every event."""

Verdict = Literal["matched", "not_matched", "errored"]


def judge(compiled: CompiledFilter, payload: dict[str, Any]) -> tuple[Verdict, str | None]:
    """What fan-out would do with this stored event: deliver it, leave it out, or fail on it (and why)."""
    try:
        event = EventInput(str(payload["type"]), str(payload["account_id"]), payload.get("data") or {})
        return ("matched" if matches(compiled, event) else "not_matched"), None
    except FilterFailed as failed:
        return "errored", str(failed)
    except (KeyError, TypeError):
        return "errored", "stored event lacks type, account_id or data"


@dataclass
class Tally:
    """The counts and samples of one page; events stored on two days of the log are counted once per page."""

    scanned: int = 0
    other_types: int = 0
    counts: dict[Verdict, int] = field(default_factory=lambda: {"matched": 0, "not_matched": 0, "errored": 0})
    samples: dict[Verdict, list[FilterSample]] = field(
        default_factory=lambda: {"matched": [], "not_matched": [], "errored": []}
    )
    seen: set[str] = field(default_factory=set)

    def add(self, compiled: CompiledFilter, stored: StoredEvent) -> None:
        self.scanned += 1
        if stored.event is None:
            self.other_types += 1
            return
        if stored.event_id in self.seen:
            return
        self.seen.add(stored.event_id)
        payload = json.loads(stored.event)
        verdict, error = judge(compiled, payload)
        self.counts[verdict] += 1
        if len(self.samples[verdict]) < PREVIEW_SAMPLES:
            self.samples[verdict].append(
                FilterSample(
                    event_id=stored.event_id,
                    event_type=EventType(payload["type"]),
                    created_at=str(payload.get("created_at", "")),
                    error=error,
                )
            )


def _since(days: int, retention_days: int) -> date:
    return max(utc_today() - timedelta(days=days - 1), horizon(retention_days).date())


def _before(token: str | None) -> tuple[date, str] | None:
    if token is None:
        return None
    try:
        at, event_id = cursor.decode(token)
    except ValueError as exc:
        raise ApiError(422, "invalid_field", f"cursor: {exc}", "cursor") from None
    return at.date(), event_id


async def preview_filter(request: web.Request) -> web.StreamResponse:
    resources = resources_of(request)
    account = account_of(request)
    webhook_id = path_id(request, "webhook_id", "webhook")
    body = await read_body(request, FilterPreviewRequest)
    check_rate(resources.filter_preview_rate, account, "filter previews", "HOOKFLEET_FILTER_PREVIEWS_PER_MINUTE")
    row = await resources.store.get_webhook(account, webhook_id)
    if row is None:
        raise not_found("webhook", webhook_id)
    compiled = compile_filter(body.filter)
    since = _since(body.days, resources.settings.retention_days)
    before = _before(body.cursor)
    tally = Tally()
    deadline = time.monotonic() + PREVIEW_TIME_BOUND_S
    done = cut_short = False
    while tally.scanned < body.limit:
        wanted = min(CHUNK, body.limit - tally.scanned)
        rows = await resources.store.stored_events(account, since, before, row.events, wanted)
        timed_out = False
        for index, stored in enumerate(rows):
            tally.add(compiled, stored)
            before = (stored.logged_on, stored.event_id)
            # checked per event, not per chunk: one event can cost a filter 100 ms (a macro over 10,000
            # elements), so a chunk of 500 could hold the page for a minute
            if index + 1 < len(rows) and time.monotonic() >= deadline:
                timed_out = True
                break
        if not timed_out and len(rows) < wanted:
            done = True
            break
        if (timed_out or time.monotonic() >= deadline) and tally.scanned < body.limit:
            cut_short = True
            break
    next_cursor = None
    if not done and before is not None:
        day, event_id = before
        next_cursor = cursor.encode(datetime(day.year, day.month, day.day, tzinfo=UTC), event_id)
    return json_response(
        FilterPreview(
            webhook_id=row.id,
            since=since.isoformat(),
            scanned=tally.scanned,
            other_types=tally.other_types,
            matched=tally.counts["matched"],
            not_matched=tally.counts["not_matched"],
            errored=tally.counts["errored"],
            samples=FilterPreviewSamples(**tally.samples),
            cut_short=cut_short,
            next_cursor=next_cursor,
        )
    )
