"""The delivery log of a webhook (newest first, filtered, keyset-paginated), one row in full, and Redeliver."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from aiohttp import web

from api import cursor
from api.auth import account_of
from api.errors import ApiError, not_found, past_retention
from api.operation import json_response, path_id, read_query
from api.quotas import check_rate
from api.resources import resources_of
from api.store import DeliveryFilter
from api.views import delivery_view, request_headers
from hookfleet.retention import horizon
from hookfleet.secretbox import open_headers, open_signing_key
from schemas.api import (
    AccountDelivery,
    AccountDeliveryPage,
    DeliveryDetail,
    DeliveryPage,
    DeliveryQuery,
    DeliveryRequest,
    DeliveryResponse,
    DeliverySearchQuery,
    RedeliverResult,
)
from schemas.ids import ulid_time_ms
from schemas.models import DeliveryTask, Event, format_rfc3339

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 15.0


def _filter(query: DeliveryQuery) -> DeliveryFilter:
    """The query string as a filter of the log (the cursor checked: a 422 naming it)."""
    before = None
    if query.cursor is not None:
        try:
            before = cursor.decode(query.cursor)
        except ValueError as exc:
            raise ApiError(422, "invalid_field", str(exc), "cursor") from None
    where = DeliveryFilter(
        event_type=query.event_type.value if query.event_type else None,
        outcome=query.outcome.value if query.outcome else None,
        since=query.since,
        before=before,
    )
    if isinstance(query, DeliverySearchQuery):
        if query.until is not None and query.since is not None and query.until <= query.since:
            raise ApiError(422, "invalid_field", "until must be after since", "until")
        where = replace(where, event_id=query.event_id, status_code=query.status, until=query.until)
    return where


def _check_retention(rows: Sequence[object], where: DeliveryFilter, retention_days: int) -> None:
    if not rows and where.before is not None and where.before[0] < horizon(retention_days):
        # The next page would start in days that retention dropped (or is about to): say so, not "empty".
        raise past_retention(
            f"this page of the delivery log (before {format_rfc3339(where.before[0])})", retention_days
        )


async def list_deliveries(request: web.Request) -> web.StreamResponse:
    resources = resources_of(request)
    account = account_of(request)
    webhook_id = path_id(request, "webhook_id", "webhook")
    query = read_query(request, DeliveryQuery)
    where = _filter(query)
    if await resources.store.get_webhook(account, webhook_id) is None:
        raise not_found("webhook", webhook_id)
    rows = await resources.store.list_deliveries(account, webhook_id, where, query.limit + 1)
    _check_retention(rows, where, resources.settings.retention_days)
    page, more = rows[: query.limit], len(rows) > query.limit
    next_cursor = cursor.encode(page[-1].attempted_at, page[-1].attempt_id) if more else None
    return json_response(DeliveryPage(data=[delivery_view(row) for row in page], next_cursor=next_cursor))


async def search_deliveries(request: web.Request) -> web.StreamResponse:
    """The account's whole delivery log, every webhook, newest first: the same filters, cursor and limit as one
    webhook's log, and an event id, an HTTP status and a time range besides."""
    resources = resources_of(request)
    account = account_of(request)
    query = read_query(request, DeliverySearchQuery)
    where = _filter(query)
    rows = await resources.store.search_deliveries(account, where, query.limit + 1)
    _check_retention(rows, where, resources.settings.retention_days)
    page, more = rows[: query.limit], len(rows) > query.limit
    next_cursor = cursor.encode(page[-1][1].attempted_at, page[-1][1].attempt_id) if more else None
    data = [AccountDelivery(webhook_id=webhook_id, **delivery_view(row).model_dump()) for webhook_id, row in page]
    return json_response(AccountDeliveryPage(data=data, next_cursor=next_cursor))


