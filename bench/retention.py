"""Pruning the day-partitioned delivery log under write load.

    .venv/bin/python -m bench.retention                  # 5,000,000 attempt rows over 10 days
    .venv/bin/python -m bench.retention --rows-per-day 50000   # a quick check of the harness

In a private schema of the configured PostgreSQL (dropped at the end, also on failure): migrate, fill 10
day partitions with `--rows-per-day` attempt rows each (generate_series, in SQL) and a payload per four
attempts, with a retention of 7 days, so 2 days are expired. Then a writer thread writes recorder batches
(100 attempts and their payloads, through `RecorderStore.write`, the recorder's own transaction) back to
back, first alone (baseline), then while `prune` drops the 2 expired days, then alone again. Reported:
the time to prune one day (both tables' partitions: detach concurrently + drop), and the latency of every
batch written during the prune against the baseline. Targets: a day pruned in < 1 s, no write stalled
> 100 ms by the prune. For contrast it also times a DELETE of one (kept) day's rows, the way an
unpartitioned table would have to prune, unless `--no-delete`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench import machine
from hookfleet.db import migrate
from hookfleet.retention import list_partitions, prune
from recorder.batch import Batch
from recorder.store import RecorderStore
from schemas.catalog import EventType
from schemas.ids import new_attempt_id, new_event_id
from schemas.models import AttemptRecord, Event, Outcome

DAYS = 10
RETENTION_DAYS = 7
BATCH = 100

_FILL = """
INSERT INTO delivery_attempts (attempt_id, event_id, event_type, account_id, webhook_id, attempt, outcome,
    status_code, response_ms, response_excerpt, attempted_at, next_step)
SELECT 'att_' || %(day)s || lpad(i::text, 9, '0'), 'evt_' || %(day)s || lpad((i / 2)::text, 9, '0'),
    'message.read', 'acct_' || (i %% 50), 'wh_' || (i %% 200), 1 + (i %% 2),
    CASE WHEN i %% 10 = 0 THEN 'http_error' ELSE 'success' END, CASE WHEN i %% 10 = 0 THEN 500 ELSE 200 END,
    12, 'ok', %(start)s + (i::bigint * %(step)s) * interval '1 microsecond', 'done'
FROM generate_series(0, %(rows)s - 1) i
"""

_FILL_PAYLOADS = """
INSERT INTO event_payloads (event_id, account_id, event, logged_on)
SELECT 'evt_' || %(day)s || lpad(i::text, 9, '0'), 'acct_' || (i %% 50),
    jsonb_build_object('id', 'evt_' || i, 'type', 'message.read', 'data', jsonb_build_object('n', i)), %(on)s
FROM generate_series(0, %(rows)s / 4 - 1) i
"""


def _record(now: datetime) -> AttemptRecord:
    event = Event(id=new_event_id(), type=EventType.MESSAGE_READ, created_at=now, account_id="acct_1", data={"n": 1})
    return AttemptRecord(
        attempt_id=new_attempt_id(),
        event_id=event.id,
        event_type=event.type,
        account_id="acct_1",
        webhook_id="wh_1",
        attempt=1,
        outcome=Outcome.SUCCESS,
        status_code=200,
        response_ms=10,
        attempted_at=now,
        next_step="done",
        event=event,
    )


class Writer:
    """Recorder batches back to back on their own thread; each write's (start, seconds)."""

    def __init__(self, url: str) -> None:
        self.store = RecorderStore(url, retention_days=RETENTION_DAYS)
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="bench-writer", daemon=True)

    def _run(self) -> None:
        offset = 0
        while not self.stop.is_set():
            batch = Batch()
            now = datetime.now(UTC)
            for _ in range(BATCH):
                batch.add("attempts", 0, offset, _record(now))
                offset += 1
            started = time.monotonic()
            self.store.write(batch)
            self.samples.append((started, time.monotonic() - started))

    def between(self, start: float, end: float) -> list[float]:
        return [s for t, s in self.samples if t + s >= start and t <= end]


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        return {"batches": 0}
    return {
        "batches": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1),
        "max_ms": round(ms[-1], 1),
    }


