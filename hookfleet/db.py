"""PostgreSQL access for the runtime: connecting with clear errors, and ordered migrations.

Migrations are the SQL files in hookfleet/migrations, applied in name order, each in its own
transaction together with its row in `schema_migrations`, under an advisory lock so two roles starting
at once do not race.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 7_311_004_211  # arbitrary, fixed: pg_advisory_xact_lock key for migrations


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL could not be reached; the message names host and port but never the password."""


class SchemaNotMigrated(RuntimeError):
    """The database lacks a table this version needs: `hookfleet db migrate` was not run."""


def describe(url: str) -> str:
    """host:port/dbname of a conninfo, for messages (never the password)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable DATABASE_URL>"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def connect(url: str, *, autocommit: bool = False, timeout_s: float = 5.0) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=max(1, int(timeout_s)))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"postgresql at {describe(url)} is not reachable") from exc


async def connect_async(
    url: str, *, autocommit: bool = False, timeout_s: float = 5.0
) -> psycopg.AsyncConnection[tuple[object, ...]]:
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=autocommit, connect_timeout=max(1, int(timeout_s)))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"postgresql at {describe(url)} is not reachable") from exc


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    sql: str


def bundled_migrations() -> list[Migration]:
    files = resources.files("hookfleet.migrations")
    return sorted(
        (Migration(f.name.removesuffix(".sql"), f.read_text()) for f in files.iterdir() if f.name.endswith(".sql")),
        key=lambda m: m.version,
    )


def migrate(url: str, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations; returns the versions applied (empty when up to date)."""
    applied: list[str] = []
    with connect(url) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.commit()
        for migration in migrations if migrations is not None else bundled_migrations():
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,))
                if done.fetchone():
                    continue
                conn.execute(migration.sql.encode())
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (migration.version,))
                applied.append(migration.version)
                log.info("event=migration_applied version=%s", migration.version)
    return applied
