"""Accounts and their API keys, for operators: `hookfleet accounts create NAME [--id ID]` prints the key
once; `hookfleet accounts keys create|list|revoke` manages more keys (customers do the same through
`/v1/api-keys`).

Only the key's SHA-256 is stored (api/auth.py), so a lost key cannot be shown again: create another.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime

import psycopg
from psycopg.rows import class_row

from api.auth import KEY_PREFIX, hash_key, new_api_key
from api.store import ApiKeyRow
from hookfleet.cli import CliError
from hookfleet.db import connect
from schemas.free_text import refused_character
from schemas.ids import ulid

_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
"""The wire models' AccountId: every event names its account with such an id."""


def new_account_id() -> str:
    return "acct_" + ulid()


def new_key_id() -> str:
    return "key_" + ulid()


def key_hint(key: str) -> str:
    """How a key is shown after creation: enough to recognise it, useless to an attacker."""
    return f"{KEY_PREFIX}****{key[-4:]}"


def _insert_key(conn: psycopg.Connection[tuple[object, ...]], account_id: str, label: str) -> tuple[str, str]:
    key_id, key = new_key_id(), new_api_key()
    conn.execute(
        "INSERT INTO api_keys (id, key_hash, account_id, label, hint) VALUES (%s, %s, %s, %s, %s)",
        (key_id, hash_key(key), account_id, label, key_hint(key)),
    )
    return key_id, key


def _check_label(label: str) -> None:
    if len(label) > 100:
        raise CliError(f"key label must be at most 100 characters (got {len(label)})")
    if (refused := refused_character(label)) is not None:
        raise CliError(f"key label must not contain {refused}; remove it")


def create_account(
    database_url: str, name: str, account_id: str | None = None, label: str = "default"
) -> tuple[str, str]:
    """Create the account and one API key; returns (account id, API key in plaintext)."""
    account_id = account_id or new_account_id()
    if not _ACCOUNT_ID.match(account_id):
        raise CliError(f"account id must be 1-64 of A-Z a-z 0-9 _ . : - (got {account_id[:80]!r})")
    if not name.strip() or len(name) > 200:
        raise CliError("account name must be 1-200 characters")
    if (refused := refused_character(name)) is not None:
        raise CliError(f"account name must not contain {refused}; remove it")
    with connect(database_url) as conn:
        try:
            conn.execute("INSERT INTO accounts (id, name) VALUES (%s, %s)", (account_id, name))
        except psycopg.errors.UniqueViolation:
            raise CliError(f"account {account_id} already exists; use another --id") from None
        _, key = _insert_key(conn, account_id, label)
    return account_id, key


def add_api_key(database_url: str, account_id: str, label: str = "") -> str:
    """Another key for an existing account (keys can be rolled without downtime)."""
    return create_api_key(database_url, account_id, label)[1]


def create_api_key(database_url: str, account_id: str, label: str = "") -> tuple[str, str]:
    """(key id, API key in plaintext) of a new key of an existing account."""
    _check_label(label)
    with connect(database_url) as conn:
        found = conn.execute("SELECT 1 FROM accounts WHERE id = %s", (account_id,)).fetchone()
        if found is None:
            raise CliError(f"account {account_id} not found")
        return _insert_key(conn, account_id, label)


def list_api_keys(database_url: str, account_id: str) -> list[ApiKeyRow]:
    with connect(database_url) as conn:
        if conn.execute("SELECT 1 FROM accounts WHERE id = %s", (account_id,)).fetchone() is None:
            raise CliError(f"account {account_id} not found")
        cur = conn.cursor(row_factory=class_row(ApiKeyRow))
        return cur.execute(
            "SELECT id, label, hint, created_at, last_used_at, revoked_at FROM api_keys"
            " WHERE account_id = %s ORDER BY created_at, id",
            (account_id,),
        ).fetchall()


def revoke_api_key(database_url: str, key_id: str) -> str:
    """Revoke a key by id (effective on every API replica at once); returns its account id."""
    with connect(database_url) as conn:
        row = conn.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %s RETURNING account_id",
            (key_id,),
        ).fetchone()
    if row is None:
        raise CliError(f"api key {key_id[:80]} not found (ids are listed by `hookfleet accounts keys list ACCOUNT`)")
    return str(row[0])


def cli_create(args: argparse.Namespace) -> int:
    account_id, key = create_account(_database_url(), args.name, args.account_id)
    print(f"account  {account_id}")
    print(f"api key  {key}")
    print("The API key is shown only now: store it (e.g. HOOKFLEET_API_KEY); only its hash is kept.")
    return 0


def cli_keys(args: argparse.Namespace) -> int:
    database_url = _database_url()
    if args.keys_action == "create":
        key_id, key = create_api_key(database_url, args.account, args.label)
        print(f"key id   {key_id}")
        print(f"api key  {key}")
        print("The API key is shown only now: store it; only its hash is kept.")
    elif args.keys_action == "list":
        rows = list_api_keys(database_url, args.account)
        print(f"{'ID':32}  {'KEY':14}  {'LABEL':20}  {'CREATED':20}  {'LAST USED':20}  REVOKED")
        for row in rows:
            print(
                f"{row.id:32}  {row.hint:14}  {row.label[:20]:20}  {_when(row.created_at):20}"
                f"  {_when(row.last_used_at) or 'never':20}  {_when(row.revoked_at)}".rstrip()
            )
    else:
        account_id = revoke_api_key(database_url, args.key_id)
        print(f"revoked {args.key_id} of {account_id}; every API replica refuses it from now on")
    return 0


def _when(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _database_url() -> str:
    from hookfleet.settings import CommonSettings

    return CommonSettings().database_url.get_secret_value()