def run(database_url: str, rows_per_day: int, with_delete: bool) -> dict[str, Any]:
    schema = f"bench_retention_{uuid.uuid4().hex[:8]}"
    url = psycopg.conninfo.make_conninfo(database_url, options=f"-c search_path={schema}")
    report: dict[str, Any] = {"machine": machine.describe(), "rows_per_day": rows_per_day, "days": DAYS}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        migrate(url)
        today = datetime.now(UTC).date()
        started = time.monotonic()
        with psycopg.connect(url, autocommit=True) as conn:
            for back in range(DAYS):
                day = today - timedelta(days=back)
                conn.execute("SELECT hookfleet_create_log_day(%s)", (day,))
                midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
                step = max(1, int(86_400_000_000 * (0.9 if back == 0 else 1.0) // rows_per_day))
                if back == 0:  # today: only up to the current time
                    span_us = (datetime.now(UTC) - midnight).total_seconds() * 1e6 * 0.9
                    step = max(1, int(span_us // rows_per_day))
                params = {"day": f"{day:%Y%m%d}", "start": midnight, "step": step, "rows": rows_per_day, "on": day}
                conn.execute(_FILL, params)
                conn.execute(_FILL_PAYLOADS, params)
                print(f"filled {day} ({time.monotonic() - started:.0f} s)", flush=True)
            conn.execute("ANALYZE delivery_attempts")
            conn.execute("ANALYZE event_payloads")
            rows = conn.execute("SELECT count(*) FROM delivery_attempts").fetchone()
            size = conn.execute(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
                " WHERE inhparent IN ('delivery_attempts'::regclass, 'event_payloads'::regclass)"
            ).fetchone()
            report["fill_s"] = round(time.monotonic() - started, 1)
            report["attempt_rows"] = int(rows[0]) if rows else 0
            report["log_bytes"] = int(size[0]) if size else 0
            expired = [p for p in list_partitions(conn) if p.day < today - timedelta(days=RETENTION_DAYS)]
        report["expired_partitions"] = [p.name for p in expired]
        print(f"{report['attempt_rows']:,} attempt rows, {report['log_bytes'] / 1e9:.2f} GB; pruning", flush=True)

        writer = Writer(url)
        writer.thread.start()
        time.sleep(5.0)
        prune_start = time.monotonic()
        result = prune(url, RETENTION_DAYS)
        prune_end = time.monotonic()
        time.sleep(3.0)
        writer.stop.set()
        writer.thread.join(30)
        writer.store.close()
        days_dropped = len({p.day for p in result.dropped})
        report["prune"] = {
            "partitions_dropped": [p.name for p in result.dropped],
            "seconds": round(result.seconds, 3),
            "seconds_per_day": round(result.seconds / max(1, days_dropped), 3),
        }
        report["writes_before"] = _summary(writer.between(prune_start - 5.0, prune_start - 0.001))
        report["writes_during_prune"] = _summary(writer.between(prune_start, prune_end))
        report["writes_after"] = _summary(writer.between(prune_end + 0.001, prune_end + 3.0))

        if with_delete:
            with psycopg.connect(url, autocommit=True) as conn:
                day = today - timedelta(days=RETENTION_DAYS - 1)
                midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
                began = time.monotonic()
                deleted = conn.execute(
                    "DELETE FROM delivery_attempts WHERE attempted_at >= %s AND attempted_at < %s",
                    (midnight, midnight + timedelta(days=1)),
                ).rowcount
                report["delete_one_day"] = {"rows": deleted, "seconds": round(time.monotonic() - began, 2)}
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return report


def main() -> None:
    from hookfleet.settings import CommonSettings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-day", type=int, default=500_000)
    parser.add_argument("--no-delete", action="store_true", help="skip the DELETE comparison")
    args = parser.parse_args()
    report = run(CommonSettings().database_url.get_secret_value(), args.rows_per_day, not args.no_delete)
    machine.save_report("retention", report)
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
