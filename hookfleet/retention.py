"""Retention of the delivery log: day partitions created ahead, expired ones dropped whole.

`delivery_attempts` (by `attempted_at`) and `event_payloads` (by `logged_on`) have one partition per UTC
day, named `<table>_pYYYYMMDD` (migration 0007). A day is expired once every row in it is older than
`retention_days`: the partition is detached with `DETACH PARTITION ... CONCURRENTLY`, which takes only a
SHARE UPDATE EXCLUSIVE lock on the parent so concurrent inserts and reads never wait, and then dropped
as a standalone table. Nothing of the log is ever deleted row by row, so pruning costs the same for a day
of ten rows and a day of ten million (measured in bench/RESULTS.md). Dead letters, which are not
partitioned, and the small bookkeeping tables (replays, hourly stats, portal sessions) go by the same
horizon with bounded deletes.

Used by the recorder (on a schedule, see `LogMaintenance`) and by `hookfleet db prune`.
"""

from __future__ import annotations

import argparse
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg

from hookfleet import metrics
from hookfleet.db import connect

log = logging.getLogger(__name__)

LOG_TABLES = ("delivery_attempts", "event_payloads")
DAYS_AHEAD = 3
"""Partitions exist this many days beyond today, so a recorder that stops maintaining them for a weekend
still finds tomorrow's."""

_NAME = re.compile(r"^(delivery_attempts|event_payloads)_p(\d{8})$")
_LOCK_TIMEOUT = "SET lock_timeout = '2s'"
# Per schema, so fleets (and tests) sharing a database do not skip each other's maintenance.
_MAINTENANCE_LOCK = "hashtext('hookfleet_log_maintenance:' || current_schema())"

_PARTITIONS = (
    "SELECT c.relname, parent.relname, i.inhdetachpending, c.reltuples::bigint, pg_total_relation_size(c.oid)"
    " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class parent ON parent.oid = i.inhparent"
    " WHERE i.inhparent IN (to_regclass('delivery_attempts'), to_regclass('event_payloads'))"
)


