"""Every PostgreSQL query of the API. Each one is scoped to the calling account: a webhook or log row of
another account is simply not found, so tenant isolation does not depend on each handler remembering."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from delivery.outcome import classify_status
from hookfleet.attempt_rows import (
    ATTEMPT_COLUMNS,
    INSERT_PAYLOAD,
    attempt_row,
    json_text,
    log_day,
    payload_rows,
    rollup_sql,
)
from hookfleet.db import describe
from schemas.catalog import EventType
from schemas.models import AttemptRecord
from schemas.operational import (
    FACTS_SQL,
    INSERT_OUTBOX_SQL,
    QUEUE_RECOVERY_REDRIVE_SQL,
    WebhookFacts,
    operational_event,
)

log = logging.getLogger(__name__)

Confirmation = Literal["confirmed", "wrong", "expired", "locked", "none"]


@dataclass(frozen=True, slots=True)
class AccountRow:
    name: str
    notification_email: str | None
    confirmed: bool


@dataclass(frozen=True, slots=True)
class WebhookRow:
    id: str
    account_id: str
    name: str
    url: str
    events: list[str]
    secret_ciphertext: bytes
    previous_secret_ciphertext: bytes | None
    previous_secret_expires_at: datetime | None
    active: bool
    status: str
    status_changed_at: datetime
    created_at: datetime
    updated_at: datetime
    rate_limit_per_s: int | None = None
    ordering: str = "unordered"
    disabled_reason: str | None = None
    disabled_at: datetime | None = None
    headers_ciphertext: bytes | None = None
    signing_key_ciphertext: bytes | None = None
    previous_signing_key_ciphertext: bytes | None = None
    previous_signing_key_expires_at: datetime | None = None
    filter: str | None = None
    redrive_on_recovery: bool = False

    def __repr__(self) -> str:  # the ciphertexts stay out of logs and tracebacks
        return f"WebhookRow(id={self.id!r}, account_id={self.account_id!r})"


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: str
    label: str
    hint: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class PortalSessionRow:
    id: str
    created_by_key_id: str
    created_by_key_label: str
    read_only: bool
    created_at: datetime
    link_expires_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class PortalGrant:
    """What a portal session credential authenticates: one account, perhaps read-only."""

    session_id: str
    account_id: str
    read_only: bool
    expires_at: datetime


LinkRefusal = Literal["unknown", "used", "revoked", "expired"]

_PORTAL_COLUMNS = (
    "SELECT p.id, p.created_by_key_id, COALESCE(k.label, '') AS created_by_key_label, p.read_only, p.created_at,"
    " p.link_expires_at, p.expires_at, p.used_at, p.revoked_at"
    " FROM portal_sessions p LEFT JOIN api_keys k ON k.id = p.created_by_key_id AND k.account_id = p.account_id"
)
_LIVE_CREATOR = sql.SQL(
    "NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.id = p.created_by_key_id AND k.revoked_at IS NOT NULL)"
)
"""A session dies with the key that asked for it: revoking a leaked key also ends what was opened with it."""


RevokeResult = Literal["revoked", "not_found", "last_key"]


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    attempt_id: str
    event_id: str
    event_type: str
    attempt: int
    outcome: str
    status_code: int | None
    error: str | None
    response_ms: int | None
    response_excerpt: str
    attempted_at: datetime
    next_step: str
    test: bool
    replay_id: str | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    logged_on: date
    event_id: str
    event: str | None
    """The payload's JSON text; None when its type is not one asked for (not read out)."""


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    event_type: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    before: tuple[datetime, str] | None = None
    """Keyset cursor: only rows strictly older than (attempted_at, attempt_id)."""
    event_id: str | None = None
    status_code: int | None = None
    until: datetime | None = None
    """Only rows strictly older than this time."""

    def clauses(self, params: dict[str, Any]) -> list[str]:
        """The WHERE clauses of this filter (fixed texts only; every value goes into `params`)."""
        clauses: list[str] = []
        if self.event_id is not None:
            clauses.append("event_id = %(event_id)s")
            params["event_id"] = self.event_id
        if self.event_type is not None:
            clauses.append("event_type = %(event_type)s")
            params["event_type"] = self.event_type
        outcome = self.outcome
        if self.status_code is not None:
            clauses.append("status_code = %(status_code)s")
            params["status_code"] = self.status_code
            if outcome is None:
                # A status says its outcome (delivery/outcome.py classify_status): stated, a failed status is
                # looked up in the failures' index instead of among every success of the account.
                outcome = implied_outcome(self.status_code)
        if outcome is not None:
            clauses.append("outcome = %(outcome)s")
            params["outcome"] = outcome
        if self.since is not None:
            clauses.append("attempted_at >= %(since)s")
            params["since"] = self.since
        if self.until is not None:
            clauses.append("attempted_at < %(until)s")
            params["until"] = self.until
        if self.before is not None:
            clauses.append("(attempted_at, attempt_id) < (%(before_at)s, %(before_id)s)")
            params["before_at"], params["before_id"] = self.before
        return clauses


