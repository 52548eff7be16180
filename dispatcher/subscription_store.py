"""Keeps the in-memory SubscriptionIndex fresh from PostgreSQL: the dispatcher's only database access.

A full load at start and every `reload_s`, plus LISTEN/NOTIFY (the `webhooks` trigger sends the changed
webhook id) so a change reaches the index within about a second. If PostgreSQL goes away, the last known
index keeps serving and the loop reconnects: deliveries never wait on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

import psycopg

from delivery.endpoint import Endpoint
from dispatcher.subscriptions import SubscriptionIndex
from hookfleet.db import connect_async
from hookfleet.metrics import SUBSCRIPTION_DB_ERRORS, SUBSCRIPTIONS_AGE
from hookfleet.secretbox import SecretBox, SecretKeyError, open_headers, open_signing_key
from schemas.catalog import EventType

log = logging.getLogger(__name__)

CHANNEL = "hookfleet_webhooks"
_COLUMNS = (
    "id, account_id, url, events, active, secret_ciphertext, previous_secret_ciphertext, previous_secret_expires_at,"
    " rate_limit_per_s, ordering, headers_ciphertext,"
    " signing_key_ciphertext, previous_signing_key_ciphertext, previous_signing_key_expires_at, filter, enabled_at"
)


def _endpoint(row: tuple[Any, ...], box: SecretBox) -> Endpoint | None:
    wid, account_id, url, events, active, secret_ct, prev_ct, prev_expires, rate_limit, ordering, headers_ct = row[:11]
    key_ct, prev_key_ct, prev_key_expires, text, enabled = row[11:]
    try:
        secret = box.open(bytes(secret_ct), wid)
        previous = box.open(bytes(prev_ct), wid) if prev_ct is not None else None
        headers = open_headers(box, headers_ct, wid)
        signing_key = open_signing_key(box, key_ct, wid)
        previous_signing_key = open_signing_key(box, prev_key_ct, wid)
    except SecretKeyError:
        # Skipped, not fatal: the other webhooks keep being delivered. Repeated at every full reload
        # until fixed, so it stays visible.
        log.error(
            "event=webhook_secret_undecryptable webhook_id=%s account_id=%s action=skipped"
            " hint='this dispatcher's HOOKFLEET_SECRET_KEY is not the key that sealed the secret;"
            " give every API and dispatcher the same key'",
            wid,
            account_id,
        )
        return None
    known = {t.value for t in EventType}
    return Endpoint(
        id=wid,
        account_id=account_id,
        url=url,
        events=frozenset(EventType(e) for e in events if e in known),
        active=bool(active),
        secret=secret,
        previous_secret=previous,
        previous_secret_expires_at=prev_expires if isinstance(prev_expires, datetime) else None,
        rate_limit_per_s=rate_limit,
        ordering="fifo" if ordering == "fifo" else "unordered",
        headers=tuple(headers.items()),
        signing_key=signing_key,
        previous_signing_key=previous_signing_key,
        previous_signing_key_expires_at=prev_key_expires if isinstance(prev_key_expires, datetime) else None,
        filter=text,
        enabled_at=enabled if isinstance(enabled, datetime) else None,
    )


class SubscriptionSync:
    def __init__(self, database_url: str, box: SecretBox, index: SubscriptionIndex, reload_s: float = 60.0) -> None:
        self._url = database_url
        self._box = box
        self.index = index
        self._reload_s = reload_s
        self.loaded = asyncio.Event()
        # How fresh the index is: the last full load, change refresh or quiet LISTEN round that succeeded.
        self._heard = time.monotonic()
        SUBSCRIPTIONS_AGE.set_function(lambda: time.monotonic() - self._heard)

    async def load_all(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cursor = await conn.execute(f"SELECT {_COLUMNS} FROM webhooks")  # noqa: S608 - constant column list
        endpoints = [e for row in await cursor.fetchall() if (e := _endpoint(row, self._box)) is not None]
        self.index.replace_all(endpoints)
        self.loaded.set()
        log.info("event=subscriptions_loaded webhooks=%d", len(endpoints))

    async def _refresh(self, conn: psycopg.AsyncConnection[Any], webhook_ids: set[str]) -> None:
        cursor = await conn.execute(
            f"SELECT {_COLUMNS} FROM webhooks WHERE id = ANY(%s)",  # noqa: S608 - constant column list
            (list(webhook_ids),),
        )
        found = set()
        for row in await cursor.fetchall():
            endpoint = _endpoint(row, self._box)
            if endpoint is not None:
                self.index.upsert(endpoint)
                found.add(endpoint.id)
        for gone in webhook_ids - found:
            self.index.remove(gone)
        log.debug("event=subscriptions_refreshed changed=%d", len(webhook_ids))

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                conn = await connect_async(self._url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await self.load_all(conn)
                    self._heard = time.monotonic()
                    backoff = 0.5
                    next_full = time.monotonic() + self._reload_s
                    while not stop.is_set():
                        changed = {n.payload async for n in conn.notifies(timeout=0.5, stop_after=1000)}
                        if time.monotonic() >= next_full:
                            await self.load_all(conn)
                            next_full = time.monotonic() + self._reload_s
                        elif changed:
                            await self._refresh(conn, changed)
                        self._heard = time.monotonic()
            except (psycopg.Error, OSError, RuntimeError) as exc:
                SUBSCRIPTION_DB_ERRORS.inc()
                log.warning("event=subscriptions_db_unavailable error=%s retry_in_s=%.1f", type(exc).__name__, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 10.0)
