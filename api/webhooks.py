"""Webhook handlers: create, list, show, update, delete, rotate and reveal the secret, rotate the Ed25519
signing key, Test, and recover dead letters.

Every lookup goes through the account of the API key, so another account's webhook is a 404.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from aiohttp import web

from api.auth import account_of
from api.errors import ApiError, not_found
from api.operation import json_response, path_id, read_body
from api.quotas import check_count, check_rate
from api.redrive import redrive
from api.resources import Resources, resources_of
from api.store import WebhookRow
from api.views import SigningKeys, webhook_view, webhook_with_secret
from delivery.deliverer import attempt_record
from delivery.endpoint import Endpoint
from delivery.signing import new_secret, new_signing_key
from hookfleet.secretbox import open_headers, open_signing_key, seal_headers, seal_signing_key
from schemas.api import (
    RecoverRequest,
    RecoverResult,
    TestRequest,
    TestResult,
    WebhookCreate,
    WebhookList,
    WebhookSecret,
    WebhookUpdate,
)
from schemas.catalog import EventType, sample_data
from schemas.ids import new_event_id, new_webhook_id
from schemas.models import Event

log = logging.getLogger(__name__)


async def _own_webhook(request: web.Request, resources: Resources) -> WebhookRow:
    webhook_id = path_id(request, "webhook_id", "webhook")
    row = await resources.store.get_webhook(account_of(request), webhook_id)
    if row is None:
        raise not_found("webhook", webhook_id)
    return row


async def create_webhook(request: web.Request) -> web.StreamResponse:
    resources = resources_of(request)
    body = await read_body(request, WebhookCreate)
    account = account_of(request)
    check_rate(resources.create_rate, account, "creates", "HOOKFLEET_CREATES_PER_MINUTE")
    quota = resources.settings.max_webhooks_per_account
    webhooks = await resources.store.count_webhooks(account)
    check_count(webhooks, quota, "webhooks", "delete one first", "HOOKFLEET_MAX_WEBHOOKS_PER_ACCOUNT")
    check_rate(resources.url_change_rate, account, "url changes", "HOOKFLEET_URL_CHANGES_PER_MINUTE")
    await resources.hosts.check(body.url, account)
    webhook_id, secret = new_webhook_id(), new_secret()
    signing_key = new_signing_key() if body.asymmetric_signing else None
    row = await resources.store.insert_webhook(
        webhook_id,
        account_of(request),
        body.name,
        body.url,
        [e.value for e in body.events],
        resources.box.seal(secret, webhook_id),
        body.active,
        body.rate_limit_per_s,
        body.ordering,
        seal_headers(resources.box, webhook_id, body.headers or {}),
        seal_signing_key(resources.box, webhook_id, signing_key) if signing_key is not None else None,
        body.filter or None,
        body.redrive_on_recovery,
    )
    log.info("event=webhook_created account_id=%s webhook_id=%s", row.account_id, row.id)
    keys = (signing_key, None)
    response = json_response(webhook_with_secret(row, secret, datetime.now(UTC), body.headers, keys), 201)
    response.headers["Location"] = f"/v1/webhooks/{row.id}"
    return response


async def list_webhooks(request: web.Request) -> web.StreamResponse:
    resources = resources_of(request)
    now = datetime.now(UTC)
    rows = await resources.store.list_webhooks(account_of(request))
    views = [
        webhook_view(
            row, resources.box.open(row.secret_ciphertext, row.id), now, _headers(row, resources), _keys(row, resources)
        )
        for row in rows
    ]
    return json_response(WebhookList(data=views))


async def get_webhook(request: web.Request) -> web.StreamResponse:
    resources = resources_of(request)
    row = await _own_webhook(request, resources)
    secret = resources.box.open(row.secret_ciphertext, row.id)
    return json_response(webhook_view(row, secret, datetime.now(UTC), _headers(row, resources), _keys(row, resources)))


async def update_webhook(request: web.Request) -> web.StreamResponse:
    resources = resources_of(request)
    row = await _own_webhook(request, resources)
    body = await read_body(request, WebhookUpdate)
    changes = body.model_dump(exclude_none=True, mode="json")
    if changes.get("rate_limit_per_s") == 0:
        changes["rate_limit_per_s"] = None  # 0 removes the limit
    if changes.get("filter") == "":
        changes["filter"] = None  # "" removes the filter
    if "headers" in changes:  # sealed like the secret; the log line names the field, never the values
        changes["headers_ciphertext"] = seal_headers(resources.box, row.id, changes.pop("headers"))
    if "asymmetric_signing" in changes:  # on: a key unless it has one; off: its keys are dropped
        if not changes.pop("asymmetric_signing"):
            changes["signing_key_ciphertext"] = None
        elif row.signing_key_ciphertext is None:
            changes["signing_key_ciphertext"] = seal_signing_key(resources.box, row.id, new_signing_key())
    if "url" in changes and changes["url"] != row.url:
        check_rate(resources.url_change_rate, row.account_id, "url changes", "HOOKFLEET_URL_CHANGES_PER_MINUTE")
        await resources.hosts.check(changes["url"], row.account_id)
    updated = await resources.store.update_webhook(row.account_id, row.id, changes)
    if updated is None:  # deleted meanwhile
        raise not_found("webhook", row.id)
    log.info("event=webhook_updated account_id=%s webhook_id=%s fields=%s", row.account_id, row.id, ",".join(changes))
    secret = resources.box.open(updated.secret_ciphertext, updated.id)
    now = datetime.now(UTC)
    return json_response(webhook_view(updated, secret, now, _headers(updated, resources), _keys(updated, resources)))


async def delete_webhook(request: web.Request) -> web.StreamResponse:
    webhook_id = path_id(request, "webhook_id", "webhook")
    if not await resources_of(request).store.delete_webhook(account_of(request), webhook_id):
        raise not_found("webhook", webhook_id)
    log.info("event=webhook_deleted account_id=%s webhook_id=%s", account_of(request), webhook_id)
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.StreamResponse:
    """A new secret now; the old one keeps signing beside it for the configured overlap, so receivers can
    switch without dropping a delivery."""
    resources = resources_of(request)
    webhook_id = path_id(request, "webhook_id", "webhook")
    secret = new_secret()
    now = datetime.now(UTC)
    overlap = resources.settings.secret_rotation_overlap_s
    expires = now + timedelta(seconds=overlap) if overlap > 0 else None
    row = await resources.store.rotate_secret(
        account_of(request), webhook_id, resources.box.seal(secret, webhook_id), expires
    )
    if row is None:
        raise not_found("webhook", webhook_id)
    log.info("event=webhook_secret_rotated account_id=%s webhook_id=%s overlap_s=%d", row.account_id, row.id, overlap)
    return json_response(webhook_with_secret(row, secret, now, _headers(row, resources), _keys(row, resources)))


async def rotate_signing_key(request: web.Request) -> web.StreamResponse:
    """A new Ed25519 key now; the old one keeps signing (`v1a`) beside it for the same overlap as a secret
    rotation, so receivers can trust the new public key before the old one stops."""
    resources = resources_of(request)
    row = await _own_webhook(request, resources)
    signing_key = new_signing_key()
    now = datetime.now(UTC)
    overlap = resources.settings.secret_rotation_overlap_s
    expires = now + timedelta(seconds=overlap) if overlap > 0 else None
    sealed = seal_signing_key(resources.box, row.id, signing_key)
    rotated = await resources.store.rotate_signing_key(row.account_id, row.id, sealed, expires)
    if rotated is None:
        if await resources.store.get_webhook(row.account_id, row.id) is None:  # deleted meanwhile
            raise not_found("webhook", row.id)
        raise ApiError(
            409,
            "asymmetric_signing_off",
            f"webhook {row.id} has no signing key to rotate: switch asymmetric signing on first"
            ' (PATCH /v1/webhooks/{id} with {"asymmetric_signing": true})',
            field="asymmetric_signing",
        )
    log.info(
        "event=webhook_signing_key_rotated account_id=%s webhook_id=%s overlap_s=%d", row.account_id, row.id, overlap
    )
    secret = resources.box.open(rotated.secret_ciphertext, rotated.id)
    return json_response(webhook_view(rotated, secret, now, _headers(rotated, resources), _keys(rotated, resources)))


async def reveal_secret(request: web.Request) -> web.StreamResponse:
    """The current secret in full, to the webhook's own account only (any other account gets a 404). It is
    stored encrypted, so it can be shown again; every `/v1` answer is `Cache-Control: no-store`, so no cache
    keeps it. Each reveal is logged (never the secret)."""
    resources = resources_of(request)
    row = await _own_webhook(request, resources)
    secret = resources.box.open(row.secret_ciphertext, row.id)
    now = datetime.now(UTC)
    overlap = row.previous_secret_expires_at
    log.info("event=webhook_secret_revealed account_id=%s webhook_id=%s", row.account_id, row.id)
    return json_response(
        WebhookSecret(
            webhook_id=row.id,
            secret=secret,
            previous_secret_expires_at=overlap
            if row.previous_secret_ciphertext and overlap and overlap > now
            else None,
        )
    )


def _headers(row: WebhookRow, resources: Resources) -> dict[str, str]:
    return open_headers(resources.box, row.headers_ciphertext, row.id)


def _keys(row: WebhookRow, resources: Resources) -> SigningKeys:
    box = resources.box
    return (
        open_signing_key(box, row.signing_key_ciphertext, row.id),
        open_signing_key(box, row.previous_signing_key_ciphertext, row.id),
    )


def _endpoint(row: WebhookRow, resources: Resources) -> Endpoint:
    previous = resources.box.open(row.previous_secret_ciphertext, row.id) if row.previous_secret_ciphertext else None
    signing_key, previous_signing_key = _keys(row, resources)
    return Endpoint(
        id=row.id,
        account_id=row.account_id,
        url=row.url,
        events=frozenset(EventType(e) for e in row.events),
        active=row.active,
        secret=resources.box.open(row.secret_ciphertext, row.id),
        previous_secret=previous,
        previous_secret_expires_at=row.previous_secret_expires_at,
        headers=tuple(_headers(row, resources).items()),
        signing_key=signing_key,
        previous_signing_key=previous_signing_key,
        previous_signing_key_expires_at=row.previous_signing_key_expires_at,
    )


async def send_test(request: web.Request) -> web.StreamResponse:
    """Send the catalog sample of one type now, through the dispatcher's delivery code, and log it as a test.

    It is sent even when the webhook is inactive: checking a receiver before switching it on is the point.
    """
    resources = resources_of(request)
    row = await _own_webhook(request, resources)
    body = await read_body(request, TestRequest, required=False)
    check_rate(resources.test_rate, row.account_id, "Test deliveries", "HOOKFLEET_TESTS_PER_MINUTE")
    event_type = body.event_type or EventType(row.events[0])
    event = Event(
        id=new_event_id(),
        type=event_type,
        created_at=datetime.now(UTC),
        account_id=row.account_id,
        data=sample_data(event_type),
    )
    result = await resources.deliverer.deliver(_endpoint(row, resources), event, attempt=1)
    record = attempt_record(event, row.id, 1, result, "done", test=True)
    await resources.store.record_test_attempt(record)
    log.info(
        "event=webhook_tested account_id=%s webhook_id=%s event_type=%s outcome=%s status=%s ms=%d",
        row.account_id,
        row.id,
        event.type.value,
        result.outcome.value,
        result.status_code,
        result.response_ms,
    )
    return json_response(
        TestResult(
            ok=result.ok,
            attempt_id=record.attempt_id,
            event_id=event.id,
            event_type=event.type,
            outcome=result.outcome,
            status_code=result.status_code,
            error=result.error,
            response_ms=result.response_ms,
            response_excerpt=result.excerpt,
            attempted_at=record.attempted_at,
        )
    )


async def recover_webhook(request: web.Request) -> web.StreamResponse:
    """Queue the webhook's dead letters again as a fresh attempt 1 (e.g. after the receiver was fixed)."""
    resources = resources_of(request)
    row = await _own_webhook(request, resources)
    body = await read_body(request, RecoverRequest, required=False)
    check_rate(resources.recover_rate, row.account_id, "recovers", "HOOKFLEET_RECOVERS_PER_MINUTE")
    count = await asyncio.to_thread(
        redrive,
        resources.database_url,
        resources.producer,
        resources.settings.topics,
        row.id,
        body.since,
        account_id=row.account_id,
    )
    log.info("event=webhook_recovered account_id=%s webhook_id=%s redriven=%d", row.account_id, row.id, count)
    return json_response(RecoverResult(webhook_id=row.id, redriven=count), 202)