def implied_outcome(status_code: int) -> str:
    """The outcome logged with an HTTP status: the dispatcher logs a status only when the receiver answered."""
    return str(classify_status(status_code)[0])


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    webhook_id: str
    event_type: str
    dead_at: datetime
    last_error: str | None
    redriven_at: datetime | None


@dataclass(frozen=True, slots=True)
class EventReplayRow:
    webhook_id: str
    replay_id: str
    created_at: datetime
    queued_at: datetime | None


EVENT_ATTEMPTS_MAX = 2000
"""Attempts of one event shown at most: fan-out reaches at most HOOKFLEET_MAX_WEBHOOKS_PER_ACCOUNT (100)
webhooks with 4 attempts each; only redeliveries and replays repeated hundreds of times go past it."""


@dataclass(frozen=True, slots=True)
class EventTrace:
    """What the log holds about one event of one account (Store.event_trace)."""

    payload: str | None
    """The event's JSON text as stored; None once past the retention."""
    attempts: list[tuple[str, DeliveryRow]]
    """(webhook id, attempt), by webhook, oldest first."""
    dead_letters: list[DeadLetterRow]
    replays: list[EventReplayRow]
    webhook_names: dict[str, str]
    """Of the webhooks that still exist."""
    truncated: bool


_WEBHOOK_COLUMNS = (
    "id",
    "account_id",
    "name",
    "url",
    "events",
    "secret_ciphertext",
    "previous_secret_ciphertext",
    "previous_secret_expires_at",
    "active",
    "status",
    "status_changed_at",
    "created_at",
    "updated_at",
    "rate_limit_per_s",
    "ordering",
    "disabled_reason",
    "disabled_at",
    "headers_ciphertext",
    "signing_key_ciphertext",
    "previous_signing_key_ciphertext",
    "previous_signing_key_expires_at",
    "filter",
    "redrive_on_recovery",
)
_DELIVERY_COLUMNS = (
    "attempt_id",
    "event_id",
    "event_type",
    "attempt",
    "outcome",
    "status_code",
    "error",
    "response_ms",
    "response_excerpt",
    "attempted_at",
    "next_step",
    "test",
    "replay_id",
)


@dataclass(frozen=True, slots=True)
class StatsRow:
    """One hour of one webhook in webhook_stats_hourly."""

    hour: datetime
    success: int
    http_error: int
    timeout: int
    connection_error: int
    first_attempts: int
    latency: list[int]
    """Attempts per response-time bucket (hookfleet.attempt_rows.LATENCY_BOUNDS_MS)."""


STATS_SQL = (
    "SELECT hour, success, http_error, timeout, connection_error, first_attempts, latency"
    " FROM webhook_stats_hourly WHERE webhook_id = %s AND account_id = %s AND hour >= %s AND hour < %s ORDER BY hour"
)
"""One webhook's hours of a window (bench/webhook_stats.py times it)."""

_ROLLUP_ONE = rollup_sql(
    "(SELECT * FROM delivery_attempts WHERE attempt_id = %(attempt_id)s AND attempted_at = %(attempted_at)s) AS one"
)

_WEBHOOK = sql.SQL(", ").join(map(sql.Identifier, _WEBHOOK_COLUMNS))
_DELIVERY = sql.SQL(", ").join(map(sql.Identifier, _DELIVERY_COLUMNS))
_UPDATABLE = frozenset(
    {
        "name",
        "url",
        "events",
        "active",
        "rate_limit_per_s",
        "ordering",
        "headers_ciphertext",
        "signing_key_ciphertext",
        "filter",
        "redrive_on_recovery",
    }
)

# Asymmetric signing on keeps a key the webhook already has (a second `true` changes nothing, and of two at
# once the first key stays); off drops the key and a previous one still in its overlap.
_SIGNING_KEY_ON = sql.SQL("signing_key_ciphertext = COALESCE(signing_key_ciphertext, %(signing_key_ciphertext)s)")
_SIGNING_KEY_OFF = sql.SQL(
    "signing_key_ciphertext = NULL, previous_signing_key_ciphertext = NULL, previous_signing_key_expires_at = NULL"
)