async def redeliver(request: web.Request) -> web.StreamResponse:
    """Publish the logged event again for its webhook as a fresh attempt 1 (same event id, so receivers
    that already processed it can drop the duplicate). The webhook's current config applies."""
    resources = resources_of(request)
    account = account_of(request)
    attempt_id = path_id(request, "attempt_id", "delivery")
    check_rate(resources.redeliver_rate, account, "redeliveries", "HOOKFLEET_REDELIVERIES_PER_MINUTE")
    found = await resources.store.find_attempt(account, attempt_id)
    if found is None:
        made_ms = ulid_time_ms(attempt_id)
        oldest = horizon(resources.settings.retention_days)
        if made_ms is not None and made_ms < oldest.timestamp() * 1000:
            raise past_retention(f"delivery {attempt_id[:80]}", resources.settings.retention_days)
        raise not_found("delivery", attempt_id)
    webhook_id, event_id = found
    if await resources.store.get_webhook(account, webhook_id) is None:
        raise not_found("webhook", webhook_id)
    payload = await resources.store.event_payload(account, event_id)
    if payload is None:
        raise ApiError(
            404, "not_found", f"the payload of event {event_id} is no longer stored; it cannot be redelivered"
        )
    task = DeliveryTask(
        event=Event.model_validate_json(payload), webhook_id=webhook_id, attempt=1, due_at=int(time.time() * 1000)
    )
    sent = resources.producer.send(
        resources.settings.topics.deliveries, task.model_dump_json().encode(), key=webhook_id
    )
    await asyncio.wait_for(sent, PUBLISH_TIMEOUT_S)
    log.info("event=redelivery_queued account_id=%s webhook_id=%s event_id=%s", account, webhook_id, event_id)
    return json_response(
        RedeliverResult(status="queued", attempt_id=attempt_id, event_id=event_id, webhook_id=webhook_id), 202
    )


async def get_delivery(request: web.Request) -> web.StreamResponse:
    """One attempt in full: the request rebuilt from the stored event (the body is the bytes sent; the
    signatures are recomputed for that attempt's timestamp), the response as the log stored it, and the
    event's timeline of attempts to this webhook."""
    resources = resources_of(request)
    account = account_of(request)
    attempt_id = path_id(request, "attempt_id", "delivery")
    found = await resources.store.get_delivery(account, attempt_id)
    if found is None:
        raise not_found("delivery", attempt_id)
    webhook_id, row = found
    webhook = await resources.store.get_webhook(account, webhook_id)
    if webhook is None:
        raise not_found("webhook", webhook_id)
    payload = await resources.store.event_payload(account, row.event_id)
    timeline = await resources.store.event_attempts(account, webhook_id, row.event_id)
    body = None if payload is None else Event.model_validate_json(payload).body()
    secret = resources.box.open(webhook.secret_ciphertext, webhook.id)
    previous = (
        resources.box.open(webhook.previous_secret_ciphertext, webhook.id)
        if webhook.previous_secret_ciphertext is not None
        and webhook.previous_secret_expires_at is not None
        and row.attempted_at < webhook.previous_secret_expires_at
        else None
    )
    custom = open_headers(resources.box, webhook.headers_ciphertext, webhook.id)
    signing_keys = tuple(
        key
        for key, until in (
            (open_signing_key(resources.box, webhook.signing_key_ciphertext, webhook.id), None),
            (
                open_signing_key(resources.box, webhook.previous_signing_key_ciphertext, webhook.id),
                webhook.previous_signing_key_expires_at,
            ),
        )
        if key is not None and (until is None or row.attempted_at < until)
    )
    detail = DeliveryDetail(
        webhook_id=webhook_id,
        delivery=delivery_view(row),
        request=DeliveryRequest(
            url=webhook.url,
            headers=request_headers(row, body, secret, previous, custom, signing_keys),
            body=None if body is None else body.decode(),
        ),
        response=DeliveryResponse(
            status_code=row.status_code, error=row.error, response_ms=row.response_ms, body_excerpt=row.response_excerpt
        ),
        timeline=[delivery_view(attempt) for attempt in timeline],
    )
    return json_response(detail)
