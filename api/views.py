"""Database rows as API responses: pure conversions, so masking and shapes have unit tests."""

from __future__ import annotations

from datetime import datetime

from api.store import DeliveryRow, WebhookRow
from delivery.signing import SECRET_PREFIX, public_key
from delivery.signing import request_headers as delivery_headers
from hookfleet import USER_AGENT
from schemas.api import Delivery, WebhookView, WebhookWithSecret
from schemas.catalog import EventType
from schemas.models import Outcome


def mask_secret(secret: str) -> str:
    """Enough to tell two secrets apart (`whsec_****` + last 4 characters), never enough to sign."""
    return SECRET_PREFIX + "****" + secret[-4:]


def mask_header_value(value: str) -> str:
    """`****` + the last 4 characters of a long value (enough to tell two tokens apart), else `****`."""
    return "****" + value[-4:] if len(value) >= 16 else "****"


SigningKeys = tuple[str | None, str | None]
"""A webhook's Ed25519 private keys, opened: the current one and the previous one (None: none)."""


def _public_keys(row: WebhookRow, keys: SigningKeys, now: datetime) -> dict[str, object]:
    """Only public keys leave the server; the previous one while its rotation's overlap lasts."""
    current, previous = keys
    ends = row.previous_signing_key_expires_at
    overlapping = current is not None and previous is not None and ends is not None and ends > now
    return {
        "asymmetric_signing": current is not None,
        "public_key": public_key(current) if current is not None else None,
        "previous_public_key": public_key(previous) if overlapping and previous is not None else None,
        "previous_public_key_expires_at": ends if overlapping else None,
    }


def _fields(
    row: WebhookRow, now: datetime, headers: dict[str, str] | None = None, keys: SigningKeys = (None, None)
) -> dict[str, object]:
    overlap = row.previous_secret_expires_at
    return {
        **_public_keys(row, keys, now),
        "disabled_reason": row.disabled_reason,
        "disabled_at": row.disabled_at,
        "headers": {name: mask_header_value(value) for name, value in (headers or {}).items()},
        "id": row.id,
        "name": row.name,
        "url": row.url,
        "events": [EventType(e) for e in row.events],
        "active": row.active,
        "rate_limit_per_s": row.rate_limit_per_s,
        "ordering": row.ordering,
        "redrive_on_recovery": row.redrive_on_recovery,
        "status": row.status,
        "status_changed_at": row.status_changed_at,
        "previous_secret_expires_at": overlap if row.previous_secret_ciphertext and overlap and overlap > now else None,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "filter": row.filter,
    }


def webhook_view(
    row: WebhookRow,
    secret: str,
    now: datetime,
    headers: dict[str, str] | None = None,
    keys: SigningKeys = (None, None),
) -> WebhookView:
    return WebhookView.model_validate({**_fields(row, now, headers, keys), "secret": mask_secret(secret)})


def webhook_with_secret(
    row: WebhookRow,
    secret: str,
    now: datetime,
    headers: dict[str, str] | None = None,
    keys: SigningKeys = (None, None),
) -> WebhookWithSecret:
    """The only view that carries the secret in full: the answer to create and rotate (headers stay masked)."""
    return WebhookWithSecret.model_validate({**_fields(row, now, headers, keys), "secret": secret})


def delivery_view(row: DeliveryRow) -> Delivery:
    return Delivery(
        attempt_id=row.attempt_id,
        event_id=row.event_id,
        event_type=EventType(row.event_type),
        attempt=row.attempt,
        outcome=Outcome(row.outcome),
        status_code=row.status_code,
        error=row.error,
        response_ms=row.response_ms,
        response_excerpt=row.response_excerpt,
        attempted_at=row.attempted_at,
        next_step=row.next_step,
        test=row.test,
        replay=row.replay_id,
    )


def request_headers(
    row: DeliveryRow,
    body: bytes | None,
    secret: str,
    previous: str | None,
    custom: dict[str, str],
    signing_keys: tuple[str, ...] = (),
) -> dict[str, str]:
    """The headers of one logged attempt, built as the dispatcher builds them (`delivery.signing.
    request_headers`): the timestamp is the attempt's own second, so the signatures are the ones sent
    whenever the secret is the same; custom header values stay masked. Without the body (past retention)
    there is nothing to sign."""
    timestamp = int(row.attempted_at.timestamp())
    masked = [(name, mask_header_value(value)) for name, value in custom.items()]
    headers = delivery_headers(
        secret, previous, row.event_id, row.event_type, row.attempt, timestamp, body, masked, signing_keys
    )
    return {"User-Agent": USER_AGENT, **headers}