# Switching off by hand records why and when; switching on clears both and restarts the auto-disable
# clock (`enabled_at`), so a 410 or a failure from before does not switch it off again.
_ACTIVE_CHANGE = sql.SQL(
    ", disabled_reason = CASE WHEN %(active)s THEN NULL WHEN active THEN 'manual' ELSE disabled_reason END"
    ", disabled_at = CASE WHEN %(active)s THEN NULL WHEN active THEN now() ELSE disabled_at END"
    ", enabled_at = CASE WHEN %(active)s AND NOT active THEN now() ELSE enabled_at END"
)


def account_log_query(account_id: str, where: DeliveryFilter, limit: int) -> tuple[sql.Composed, dict[str, Any]]:
    """The account's log search (`Store.search_deliveries`; bench/delivery_search.py times and explains it)."""
    params: dict[str, Any] = {"account_id": account_id, "limit": limit}
    clauses = ["account_id = %(account_id)s", *where.clauses(params)]
    query = sql.SQL(
        "SELECT webhook_id, {} FROM delivery_attempts WHERE {}"
        " ORDER BY attempted_at DESC, attempt_id DESC LIMIT %(limit)s"
    ).format(_DELIVERY, sql.SQL(" AND ").join(map(sql.SQL, clauses)))
    return query, params