def utc_today(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(UTC).date()


def horizon(retention_days: int, now: datetime | None = None) -> datetime:
    """The oldest time still kept: midnight UTC `retention_days` days before today. Older rows are gone
    (or about to be): reads before this point answer "past retention"."""
    day = utc_today(now) - timedelta(days=retention_days)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def is_expired(day: date, retention_days: int, now: datetime | None = None) -> bool:
    return day < horizon(retention_days, now).date()


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    table: str
    day: date
    rows: int
    """Planner estimate (reltuples): exact counts would scan the partition; -1 = never analysed."""
    bytes: int
    detach_pending: bool = False


def list_partitions(conn: psycopg.Connection[tuple[object, ...]]) -> list[Partition]:
    """The day partitions of both log tables in this connection's schema, oldest first."""
    found = []
    for name, table, pending, rows, size in conn.execute(_PARTITIONS).fetchall():
        match = _NAME.match(str(name))
        if match is None:
            continue
        day = datetime.strptime(match.group(2), "%Y%m%d").date()
        found.append(Partition(str(name), str(table), day, int(rows), int(size), bool(pending)))  # type: ignore[call-overload]
    return sorted(found, key=lambda p: (p.day, p.table))


def expired_partitions(
    partitions: Iterable[Partition], retention_days: int, now: datetime | None = None
) -> list[Partition]:
    return [p for p in partitions if is_expired(p.day, retention_days, now)]


def ensure_days(conn: psycopg.Connection[tuple[object, ...]], days: Iterable[date]) -> list[date]:
    """Create the partitions of these days where missing (both tables); returns the days created."""
    created = []
    for day in sorted(set(days)):
        row = conn.execute("SELECT hookfleet_create_log_day(%s)", (day,)).fetchone()
        if not conn.autocommit:
            conn.commit()
        if row is not None and row[0]:
            created.append(day)
            log.info("event=log_partition_created day=%s", day.isoformat())
    return created


def ensure_ahead(conn: psycopg.Connection[tuple[object, ...]], now: datetime | None = None) -> list[date]:
    today = utc_today(now)
    return ensure_days(conn, [today + timedelta(days=i) for i in range(DAYS_AHEAD + 1)])


def drop_partition(conn: psycopg.Connection[tuple[object, ...]], partition: Partition) -> None:
    """Detach without blocking writers, then drop. `conn` must be in autocommit mode (CONCURRENTLY runs
    outside a transaction). A detach interrupted earlier is finished with FINALIZE."""
    ident = psycopg.sql.Identifier(partition.name)
    parent = psycopg.sql.Identifier(partition.table)
    conn.execute(_LOCK_TIMEOUT)
    if partition.detach_pending:
        conn.execute(psycopg.sql.SQL("ALTER TABLE {} DETACH PARTITION {} FINALIZE").format(parent, ident))
    else:
        conn.execute(psycopg.sql.SQL("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY").format(parent, ident))
    conn.execute(psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(ident))


@dataclass(frozen=True, slots=True)
class PruneResult:
    dropped: list[Partition]
    seconds: float
    dead_letters: int = 0
    """Dead letters older than the horizon: deleted (or, on a dry run, that would be)."""


DEAD_LETTER_BATCH = 5_000
"""Dead letters are not partitioned (the recorder upserts them by webhook and event; a redrive marks them), so
the expired ones are deleted, this many per statement: each statement's locks and WAL stay small however many
have expired."""

_DELETE_DEAD = (
    "DELETE FROM dead_letters WHERE ctid = ANY(ARRAY("
    "SELECT ctid FROM dead_letters WHERE dead_at < %s ORDER BY dead_at LIMIT %s))"
)


def prune_dead_letters(conn: psycopg.Connection[tuple[object, ...]], before: datetime, dry_run: bool = False) -> int:
    """Delete (or, on a dry run, count) the dead letters that died before `before`; returns how many."""
    if dry_run:
        row = conn.execute("SELECT count(*) FROM dead_letters WHERE dead_at < %s", (before,)).fetchone()
        return int(str(row[0])) if row else 0
    deleted = 0
    while True:
        batch = conn.execute(_DELETE_DEAD, (before, DEAD_LETTER_BATCH)).rowcount
        deleted += max(batch, 0)
        if batch < DEAD_LETTER_BATCH:
            return deleted


def prune(database_url: str, retention_days: int, dry_run: bool = False, now: datetime | None = None) -> PruneResult:
    """Drop every partition whose whole day is past retention (or only list them when `dry_run`)."""
    with connect(database_url, autocommit=True) as conn:
        return prune_on(conn, retention_days, dry_run, now)


def prune_on(
    conn: psycopg.Connection[tuple[object, ...]],
    retention_days: int,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneResult:
    """`prune` on an open autocommit connection."""
    started = time.monotonic()
    before = horizon(retention_days, now)  # once: every table is cut at the same instant, even across midnight
    expired = expired_partitions(list_partitions(conn), retention_days, now)
    # Each dead letter carries the whole event: past the horizon it goes, like the payloads of the log.
    dead = prune_dead_letters(conn, before, dry_run)
    if not dry_run:
        if dead:
            log.info("event=dead_letters_pruned count=%d before=%s", dead, before.isoformat())
        for partition in expired:
            one = time.monotonic()
            drop_partition(conn, partition)
            log.info(
                "event=log_partition_dropped partition=%s rows_estimate=%d bytes=%d seconds=%.3f",
                partition.name,
                partition.rows,
                partition.bytes,
                time.monotonic() - one,
            )
        # Replays are bookkeeping about the log: they go with it (a small table, a small delete).
        conn.execute("DELETE FROM replays WHERE created_at < %s", (before,))
        # So are the hourly stats (one row per webhook and hour): the log's horizon applies to them too.
        conn.execute("DELETE FROM webhook_stats_hourly WHERE hour < %s", (before,))
        # Portal sessions are an audit list: kept as long as the log they let people act on, then gone.
        conn.execute("DELETE FROM portal_sessions WHERE expires_at < %s", (before,))
        # Outbox rows given up on (every try failed: hookfleet/stream/poison.py) stay for the operator to see,
        # as long as the log: past it they go, so a mail server that refuses everything cannot grow the table
        # for good. Pending and waiting rows are never pruned: they are still to be sent.
        conn.execute(
            "DELETE FROM operational_outbox WHERE state = 'failed' AND next_attempt_at IS NULL AND created_at < %s",
            (before,),
        )
    seconds = time.monotonic() - started
    if not dry_run:
        metrics.LOG_PRUNE_DURATION.observe(seconds)
        metrics.LOG_PARTITIONS_DROPPED.inc(len(expired))
    return PruneResult(expired, seconds, dead)


def publish_sizes(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Rows (planner estimate) and bytes of each day partition, as gauges; dropped days disappear."""
    partitions = list_partitions(conn)
    metrics.LOG_PARTITION_ROWS.clear()
    metrics.LOG_PARTITION_BYTES.clear()
    newest: dict[str, date] = {}
    for p in partitions:
        metrics.LOG_PARTITION_ROWS.labels(p.table, p.day.isoformat()).set(max(p.rows, 0))
        metrics.LOG_PARTITION_BYTES.labels(p.table, p.day.isoformat()).set(p.bytes)
        newest[p.table] = max(newest.get(p.table, p.day), p.day)
    # How far ahead the log can take rows: a write past the newest day fails (there is no default partition).
    for table, day in newest.items():
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        metrics.LOG_PARTITION_NEWEST_DAY.labels(table).set(midnight.timestamp())


class LogMaintenance:
    """The recorder's schedule: every `interval_s`, create partitions ahead, drop expired ones, publish
    sizes. Runs on its own thread and connection so a slow detach never delays the attempt log."""

    def __init__(self, database_url: str, retention_days: int, interval_s: float) -> None:
        self._url = database_url
        self._retention_days = retention_days
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="log-maintenance", daemon=True)

    def start(self) -> LogMaintenance:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> None:
        with connect(self._url, autocommit=True) as conn:
            # One maintainer at a time across recorders; the others skip this round.
            got = conn.execute(f"SELECT pg_try_advisory_lock({_MAINTENANCE_LOCK})").fetchone()
            if not got or not got[0]:
                return
            try:
                ensure_ahead(conn)
                prune_on(conn, self._retention_days)
                publish_sizes(conn)
            finally:
                conn.execute(f"SELECT pg_advisory_unlock({_MAINTENANCE_LOCK})")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except (psycopg.Error, OSError, RuntimeError) as exc:
                log.warning("event=log_maintenance_failed error=%s reason=%s", type(exc).__name__, str(exc)[:200])
            self._stop.wait(self._interval_s)


def cli(args: argparse.Namespace) -> int:
    """`hookfleet db prune [--dry-run]`."""
    from hookfleet.settings import CommonSettings

    settings = CommonSettings()
    result = prune(settings.database_url.get_secret_value(), settings.retention_days, dry_run=args.dry_run)
    verb = "would drop" if args.dry_run else "dropped"
    for p in result.dropped:
        print(f"{verb} {p.name} (day {p.day.isoformat()}, ~{max(p.rows, 0)} rows, {p.bytes} bytes)")
    kept = horizon(settings.retention_days).isoformat()
    print(f"{verb} {len(result.dropped)} partition(s) older than {kept} (retention {settings.retention_days} days)")
    print(f"{'would delete' if args.dry_run else 'deleted'} {result.dead_letters} dead letter(s) older than {kept}")
    return 0
