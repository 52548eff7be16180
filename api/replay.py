"""Replay: a webhook's events of a time range, re-enqueued from the stored payloads as fresh attempts 1.

Which events: those the delivery log shows were attempted for this webhook in [since, until) (not Test
rows, not earlier replays' own attempts), optionally of some types, optionally only those with no 2xx
for this webhook since `since` ("only_failed"), and only those whose payload is still stored. Times
before the retention horizon are cut off: those days are dropped.

A replay fixes its event list when it starts (`replay_events`), so the dry run's count is what is sent.
It is then enqueued at `replay_rate_per_s` through the same acknowledged producer path as a dead-letter
redrive (`api.redrive.publish_acked`), each task keyed by the webhook id to `webhooks.deliveries`
and carrying `replay_id`, so the dispatcher treats it as any delivery (current config, retry schedule)
and its attempts are marked in the log. Progress is read from the log: delivered = a 2xx for the event
since it was queued; failed = attempts since then, none a 2xx.

What one account can make the fleet do is bounded (each replay is a stream of POSTs at the replay rate):
replays running per account and per API process (`ReplayRunner.admit`), events replayed per account per
day (`create`, counted in the database, so across replicas). Every query runs on the runner's own small
connection pool, taken per chunk, so N replays never hold N connections while they wait for their rate.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from api.redrive import publish_acked
from hookfleet import metrics
from hookfleet.db import describe
from hookfleet.kafka import KafkaException, KafkaProducer
from schemas.models import Event
from schemas.redrive import fresh_task
from schemas.topics import Topics

log = logging.getLogger(__name__)

CHUNK_MAX = 200

# Candidate events of one webhook in a time range. Fixed SQL texts; every value is a parameter.
_CANDIDATES = """
WITH candidates AS (
    SELECT event_id, min(event_type) AS event_type, min(attempted_at) AS first_attempted_at
    FROM delivery_attempts
    WHERE webhook_id = %(webhook_id)s AND account_id = %(account_id)s AND NOT test AND replay_id IS NULL
      AND attempted_at >= %(since)s AND attempted_at < %(until)s
      AND (%(event_types)s::text[] IS NULL OR event_type = ANY(%(event_types)s))
    GROUP BY event_id
)
SELECT c.event_id, c.event_type, c.first_attempted_at FROM candidates c
WHERE (NOT %(only_failed)s OR NOT EXISTS (
        SELECT 1 FROM delivery_attempts s
        WHERE s.webhook_id = %(webhook_id)s AND s.event_id = c.event_id AND s.outcome = 'success'
          AND s.attempted_at >= %(since)s))
  AND EXISTS (SELECT 1 FROM event_payloads p WHERE p.event_id = c.event_id AND p.account_id = %(account_id)s)
"""

_FIRST_LAST = (
    f"WITH picked AS ({_CANDIDATES}) "  # noqa: S608 - fixed texts only
    "(SELECT event_id, event_type, first_attempted_at FROM picked ORDER BY first_attempted_at, event_id LIMIT 1) "
    "UNION ALL "
    "(SELECT event_id, event_type, first_attempted_at FROM picked "
    "ORDER BY first_attempted_at DESC, event_id DESC LIMIT 1)"
)

_COUNT = f"WITH picked AS ({_CANDIDATES}) SELECT count(*) FROM picked"  # noqa: S608 - fixed texts only

_INSERT_EVENTS = (
    f"WITH picked AS ({_CANDIDATES}) "  # noqa: S608 - fixed texts only
    "INSERT INTO replay_events (replay_id, seq, event_id) "
    "SELECT %(replay_id)s, row_number() OVER (ORDER BY first_attempted_at, event_id), event_id FROM picked"
)

_NEXT_CHUNK = (
    "SELECT e.seq, e.event_id, ("
    "  SELECT p.event::text FROM event_payloads p WHERE p.event_id = e.event_id AND p.account_id = %(account_id)s"
    "  ORDER BY p.logged_on DESC LIMIT 1) AS event"
    " FROM replay_events e WHERE e.replay_id = %(replay_id)s AND e.queued_at IS NULL"
    " ORDER BY e.seq LIMIT %(limit)s"
)

_PROGRESS = """
SELECT r.id, r.webhook_id, r.state, r.since, r.until, r.event_types, r.only_failed, r.total, r.error,
       r.created_at, r.finished_at,
       count(e.queued_at) AS queued,
       count(*) FILTER (WHERE a.ok) AS delivered,
       count(*) FILTER (WHERE a.tried AND NOT a.ok) AS failed,
       count(*) FILTER (WHERE a.dead AND NOT a.ok) AS dead
