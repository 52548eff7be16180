"""The operational events' payload (webhook.failing / .recovered / .disabled): one shape for every writer
(the recorder's state changes and the API's Test heal), as the catalog's samples show it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.catalog import EventType
from schemas.ids import new_event_id
from schemas.models import Event, format_rfc3339

FACTS_SQL = (
    "SELECT w.id, w.account_id, w.name, w.url, w.active, w.status, w.disabled_reason, "
    "(SELECT count(*) FROM dead_letters d WHERE d.webhook_id = w.id AND d.redriven_at IS NULL) "
    "FROM webhooks w WHERE w.id = %s"
)
"""Reads `WebhookFacts` of one webhook (run it in the transaction that changed the webhook)."""

QUEUE_RECOVERY_REDRIVE_SQL = (
    "WITH base AS (SELECT coalesce(min(queued_at), now()) AS at, coalesce(max(position) + 1, 0) AS next"
    " FROM recovery_redrives WHERE webhook_id = %(id)s), "
    "marked AS (UPDATE dead_letters SET redriven_at = now() WHERE webhook_id = %(id)s AND redriven_at IS NULL"
    " AND dead_at >= %(since)s RETURNING event_id, task, dead_at), "
    "queued AS (INSERT INTO recovery_redrives (webhook_id, event_id, position, queued_at, task)"
    " SELECT %(id)s, m.event_id, b.next + row_number() OVER (ORDER BY m.dead_at, m.event_id) - 1, b.at, m.task"
    " FROM marked m CROSS JOIN base b ON CONFLICT (webhook_id, event_id) DO NOTHING RETURNING 1) "
    "SELECT count(*) FROM queued"
)
"""Redrive on recovery: queue the webhook's dead letters of its failing spell (dead at or after `since`) and mark
them redriven, oldest first, after anything still queued for it; answers how many. Run it in the transaction that
heals the webhook (its row locked), so a recovery queues them exactly when it is committed, and once."""

INSERT_OUTBOX_SQL = (
    "INSERT INTO operational_outbox (event_id, account_id, event) VALUES (%s, %s, %s::jsonb) "
    "ON CONFLICT (event_id) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class WebhookFacts:
    """What an operational event says about a webhook (read under the row lock that changed it)."""

    webhook_id: str
    account_id: str
    name: str
    url: str
    active: bool
    status: str
    disabled_reason: str | None
    dead_letters: int


def operational_data(
    facts: WebhookFacts, reason: str, since: datetime, last_error: str | None, redriven: int = 0
) -> dict[str, Any]:
    """The `data` of a webhook.failing / .recovered / .disabled event (shaped like the catalog sample).

    `reason`: "dead_letter" (failing), "delivered" (recovered), "gone" or "failing" (disabled);
    `last_error` is "" when there is none, so every field keeps one JSON type; `redriven`: the dead letters
    this change queued again (redrive on recovery), 0 for every other change.
    """
    return {
        "webhook_id": facts.webhook_id,
        "name": facts.name,
        "url": facts.url,
        "active": facts.active,
        "status": facts.status,
        "reason": reason,
        "since": format_rfc3339(since),
        "last_error": last_error or "",
        "dead_letters": facts.dead_letters,
        "redriven": redriven,
    }


def operational_event(
    event_type: EventType,
    facts: WebhookFacts,
    reason: str,
    since: datetime,
    last_error: str | None,
    redriven: int = 0,
) -> Event:
    """The event of one state change, for the webhook's account."""
    return Event(
        id=new_event_id(),
        type=event_type,
        created_at=datetime.now(UTC),
        account_id=facts.account_id,
        data=operational_data(facts, reason, since, last_error, redriven),
    )
