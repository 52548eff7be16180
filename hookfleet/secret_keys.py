"""Which key a role seals webhook secrets with, and whether the database agrees, checked at startup.

The rule. A role that holds webhook secrets (API, dispatcher) uses, in this order:
1. `HOOKFLEET_SECRET_KEY` (base64 of 32 bytes; empty counts as unset);
2. `HOOKFLEET_SECRET_KEY_FILE`, a file holding that value (a mounted secret; it must exist);
3. only in local development, `HOOKFLEET_HOME/secret.key`, created on first use. Local development means
   `HOOKFLEET_DEV=1`, or `DATABASE_URL` pointing at the local stack (`hookfleet dev up`: 127.0.0.1,
   localhost or ::1, port 55432).
Anywhere else a missing key stops the role with one line naming the variable: each host silently
creating its own key file was how a fleet ended up unable to read its own secrets.

The check. The first role to start on a database stores a value sealed with its key
(`secret_key_check`); every later start must open it, so a wrong key is refused at startup instead of
showing up as undecryptable webhooks. A database that already holds webhooks but no check value (created
before the check existed) gets one only if the key opens its newest secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import psycopg

from hookfleet import secretbox
from hookfleet.db import DatabaseUnavailable, SchemaNotMigrated, connect, describe
from hookfleet.secretbox import SecretBox, SecretKeyError
from hookfleet.settings import SecretKeySettings

log = logging.getLogger(__name__)

LOCAL_STACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
LOCAL_STACK_PORT = "55432"
_SAMPLE = 20
"""Newest webhook secrets tried when a database has no check value yet."""

MISSING_KEY = (
    "HOOKFLEET_SECRET_KEY is not set: give every API and dispatcher the same base64 32-byte key"
    " (openssl rand -base64 32), or HOOKFLEET_SECRET_KEY_FILE; a key file is generated only for the"
    " local stack or with HOOKFLEET_DEV=1"
)


def is_local_stack(database_url: str) -> bool:
    """True when DATABASE_URL is the local stack's PostgreSQL (`hookfleet dev up`)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(database_url)
    except psycopg.ProgrammingError:
        return False
    return str(info.get("host", "")) in LOCAL_STACK_HOSTS and str(info.get("port", "")) == LOCAL_STACK_PORT


def implicit_key_allowed(settings: SecretKeySettings) -> bool:
    return settings.dev or is_local_stack(settings.database_url.get_secret_value())


def configured_box(settings: SecretKeySettings) -> SecretBox:
    """The key by the rule above; SecretKeyError (one readable line) when there is none."""
    if settings.secret_key is not None and settings.secret_key.get_secret_value().strip():
        return SecretBox.from_b64(settings.secret_key.get_secret_value().strip())
    if settings.secret_key_file:
        path = Path(settings.secret_key_file).expanduser()
        try:
            return SecretBox.from_b64(path.read_text().strip())
        except OSError as exc:
            raise SecretKeyError(f"HOOKFLEET_SECRET_KEY_FILE {path} cannot be read ({exc.strerror})") from None
    if not implicit_key_allowed(settings):
        raise SecretKeyError(MISSING_KEY)
    return SecretBox.from_b64(secretbox.key_b64(None, settings.home))


def verify_against_database(database_url: str, box: SecretBox) -> None:
    """Store the key check value if the database has none; refuse a key that does not open it."""
    with connect(database_url) as conn:
        try:
            row = conn.execute("SELECT check_value FROM secret_key_check WHERE id = 1").fetchone()
        except psycopg.errors.UndefinedTable:
            raise SchemaNotMigrated(
                f"postgresql at {describe(database_url)} has no secret_key_check table: run `hookfleet db migrate`"
            ) from None
        if row is None:
            _check_existing_secrets(conn, box)
            conn.execute(
                "INSERT INTO secret_key_check (id, check_value) VALUES (1, %s) ON CONFLICT (id) DO NOTHING",
                (box.key_check(),),
            )
            row = conn.execute("SELECT check_value FROM secret_key_check WHERE id = 1").fetchone()
            assert row is not None
    stored = row[0]
    assert isinstance(stored, bytes)
    if not box.opens_key_check(stored):
        raise SecretKeyError(
            "HOOKFLEET_SECRET_KEY is not the key this database's webhook secrets are sealed with"
            f" ({describe(database_url)}); give every API and dispatcher the same key"
        )


def _check_existing_secrets(conn: psycopg.Connection[tuple[object, ...]], box: SecretBox) -> None:
    rows = conn.execute(
        "SELECT id, secret_ciphertext FROM webhooks ORDER BY created_at DESC LIMIT %s", (_SAMPLE,)
    ).fetchall()
    opened = 0
    for webhook_id, ciphertext in rows:
        assert isinstance(ciphertext, bytes)
        with contextlib.suppress(SecretKeyError):
            box.open(ciphertext, str(webhook_id))
            opened += 1
    if rows and not opened:
        raise SecretKeyError(
            f"HOOKFLEET_SECRET_KEY opens none of the {len(rows)} newest webhook secrets:"
            " it is not the key they were sealed with"
        )
    if opened < len(rows):
        log.warning("event=secret_key_partial_match opened=%d checked=%d", opened, len(rows))


def verified_box(settings: SecretKeySettings) -> SecretBox:
    """The configured key, verified against the database (blocking: run it in a thread from async code)."""
    box = configured_box(settings)
    verify_against_database(settings.database_url.get_secret_value(), box)
    return box


async def wait_for_verified_box(settings: SecretKeySettings, stop: asyncio.Event) -> SecretBox | None:
    """`verified_box`, retried while the database is unreachable (a role may start before PostgreSQL);
    None when `stop` is set first. A missing or wrong key raises at once."""
    box = configured_box(settings)
    database_url = settings.database_url.get_secret_value()
    backoff = 0.5
    while not stop.is_set():
        try:
            await asyncio.to_thread(verify_against_database, database_url, box)
            return box
        except DatabaseUnavailable:
            log.warning("event=key_check_db_unavailable database=%s retry_in_s=%.1f", describe(database_url), backoff)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=backoff)
        backoff = min(backoff * 2, 10.0)
    return None
