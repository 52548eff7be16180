"""Every PostgreSQL call of the recorder: one transaction per batch, idempotent under replay.

Attempt rows are COPYed into a per-connection temporary table and moved with
`INSERT ... ON CONFLICT (attempt_id, attempted_at) DO NOTHING`, so a replayed batch (crash between the
database commit and the offset commit, or a rebalance) adds nothing: a replayed record carries the same
attempted_at, so it meets its first copy in the same day partition. Event payloads take the same
path (`ON CONFLICT (event_id, logged_on) DO NOTHING`). The day partitions a batch needs are
created before it is written (hookfleet/retention.py); a record older than the retention horizon (a
recorder that was down for longer than the retention) is not written, since its day is already dropped.
Dead letters are upserted; a dead letter replayed
with the same time changes nothing, a later one (the delivery was redriven and died again) resets
`redriven_at`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg

from hookfleet.attempt_rows import (
    ATTEMPT_COLUMNS,
    attempt_row,
    json_text,
    log_day,
    payload_rows,
    rollup_sql,
)
from hookfleet.db import connect
from hookfleet.retention import ensure_days, horizon
from hookfleet.stream.poison import ItemFailure, RetrySchedule
from recorder.batch import Batch, dead_letter_row
from recorder.health import gone_at, latest_failure, should_auto_disable
from recorder.status import WebhookState, replay_status, status_events
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

# A dead peer (cable cut, failover) must surface as an error within seconds, not hang a transaction.
_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
_TCP_USER_TIMEOUT_MS = 15_000

_COLUMNS = ", ".join(ATTEMPT_COLUMNS)

_CREATE_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS recorder_attempts_staging "
    "(LIKE delivery_attempts INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)

# Payloads go the same way: one COPY and one INSERT per batch, not one INSERT per event.
_CREATE_PAYLOAD_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS recorder_payloads_staging "
    "(LIKE event_payloads INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_PAYLOAD_COLUMNS = "event_id, account_id, event, logged_on"
_MOVE_PAYLOADS = (
    f"INSERT INTO event_payloads ({_PAYLOAD_COLUMNS}) SELECT {_PAYLOAD_COLUMNS} FROM recorder_payloads_staging "  # noqa: S608 - fixed text
    "ON CONFLICT (event_id, logged_on) DO NOTHING"
)

# The rows really inserted (a replayed Kafka record meets ON CONFLICT DO NOTHING) are added to the hourly stats
# in the same statement, so a replay never counts an attempt twice; the answer is how many were inserted.
_MOVE_STAGED = (
    f"WITH moved AS (INSERT INTO delivery_attempts ({_COLUMNS}) "  # noqa: S608 - fixed column list, no input
    f"SELECT {_COLUMNS} FROM recorder_attempts_staging "
    "ON CONFLICT (attempt_id, attempted_at) DO NOTHING "
    "RETURNING webhook_id, account_id, attempted_at, outcome, attempt, response_ms), "
    f"rolled AS ({rollup_sql('moved')} RETURNING 1) "
    "SELECT count(*) FROM moved"
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
    "SELECT id, status, status_changed_at, failing_since, redrive_on_recovery FROM webhooks "
    "WHERE id = ANY(%(ids)s) AND (status = 'failing' OR id = ANY(%(dead_ids)s)) ORDER BY id FOR UPDATE"
)

_LATEST_SUCCESS = (
    "SELECT webhook_id, max(attempted_at) FROM delivery_attempts "
    "WHERE webhook_id = ANY(%s) AND attempted_at > %s AND outcome = 'success' GROUP BY webhook_id"
)


# Conditional: of two recorders (or a replay) only the first switches it off, so only one notifies.
_DISABLE = (
    "UPDATE webhooks SET active = false, disabled_reason = %(reason)s, disabled_at = %(at)s, updated_at = now() "
    "WHERE id = %(id)s AND active AND (enabled_at IS NULL OR enabled_at < %(at)s) RETURNING id"
)

_FAILING_ACTIVE = (
    "SELECT id, failing_since, enabled_at FROM webhooks "
    "WHERE id = ANY(%s) AND active AND status = 'failing' ORDER BY id FOR UPDATE"
)

# Only a confirmed address is mailed (api/notifications.py). Only rows that are due: a failed row waits for
# its next try (hookfleet/stream/poison.py), a given-up one (next_attempt_at NULL) stays for the operator and is
# never claimed again.
_CLAIM_OUTBOX = (
    "SELECT o.event_id, o.account_id, o.event::text, "
    "(SELECT a.notification_email FROM accounts a WHERE a.id = o.account_id"
    " AND a.notification_email_confirmed_at IS NOT NULL), o.published, o.failures "
    "FROM operational_outbox o WHERE o.next_attempt_at <= now() "
    "ORDER BY o.created_at, o.event_id LIMIT %s FOR UPDATE OF o SKIP LOCKED"
)
# The backlog by state (a small table: sent rows are deleted), and how long the oldest due row has been due:
# the recorder claims due rows every 10 s, so a due row that stays means nothing drains.
_OUTBOX_BACKLOG = (
    "SELECT count(*) FILTER (WHERE next_attempt_at IS NOT NULL AND state = 'pending'), "
    "count(*) FILTER (WHERE next_attempt_at IS NOT NULL AND state = 'failed'), "
    "count(*) FILTER (WHERE next_attempt_at IS NULL), "
    "coalesce(extract(epoch FROM now() - min(next_attempt_at) FILTER (WHERE next_attempt_at <= now())), 0) "
    "FROM operational_outbox"
)
_OUTBOX_FAILED = (
    "UPDATE operational_outbox SET state = 'failed', published = %(published)s, failures = failures + 1, "
    "last_error = %(error)s, next_attempt_at = %(next)s WHERE event_id = %(id)s"
)


# Redrive on recovery: the webhooks with a queued dead letter that is due (queued_at + position x gap), each
# drained by one recorder at a time (a transaction-scoped advisory lock per webhook) so its tasks go out in order.
_DUE_REDRIVE_WEBHOOKS = (
    "SELECT webhook_id FROM recovery_redrives WHERE queued_at + position * %(gap)s <= now() "
    "GROUP BY webhook_id ORDER BY min(queued_at), webhook_id LIMIT %(limit)s"
)
_LOCK_REDRIVE_WEBHOOK = "SELECT pg_try_advisory_xact_lock(hashtextextended('hookfleet.recovery_redrive:' || %s, 0))"
_CLAIM_REDRIVES = (
    "SELECT event_id, task::text FROM recovery_redrives WHERE webhook_id = %(id)s "
    "AND queued_at + position * %(gap)s <= now() ORDER BY position LIMIT %(limit)s FOR UPDATE"
)
_DELETE_REDRIVES = "DELETE FROM recovery_redrives WHERE webhook_id = %s AND event_id = ANY(%s)"
_UNMARK_DEAD = "UPDATE dead_letters SET redriven_at = NULL WHERE webhook_id = %s AND event_id = ANY(%s)"
# The queue's size, and how long past its due time (queued_at + position x gap) its most overdue row has waited:
# the recorders claim due rows every second, so an overdue row that stays means nothing drains. 0 when none is due.
_REDRIVE_BACKLOG = (
    "SELECT count(*), greatest(coalesce(extract(epoch FROM now() - min(queued_at + position * %(gap)s)), 0), 0) "
    "FROM recovery_redrives"
)


@dataclass(frozen=True, slots=True)
class RedriveItem:
    """One queued dead letter, due now: its webhook, its event and the task that died."""

    webhook_id: str
    event_id: str
    task_json: str


@dataclass(frozen=True, slots=True)
class RedriveSent:
    """What became of the due redrives handed to a send: `refused` can never be sent (deleted from the queue,
    their dead letters left to Recover by hand); `held` stay queued for the next drain (their webhook's
    partition refused them for now, from the first refused one on, so its order holds). Every other one
    the broker has."""

    refused: list[RedriveItem]
    held: list[RedriveItem]


@dataclass(frozen=True, slots=True)
class OutboxBacklog:
    """Unsent operational events: new (`pending`), failed and waiting for their next try (`failed`), given up
    after the last try and kept for the operator (`given_up`); and how long the oldest due row has waited."""

    pending: int
    failed: int
    given_up: int
    oldest_due_s: float


@dataclass(frozen=True, slots=True)
class RedriveBacklog:
    """Dead letters queued by recoveries and not sent yet (redrive on recovery), and how long past its due time
    the most overdue of them has waited (0 when none is due)."""

    queued: int
    oldest_overdue_s: float


@dataclass(frozen=True, slots=True)
class WriteResult:
    attempts_inserted: int
    dead_letters_written: int
    status_changes: dict[str, WebhookState]
    notifications: int = 0
    """Operational events written to the outbox by this batch."""
    redrives_queued: int = 0
    """Dead letters queued again by this batch's recoveries (redrive on recovery)."""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    event_id: str
    account_id: str
    event_json: str
    notify_email: str | None
    published: bool = False
    """Its event is on webhooks.events already (an earlier try failed after that): only mail it."""
    failures: int = 0