FROM replays r
LEFT JOIN replay_events e ON e.replay_id = r.id
LEFT JOIN LATERAL (
    SELECT count(*) > 0 AS tried, coalesce(bool_or(d.outcome = 'success'), false) AS ok,
           coalesce(bool_or(d.next_step = 'dead'), false) AS dead
    FROM delivery_attempts d
    WHERE e.queued_at IS NOT NULL AND d.webhook_id = r.webhook_id AND d.event_id = e.event_id
      AND d.attempted_at >= e.queued_at - interval '5 seconds'
) a ON true
WHERE r.id = %(replay_id)s AND r.webhook_id = %(webhook_id)s AND r.account_id = %(account_id)s
GROUP BY r.id
"""


@dataclass(frozen=True, slots=True)
class Selection:
    """What a replay selects: one webhook of one account, a time range, optional filters."""

    account_id: str
    webhook_id: str
    since: datetime
    until: datetime
    event_types: list[str] | None
    only_failed: bool

    def params(self) -> dict[str, object]:
        return {
            "account_id": self.account_id,
            "webhook_id": self.webhook_id,
            "since": self.since,
            "until": self.until,
            "event_types": self.event_types,
            "only_failed": self.only_failed,
        }


@dataclass(frozen=True, slots=True)
class EventRef:
    event_id: str
    event_type: str
    first_attempted_at: datetime


@dataclass(frozen=True, slots=True)
class Preview:
    count: int
    first: EventRef | None
    last: EventRef | None


def preview(pool: ConnectionPool, selection: Selection) -> Preview:
    """The dry run: how many events a replay would send now, and the first and last of them."""
    with pool.connection() as conn:
        row = conn.execute(_COUNT, selection.params()).fetchone()
        count = int(row[0]) if row else 0
        refs = [EventRef(str(e), str(t), at) for e, t, at in conn.execute(_FIRST_LAST, selection.params()).fetchall()]
    return Preview(count, refs[0] if refs else None, refs[-1] if refs else None)


class ReplayLimit(Exception):
    """A replay refused by a quota: `limit` names the setting, `retry_after_s` when to try again."""

    def __init__(self, limit: str, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.retry_after_s = retry_after_s


_REPLAYED_TODAY = (
    "SELECT coalesce(sum(total), 0), extract(epoch FROM min(created_at) + interval '1 day' - now()) FROM replays"
    " WHERE account_id = %s AND created_at > now() - interval '1 day'"
)


def create(pool: ConnectionPool, replay_id: str, selection: Selection, events_per_day: int) -> int:
    """Record the replay and fix its event list; returns how many events it will send. Raises
    `ReplayLimit` (and records nothing) when the account would replay more than `events_per_day` events
    in 24 hours."""
    with pool.connection() as conn, conn.transaction():
        # One account's replays at a time (two replicas could otherwise both pass the day's budget).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('replay-budget/' || %s))", (selection.account_id,))
        row = conn.execute(_REPLAYED_TODAY, (selection.account_id,)).fetchone()
        used = int(row[0]) if row else 0
        frees_in = float(row[1]) if row and row[1] is not None else 0.0
        conn.execute(
            "INSERT INTO replays (id, account_id, webhook_id, since, until, event_types, only_failed, total)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, 0)",
            (
                replay_id,
                selection.account_id,
                selection.webhook_id,
                selection.since,
                selection.until,
                selection.event_types,
                selection.only_failed,
            ),
        )
        total = conn.execute(_INSERT_EVENTS, {**selection.params(), "replay_id": replay_id}).rowcount
        if used + total > events_per_day:
            raise ReplayLimit(
                "HOOKFLEET_REPLAY_EVENTS_PER_DAY",
                f"this replay has {total} events and the account replayed {used} in the last 24 hours; the limit"
                f" is {events_per_day} a day: narrow the range or the event types, or wait",
                max(frees_in, 60.0),
            )
        conn.execute("UPDATE replays SET total = %s WHERE id = %s", (total, replay_id))
    metrics.REPLAY_EVENTS.labels("selected").inc(total)
    log.info(
        "event=replay_created replay_id=%s webhook_id=%s events=%d only_failed=%s",
        replay_id,
        selection.webhook_id,
        total,
        selection.only_failed,
    )
    return total


def progress(pool: ConnectionPool, account_id: str, webhook_id: str, replay_id: str) -> dict[str, object] | None:
    """The replay's row with queued / delivered / failed / dead counts; None if not this account's."""
    with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_PROGRESS, {"replay_id": replay_id, "webhook_id": webhook_id, "account_id": account_id})
        return cur.fetchone()


def chunk_size(rate_per_s: float) -> int:
    """At most a tenth of a second's worth of events is produced at once, so no window of the replay
    exceeds the rate by more than that."""
    return max(1, min(CHUNK_MAX, math.ceil(rate_per_s / 10)))


def enqueue(
    pool: ConnectionPool,
    producer: KafkaProducer,
    topics: Topics,
    replay_id: str,
    account_id: str,
    webhook_id: str,
    rate_per_s: float,
    stop: threading.Event,
) -> int:
    """Produce the replay's events in order at `rate_per_s`, marking each chunk queued once acknowledged.
    Returns how many were queued by this call (a stopped replay can be continued by calling it again).
    A pooled connection is held for one chunk only, never while waiting for the rate."""
    limit = chunk_size(rate_per_s)
    started = time.monotonic()
    queued = 0
    while not stop.is_set():
        with pool.connection() as conn, conn.transaction():
            rows = conn.execute(
                _NEXT_CHUNK, {"replay_id": replay_id, "account_id": account_id, "limit": limit}
            ).fetchall()
            if not rows:
                break
            now_ms = int(time.time() * 1000)
            tasks = [
                fresh_task(Event.model_validate_json(str(body)), webhook_id, now_ms, replay_id)
                for _, _, body in rows
                if body is not None
            ]
            if tasks:
                publish_acked(producer, topics.deliveries, tasks)
            conn.execute(
                "UPDATE replay_events SET queued_at = now() WHERE replay_id = %s AND seq = ANY(%s)",
                (replay_id, [seq for seq, _, _ in rows]),
            )
        queued += len(rows)
        metrics.REPLAY_EVENTS.labels("queued").inc(len(rows))
        # Pace: the next chunk may start only when the events so far fit the rate.
        stop.wait(max(0.0, started + queued / rate_per_s - time.monotonic()))
    return queued


def finish(pool: ConnectionPool, replay_id: str, error: str | None) -> None:
    with pool.connection() as conn:
        conn.execute(
            "UPDATE replays SET state = %s, error = %s, finished_at = %s WHERE id = %s",
            ("failed" if error else "done", error, datetime.now(UTC), replay_id),
        )


class ReplayRunner:
    """The replays an API process is enqueuing, each on its own thread; `close` stops them at the next
    chunk (already queued events stay queued; the replay is marked failed with the reason).

    At most `per_account` replays of one account and `max_running` in all run here at once (`admit`);
    every query of a replay goes through `pool` (at most `max_running` + 2 connections: one per running
    replay's chunk, and two for the requests that start and show replays)."""

    def __init__(
        self,
        database_url: str,
        producer: KafkaProducer,
        topics: Topics,
        rate_per_s: float,
        *,
        per_account: int = 2,
        max_running: int = 8,
    ) -> None:
        self._producer = producer
        self._topics = topics
        self._rate = rate_per_s
        self.per_account = per_account
        self.max_running = max_running
        self.pool: ConnectionPool = ConnectionPool(
            database_url,
            min_size=0,
            max_size=max_running + 2,
            kwargs={"connect_timeout": 5},
            timeout=10.0,
            name=f"replays@{describe(database_url)}",
            open=True,
        )
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._accounts: dict[str, str] = {}
        """replay id -> account, for every admitted replay (starting or running)."""
        self._lock = threading.Lock()
        for state in ("selected", "queued"):  # series at 0 from the start, so rates and panels have data
            metrics.REPLAY_EVENTS.labels(state)

    def admit(self, replay_id: str, account_id: str) -> None:
        """Hold a place for a replay about to be created, or raise `ReplayLimit` naming the limit reached.
        Pair with `start` (the place becomes the running replay) or `withdraw` (it was not created)."""
        with self._lock:
            mine = sum(1 for account in self._accounts.values() if account == account_id)
            if mine >= self.per_account:
                raise ReplayLimit(
                    "HOOKFLEET_REPLAYS_PER_ACCOUNT",
                    f"this account has {mine} replays running, the limit is {self.per_account}; wait for one"
                    " to finish (GET its progress)",
                    60.0,
                )
            if len(self._accounts) >= self.max_running:
                raise ReplayLimit(
                    "HOOKFLEET_MAX_REPLAYS_RUNNING",
                    f"this server runs {len(self._accounts)} replays, its limit; try again in a minute",
                    60.0,
                )
            self._accounts[replay_id] = account_id

    def withdraw(self, replay_id: str) -> None:
        with self._lock:
            self._accounts.pop(replay_id, None)

    def start(self, replay_id: str, account_id: str, webhook_id: str) -> None:
        thread = threading.Thread(
            target=self._run, args=(replay_id, account_id, webhook_id), name=f"replay-{replay_id}", daemon=True
        )
        with self._lock:
            self._accounts[replay_id] = account_id
            self._threads[replay_id] = thread
            metrics.REPLAYS_RUNNING.set(len(self._threads))
        thread.start()

    def _run(self, replay_id: str, account_id: str, webhook_id: str) -> None:
        error: str | None = None
        try:
            queued = enqueue(
                self.pool, self._producer, self._topics, replay_id, account_id, webhook_id, self._rate, self._stop
            )
            if self._stop.is_set():
                error = "stopped: the API process shut down before every event was queued"
            log.info("event=replay_enqueued replay_id=%s webhook_id=%s queued=%d", replay_id, webhook_id, queued)
        except (psycopg.Error, PoolTimeout, KafkaException, OSError, RuntimeError, ValueError) as exc:
            error = f"{type(exc).__name__}: {str(exc)[:150]}"
            log.warning("event=replay_failed replay_id=%s webhook_id=%s error=%s", replay_id, webhook_id, error)
        finally:
            try:
                finish(self.pool, replay_id, error)
            except (psycopg.Error, PoolTimeout):
                log.warning("event=replay_finish_unrecorded replay_id=%s", replay_id, exc_info=True)
            with self._lock:
                self._threads.pop(replay_id, None)
                self._accounts.pop(replay_id, None)
                metrics.REPLAYS_RUNNING.set(len(self._threads))

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        with self._lock:
            threads = list(self._threads.values())
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.pool.close()