class Store:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, max_size: int = 10, timeout_s: float = 5.0) -> Store:
        """Open the pool; an unreachable database is waited out in the background, not fatal.

        The API then serves, unready (`/healthz` 503, requests 503), and recovers by itself when
        PostgreSQL answers: a database outage during a rollout must not crash-loop the API.
        """
        # reconnect_timeout: keep trying for a day, not psycopg_pool's default 5 min, after which the pool
        # would stop reconnecting until a request asks for a connection.
        pool = AsyncConnectionPool(
            url, min_size=1, max_size=max_size, timeout=timeout_s, open=False, reconnect_timeout=86400.0
        )
        await pool.open(wait=False)
        try:
            async with pool.connection(timeout=timeout_s) as conn:
                await conn.execute("SELECT 1")
        except (PoolTimeout, psycopg.OperationalError):
            log.warning("event=db_unavailable_at_start database=%s action=serve_unready_and_retry", describe(url))
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self, timeout_s: float = 1.0) -> None:
        """Health checks answer within a probe's usual timeout rather than waiting out the pool's."""
        async with self._pool.connection(timeout=timeout_s) as conn:
            await conn.execute("SELECT 1")

    # ------------------------------------------------------------------------------------ accounts

    async def account_for_key(self, key_hash: bytes) -> tuple[str, str] | None:
        """(account id, key id) of an active key. Read on every request, never cached, so a revocation applies
        to every replica at once. `last_used_at` is written at most once a minute per key, not per request."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT account_id, id, last_used_at IS NULL OR last_used_at < now() - interval '60 seconds'"
                " FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
                (key_hash,),
            )
            row = await cur.fetchone()
            if row is not None and row[2]:
                await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_hash = %s", (key_hash,))
        return None if row is None else (str(row[0]), str(row[1]))

    async def get_account(self, account_id: str) -> AccountRow | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT name, notification_email, notification_email_confirmed_at IS NOT NULL FROM accounts"
                " WHERE id = %s",
                (account_id,),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return AccountRow(str(row[0]), None if row[1] is None else str(row[1]), bool(row[2]))

    async def clear_notification_email(self, account_id: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE accounts SET notification_email = NULL, notification_email_confirmed_at = NULL,"
                " confirmation_code_hash = NULL, confirmation_expires_at = NULL, confirmation_tries = 0"
                " WHERE id = %s",
                (account_id,),
            )

    async def start_confirmation(
        self, account_id: str, email: str, code_hash: bytes, ttl_s: float, min_interval_s: float
    ) -> float | None:
        """Store `email` unconfirmed with a new code's hash; None, or the seconds to wait when the last code
        went out less than `min_interval_s` ago (one statement: two replicas cannot both send)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE accounts SET notification_email = %(email)s, notification_email_confirmed_at = NULL,"
                " confirmation_code_hash = %(hash)s, confirmation_tries = 0, confirmation_sent_at = now(),"
                " confirmation_expires_at = now() + make_interval(secs => %(ttl)s)"
                " WHERE id = %(id)s AND (confirmation_sent_at IS NULL"
                " OR confirmation_sent_at <= now() - make_interval(secs => %(gap)s))"
                " RETURNING 1",
                {"email": email, "hash": code_hash, "ttl": ttl_s, "gap": min_interval_s, "id": account_id},
            )
            if await cur.fetchone() is not None:
                return None
            cur = await conn.execute(
                "SELECT extract(epoch FROM confirmation_sent_at + make_interval(secs => %s) - now())"
                " FROM accounts WHERE id = %s",
                (min_interval_s, account_id),
            )
            row = await cur.fetchone()
        return max(1.0, float(row[0])) if row is not None and row[0] is not None else min_interval_s

    async def confirm_notification_email(self, account_id: str, code_hash: bytes, max_tries: int) -> Confirmation:
        """Check a confirmation code against the stored hash, counting wrong tries; one transaction."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT confirmation_code_hash, confirmation_expires_at <= now(), confirmation_tries FROM accounts"
                " WHERE id = %s FOR UPDATE",
                (account_id,),
            )
            row = await cur.fetchone()
            if row is None or row[0] is None:
                return "none"
            stored, expired, tries = bytes(row[0]), bool(row[1]), int(row[2])
            if expired:
                return "expired"
            if tries >= max_tries:
                return "locked"
            if not hmac.compare_digest(stored, code_hash):
                await conn.execute(
                    "UPDATE accounts SET confirmation_tries = confirmation_tries + 1 WHERE id = %s", (account_id,)
                )
                return "wrong"
            await conn.execute(
                "UPDATE accounts SET notification_email_confirmed_at = now(), confirmation_code_hash = NULL,"
                " confirmation_expires_at = NULL, confirmation_tries = 0 WHERE id = %s",
                (account_id,),
            )
        return "confirmed"

    async def list_api_keys(self, account_id: str) -> list[ApiKeyRow]:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(ApiKeyRow))
            await cur.execute(
                "SELECT id, label, hint, created_at, last_used_at, revoked_at FROM api_keys"
                " WHERE account_id = %s ORDER BY created_at, id",
                (account_id,),
            )
            return await cur.fetchall()

    async def count_active_api_keys(self, account_id: str) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM api_keys WHERE account_id = %s AND revoked_at IS NULL", (account_id,)
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def insert_api_key(self, key_id: str, key_hash: bytes, account_id: str, label: str, hint: str) -> ApiKeyRow:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(ApiKeyRow))
            await cur.execute(
                "INSERT INTO api_keys (id, key_hash, account_id, label, hint) VALUES (%s, %s, %s, %s, %s)"
                " RETURNING id, label, hint, created_at, last_used_at, revoked_at",
                (key_id, key_hash, account_id, label, hint),
            )
            row = await cur.fetchone()
        assert row is not None
        return row

    async def revoke_api_key(self, account_id: str, key_id: str) -> RevokeResult:
        """Revoke unless it is the account's last active key (which would lock the account out of the API).
        The account's keys are locked first, so two concurrent revocations cannot both pass that check."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT id, revoked_at IS NOT NULL FROM api_keys WHERE account_id = %s FOR UPDATE", (account_id,)
            )
            keys = {str(row[0]): bool(row[1]) for row in await cur.fetchall()}
            if key_id not in keys:
                return "not_found"
            if keys[key_id]:
                return "revoked"
            if sum(not revoked for revoked in keys.values()) <= 1:
                return "last_key"
            await conn.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND account_id = %s", (key_id, account_id)
            )
        return "revoked"

    # ------------------------------------------------------------------------------------ webhooks

    async def insert_webhook(
        self,
        webhook_id: str,
        account_id: str,
        name: str,
        url: str,
        events: Sequence[str],
        sealed: bytes,
        active: bool,
        rate_limit_per_s: int | None = None,
        ordering: str = "unordered",
        sealed_headers: bytes | None = None,
        sealed_signing_key: bytes | None = None,
        filter_text: str | None = None,
        redrive_on_recovery: bool = False,
    ) -> WebhookRow:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(WebhookRow))
            await cur.execute(
                sql.SQL(
                    "INSERT INTO webhooks (id, account_id, name, url, events, secret_ciphertext, active,"
                    " rate_limit_per_s, ordering, headers_ciphertext, signing_key_ciphertext, filter,"
                    " redrive_on_recovery, disabled_reason, disabled_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                    " CASE WHEN %s THEN NULL ELSE 'manual' END,"
                    " CASE WHEN %s THEN NULL ELSE now() END) RETURNING {}"
                ).format(_WEBHOOK),
                (
                    webhook_id,
                    account_id,
                    name,
                    url,
                    list(events),
                    sealed,
                    active,
                    rate_limit_per_s,
                    ordering,
                    sealed_headers,
                    sealed_signing_key,
                    filter_text,
                    redrive_on_recovery,
                    active,
                    active,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        return row

    async def count_webhooks(self, account_id: str) -> int:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM webhooks WHERE account_id = %s", (account_id,))
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def list_webhooks(self, account_id: str) -> list[WebhookRow]:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(WebhookRow))
            await cur.execute(
                sql.SQL("SELECT {} FROM webhooks WHERE account_id = %s ORDER BY created_at, id").format(_WEBHOOK),
                (account_id,),
            )
            return await cur.fetchall()

    async def get_webhook(self, account_id: str, webhook_id: str) -> WebhookRow | None:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(WebhookRow))
            await cur.execute(
                sql.SQL("SELECT {} FROM webhooks WHERE id = %s AND account_id = %s").format(_WEBHOOK),
                (webhook_id, account_id),
            )
            return await cur.fetchone()

    async def update_webhook(self, account_id: str, webhook_id: str, changes: dict[str, Any]) -> WebhookRow | None:
        """Set the given columns (a fixed allow-list, so no column name ever comes from a client)."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        if not changes:
            return await self.get_webhook(account_id, webhook_id)
        parts: list[sql.Composable] = [
            sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder(column))
            for column in sorted(changes)
            if column != "signing_key_ciphertext"
        ]
        if "signing_key_ciphertext" in changes:
            parts.append(_SIGNING_KEY_ON if changes["signing_key_ciphertext"] is not None else _SIGNING_KEY_OFF)
        assignments = sql.SQL(", ").join(parts)
        if "active" in changes:
            assignments = sql.Composed([assignments, _ACTIVE_CHANGE])
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(WebhookRow))
            await cur.execute(
                sql.SQL(
                    "UPDATE webhooks SET {}, updated_at = now()"
                    " WHERE id = %(id)s AND account_id = %(account_id)s RETURNING {}"
                ).format(assignments, _WEBHOOK),
                {**changes, "id": webhook_id, "account_id": account_id},
            )
            return await cur.fetchone()

    async def delete_webhook(self, account_id: str, webhook_id: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute("DELETE FROM webhooks WHERE id = %s AND account_id = %s", (webhook_id, account_id))
            return cur.rowcount == 1

    async def rotate_secret(
        self, account_id: str, webhook_id: str, sealed: bytes, previous_expires_at: datetime | None
    ) -> WebhookRow | None:
        """The current secret becomes the previous one until `previous_expires_at` (None: dropped at once).

        The ciphertext moves as it is: the webhook id is its authenticated data, and the id does not change.
        """
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(WebhookRow))
            await cur.execute(
                sql.SQL(
                    "UPDATE webhooks SET"
                    " previous_secret_ciphertext = CASE WHEN %(expires)s::timestamptz IS NULL"
                    " THEN NULL ELSE secret_ciphertext END,"
                    " previous_secret_expires_at = %(expires)s, secret_ciphertext = %(sealed)s, updated_at = now()"
                    " WHERE id = %(id)s AND account_id = %(account_id)s RETURNING {}"
                ).format(_WEBHOOK),
                {"expires": previous_expires_at, "sealed": sealed, "id": webhook_id, "account_id": account_id},
            )
            return await cur.fetchone()

    async def rotate_signing_key(
        self, account_id: str, webhook_id: str, sealed: bytes, previous_expires_at: datetime | None
    ) -> WebhookRow | None:
        """As `rotate_secret`, for the Ed25519 key: only a webhook that has one (None otherwise, or not found)."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(WebhookRow))
            await cur.execute(
                sql.SQL(
                    "UPDATE webhooks SET"
                    " previous_signing_key_ciphertext = CASE WHEN %(expires)s::timestamptz IS NULL"
                    " THEN NULL ELSE signing_key_ciphertext END,"
                    " previous_signing_key_expires_at = %(expires)s, signing_key_ciphertext = %(sealed)s,"
                    " updated_at = now()"
                    " WHERE id = %(id)s AND account_id = %(account_id)s AND signing_key_ciphertext IS NOT NULL"
                    " RETURNING {}"
                ).format(_WEBHOOK),
                {"expires": previous_expires_at, "sealed": sealed, "id": webhook_id, "account_id": account_id},
            )
            return await cur.fetchone()

    # ------------------------------------------------------------------------------------ delivery log

    async def record_test_attempt(self, record: AttemptRecord) -> None:
        """Log a Test attempt as the recorder logs real ones, keep its event for Redeliver, and clear a
        failing status on success (only when the attempt is newer than the status change, as the recorder does).
        """
        async with self._pool.connection() as conn, conn.transaction():
            # The recorder keeps days ahead; this covers an API whose recorder is not running.
            await conn.execute("SELECT hookfleet_create_log_day(%s)", (log_day(record.attempted_at),))
            await conn.execute(
                sql.SQL("INSERT INTO delivery_attempts ({}) VALUES ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, ATTEMPT_COLUMNS)),
                    sql.SQL(", ").join(sql.Placeholder() * len(ATTEMPT_COLUMNS)),
                ),
                attempt_row(record),
            )
            for row in payload_rows([record]):
                await conn.execute(INSERT_PAYLOAD, row)
            await conn.execute(_ROLLUP_ONE, {"attempt_id": record.attempt_id, "attempted_at": record.attempted_at})
            if record.outcome.value == "success":
                cur = await conn.execute(
                    "UPDATE webhooks w SET status = 'healthy', status_changed_at = %(at)s, failing_since = NULL"
                    " FROM (SELECT id, failing_since, status_changed_at FROM webhooks WHERE id = %(id)s FOR UPDATE) old"
                    " WHERE w.id = old.id AND w.account_id = %(account_id)s AND w.status = 'failing'"
                    " AND w.status_changed_at < %(at)s"
                    " RETURNING w.redrive_on_recovery, coalesce(old.failing_since, old.status_changed_at)",
                    {"at": record.attempted_at, "id": record.webhook_id, "account_id": record.account_id},
                )
                healed = await cur.fetchone()
                if healed is not None:  # webhook.recovered (and its redrive, when opted in), sent by a recorder
                    redriven = 0
                    if healed[0]:
                        queue = {"id": record.webhook_id, "since": healed[1]}
                        queued = await (await conn.execute(QUEUE_RECOVERY_REDRIVE_SQL, queue)).fetchone()
                        redriven = int(queued[0]) if queued else 0
                    facts = await (await conn.execute(FACTS_SQL, (record.webhook_id,))).fetchone()
                    assert facts is not None
                    recovered = operational_event(
                        EventType.WEBHOOK_RECOVERED,
                        WebhookFacts(*facts),
                        "delivered",
                        record.attempted_at,
                        None,
                        redriven,
                    )
                    await conn.execute(INSERT_OUTBOX_SQL, (recovered.id, recovered.account_id, json_text(recovered)))

    async def list_deliveries(
        self, account_id: str, webhook_id: str, where: DeliveryFilter, limit: int
    ) -> list[DeliveryRow]:
        """Newest first; served by the (webhook_id, attempted_at DESC, attempt_id DESC) index."""
        params: dict[str, Any] = {"webhook_id": webhook_id, "account_id": account_id, "limit": limit}
        clauses = ["webhook_id = %(webhook_id)s", "account_id = %(account_id)s", *where.clauses(params)]
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(DeliveryRow))
            await cur.execute(
                sql.SQL(
                    "SELECT {} FROM delivery_attempts WHERE {}"
                    " ORDER BY attempted_at DESC, attempt_id DESC LIMIT %(limit)s"
                ).format(_DELIVERY, sql.SQL(" AND ").join(map(sql.SQL, clauses))),
                params,
            )
            return await cur.fetchall()

    async def stored_events(
        self, account_id: str, since: date, before: tuple[date, str] | None, event_types: Sequence[str], limit: int
    ) -> list[StoredEvent]:
        """One account's stored event payloads from `since` on, newest first (logged_on, event_id), strictly
        after the keyset `before`; served by event_payloads_account_idx, so a page costs its own rows only."""
        clauses = ["account_id = %(account_id)s", "logged_on >= %(since)s"]  # fixed texts only
        params: dict[str, Any] = {"account_id": account_id, "since": since, "types": list(event_types), "limit": limit}
        if before is not None:
            clauses.append("(logged_on, event_id) < (%(before_day)s, %(before_id)s)")
            params["before_day"], params["before_id"] = before
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(StoredEvent))
            await cur.execute(
                sql.SQL(
                    "SELECT logged_on, event_id,"
                    " CASE WHEN event->>'type' = ANY(%(types)s) THEN event::text END AS event FROM event_payloads"
                    " WHERE {} ORDER BY logged_on DESC, event_id DESC LIMIT %(limit)s"
                ).format(sql.SQL(" AND ").join(map(sql.SQL, clauses))),
                params,
            )
            return await cur.fetchall()

    async def find_attempt(self, account_id: str, attempt_id: str) -> tuple[str, str] | None:
        """(webhook id, event id) of one log row of this account."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT webhook_id, event_id FROM delivery_attempts WHERE attempt_id = %s AND account_id = %s",
                (attempt_id, account_id),
            )
            row = await cur.fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    async def event_payload(self, account_id: str, event_id: str) -> str | None:
        """The stored event as JSON text (text, so the strict wire model parses it as it parses Kafka bytes)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT event::text FROM event_payloads WHERE event_id = %s AND account_id = %s"
                " ORDER BY logged_on DESC LIMIT 1",
                (event_id, account_id),
            )
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------------------------ detail view

    async def get_delivery(self, account_id: str, attempt_id: str) -> tuple[str, DeliveryRow] | None:
        """(webhook id, row) of one log row of this account."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT webhook_id, {} FROM delivery_attempts WHERE attempt_id = %s AND account_id = %s"
                ).format(_DELIVERY),
                (attempt_id, account_id),
            )
            row = await cur.fetchone()
        return None if row is None else (str(row[0]), DeliveryRow(*row[1:]))

    async def event_attempts(self, account_id: str, webhook_id: str, event_id: str) -> list[DeliveryRow]:
        """Every logged attempt of one event to one webhook, oldest first (the event's timeline)."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(DeliveryRow))
            await cur.execute(
                sql.SQL(
                    "SELECT {} FROM delivery_attempts WHERE event_id = %s AND webhook_id = %s AND account_id = %s"
                    " ORDER BY attempted_at, attempt_id LIMIT 100"
                ).format(_DELIVERY),
                (event_id, webhook_id, account_id),
            )
            return await cur.fetchall()

    async def search_deliveries(
        self, account_id: str, where: DeliveryFilter, limit: int
    ) -> list[tuple[str, DeliveryRow]]:
        """(webhook id, row) of the account's whole log, newest first: the same keyset order as a webhook's log,
        served by the account's indexes (migration 0016) or, for one event, by the event's."""
        query, params = account_log_query(account_id, where, limit)
        async with self._pool.connection() as conn:
            cur = await conn.execute(query, params)
            rows = await cur.fetchall()
        return [(str(row[0]), DeliveryRow(*row[1:])) for row in rows]

    async def event_trace(self, account_id: str, event_id: str) -> EventTrace | None:
        """Everything the account's log holds about one event: its payload while retained, every attempt to each
        of its webhooks, their dead letters and the replays that queued it. None when none of it exists.

        Each query is one index lookup per day partition (`event_id`), scoped to the account, so another
        account's event is simply not found."""
        params = {"event_id": event_id, "account_id": account_id}
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT webhook_id, {} FROM delivery_attempts"
                    " WHERE event_id = %(event_id)s AND account_id = %(account_id)s"
                    " ORDER BY webhook_id, attempted_at, attempt_id LIMIT %(limit)s"
                ).format(_DELIVERY),
                {**params, "limit": EVENT_ATTEMPTS_MAX + 1},
            )
            attempts = [(str(row[0]), DeliveryRow(*row[1:])) for row in await cur.fetchall()]
            truncated = len(attempts) > EVENT_ATTEMPTS_MAX
            del attempts[EVENT_ATTEMPTS_MAX:]
            dead_cur = conn.cursor(row_factory=class_row(DeadLetterRow))
            await dead_cur.execute(
                "SELECT webhook_id, event_type, dead_at, last_error, redriven_at FROM dead_letters"
                " WHERE event_id = %(event_id)s AND account_id = %(account_id)s ORDER BY webhook_id",
                params,
            )
            dead = await dead_cur.fetchall()
            if not attempts and not dead:
                return None
            payload = await conn.execute(
                "SELECT event::text FROM event_payloads WHERE event_id = %(event_id)s AND account_id = %(account_id)s"
                " ORDER BY logged_on DESC LIMIT 1",
                params,
            )
            stored = await payload.fetchone()
            replay_cur = conn.cursor(row_factory=class_row(EventReplayRow))
            await replay_cur.execute(
                "SELECT r.webhook_id, r.id AS replay_id, r.created_at, e.queued_at FROM replay_events e"
                " JOIN replays r ON r.id = e.replay_id"
                " WHERE e.event_id = %(event_id)s AND r.account_id = %(account_id)s ORDER BY r.created_at, r.id",
                params,
            )
            replays = await replay_cur.fetchall()
            webhook_ids = sorted(
                {w for w, _ in attempts} | {d.webhook_id for d in dead} | {r.webhook_id for r in replays}
            )
            names = await conn.execute(
                "SELECT id, name FROM webhooks WHERE id = ANY(%s) AND account_id = %s", (webhook_ids, account_id)
            )
            named = {str(row[0]): str(row[1]) for row in await names.fetchall()}
        return EventTrace(
            payload=None if stored is None else str(stored[0]),
            attempts=attempts,
            dead_letters=dead,
            replays=replays,
            webhook_names=named,
            truncated=truncated,
        )

    async def webhook_stats(
        self, account_id: str, webhook_id: str, since: datetime, until: datetime
    ) -> tuple[list[StatsRow], int]:
        """The webhook's hours in [since, until) from the hourly rollup (at most 168 rows: one primary-key range
        scan, whatever the size of the log), and the dead letters of the window."""
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(StatsRow))
            await cur.execute(STATS_SQL, (webhook_id, account_id, since, until))
            rows = await cur.fetchall()
            dead = await conn.execute(
                "SELECT count(*) FROM dead_letters WHERE webhook_id = %s AND account_id = %s"
                " AND dead_at >= %s AND dead_at < %s",
                (webhook_id, account_id, since, until),
            )
            counted = await dead.fetchone()
        return rows, int(counted[0]) if counted else 0

    # ------------------------------------------------------------------------------------ portal sessions

    async def insert_portal_session(
        self,
        session_id: str,
        account_id: str,
        key_id: str,
        read_only: bool,
        token_hash: bytes,
        link_window_s: int,
        lifetime_s: int,
    ) -> PortalSessionRow:
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO portal_sessions (id, account_id, created_by_key_id, read_only, token_hash,"
                " link_expires_at, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s), now() + make_interval(secs => %s))",
                (session_id, account_id, key_id, read_only, token_hash, link_window_s, lifetime_s),
            )
            cur = conn.cursor(row_factory=class_row(PortalSessionRow))
            await cur.execute(_PORTAL_COLUMNS + " WHERE p.id = %s", (session_id,))
            row = await cur.fetchone()
        assert row is not None
        return row

    async def exchange_portal_token(self, token_hash: bytes, session_hash: bytes) -> PortalGrant | LinkRefusal:
        """Open the session of a link, once: the conditional UPDATE lets exactly one of any number of
        concurrent exchanges (on any replica) win. A second use of a link ends the session it opened, as
        OAuth does for a reused authorization code: the link was seen by someone else."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL(
                    "UPDATE portal_sessions p SET used_at = now(), session_hash = %s"
                    " WHERE token_hash = %s AND used_at IS NULL AND revoked_at IS NULL AND link_expires_at > now()"
                    " AND {} RETURNING id, account_id, read_only, expires_at"
                ).format(_LIVE_CREATOR),
                (session_hash, token_hash),
            )
            row = await cur.fetchone()
            if row is not None:
                return PortalGrant(str(row[0]), str(row[1]), bool(row[2]), row[3])
            cur = await conn.execute(
                sql.SQL(
                    "SELECT used_at IS NOT NULL, revoked_at IS NOT NULL OR NOT {}, id"
                    " FROM portal_sessions p WHERE token_hash = %s"
                ).format(_LIVE_CREATOR),
                (token_hash,),
            )
            found = await cur.fetchone()
            if found is None:
                return "unknown"
            if found[0]:
                await conn.execute(
                    "UPDATE portal_sessions SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %s", (found[2],)
                )
                return "used"
            return "revoked" if found[1] else "expired"

    async def portal_grant(self, session_hash: bytes) -> PortalGrant | None:
        """The live session of a credential. Read on every request, never cached, so a revocation applies to
        every replica at once."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL(
                    "SELECT id, account_id, read_only, expires_at FROM portal_sessions p WHERE session_hash = %s"
                    " AND revoked_at IS NULL AND expires_at > now() AND {}"
                ).format(_LIVE_CREATOR),
                (session_hash,),
            )
            row = await cur.fetchone()
        return None if row is None else PortalGrant(str(row[0]), str(row[1]), bool(row[2]), row[3])

    async def list_portal_sessions(self, account_id: str, limit: int) -> list[PortalSessionRow]:
        async with self._pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(PortalSessionRow))
            await cur.execute(
                _PORTAL_COLUMNS + " WHERE p.account_id = %s ORDER BY p.created_at DESC, p.id DESC LIMIT %s",
                (account_id, limit),
            )
            return await cur.fetchall()

    async def revoke_portal_session(self, account_id: str, session_id: str) -> bool:
        """Revoke (idempotently); False when the account has no such session."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE portal_sessions SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %s AND account_id = %s",
                (session_id, account_id),
            )
            return cur.rowcount == 1