@dataclass(frozen=True, slots=True)
class OutboxFailed:
    """One outbox item that failed this time: kept, marked failed, tried again by `OUTBOX_RETRY`."""

    event_id: str
    published: bool
    failure: ItemFailure


OUTBOX_RETRY = RetrySchedule()
"""30 s, 2 min, 8 min, 32 min, then given up: a mail server back within the hour still gets the mail."""


@dataclass(frozen=True, slots=True)
class _Change:
    """One webhook state change to notify: which event, when it happened, the error behind it."""

    webhook_id: str
    event_type: EventType
    reason: str
    at: datetime
    last_error: str | None
    redriven: int = 0


class RecorderStore:
    """One connection, opened lazily and dropped on any error so the next write reconnects."""

    def __init__(
        self, database_url: str, retention_days: int = 30, disable_after: timedelta = timedelta(days=5)
    ) -> None:
        self._disable_after = disable_after
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
                conn.execute(_CREATE_PAYLOAD_STAGING)
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
                counted = cur.fetchone()
                inserted = int(str(counted[0])) if counted else 0
                payloads = payload_rows(attempts)
                if payloads:
                    with cur.copy(f"COPY recorder_payloads_staging ({_PAYLOAD_COLUMNS}) FROM STDIN") as copy:
                        for payload in payloads:
                            copy.write_row(payload)
                    cur.execute(_MOVE_PAYLOADS)
            if dead:
                cur.executemany(_UPSERT_DEAD, [dead_letter_row(d) for d in dead])
            changes, flips = self._flip_statuses(cur, batch)
            flips.extend(self._switch_off(cur, batch))
            for change in flips:
                self._notify(cur, change)
        queued = sum(change.redriven for change in flips)
        return WriteResult(inserted, len(dead), changes, len(flips), queued)

    def _within_retention(self, attempts: list[AttemptRecord]) -> list[AttemptRecord]:
        oldest = horizon(self._retention_days)
        kept = [record for record in attempts if record.attempted_at >= oldest]
        if len(kept) < len(attempts):
            log.warning(
                "event=attempts_past_retention skipped=%d horizon=%s", len(attempts) - len(kept), oldest.isoformat()
            )
        return kept

    def _flip_statuses(
        self, cur: psycopg.Cursor[tuple[object, ...]], batch: Batch
    ) -> tuple[dict[str, WebhookState], list[_Change]]:
        """Status changes (under the row lock, so two recorders never both flip), and those to notify."""
        dead = batch.dead_letters
        events = status_events(batch.attempts, dead)
        if not events:
            return {}, []
        dead_ids = sorted({d.task.webhook_id for d in dead})
        rows = cur.execute(_LOCK_WEBHOOKS, {"ids": sorted(events), "dead_ids": dead_ids}).fetchall()
        latest: dict[str, datetime] = {}
        if dead_ids:
            oldest_dead = min(d.dead_at for d in dead)
            for webhook_id, at in cur.execute(_LATEST_SUCCESS, (dead_ids, oldest_dead)).fetchall():
                latest[str(webhook_id)] = at  # type: ignore[assignment]
        changes: dict[str, WebhookState] = {}
        began: dict[str, datetime] = {}  # webhook -> when it went healthy -> failing in this batch
        flips: list[_Change] = []
        last_error = {d.task.webhook_id: d.task.last_error for d in sorted(dead, key=lambda d: d.dead_at)}
        for webhook_id, status, changed_at, failing_since, redrive_on_recovery in rows:
            current = WebhookState(status, changed_at)  # type: ignore[arg-type]
            new, failing_at = replay_status(current, events[str(webhook_id)], latest.get(str(webhook_id)))
            if new != current:
                changes[str(webhook_id)] = new
            if failing_at is not None:
                began[str(webhook_id)] = failing_at
            if new.status != current.status:
                if new.status == "failing":
                    change = _Change(
                        str(webhook_id), EventType.WEBHOOK_FAILING, "dead_letter", began[str(webhook_id)],
                        last_error.get(str(webhook_id)),
                    )  # fmt: skip
                else:
                    redriven = 0
                    if redrive_on_recovery:  # the dead letters since it began failing, queued once, in this change
                        since = failing_since or changed_at
                        queued = cur.execute(QUEUE_RECOVERY_REDRIVE_SQL, {"id": webhook_id, "since": since}).fetchone()
                        redriven = int(str(queued[0])) if queued else 0
                    change = _Change(
                        str(webhook_id), EventType.WEBHOOK_RECOVERED, "delivered", new.changed_at, None, redriven
                    )
                flips.append(change)
        for webhook_id, state in changes.items():
            # failing_since: when the spell began (the dead letter that flipped it), not its latest dead letter
            cur.execute(
                "UPDATE webhooks SET status = %(status)s, status_changed_at = %(at)s, failing_since = CASE"
                " WHEN %(status)s = 'healthy' THEN NULL WHEN %(began)s::timestamptz IS NOT NULL THEN %(began)s"
                " ELSE coalesce(failing_since, %(at)s) END WHERE id = %(id)s",
                {
                    "status": state.status,
                    "at": state.changed_at,
                    "began": began.get(webhook_id) if state.status == "failing" else None,
                    "id": webhook_id,
                },
            )
        return changes, flips

    def _switch_off(self, cur: psycopg.Cursor[tuple[object, ...]], batch: Batch) -> list[_Change]:
        """410 Gone, and auto-disable after `disable_after` of failing (recorder/health.py)."""
        attempts = batch.attempts
        offs: list[_Change] = []
        for webhook_id, at in sorted(gone_at(attempts).items()):
            if cur.execute(_DISABLE, {"reason": "gone", "at": at, "id": webhook_id}).fetchone():
                offs.append(_Change(webhook_id, EventType.WEBHOOK_DISABLED, "gone", at, "http 410"))
        failures = latest_failure(attempts)
        for letter in batch.dead_letters:
            seen = failures.get(letter.task.webhook_id)
            if seen is None or letter.dead_at > seen[0]:
                failures[letter.task.webhook_id] = (letter.dead_at, letter.task.last_error)
        if not failures:
            return offs
        for row in cur.execute(_FAILING_ACTIVE, (sorted(failures),)).fetchall():
            webhook_id, since, enabled_at = str(row[0]), row[1], row[2]
            at, error = failures[webhook_id]
            if not should_auto_disable(since, enabled_at, at, self._disable_after):  # type: ignore[arg-type]
                continue
            if cur.execute(_DISABLE, {"reason": "failing", "at": at, "id": webhook_id}).fetchone():
                offs.append(_Change(webhook_id, EventType.WEBHOOK_DISABLED, "failing", at, error))
        return offs

    def _notify(self, cur: psycopg.Cursor[tuple[object, ...]], change: _Change) -> None:
        """Write the operational event of one state change to the outbox, in the change's transaction."""
        row = cur.execute(FACTS_SQL, (change.webhook_id,)).fetchone()
        if row is None:
            return
        facts = WebhookFacts(*row)  # type: ignore[arg-type]
        event = operational_event(
            change.event_type, facts, change.reason, change.at, change.last_error, change.redriven
        )
        cur.execute(INSERT_OUTBOX_SQL, (event.id, event.account_id, json_text(event)))
        log.info(
            "event=webhook_state_changed webhook_id=%s change=%s at=%s redriven=%d",
            change.webhook_id,
            change.event_type.value,
            change.at.isoformat(),
            change.redriven,
        )

    def drain_outbox(self, send: Callable[[list[OutboxItem]], list[OutboxFailed]], limit: int = 100) -> int:
        """Lock up to `limit` due operational events, `send` them, delete the sent ones and mark the failed
        ones for a later try (`OUTBOX_RETRY`); one transaction. Returns how many rows were claimed.

        SKIP LOCKED: another recorder draining at the same time takes other rows, so each is sent by one.
        If `send` raises (the broker or the database unreachable), nothing changes and the rows are sent
        again later (at least once); one item's own failure comes back in the list instead.
        """
        conn = self._connection()
        try:
            with conn.transaction():
                rows = conn.execute(_CLAIM_OUTBOX, (limit,)).fetchall()
                if not rows:
                    return 0
                items = [OutboxItem(*row) for row in rows]  # type: ignore[arg-type]
                failed = {f.event_id: f for f in send(items)}
                now = datetime.now(UTC)
                for item in items:
                    if (f := failed.get(item.event_id)) is None:
                        continue
                    retry_at = OUTBOX_RETRY.next_attempt(item.failures + 1, now)
                    conn.execute(
                        _OUTBOX_FAILED,
                        {"published": f.published, "error": f.failure.error, "next": retry_at, "id": item.event_id},
                    )
                    if retry_at is None:
                        log.error("event=outbox_item_given_up event_id=%s tries=%d", item.event_id, item.failures + 1)
                sent = [i.event_id for i in items if i.event_id not in failed]
                conn.execute("DELETE FROM operational_outbox WHERE event_id = ANY(%s)", (sent,))
        except BaseException:
            self.close()
            raise
        return len(items)

    def drain_redrives(
        self,
        send: Callable[[list[RedriveItem]], RedriveSent],
        gap: timedelta,
        webhooks: int = 50,
        limit: int = 500,
    ) -> int:
        """Send the queued dead letters that are due (redrive on recovery), per webhook in queue order, and
        delete the sent ones in the transaction that sent them; returns how many the broker has. `send`
        returns once the broker has acknowledged every task it could take; what it says it holds stays
        queued for the next drain, so one webhook's partition refusing its tasks holds up only that webhook,
        and the others' tasks are not sent twice. When `send` raises (the broker unreachable), nothing
        changes and they are sent again later (at least once). What it refuses could never be sent (the
        poison-item rule: an unreadable task, one the broker refuses): deleted too, and its dead letter is
        left to redrive by hand again. A webhook another recorder is draining is skipped (its advisory lock),
        so each webhook's tasks are produced by one recorder at a time, in order. `gap` paces each webhook's
        queue: a row is due `position x gap` after its queue began."""
        conn = self._connection()
        sent = 0
        try:
            with conn.transaction():
                due = conn.execute(_DUE_REDRIVE_WEBHOOKS, {"gap": gap, "limit": webhooks}).fetchall()
                items: list[RedriveItem] = []
                for (webhook_id,) in due:
                    locked = conn.execute(_LOCK_REDRIVE_WEBHOOK, (webhook_id,)).fetchone()
                    if not locked or not locked[0]:
                        continue
                    rows = conn.execute(_CLAIM_REDRIVES, {"id": webhook_id, "gap": gap, "limit": limit}).fetchall()
                    items.extend(RedriveItem(str(webhook_id), str(event_id), str(task)) for event_id, task in rows)
                if not items:
                    return 0
                outcome = send(items)
                held = set(outcome.held)
                done = [item for item in items if item not in held]
                for sql, chosen in ((_DELETE_REDRIVES, done), (_UNMARK_DEAD, outcome.refused)):
                    by_webhook: dict[str, list[str]] = {}
                    for item in chosen:
                        by_webhook.setdefault(item.webhook_id, []).append(item.event_id)
                    for webhook_id, event_ids in by_webhook.items():
                        conn.execute(sql, (webhook_id, event_ids))
                sent = len(done) - len(outcome.refused)
        except BaseException:
            self.close()
            raise
        return sent

    def outbox_backlog(self) -> OutboxBacklog:
        conn = self._connection()
        try:
            row = conn.execute(_OUTBOX_BACKLOG).fetchone()
        except BaseException:
            self.close()
            raise
        assert row is not None  # an aggregate always answers one row
        pending, failed, given_up, oldest = row
        return OutboxBacklog(int(pending), int(failed), int(given_up), float(oldest))  # type: ignore[call-overload, arg-type]

    def redrive_backlog(self, gap: timedelta) -> RedriveBacklog:
        """The redrive queue as `drain_redrives` paced by `gap` sees it: one aggregate over the whole table."""
        conn = self._connection()
        try:
            row = conn.execute(_REDRIVE_BACKLOG, {"gap": gap}).fetchone()
        except BaseException:
            self.close()
            raise
        assert row is not None  # an aggregate always answers one row
        queued, overdue = row
        return RedriveBacklog(int(queued), float(overdue))  # type: ignore[call-overload, arg-type]

    def count_failing(self) -> int:
        conn = self._connection()
        try:
            row = conn.execute("SELECT count(*) FROM webhooks WHERE status = 'failing'").fetchone()
        except BaseException:
            self.close()
            raise
        return int(row[0]) if row else 0  # type: ignore[call-overload]
