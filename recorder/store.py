"""Every PostgreSQL call of the recorder: one transaction per batch, idempotent under replay.

Attempt rows are COPYed into a per-connection temporary table and moved with
`INSERT ... ON CONFLICT (attempt_id, attempted_at) DO NOTHING`, so a replayed batch (crash between the
database commit and the offset commit, or a rebalance) adds nothing: a replayed record carries the same
attempted_at, so it meets its first copy in the same day partition. The day partitions a batch needs are
created before it is written (hookfleet/retention.py); a record older than the retention horizon (a
recorder that was down for longer than the retention) is not written, since its day is already dropped.
Dead letters are upserted; a dead letter replayed
with the same time changes nothing, a later one (the delivery was redriven and died again) resets
`redriven_at`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

import psycopg

from hookfleet.attempt_rows import ATTEMPT_COLUMNS, INSERT_PAYLOAD, attempt_row, log_day, payload_rows
from hookfleet.db import connect
from hookfleet.retention import ensure_days, horizon
from recorder.batch import Batch, dead_letter_row
from recorder.status import WebhookState, decide_status, status_events
from schemas.models import AttemptRecord

log = logging.getLogger(__name__)

# A dead peer (cable cut, failover) must surface as an error within seconds, not hang a transaction.
_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
_TCP_USER_TIMEOUT_MS = 15_000

_COLUMNS = ", ".join(ATTEMPT_COLUMNS)

_CREATE_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS recorder_attempts_staging "
    "(LIKE delivery_attempts INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)

_MOVE_STAGED = (
    f"INSERT INTO delivery_attempts ({_COLUMNS}) "  # noqa: S608 - fixed column list, no input
    f"SELECT {_COLUMNS} FROM recorder_attempts_staging "
    "ON CONFLICT (attempt_id, attempted_at) DO NOTHING"
)

_UPSERT_DEAD = (
    "INSERT INTO dead_letters (event_id, webhook_id, account_id, event_type, task, last_error, dead_at) "
    "VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s) "
    "ON CONFLICT (webhook_id, event_id) DO UPDATE SET "
    "task = excluded.task, last_error = excluded.last_error, dead_at = excluded.dead_at, redriven_at = NULL "
    "WHERE dead_letters.dead_at < excluded.dead_at"
)

# Healthy webhooks that only saw successes cannot change, so only failing ones and those with a dead
# letter are locked. Rows are locked in id order so two recorders never deadlock.
_LOCK_WEBHOOKS = (
    "SELECT id, status, status_changed_at FROM webhooks "
    "WHERE id = ANY(%(ids)s) AND (status = 'failing' OR id = ANY(%(dead_ids)s)) ORDER BY id FOR UPDATE"
)

_LATEST_SUCCESS = (
    "SELECT webhook_id, max(attempted_at) FROM delivery_attempts "
    "WHERE webhook_id = ANY(%s) AND attempted_at > %s AND outcome = 'success' GROUP BY webhook_id"
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    attempts_inserted: int
    dead_letters_written: int
    status_changes: dict[str, WebhookState]


class RecorderStore:
    """One connection, opened lazily and dropped on any error so the next write reconnects."""

    def __init__(self, database_url: str, retention_days: int = 30) -> None:
        self._url = psycopg.conninfo.make_conninfo(database_url, **_KEEPALIVE, tcp_user_timeout=_TCP_USER_TIMEOUT_MS)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._retention_days = retention_days
        self._days: set[date] = set()
        """Days whose partitions this store saw exist (checking again costs a lock, so only new days do)."""

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            conn = connect(self._url, autocommit=True)
            try:
                conn.execute(_CREATE_STAGING)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        self._days.clear()  # a failed write may have met a day dropped meanwhile: check again
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                log.debug("close of a broken connection failed", exc_info=True)
            self._conn = None

    def write(self, batch: Batch) -> WriteResult:
        """Write the batch in one transaction; raises psycopg.Error / DatabaseUnavailable (connection dropped)."""
        try:
            return self._write(batch)
        except BaseException:
            self.close()
            raise

    def _write(self, batch: Batch) -> WriteResult:
        conn = self._connection()
        attempts = self._within_retention(batch.attempts)
        dead = batch.dead_letters
        new_days = {log_day(record.attempted_at) for record in attempts} - self._days
        if new_days:
            ensure_days(conn, new_days)  # outside the batch transaction: DDL locks stay short
            self._days |= new_days
        with conn.transaction(), conn.cursor() as cur:
            inserted = 0
            if attempts:
                with cur.copy(f"COPY recorder_attempts_staging ({_COLUMNS}) FROM STDIN") as copy:
                    for record in attempts:
                        copy.write_row(attempt_row(record))
                cur.execute(_MOVE_STAGED)
                inserted = cur.rowcount
                payloads = payload_rows(attempts)
                if payloads:
                    cur.executemany(INSERT_PAYLOAD, payloads)
            if dead:
                cur.executemany(_UPSERT_DEAD, [dead_letter_row(d) for d in dead])
            changes = self._flip_statuses(cur, batch)
        return WriteResult(inserted, len(dead), changes)

    def _within_retention(self, attempts: list[AttemptRecord]) -> list[AttemptRecord]:
        oldest = horizon(self._retention_days)
        kept = [record for record in attempts if record.attempted_at >= oldest]
        if len(kept) < len(attempts):
            log.warning(
                "event=attempts_past_retention skipped=%d horizon=%s", len(attempts) - len(kept), oldest.isoformat()
            )
        return kept

    def _flip_statuses(self, cur: psycopg.Cursor[tuple[object, ...]], batch: Batch) -> dict[str, WebhookState]:
        dead = batch.dead_letters
        events = status_events(batch.attempts, dead)
        if not events:
            return {}
        dead_ids = sorted({d.task.webhook_id for d in dead})
        rows = cur.execute(_LOCK_WEBHOOKS, {"ids": sorted(events), "dead_ids": dead_ids}).fetchall()
        latest: dict[str, datetime] = {}
        if dead_ids:
            oldest_dead = min(d.dead_at for d in dead)
            for webhook_id, at in cur.execute(_LATEST_SUCCESS, (dead_ids, oldest_dead)).fetchall():
                latest[str(webhook_id)] = at  # type: ignore[assignment]
        changes: dict[str, WebhookState] = {}
        for webhook_id, status, changed_at in rows:
            current = WebhookState(status, changed_at)  # type: ignore[arg-type]
            new = decide_status(current, events[str(webhook_id)], latest.get(str(webhook_id)))
            if new != current:
                changes[str(webhook_id)] = new
        for webhook_id, state in changes.items():
            cur.execute(
                "UPDATE webhooks SET status = %s, status_changed_at = %s WHERE id = %s",
                (state.status, state.changed_at, webhook_id),
            )
        return changes

    def count_failing(self) -> int:
        conn = self._connection()
        try:
            row = conn.execute("SELECT count(*) FROM webhooks WHERE status = 'failing'").fetchone()
        except BaseException:
            self.close()
            raise
        return int(row[0]) if row else 0  # type: ignore[call-overload]
