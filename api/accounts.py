"""Accounts and their API keys: `hookfleet accounts create NAME [--id ID]` prints the key once.

Only the key's SHA-256 is stored (api/auth.py), so a lost key cannot be shown again: create another.
"""

from __future__ import annotations

import argparse
import re

import psycopg

from api.auth import hash_key, new_api_key
from hookfleet.cli import CliError
from hookfleet.db import connect
from schemas.ids import ulid

_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
"""The wire models' AccountId: every event names its account with such an id."""


def new_account_id() -> str:
    return "acct_" + ulid()


def create_account(
    database_url: str, name: str, account_id: str | None = None, label: str = "default"
) -> tuple[str, str]:
    """Create the account and one API key; returns (account id, API key in plaintext)."""
    account_id = account_id or new_account_id()
    if not _ACCOUNT_ID.match(account_id):
        raise CliError(f"account id must be 1-64 of A-Z a-z 0-9 _ . : - (got {account_id[:80]!r})")
    if not name.strip() or len(name) > 200:
        raise CliError("account name must be 1-200 characters")
    key = new_api_key()
    with connect(database_url) as conn:
        try:
            conn.execute("INSERT INTO accounts (id, name) VALUES (%s, %s)", (account_id, name))
        except psycopg.errors.UniqueViolation:
            raise CliError(f"account {account_id} already exists; use another --id") from None
        conn.execute(
            "INSERT INTO api_keys (key_hash, account_id, label) VALUES (%s, %s, %s)", (hash_key(key), account_id, label)
        )
    return account_id, key


def add_api_key(database_url: str, account_id: str, label: str = "") -> str:
    """Another key for an existing account (keys can be rolled without downtime)."""
    key = new_api_key()
    with connect(database_url) as conn:
        found = conn.execute("SELECT 1 FROM accounts WHERE id = %s", (account_id,)).fetchone()
        if found is None:
            raise CliError(f"account {account_id} not found")
        conn.execute(
            "INSERT INTO api_keys (key_hash, account_id, label) VALUES (%s, %s, %s)", (hash_key(key), account_id, label)
        )
    return key


def cli_create(args: argparse.Namespace) -> int:
    from hookfleet.settings import CommonSettings

    account_id, key = create_account(CommonSettings().database_url.get_secret_value(), args.name, args.account_id)
    print(f"account  {account_id}")
    print(f"api key  {key}")
    print("The API key is shown only now: store it (e.g. HOOKFLEET_API_KEY); only its hash is kept.")
    return 0
